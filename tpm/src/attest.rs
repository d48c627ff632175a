//! Attestation: the persistent EK/AK pair, `TPM2_Quote` in tpm2-tools'
//! file formats, and `TPM2_ActivateCredential` with `tpm2_makecredential`'s
//! blob.

use tpm2_protocol::{
    TpmField,
    data::{
        Tpm2bAttestWire, Tpm2bData, Tpm2bEncryptedSecret, Tpm2bIdObject, TpmSt, TpmsAttest,
        TpmtSigScheme, TpmtSignature, TpmuAttest,
    },
    frame::{
        TpmActivateCredentialCommand, TpmActivateCredentialResponse, TpmQuoteCommand,
        TpmQuoteResponse,
    },
};

use crate::client::{Handle, Tpm, password, policy, too_long};
use crate::clock::ClockInfo;
use crate::error::{CommandError, Malformation, TpmError};
use crate::keys::{
    AK_HANDLE, AkAlgorithm, EK_HANDLE, PublicKey, ak_template, ek_template, template_mismatch,
};
use crate::pcr::PcrSelection;
use crate::transport::Transport;

/// A quote, in the formats tpm2-tools reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// The signed `TPMS_ATTEST` (the `TPM2B_ATTEST` contents, size
    /// stripped): what `tpm2_quote -m` writes.
    pub message: Vec<u8>,
    /// The marshalled `TPMT_SIGNATURE`: what `tpm2_quote -s` writes.
    pub signature: Vec<u8>,
    /// The PCRs the signed message says were quoted.
    pub pcrs: PcrSelection,
    /// The clock the signed message carries.
    pub clock_info: ClockInfo,
}

/// A credential made by `TPM2_MakeCredential` for one EK and one key name.
///
/// `tpm2_makecredential -o FILE` (tpm2-tools 5.4) writes: the magic
/// `0xBADCC0DE` (u32, big-endian), the version 1 (u32, big-endian), the
/// marshalled `TPM2B_ID_OBJECT`, the marshalled `TPM2B_ENCRYPTED_SECRET`;
/// nothing else (336 bytes for a SHA-256 name, a 32-byte secret and an
/// RSA-2048 EK).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialBlob {
    /// The `TPM2B_ID_OBJECT` contents (size stripped): integrity HMAC and
    /// encrypted credential.
    pub credential_blob: Vec<u8>,
    /// The `TPM2B_ENCRYPTED_SECRET` contents (size stripped): the seed,
    /// encrypted to the EK.
    pub encrypted_secret: Vec<u8>,
}

const CREDENTIAL_MAGIC: u32 = 0xBADC_C0DE;
const CREDENTIAL_VERSION: u32 = 1;

impl CredentialBlob {
    /// Parses what `tpm2_makecredential -o` writes.
    pub fn from_tpm2_tools(file: &[u8]) -> Result<Self, TpmError> {
        let bad = |reason: &str| TpmError::CredentialFile {
            reason: reason.to_owned(),
        };
        let (magic, rest) = split_u32(file).ok_or_else(|| bad("shorter than its header"))?;
        if magic != CREDENTIAL_MAGIC {
            return Err(bad(&format!("magic {magic:#010x}, not 0xbadcc0de")));
        }
        let (version, rest) = split_u32(rest).ok_or_else(|| bad("shorter than its header"))?;
        if version != CREDENTIAL_VERSION {
            return Err(bad(&format!("version {version}, not 1")));
        }
        let (credential_blob, rest) =
            split_tpm2b(rest).ok_or_else(|| bad("the TPM2B_ID_OBJECT is cut short"))?;
        let (encrypted_secret, rest) =
            split_tpm2b(rest).ok_or_else(|| bad("the TPM2B_ENCRYPTED_SECRET is cut short"))?;
        if !rest.is_empty() {
            return Err(bad(&format!(
                "{} bytes after the encrypted secret",
                rest.len()
            )));
        }
        Ok(Self {
            credential_blob: credential_blob.to_vec(),
            encrypted_secret: encrypted_secret.to_vec(),
        })
    }

    /// The bytes `tpm2_makecredential -o` would write (for
    /// `tpm2_activatecredential -i`). `None` if a part is longer than a
    /// TPM2B can be.
    pub fn to_tpm2_tools(&self) -> Option<Vec<u8>> {
        let mut file =
            Vec::with_capacity(12 + self.credential_blob.len() + self.encrypted_secret.len());
        file.extend_from_slice(&CREDENTIAL_MAGIC.to_be_bytes());
        file.extend_from_slice(&CREDENTIAL_VERSION.to_be_bytes());
        for part in [&self.credential_blob, &self.encrypted_secret] {
            file.extend_from_slice(&u16::try_from(part.len()).ok()?.to_be_bytes());
            file.extend_from_slice(part);
        }
        Some(file)
    }
}

