//! The EK certificate: signed by a configured CA, in its validity period,
//! and certifying exactly the EK the TPM presents.
//!
//! Every certificate in the configured CA files is a trust anchor (put the
//! issuing CA there, and its root if wanted: swtpm's local CA signs EK
//! certificates with `/var/lib/swtpm-localca/issuercert.pem`, itself signed by
//! `swtpm-localca-rootca-cert.pem`). An EK certificate is accepted when one
//! anchor whose subject is its issuer verifies its signature
//! (RSASSA-PKCS1-v1_5 with SHA-256/384, or ECDSA P-256 with SHA-256).

use std::time::{Duration, SystemTime};

use der::{Decode as _, Encode as _};
use rsa::pkcs1::DecodeRsaPublicKey as _;
use sha2::{Digest as _, Sha256, Sha384};
use x509_cert::Certificate;

use crate::tpm::{PublicKey, TpmPublic, hex};

const RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
const SHA256_WITH_RSA: &str = "1.2.840.113549.1.1.11";
const SHA384_WITH_RSA: &str = "1.2.840.113549.1.1.12";
const ECDSA_WITH_SHA256: &str = "1.2.840.10045.4.3.2";
const EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";

/// Why an EK certificate is not accepted.
#[derive(Debug, thiserror::Error)]
pub enum EkCertError {
    /// Not a DER certificate.
    #[error("the EK certificate is not DER X.509")]
    Parse(#[source] der::Error),
    /// A CA file holds no certificate.
    #[error("the CA file holds no PEM certificate")]
    NoAnchors,
    /// A CA file does not parse.
    #[error("a CA certificate does not parse")]
    Anchor(#[source] der::Error),
    /// No configured CA issued it.
    #[error("no configured CA whose subject is {issuer:?} verifies the EK certificate's signature")]
    Untrusted {
        /// The certificate's issuer.
        issuer: String,
    },
    /// Outside its validity period.
    #[error("the EK certificate is not valid now (valid {not_before} to {not_after})")]
    Expired {
        /// notBefore.
        not_before: String,
        /// notAfter.
        not_after: String,
    },
    /// It certifies another key than the TPM's EK.
    #[error("the EK certificate certifies another key than the TPM's EK")]
    KeyMismatch,
}

/// Reads every certificate of PEM text (a CA bundle).
pub fn anchors_from_pem(text: &str) -> Result<Vec<Certificate>, EkCertError> {
    let anchors = Certificate::load_pem_chain(text.as_bytes()).map_err(EkCertError::Anchor)?;
    if anchors.is_empty() {
        return Err(EkCertError::NoAnchors);
    }
    Ok(anchors)
}

/// SHA-256 of the certificate's DER, hex.
pub fn fingerprint(der: &[u8]) -> String {
    hex(&Sha256::digest(der))
}

fn verify_signed_by(cert: &Certificate, issuer: &Certificate) -> bool {
    let Ok(tbs) = cert.tbs_certificate.to_der() else {
        return false;
    };
    let Some(signature) = cert.signature.as_bytes() else {
        return false;
    };
    let spki = &issuer.tbs_certificate.subject_public_key_info;
    let Some(key) = spki.subject_public_key.as_bytes() else {
        return false;
    };
    let algorithm = cert.signature_algorithm.oid.to_string();
    let key_algorithm = spki.algorithm.oid.to_string();
    match (algorithm.as_str(), key_algorithm.as_str()) {
        (SHA256_WITH_RSA | SHA384_WITH_RSA, RSA_ENCRYPTION) => {
            let Ok(key) = rsa::RsaPublicKey::from_pkcs1_der(key) else {
                return false;
            };
            if algorithm == SHA256_WITH_RSA {
                key.verify(
                    rsa::Pkcs1v15Sign::new::<Sha256>(),
                    &Sha256::digest(&tbs),
                    signature,
                )
                .is_ok()
            } else {
                key.verify(
                    rsa::Pkcs1v15Sign::new::<Sha384>(),
                    &Sha384::digest(&tbs),
                    signature,
                )
                .is_ok()
            }
        }
        (ECDSA_WITH_SHA256, EC_PUBLIC_KEY) => {
            use p256::ecdsa::signature::Verifier as _;
            let Ok(key) = p256::ecdsa::VerifyingKey::from_sec1_bytes(key) else {
                return false;
            };
            let Ok(signature) = p256::ecdsa::Signature::from_der(signature) else {
                return false;
            };
            key.verify(&tbs, &signature).is_ok()
        }
        _ => false,
    }
}

/// Checks the EK certificate (DER) against the anchors at time `now`, and
/// that it certifies `ek`'s public key.
pub fn verify(
    der: &[u8],
    anchors: &[Certificate],
    ek: &TpmPublic,
    now: SystemTime,
) -> Result<(), EkCertError> {
    let cert = Certificate::from_der(der).map_err(EkCertError::Parse)?;
    let tbs = &cert.tbs_certificate;
    let issued = anchors
        .iter()
        .filter(|anchor| anchor.tbs_certificate.subject == tbs.issuer)
        .any(|anchor| verify_signed_by(&cert, anchor));
    if !issued {
        return Err(EkCertError::Untrusted {
            issuer: tbs.issuer.to_string(),
        });
    }
    let since_epoch = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let not_before = tbs.validity.not_before.to_unix_duration();
    let not_after = tbs.validity.not_after.to_unix_duration();
    if since_epoch < not_before || since_epoch > not_after {
        return Err(EkCertError::Expired {
            not_before: tbs.validity.not_before.to_string(),
            not_after: tbs.validity.not_after.to_string(),
        });
    }
    let spki = &tbs.subject_public_key_info;
    let certified = spki.subject_public_key.as_bytes().unwrap_or_default();
    let matches = match &ek.key {
        PublicKey::Rsa(key) => {
            spki.algorithm.oid.to_string() == RSA_ENCRYPTION
                && rsa::RsaPublicKey::from_pkcs1_der(certified).is_ok_and(|c| &c == key)
        }
        PublicKey::P256(key) => {
            spki.algorithm.oid.to_string() == EC_PUBLIC_KEY
                && p256::ecdsa::VerifyingKey::from_sec1_bytes(certified).is_ok_and(|c| &c == key)
        }
    };
    if !matches {
        return Err(EkCertError::KeyMismatch);
    }
    Ok(())
}
