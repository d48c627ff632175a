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
mod tests {
    use super::*;

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