fn split_u32(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let (head, rest) = bytes.split_at_checked(4)?;
    Some((u32::from_be_bytes(head.try_into().ok()?), rest))
}

fn split_tpm2b(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (size, rest) = bytes.split_at_checked(2)?;
    let size = u16::from_be_bytes(size.try_into().ok()?);
    rest.split_at_checked(usize::from(size))
}

/// A domain's attestation identity, as [`Tpm::ensure_attestation_key`]
/// found or made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationIdentity {
    /// The endorsement key at [`EK_HANDLE`].
    pub ek: PublicKey,
    /// The attestation key at [`AK_HANDLE`].
    pub ak: PublicKey,
    /// The AK's algorithm.
    pub ak_algorithm: AkAlgorithm,
    /// Whether the EK was created and persisted by this call.
    pub created_ek: bool,
    /// Whether the AK was created and persisted by this call.
    pub created_ak: bool,
}

const QUOTE: &str = "TPM2_Quote";
const ACTIVATE_CREDENTIAL: &str = "TPM2_ActivateCredential";

impl<T: Transport> Tpm<T> {
    /// The persistent EK ([`EK_HANDLE`]) and AK ([`AK_HANDLE`]): read when
    /// present, else created and persisted (once per vTPM state; they are
    /// kept across restarts). On an already-provisioned vTPM this is two
    /// `TPM2_ReadPublic` commands.
    ///
    /// Fails with [`TpmError::UnexpectedKey`] when a key present at either
    /// handle was not made from Vigil's template (an AK of the other
    /// algorithm, for instance): nothing is replaced silently.
    pub fn ensure_attestation_key(
        &mut self,
        alg: AkAlgorithm,
    ) -> Result<AttestationIdentity, TpmError> {
        let (ek, created_ek) = match self.read_public_parsed(EK_HANDLE) {
            Ok((key, public)) => {
                check_template(
                    EK_HANDLE,
                    "TCG default RSA-2048 EK",
                    &public,
                    &ek_template(),
                )?;
                (key, false)
            }
            Err(err) if is_absent(&err) => {
                let (transient, key) = self.create_ek()?;
                self.persist_and_flush(transient, EK_HANDLE)?;
                (key, true)
            }
            Err(err) => return Err(err),
        };
        let expected = match alg {
            AkAlgorithm::RsaSsaSha256 => "RSA-2048 RSASSA-SHA256 attestation key",
            AkAlgorithm::EcdsaP256Sha256 => "ECC P-256 ECDSA-SHA256 attestation key",
        };
        let (ak, created_ak) = match self.read_public_parsed(AK_HANDLE) {
            Ok((key, public)) => {
                check_template(AK_HANDLE, expected, &public, &ak_template(alg))?;
                (key, false)
            }
            Err(err) if is_absent(&err) => {
                let (transient, key) = self.create_ak(EK_HANDLE, alg)?;
                self.persist_and_flush(transient, AK_HANDLE)?;
                (key, true)
            }
            Err(err) => return Err(err),
        };
        Ok(AttestationIdentity {
            ek,
            ak,
            ak_algorithm: alg,
            created_ek,
            created_ak,
        })
    }

    /// Persists `transient` at `persistent`, then flushes it (also when
    /// persisting failed).
    fn persist_and_flush(&mut self, transient: Handle, persistent: Handle) -> Result<(), TpmError> {
        let persisted = self.persist(transient, persistent);
        let flushed = self.flush(transient);
        persisted?;
        flushed
    }

    /// `TPM2_Quote` of `pcrs` (SHA-256 bank) with the key at `ak` (empty
    /// password) and `nonce` as qualifying data, in the key's own signature
    /// scheme.
    pub fn quote(
        &mut self,
        ak: Handle,
        nonce: &[u8],
        pcrs: PcrSelection,
    ) -> Result<Quote, TpmError> {
        let fail = |source| TpmError::Quote { ak, pcrs, source };
        let command = TpmQuoteCommand {
            handles: [ak.into()],
            qualifying_data: Tpm2bData::try_from(nonce)
                .map_err(|_| fail(too_long(QUOTE, "the nonce")))?,
            in_scheme: TpmtSigScheme::default(),
            pcr_select: pcrs.to_tpml(),
        };
        let response = self
            .execute::<_, TpmQuoteResponse>(QUOTE, &command, &[password()])
            .map_err(fail)?;
        let parameters = response.parameters(QUOTE, 0).map_err(fail)?;
        split_quote(parameters, &response.body).map_err(|reason| {
            fail(CommandError::Malformed {
                command: QUOTE,
                reason,
            })
        })
    }

