//! Keys: the endorsement key (TCG default template), the attestation key
//! under it, persistence, and the policy session the EK's use needs.

use std::fmt;

use tpm2_protocol::{
    TpmField,
    basic::{TpmInt32, TpmUint16, TpmUint32},
    data::{
        Tpm2bData, Tpm2bDigest, Tpm2bEncryptedSecret, Tpm2bNonce, Tpm2bPublic, Tpm2bPublicKeyRsa,
        Tpm2bSensitiveCreate, TpmAlgId, TpmEccCurve, TpmSe, TpmaObject, TpmlPcrSelection,
        TpmsEccParms, TpmsEccPoint, TpmsRsaParms, TpmsSchemeHash, TpmtEccScheme, TpmtKdfScheme,
        TpmtPublic, TpmtRsaScheme, TpmtSymDefObject, TpmuAsymScheme, TpmuPublicId, TpmuPublicParms,
        TpmuSymKeyBits, TpmuSymMode,
    },
    frame::{
        TpmCreateCommand, TpmCreatePrimaryCommand, TpmCreatePrimaryResponse, TpmCreateResponse,
        TpmEvictControlCommand, TpmEvictControlResponse, TpmFlushContextCommand,
        TpmFlushContextResponse, TpmLoadCommand, TpmLoadResponse, TpmPolicySecretCommand,
        TpmPolicySecretResponse, TpmReadPublicCommand, TpmReadPublicResponse,
        TpmStartAuthSessionCommand, TpmStartAuthSessionResponse,
    },
};

use crate::client::{ENDORSEMENT, Handle, NULL, OWNER, Tpm, password, policy};
use crate::error::{CommandError, Malformation, TpmError};
use crate::transport::Transport;

/// Where Vigil keeps the RSA endorsement key (TCG "EK Credential Profile"
/// low range; also where `swtpm_setup --create-ek-cert` persists it).
pub const EK_HANDLE: Handle = Handle(0x8101_0001);
/// Where Vigil keeps the attestation key (one per domain, RSA or ECC).
pub const AK_HANDLE: Handle = Handle(0x8101_0002);

/// `PolicySecret(TPM_RH_ENDORSEMENT)` with SHA-256: the EK's `authPolicy`
/// in the TCG default templates (EK Credential Profile 2.0, B.3.3).
pub const EK_AUTH_POLICY: [u8; 32] = [
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc, 0x8d, 0x46, 0xa5, 0xd7, 0x24,
    0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52, 0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa,
];

/// The attestation key's algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AkAlgorithm {
    /// RSA-2048, RSASSA-PKCS1-v1_5 with SHA-256 (what stock Keylime
    /// accepts).
    #[default]
    RsaSsaSha256,
    /// ECC NIST P-256, ECDSA with SHA-256.
    EcdsaP256Sha256,
}

impl fmt::Display for AkAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::RsaSsaSha256 => "RSA-2048 RSASSA-SHA256",
            Self::EcdsaP256Sha256 => "ECC P-256 ECDSA-SHA256",
        })
    }
}

/// A key's public side, as the TPM reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// The marshalled `TPM2B_PUBLIC` (size included): the bytes
    /// `tpm2_readpublic -o` writes.
    pub public: Vec<u8>,
    /// The `TPM2B_NAME` contents: name algorithm (2 bytes, big-endian) and
    /// the digest of the `TPMT_PUBLIC` (what `tpm2_makecredential -n` takes).
    pub name: Vec<u8>,
}

/// The TCG default EK template, RSA-2048 ("template L-1", EK Credential
/// Profile 2.0, B.3.3): restricted decryption key, AES-128-CFB, admin by
/// policy only, 256 zero bytes of `unique`. A `TPM2_CreatePrimary` with it
/// gives the key `swtpm_setup --create-ek-cert` certified.
pub(crate) fn ek_template() -> TpmtPublic {
    TpmtPublic {
        object_type: TpmAlgId::Rsa,
        name_alg: TpmAlgId::Sha256,
        object_attributes: TpmaObject::FIXED_TPM
            | TpmaObject::FIXED_PARENT
            | TpmaObject::SENSITIVE_DATA_ORIGIN
            | TpmaObject::ADMIN_WITH_POLICY
            | TpmaObject::RESTRICTED
            | TpmaObject::DECRYPT,
        auth_policy: Tpm2bDigest::try_from(&EK_AUTH_POLICY[..]).unwrap_or_default(),
        parameters: TpmuPublicParms::Rsa(TpmsRsaParms {
            symmetric: TpmtSymDefObject {
                algorithm: TpmAlgId::Aes,
                key_bits: TpmuSymKeyBits::Aes(TpmUint16::from(128)),
                mode: TpmuSymMode::Aes(TpmAlgId::Cfb),
            },
            scheme: TpmtRsaScheme::default(),
            key_bits: TpmUint16::from(2048),
            exponent: TpmUint32::from(0),
        }),
        unique: TpmuPublicId::Rsa(Tpm2bPublicKeyRsa::try_from(&[0u8; 256][..]).unwrap_or_default()),
    }
}

