//! TPM2_MakeCredential, the verifier's side (TPM 2.0 Library Part 1,
//! "Credential Protection"; Part 3, MakeCredential): a secret only the TPM
//! that holds the EK can recover, and only for an object with the AK's name.
//!
//! 1. A random seed (the EK name algorithm's size, 32 bytes) is encrypted to
//!    the EK with RSA-OAEP (SHA-256, label `IDENTITY\0`): the encrypted
//!    secret.
//! 2. `symKey = KDFa(SHA-256, seed, "STORAGE", AK name, "", 128)`;
//!    `encIdentity = AES-128-CFB(symKey, IV = 0, TPM2B_DIGEST(secret))`.
//! 3. `hmacKey = KDFa(SHA-256, seed, "INTEGRITY", "", "", 256)`;
//!    `outerHMAC = HMAC-SHA256(hmacKey, encIdentity ‖ AK name)`.
//! 4. The credential blob (`TPM2B_ID_OBJECT` contents) is
//!    `TPM2B_DIGEST(outerHMAC) ‖ encIdentity`.
//!
//! Hand-written because no pure-Rust crate implements it (tss-esapi needs C);
//! it is a few primitives from RustCrypto, checked by a real
//! `tpm2_activatecredential` in the tests.

use aes::cipher::{AsyncStreamCipher as _, KeyIvInit as _};
use hmac::{Hmac, Mac as _};
use rand_core::{CryptoRng, RngCore};
use sha2::Sha256;

use crate::tpm::{PublicKey, TpmPublic};

/// `TPM_ALG_AES`.
const TPM_ALG_AES: u16 = 0x0006;
/// `TPM_ALG_CFB`.
const TPM_ALG_CFB: u16 = 0x0043;

/// The two parts ActivateCredential takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    /// `TPM2B_ID_OBJECT` contents (no size).
    pub credential_blob: Vec<u8>,
    /// `TPM2B_ENCRYPTED_SECRET` contents (no size).
    pub encrypted_secret: Vec<u8>,
}

impl Credential {
    /// The file `tpm2_makecredential -o` writes (and
    /// `tpm2_activatecredential -i` reads): magic `BADCC0DE`, version 1, then
    /// both parts as TPM2Bs (big-endian sizes).
    pub fn tpm2_tools_file(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&0xbadc_c0de_u32.to_be_bytes());
        out.extend_from_slice(&1u32.to_be_bytes());
        for part in [&self.credential_blob, &self.encrypted_secret] {
            out.extend_from_slice(&(part.len() as u16).to_be_bytes());
            out.extend_from_slice(part);
        }
        out
    }
}

/// Why a credential cannot be made for this EK.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The EK is not an RSA storage key with AES-128-CFB.
    #[error("the EK is not an RSA key with AES-128-CFB symmetric protection ({0})")]
    Ek(String),
    /// The secret is empty or longer than a digest.
    #[error("a credential secret is 1 to 32 bytes, not {0}")]
    SecretLength(usize),
    /// RSA-OAEP failed.
    #[error("RSA-OAEP encryption to the EK failed")]
    Encrypt(#[source] rsa::Error),
}

/// KDFa (SP 800-108 counter mode, HMAC-SHA256), as TPM 2.0 Part 1 defines
/// it: `label` gets its terminating zero byte here.
pub fn kdfa(key: &[u8], label: &str, context_u: &[u8], context_v: &[u8], bits: u32) -> Vec<u8> {
    let bytes = bits.div_ceil(8) as usize;
    let mut out = Vec::with_capacity(bytes + 32);
    let mut counter = 1u32;
    while out.len() < bytes {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
            return out;
        };
        mac.update(&counter.to_be_bytes());
        mac.update(label.as_bytes());
        mac.update(&[0]);
        mac.update(context_u);
        mac.update(context_v);
        mac.update(&bits.to_be_bytes());
        out.extend_from_slice(&mac.finalize().into_bytes());
        counter += 1;
    }
    out.truncate(bytes);
    out
}

/// Makes a credential protecting `secret` for the object named `ak_name`
/// in the TPM of `ek`.
pub fn make_credential(
    ek: &TpmPublic,
    ak_name: &[u8],
    secret: &[u8],
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<Credential, CredentialError> {
    let PublicKey::Rsa(ek_key) = &ek.key else {
        return Err(CredentialError::Ek("an ECC EK".into()));
    };
    if ek.symmetric != Some((TPM_ALG_AES, 128, TPM_ALG_CFB)) {
        return Err(CredentialError::Ek(format!("symmetric {:?}", ek.symmetric)));
    }
    if secret.is_empty() || secret.len() > 32 {
        return Err(CredentialError::SecretLength(secret.len()));
    }
    let mut seed = [0u8; 32];
    rng.fill_bytes(&mut seed);
    let padding = rsa::Oaep::new_with_label::<Sha256, _>("IDENTITY\0");
    let encrypted_secret = ek_key
        .encrypt(rng, padding, &seed)
        .map_err(CredentialError::Encrypt)?;

    let sym_key = kdfa(&seed, "STORAGE", ak_name, &[], 128);
    let mut identity = (secret.len() as u16).to_be_bytes().to_vec();
    identity.extend_from_slice(secret);
    let cipher = cfb_mode::Encryptor::<aes::Aes128>::new_from_slices(&sym_key, &[0u8; 16])
        .map_err(|_| CredentialError::Ek("AES-128 key".into()))?;
    cipher.encrypt(&mut identity);

    let hmac_key = kdfa(&seed, "INTEGRITY", &[], &[], 256);
    let mut mac = Hmac::<Sha256>::new_from_slice(&hmac_key)
        .map_err(|_| CredentialError::Ek("HMAC key".into()))?;
    mac.update(&identity);
    mac.update(ak_name);
    let outer = mac.finalize().into_bytes();

    let mut credential_blob = (outer.len() as u16).to_be_bytes().to_vec();
    credential_blob.extend_from_slice(&outer);
    credential_blob.extend_from_slice(&identity);
    Ok(Credential {
        credential_blob,
        encrypted_secret,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kdfa_lengths_and_determinism() {
        let a = kdfa(b"seed", "STORAGE", b"name", &[], 128);
        assert_eq!(a.len(), 16);
        assert_eq!(a, kdfa(b"seed", "STORAGE", b"name", &[], 128));
        assert_ne!(a, kdfa(b"seed", "INTEGRITY", b"name", &[], 128));
        let long = kdfa(b"seed", "X", &[], &[], 520);
        assert_eq!(long.len(), 65);
        // The first block depends on the requested size too.
        assert_ne!(&long[..16], &kdfa(b"seed", "X", &[], &[], 128)[..]);
    }
}