    /// `TPM2_ActivateCredential`: the secret a verifier sealed with
    /// `TPM2_MakeCredential` to the EK at `ek` and the name of the key at
    /// `ak`. The AK is authorized with its empty password, the EK through a
    /// `PolicySecret(TPM_RH_ENDORSEMENT)` session. `credential_blob` and
    /// `encrypted_secret` are TPM2B contents (see [`CredentialBlob`]).
    pub fn activate_credential(
        &mut self,
        ak: Handle,
        ek: Handle,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>, TpmError> {
        let fail = |source| TpmError::ActivateCredential { ak, ek, source };
        let command = TpmActivateCredentialCommand {
            handles: [ak.into(), ek.into()],
            credential_blob: Tpm2bIdObject::try_from(credential_blob)
                .map_err(|_| fail(too_long(ACTIVATE_CREDENTIAL, "the credential blob")))?,
            secret: Tpm2bEncryptedSecret::try_from(encrypted_secret)
                .map_err(|_| fail(too_long(ACTIVATE_CREDENTIAL, "the encrypted secret")))?,
        };
        self.with_policy_session(|tpm, session| {
            tpm.policy_secret_endorsement(session)?;
            let response = tpm
                .execute::<_, TpmActivateCredentialResponse>(
                    ACTIVATE_CREDENTIAL,
                    &command,
                    &[password(), policy(session)],
                )
                .map_err(fail)?;
            Ok(response.body.cert_info.to_vec())
        })
    }
}

/// Whether a `ReadPublic` failed because nothing is at the handle.
fn is_absent(err: &TpmError) -> bool {
    matches!(
        err,
        TpmError::ReadPublic { source, .. }
            if source.response_code().is_some_and(|code| code.is_handle_error())
    )
}

fn check_template(
    handle: Handle,
    expected: &'static str,
    public: &tpm2_protocol::data::TpmtPublic,
    template: &tpm2_protocol::data::TpmtPublic,
) -> Result<(), TpmError> {
    match template_mismatch(public, template) {
        None => Ok(()),
        Some(found) => Err(TpmError::UnexpectedKey {
            handle,
            expected,
            found,
        }),
    }
}

/// The quote's exact bytes: the `TPM2B_ATTEST` contents and everything
/// after it (the `TPMT_SIGNATURE`), from the parameter area the TPM sent,
/// so that what is returned is what was signed, byte for byte.
fn split_quote(parameters: &[u8], body: &TpmQuoteResponse) -> Result<Quote, Malformation> {
    let (attest, signature) =
        Tpm2bAttestWire::cast_prefix(parameters).map_err(Malformation::Wire)?;
    let message = attest
        .as_bytes()
        .get(2..)
        .ok_or_else(|| Malformation::Unexpected("empty TPM2B_ATTEST".to_owned()))?;
    // Both parts were validated by unmarshalling the response; this checks
    // that the signature is all that follows the attest structure.
    let (_, rest) =
        <TpmtSignature as TpmField>::cast_prefix_field(signature).map_err(Malformation::Wire)?;
    if !rest.is_empty() {
        return Err(Malformation::Unexpected(format!(
            "{} bytes after the signature",
            rest.len()
        )));
    }
    let attest: &TpmsAttest = &body.quoted.inner;
    if attest.attest_type != TpmSt::AttestQuote {
        return Err(Malformation::Unexpected(format!(
            "an attest structure of type {:?}",
            attest.attest_type
        )));
    }
    let TpmuAttest::Quote(info) = &attest.attested else {
        return Err(Malformation::Unexpected("no TPMS_QUOTE_INFO".to_owned()));
    };
    let pcrs = PcrSelection::from_tpml(&info.pcr_select).map_err(Malformation::Unexpected)?;
    Ok(Quote {
        message: message.to_vec(),
        signature: signature.to_vec(),
        pcrs,
        clock_info: ClockInfo::from(&attest.clock_info),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::test_util::{fixture, replay};

    /// The credential blob and encrypted secret the recorded
    /// `TPM2_ActivateCredential` command carries (`tests/data`).
    pub(crate) fn recorded_credential() -> (Vec<u8>, Vec<u8>) {
        let exchanges = fixture("activate-credential");
        let (command, _) = exchanges
            .iter()
            .find(|(command, _)| command[6..10] == [0, 0, 1, 0x47])
            .unwrap();
        // Header, two handles, then the authorization area and its size.
        let auth_size = u32::from_be_bytes(command[18..22].try_into().unwrap()) as usize;
        let params = &command[22 + auth_size..];
        let (blob, rest) = split_tpm2b(params).unwrap();
        let (secret, rest) = split_tpm2b(rest).unwrap();
        assert!(rest.is_empty());
        (blob.to_vec(), secret.to_vec())
    }

    #[test]
    fn rsa_quote_is_sliced_from_the_recorded_response() {
        let exchanges = fixture("quote-rsa");
        // swtpm answered the first attempt with TPM_RC_RETRY.
        assert_eq!(exchanges[0].1[6..10], [0, 0, 9, 0x22]);
        let mut tpm = replay("quote-rsa");
        let quote = tpm
            .quote(AK_HANDLE, &[0x5a; 32], PcrSelection::LAUNCH)
            .unwrap();
        assert!(tpm.transport().is_done(), "sent again after TPM_RC_RETRY");
        let response = &exchanges[1].1;
        // Sessions tag: header, parameterSize, TPM2B_ATTEST size, contents.
        let size = usize::from(u16::from_be_bytes([response[14], response[15]]));
        assert_eq!(quote.message, response[16..16 + size]);
        assert_eq!(quote.message[..6], [0xff, 0x54, 0x43, 0x47, 0x80, 0x18]);
        assert_eq!(quote.signature.len(), 262);
        assert_eq!(
            quote.signature[..6],
            [0x00, 0x14, 0x00, 0x0b, 0x01, 0x00],
            "RSASSA, SHA-256, 256 bytes"
        );
        assert_eq!(response[16 + size..16 + size + 262], quote.signature[..]);
        assert_eq!(quote.pcrs, PcrSelection::LAUNCH);
        assert!(quote.clock_info.safe);
        // The nonce is the extraData after the 34-byte qualifiedSigner.
        assert_eq!(quote.message[6 + 36..6 + 36 + 2], [0, 32]);
        assert_eq!(quote.message[6 + 38..6 + 38 + 32], [0x5a; 32]);
    }

    #[test]
    fn ecc_quote_carries_an_ecdsa_signature() {
        let quote = replay("quote-ecc")
            .quote(AK_HANDLE, &[0x5a; 32], PcrSelection::LAUNCH)
            .unwrap();
        assert_eq!(
            quote.signature[..4],
            [0x00, 0x18, 0x00, 0x0b],
            "ECDSA, SHA-256"
        );
        // r and s: two TPM2B of 32 bytes.
        assert_eq!(quote.signature.len(), 4 + 2 * 34);
    }

    #[test]
    fn a_quote_of_another_kind_or_with_trailing_bytes_is_refused() {
        let mut exchanges = fixture("quote-rsa");
        let response = &mut exchanges[1].1;
        // TPM_ST_ATTEST_QUOTE -> TPM_ST_ATTEST_TIME: no longer a quote.
        response[21] = 0x19;
        let mut tpm = Tpm::new(crate::transport::Replay::new(exchanges));
        assert!(
            tpm.quote(AK_HANDLE, &[0x5a; 32], PcrSelection::LAUNCH)
                .is_err()
        );
        // A nonce longer than TPM2B_DATA allows is refused before sending.
        let mut tpm = Tpm::new(crate::transport::Replay::default());
        let err = tpm
            .quote(AK_HANDLE, &[0; 67], PcrSelection::LAUNCH)
            .unwrap_err();
        assert!(
            std::error::Error::source(&err)
                .unwrap()
                .to_string()
                .contains("too long"),
            "{err}"
        );
    }

    #[test]
    fn ensure_reads_a_provisioned_identity_in_two_commands() {
        let mut tpm = replay("ensure-provisioned");
        let identity = tpm
            .ensure_attestation_key(AkAlgorithm::RsaSsaSha256)
            .unwrap();
        assert!(tpm.transport().is_done());
        assert!(!identity.created_ek && !identity.created_ak);
        // A name is nameAlg + SHA-256 of the TPMT_PUBLIC.
        for key in [&identity.ek, &identity.ak] {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(&key.public[2..]);
            assert_eq!(key.name[..2], [0, 0x0b]);
            assert_eq!(key.name[2..], digest[..]);
            let size = usize::from(u16::from_be_bytes([key.public[0], key.public[1]]));
            assert_eq!(key.public.len(), 2 + size);
        }
        // Asking for an ECC AK where an RSA one is: refused, nothing changed.
        let mut exchanges = fixture("ensure-provisioned");
        exchanges.truncate(2);
        let mut tpm = Tpm::new(crate::transport::Replay::new(exchanges));
        let err = tpm
            .ensure_attestation_key(AkAlgorithm::EcdsaP256Sha256)
            .unwrap_err();
        assert!(
            matches!(&err, TpmError::UnexpectedKey { handle, found, .. } if *handle == AK_HANDLE && found.contains("Rsa")),
            "{err}"
        );
    }

    #[test]
    fn ensure_creates_the_ak_under_the_ek_with_a_policy_session() {
        let exchanges = fixture("ensure-create-ak");
        let codes: Vec<u32> = exchanges
            .iter()
            .map(|(command, _)| u32::from_be_bytes(command[6..10].try_into().unwrap()))
            .collect();
        assert_eq!(
            codes,
            [
                0x173, // ReadPublic EK
                0x173, // ReadPublic AK: TPM_RC_HANDLE
                0x17b, // GetRandom (nonceCaller)
                0x176, // StartAuthSession
                0x151, // PolicySecret(ENDORSEMENT)
                0x153, // Create
                0x151, // PolicySecret(ENDORSEMENT)
                0x157, // Load
                0x165, // FlushContext (session)
                0x120, // EvictControl
                0x165, // FlushContext (transient AK)
            ]
        );
        let mut tpm = replay("ensure-create-ak");
        let identity = tpm
            .ensure_attestation_key(AkAlgorithm::RsaSsaSha256)
            .unwrap();
        assert!(tpm.transport().is_done());
        assert!(!identity.created_ek && identity.created_ak);
    }

    #[test]
    fn a_failed_create_still_ends_the_session() {
        let mut exchanges = fixture("ensure-create-ak");
        // Create refused: TPM_RC_ATTRIBUTES (parameter 2).
        exchanges[5].1 = vec![0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x02, 0xc2];
        // Then only the session flush (no PolicySecret/Load/Evict).
        let flush = exchanges[8].clone();
        exchanges.truncate(6);
        exchanges.push(flush);
        let mut tpm = Tpm::new(crate::transport::Replay::new(exchanges));
        let err = tpm
            .ensure_attestation_key(AkAlgorithm::RsaSsaSha256)
            .unwrap_err();
        assert!(tpm.transport().is_done(), "the session was flushed");
        assert!(matches!(err, TpmError::CreateAk { .. }), "{err}");
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert_eq!(
            source,
            "TPM2_Create: the TPM refused with TPM_RC_ATTRIBUTES (parameter[2]) (0x2c2)"
        );
    }

    #[test]
    fn activation_returns_the_recorded_secret() {
        let (blob, secret) = recorded_credential();
        let mut tpm = replay("activate-credential");
        let got = tpm
            .activate_credential(AK_HANDLE, EK_HANDLE, &blob, &secret)
            .unwrap();
        assert!(tpm.transport().is_done());
        assert_eq!(got, [0x42; 32]);
    }

    #[test]
    fn credential_files_round_trip() {
        let blob = CredentialBlob {
            credential_blob: vec![0xaa; 68],
            encrypted_secret: vec![0xbb; 256],
        };
        let file = blob.to_tpm2_tools().unwrap();
        assert_eq!(file.len(), 336);
        assert_eq!(&file[..10], &[0xba, 0xdc, 0xc0, 0xde, 0, 0, 0, 1, 0, 68]);
        assert_eq!(CredentialBlob::from_tpm2_tools(&file).unwrap(), blob);
    }

    #[test]
    fn malformed_credential_files_are_refused() {
        let good = CredentialBlob {
            credential_blob: vec![1; 4],
            encrypted_secret: vec![2; 3],
        }
        .to_tpm2_tools()
        .unwrap();
        for len in 0..good.len() {
            assert!(
                CredentialBlob::from_tpm2_tools(&good[..len]).is_err(),
                "{len}"
            );
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(CredentialBlob::from_tpm2_tools(&trailing).is_err());
        let mut magic = good.clone();
        magic[0] = 0;
        assert!(CredentialBlob::from_tpm2_tools(&magic).is_err());
        let mut version = good;
        version[7] = 2;
        assert!(CredentialBlob::from_tpm2_tools(&version).is_err());
    }
}