/// The attestation key template (what `tpm2_createak` and rust-keylime
/// use): a restricted signing key that never leaves this TPM, used with an
/// empty password (`userWithAuth`), no policy.
pub(crate) fn ak_template(alg: AkAlgorithm) -> TpmtPublic {
    let sha256 = TpmsSchemeHash {
        hash_alg: TpmAlgId::Sha256,
    };
    let null_symmetric = TpmtSymDefObject {
        algorithm: TpmAlgId::Null,
        key_bits: TpmuSymKeyBits::Null,
        mode: TpmuSymMode::Null,
    };
    let (object_type, parameters, unique) = match alg {
        AkAlgorithm::RsaSsaSha256 => (
            TpmAlgId::Rsa,
            TpmuPublicParms::Rsa(TpmsRsaParms {
                symmetric: null_symmetric,
                scheme: TpmtRsaScheme {
                    scheme: TpmAlgId::Rsassa,
                    details: TpmuAsymScheme::Hash(sha256),
                },
                key_bits: TpmUint16::from(2048),
                exponent: TpmUint32::from(0),
            }),
            TpmuPublicId::Rsa(Tpm2bPublicKeyRsa::default()),
        ),
        AkAlgorithm::EcdsaP256Sha256 => (
            TpmAlgId::Ecc,
            TpmuPublicParms::Ecc(TpmsEccParms {
                symmetric: null_symmetric,
                scheme: TpmtEccScheme {
                    scheme: TpmAlgId::Ecdsa,
                    details: TpmuAsymScheme::Hash(sha256),
                },
                curve_id: TpmEccCurve::NistP256,
                kdf: TpmtKdfScheme::default(),
            }),
            TpmuPublicId::Ecc(TpmsEccPoint::default()),
        ),
    };
    TpmtPublic {
        object_type,
        name_alg: TpmAlgId::Sha256,
        object_attributes: TpmaObject::FIXED_TPM
            | TpmaObject::FIXED_PARENT
            | TpmaObject::SENSITIVE_DATA_ORIGIN
            | TpmaObject::USER_WITH_AUTH
            | TpmaObject::RESTRICTED
            | TpmaObject::SIGN_ENCRYPT,
        auth_policy: Tpm2bDigest::default(),
        parameters,
        unique,
    }
}

/// What differs between a key's public area and the template it should
/// have been made from (`unique`, the key itself, is not compared).
pub(crate) fn template_mismatch(public: &TpmtPublic, template: &TpmtPublic) -> Option<String> {
    if public.object_type != template.object_type {
        return Some(format!("a {:?} key", public.object_type));
    }
    if public.name_alg != template.name_alg {
        return Some(format!("name algorithm {:?}", public.name_alg));
    }
    if public.object_attributes != template.object_attributes {
        return Some(format!(
            "attributes {:#010x} (expected {:#010x})",
            public.object_attributes.bits(),
            template.object_attributes.bits()
        ));
    }
    if public.auth_policy != template.auth_policy {
        return Some("another authPolicy".to_owned());
    }
    if public.parameters != template.parameters {
        return Some(format!("parameters {:?}", public.parameters));
    }
    None
}

const CREATE_PRIMARY: &str = "TPM2_CreatePrimary";
const CREATE: &str = "TPM2_Create";
const LOAD: &str = "TPM2_Load";
const READ_PUBLIC: &str = "TPM2_ReadPublic";
const EVICT_CONTROL: &str = "TPM2_EvictControl";
const FLUSH_CONTEXT: &str = "TPM2_FlushContext";
const START_AUTH_SESSION: &str = "TPM2_StartAuthSession";
const POLICY_SECRET: &str = "TPM2_PolicySecret";

/// The first `TPM2B_PUBLIC` of a parameter area, as the TPM sent it.
fn leading_public(name: &'static str, parameters: &[u8]) -> Result<Vec<u8>, CommandError> {
    tpm2_protocol::data::Tpm2bPublicWire::cast_prefix(parameters)
        .map(|(wire, _)| wire.as_bytes().to_vec())
        .map_err(|err| CommandError::Malformed {
            command: name,
            reason: Malformation::Wire(err),
        })
}

impl<T: Transport> Tpm<T> {
    /// `TPM2_CreatePrimary` of the endorsement key from the TCG default RSA
    /// template (its `authPolicy` is [`EK_AUTH_POLICY`]). The key is transient: persist it with
    /// [`Tpm::persist`] or flush it.
    pub fn create_ek(&mut self) -> Result<(Handle, PublicKey), TpmError> {
        let fail = |source| TpmError::CreateEk { source };
        let command = TpmCreatePrimaryCommand {
            handles: [ENDORSEMENT.into()],
            in_sensitive: Tpm2bSensitiveCreate::default(),
            in_public: Tpm2bPublic {
                inner: ek_template(),
            },
            outside_info: Tpm2bData::default(),
            creation_pcr: TpmlPcrSelection::default(),
        };
        let response = self
            .execute::<_, TpmCreatePrimaryResponse>(CREATE_PRIMARY, &command, &[password()])
            .map_err(fail)?;
        let object = Handle(response.body.handles[0].into());
        let public = response
            .parameters(CREATE_PRIMARY, 1)
            .and_then(|params| leading_public(CREATE_PRIMARY, params))
            .map_err(fail)?;
        Ok((
            object,
            PublicKey {
                public,
                name: response.body.name.to_vec(),
            },
        ))
    }

    /// `TPM2_ReadPublic` of `object`: its `TPM2B_PUBLIC` and name.
    pub fn read_public(&mut self, object: Handle) -> Result<PublicKey, TpmError> {
        self.read_public_parsed(object).map(|(key, _)| key)
    }

    /// [`Tpm::read_public`], with the parsed public area.
    pub(crate) fn read_public_parsed(
        &mut self,
        object: Handle,
    ) -> Result<(PublicKey, TpmtPublic), TpmError> {
        let fail = |source| TpmError::ReadPublic {
            handle: object,
            source,
        };
        let command = TpmReadPublicCommand {
            handles: [object.into()],
        };
        let response = self
            .execute::<_, TpmReadPublicResponse>(READ_PUBLIC, &command, &[])
            .map_err(fail)?;
        let public = response
            .parameters(READ_PUBLIC, 0)
            .and_then(|params| leading_public(READ_PUBLIC, params))
            .map_err(fail)?;
        Ok((
            PublicKey {
                public,
                name: response.body.name.to_vec(),
            },
            response.body.out_public.inner,
        ))
    }

    /// `TPM2_EvictControl` (owner authorization): makes the transient
    /// `object` persistent at `persistent`. The transient copy stays
    /// loaded: flush it.
    pub fn persist(&mut self, object: Handle, persistent: Handle) -> Result<(), TpmError> {
        self.evict_control(object, persistent)
            .map_err(|source| TpmError::Persist {
                object,
                persistent,
                source,
            })
    }

    /// `TPM2_EvictControl` (owner authorization) of a persistent object:
    /// removes it from the TPM's NV memory.
    pub fn evict(&mut self, persistent: Handle) -> Result<(), TpmError> {
        self.evict_control(persistent, persistent)
            .map_err(|source| TpmError::Evict { persistent, source })
    }

    fn evict_control(&mut self, object: Handle, persistent: Handle) -> Result<(), CommandError> {
        let command = TpmEvictControlCommand {
            handles: [OWNER.into(), object.into()],
            persistent_handle: persistent.into(),
        };
        self.execute::<_, TpmEvictControlResponse>(EVICT_CONTROL, &command, &[password()])
            .map(|_| ())
    }

    /// `TPM2_FlushContext`: unloads a transient object or ends a session.
    pub fn flush(&mut self, object: Handle) -> Result<(), TpmError> {
        let command = TpmFlushContextCommand {
            handles: [],
            flush_handle: object.into(),
        };
        self.execute::<_, TpmFlushContextResponse>(FLUSH_CONTEXT, &command, &[])
            .map(|_| ())
            .map_err(|source| TpmError::Flush {
                handle: object,
                source,
            })
    }

    /// Runs `f` with a policy session (SHA-256, unsalted, unbound) and ends
    /// the session afterwards, also when `f` failed. Call
    /// [`Tpm::policy_secret_endorsement`] before each command the session
    /// authorizes: a policy session is reset after every use.
    pub(crate) fn with_policy_session<R>(
        &mut self,
        f: impl FnOnce(&mut Self, Handle) -> Result<R, TpmError>,
    ) -> Result<R, TpmError> {
        let session = self.start_policy_session()?;
        let result = f(self, session);
        let flushed = self.flush(session);
        let value = result?;
        flushed?;
        Ok(value)
    }

    fn start_policy_session(&mut self) -> Result<Handle, TpmError> {
        let fail = |source| TpmError::PolicySession { source };
        // nonceCaller: at least 16 bytes, at most the session hash's size
        // (Part 3, TPM2_StartAuthSession). No HMAC is computed with a policy
        // session used as here, so the nonce only has to be fresh; the TPM's
        // own RNG provides it.
        let nonce = self.get_random(32)?;
        let command = TpmStartAuthSessionCommand {
            handles: [NULL.into(), NULL.into()],
            nonce_caller: Tpm2bNonce::try_from(&nonce[..])
                .map_err(|_| fail(crate::client::too_long(START_AUTH_SESSION, "nonce")))?,
            encrypted_salt: Tpm2bEncryptedSecret::default(),
            session_type: TpmSe::Policy,
            symmetric: TpmtSymDefObject {
                algorithm: TpmAlgId::Null,
                key_bits: TpmuSymKeyBits::Null,
                mode: TpmuSymMode::Null,
            },
            auth_hash: TpmAlgId::Sha256,
        };
        let response = self
            .execute::<_, TpmStartAuthSessionResponse>(START_AUTH_SESSION, &command, &[])
            .map_err(fail)?;
        Ok(Handle(response.body.handles[0].into()))
    }

    /// `TPM2_PolicySecret(TPM_RH_ENDORSEMENT)` on `session` with the
    /// endorsement hierarchy's empty password: satisfies the EK's
    /// `authPolicy` for the next command.
    pub(crate) fn policy_secret_endorsement(&mut self, session: Handle) -> Result<(), TpmError> {
        let command = TpmPolicySecretCommand {
            handles: [ENDORSEMENT.into(), session.into()],
            nonce_tpm: Tpm2bNonce::default(),
            cp_hash_a: Tpm2bDigest::default(),
            policy_ref: Tpm2bNonce::default(),
            expiration: TpmInt32::from(0),
        };
        self.execute::<_, TpmPolicySecretResponse>(POLICY_SECRET, &command, &[password()])
            .map(|_| ())
            .map_err(|source| TpmError::PolicySession { source })
    }

    /// Creates an attestation key under the endorsement key at `ek`
    /// (`TPM2_Create` then `TPM2_Load`, each authorized by
    /// `PolicySecret(TPM_RH_ENDORSEMENT)`), and returns the loaded,
    /// transient key: persist it with [`Tpm::persist`] or flush it.
    pub fn create_ak(
        &mut self,
        ek: Handle,
        alg: AkAlgorithm,
    ) -> Result<(Handle, PublicKey), TpmError> {
        let fail = |source| TpmError::CreateAk { alg, source };
        let in_public = Tpm2bPublic {
            inner: ak_template(alg),
        };
        self.with_policy_session(|tpm, session| {
            tpm.policy_secret_endorsement(session)?;
            let create = TpmCreateCommand {
                handles: [ek.into()],
                in_sensitive: Tpm2bSensitiveCreate::default(),
                in_public,
                outside_info: Tpm2bData::default(),
                creation_pcr: TpmlPcrSelection::default(),
            };
            let created = tpm
                .execute::<_, TpmCreateResponse>(CREATE, &create, &[policy(session)])
                .map_err(fail)?;
            let public = created
                .parameters(CREATE, 0)
                .and_then(|params| {
                    // outPrivate comes first; the public area follows it.
                    let (_, rest) =
                        <tpm2_protocol::data::Tpm2bPrivate as TpmField>::cast_prefix_field(params)
                            .map_err(|err| CommandError::Malformed {
                                command: CREATE,
                                reason: Malformation::Wire(err),
                            })?;
                    leading_public(CREATE, rest)
                })
                .map_err(fail)?;
            tpm.policy_secret_endorsement(session)?;
            let load = TpmLoadCommand {
                handles: [ek.into()],
                in_private: created.body.out_private,
                in_public: created.body.out_public,
            };
            let loaded = tpm
                .execute::<_, TpmLoadResponse>(LOAD, &load, &[policy(session)])
                .map_err(fail)?;
            Ok((
                Handle(loaded.body.handles[0].into()),
                PublicKey {
                    public,
                    name: loaded.body.name.to_vec(),
                },
            ))
        })
    }
}
