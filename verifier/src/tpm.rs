//! The TPM structures a verifier reads: `TPMS_ATTEST` (a quote),
//! `TPMT_SIGNATURE` and `TPM2B_PUBLIC` (the AK and the EK), and the
//! signature check over a quote.
//!
//! Unmarshalling is `tpm2-protocol`'s (pure Rust, no_std, no dependencies,
//! bounded: every size field is checked against its structure's capacity),
//! so no TPM parser is hand-written here. This module only turns its types
//! into the few facts the appraisal needs and refuses trailing bytes.
//! Signatures are checked with RustCrypto's `rsa` (RSASSA-PKCS1-v1_5
//! SHA-256) and `p256` (ECDSA SHA-256).

use std::fmt;

use sha2::{Digest as _, Sha256};
use tpm2_protocol::TpmUnmarshal;
use tpm2_protocol::data::{
    Tpm2bPublic, TpmAlgId, TpmEccCurve, TpmaObject, TpmsAttest, TpmtSignature, TpmuAttest,
    TpmuPublicId, TpmuPublicParms, TpmuSignature, TpmuSymKeyBits, TpmuSymMode,
};
use vigil_core::v1::evidence::PcrSelection;

/// `TPM_GENERATED_VALUE`: the first four bytes of everything a TPM signs.
pub const TPM_GENERATED_VALUE: u32 = 0xff54_4347;
/// `TPM_ST_ATTEST_QUOTE`.
pub const TPM_ST_ATTEST_QUOTE: u16 = 0x8018;
/// `TPM_ALG_SHA256`.
pub const TPM_ALG_SHA256: u16 = 0x000b;

/// A structure that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum TpmParseError {
    /// tpm2-protocol refused the bytes.
    #[error("{structure} does not unmarshal: {reason}")]
    Unmarshal {
        /// Which structure.
        structure: &'static str,
        /// tpm2-protocol's error.
        reason: String,
    },
    /// Bytes left after the structure.
    #[error("{structure} has {extra} bytes after its end")]
    Trailing {
        /// Which structure.
        structure: &'static str,
        /// How many.
        extra: usize,
    },
    /// A valid structure of a kind the verifier does not accept.
    #[error("{structure}: {what}")]
    Unsupported {
        /// Which structure.
        structure: &'static str,
        /// What is not supported.
        what: String,
    },
}

fn unmarshal<T: TpmUnmarshal>(structure: &'static str, bytes: &[u8]) -> Result<T, TpmParseError> {
    let (value, rest) = T::unmarshal(bytes).map_err(|err| TpmParseError::Unmarshal {
        structure,
        reason: format!("{err:?}"),
    })?;
    if !rest.is_empty() {
        return Err(TpmParseError::Trailing {
            structure,
            extra: rest.len(),
        });
    }
    Ok(value)
}

/// The first six bytes of an attest structure: magic and type, read before
/// anything else so that a wrong one is reported as such.
pub fn attest_header(bytes: &[u8]) -> Option<(u32, u16)> {
    let magic = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?);
    let kind = u16::from_be_bytes(bytes.get(4..6)?.try_into().ok()?);
    Some((magic, kind))
}

/// A TPM's clock and boot counters, as a quote carries them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClockInfo {
    /// Milliseconds the TPM has been powered, since its last clock set.
    pub clock: u64,
    /// TPM resets (for a vTPM: every launch's `TPM2_Startup(CLEAR)`).
    pub reset_count: u32,
    /// TPM restarts and resumes since the last reset.
    pub restart_count: u32,
    /// Whether the clock has not gone back since it was last saved.
    pub safe: bool,
}

/// A parsed quote (`TPMS_ATTEST` of type `TPM_ST_ATTEST_QUOTE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuoteInfo {
    /// The qualifying data (the verifier's nonce).
    pub extra_data: Vec<u8>,
    /// The qualified name of the signing key.
    pub qualified_signer: Vec<u8>,
    /// Clock and counters.
    pub clock: ClockInfo,
    /// The TPM's firmware version.
    pub firmware_version: u64,
    /// The PCR selection the TPM signed.
    pub selection: Vec<PcrSelection>,
    /// The digest of the selected PCRs' values.
    pub pcr_digest: Vec<u8>,
}

impl QuoteInfo {
    /// Parses a `TPMS_ATTEST` (no TPM2B size) that must be a quote.
    pub fn parse(bytes: &[u8]) -> Result<Self, TpmParseError> {
        const NAME: &str = "TPMS_ATTEST";
        let attest: TpmsAttest = unmarshal(NAME, bytes)?;
        let TpmuAttest::Quote(quote) = &attest.attested else {
            return Err(TpmParseError::Unsupported {
                structure: NAME,
                what: format!("{:?} is not a quote", attest.attest_type),
            });
        };
        let selection = quote
            .pcr_select
            .iter()
            .map(|s| {
                let bytes: &[u8] = &s.pcr_select;
                let mut select = [0u8; 4];
                select[..bytes.len()].copy_from_slice(bytes);
                PcrSelection {
                    hash: s.hash.value(),
                    size_of_select: bytes.len() as u8,
                    select,
                }
            })
            .collect();
        Ok(Self {
            extra_data: attest.extra_data.to_vec(),
            qualified_signer: attest.qualified_signer.to_vec(),
            clock: ClockInfo {
                clock: attest.clock_info.clock.value(),
                reset_count: attest.clock_info.reset_count.value(),
                restart_count: attest.clock_info.restart_count.value(),
                safe: bool::from(attest.clock_info.safe),
            },
            firmware_version: attest.firmware_version.value(),
            selection,
            pcr_digest: quote.pcr_digest.to_vec(),
        })
    }
}

/// A quote's signature (`TPMT_SIGNATURE`).
#[derive(Clone, PartialEq, Eq)]
pub enum QuoteSignature {
    /// RSASSA-PKCS1-v1_5.
    RsaSsa {
        /// The hash algorithm.
        hash: u16,
        /// The signature.
        signature: Vec<u8>,
    },
    /// ECDSA.
    Ecdsa {
        /// The hash algorithm.
        hash: u16,
        /// r.
        r: Vec<u8>,
        /// s.
        s: Vec<u8>,
    },
    /// Any other scheme (its `TPM_ALG_ID`).
    Other(u16),
}

impl fmt::Debug for QuoteSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RsaSsa { hash, signature } => {
                write!(f, "RSASSA hash {hash:#06x}, {} bytes", signature.len())
            }
            Self::Ecdsa { hash, .. } => write!(f, "ECDSA hash {hash:#06x}"),
            Self::Other(alg) => write!(f, "scheme {alg:#06x}"),
        }
    }
}

impl QuoteSignature {
    /// Parses a marshalled `TPMT_SIGNATURE` (what `tpm2_quote -s` writes).
    pub fn parse(bytes: &[u8]) -> Result<Self, TpmParseError> {
        let signature: TpmtSignature = unmarshal("TPMT_SIGNATURE", bytes)?;
        Ok(match &signature.signature {
            TpmuSignature::Rsassa(rsa) => Self::RsaSsa {
                hash: rsa.hash.value(),
                signature: rsa.sig.to_vec(),
            },
            TpmuSignature::Ecdsa(ecc) => Self::Ecdsa {
                hash: ecc.hash.value(),
                r: ecc.signature_r.to_vec(),
                s: ecc.signature_s.to_vec(),
            },
            _ => Self::Other(signature.sig_alg.value()),
        })
    }
}

/// A public key a TPM object holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicKey {
    /// RSA (modulus, exponent).
    Rsa(rsa::RsaPublicKey),
    /// ECC on NIST P-256.
    P256(p256::ecdsa::VerifyingKey),
}

/// A parsed `TPM2B_PUBLIC`: an AK or an EK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TpmPublic {
    /// The bytes it was parsed from (the TPM2B, size included).
    pub bytes: Vec<u8>,
    /// The name algorithm (`TPM_ALG_ID`).
    pub name_alg: u16,
    /// `TPMA_OBJECT`.
    pub attributes: u32,
    /// The object's authorization policy digest.
    pub auth_policy: Vec<u8>,
    /// The public key.
    pub key: PublicKey,
    /// For a storage key (an EK): the symmetric algorithm, key bits and
    /// mode its children's (and credentials') inner wrapping uses.
    pub symmetric: Option<(u16, u16, u16)>,
}

/// Why a signature does not verify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Scheme, hash or key type the verifier does not accept together.
    #[error("a {signature:?} signature cannot be checked with a {key} key")]
    Scheme {
        /// The signature.
        signature: QuoteSignature,
        /// The key type.
        key: &'static str,
    },
    /// The signature does not verify.
    #[error("the signature does not verify with this key")]
    Invalid,
}

impl TpmPublic {
    /// Parses a `TPM2B_PUBLIC` (what `tpm2_readpublic -o` writes) of an RSA
    /// or ECC P-256 key whose name algorithm is SHA-256.
    pub fn parse(bytes: &[u8]) -> Result<Self, TpmParseError> {
        const NAME: &str = "TPM2B_PUBLIC";
        let public: Tpm2bPublic = unmarshal(NAME, bytes)?;
        let public = public.inner;
        let unsupported = |what: String| TpmParseError::Unsupported {
            structure: NAME,
            what,
        };
        if public.name_alg != TpmAlgId::Sha256 {
            return Err(unsupported(format!(
                "name algorithm {:?}, not SHA-256",
                public.name_alg
            )));
        }
        let (key, symmetric) = match (&public.parameters, &public.unique) {
            (TpmuPublicParms::Rsa(params), TpmuPublicId::Rsa(modulus)) => {
                let exponent = match params.exponent.value() {
                    0 => 65_537,
                    e => e,
                };
                let key = rsa::RsaPublicKey::new(
                    rsa::BigUint::from_bytes_be(modulus),
                    rsa::BigUint::from(exponent),
                )
                .map_err(|err| unsupported(format!("RSA key: {err}")))?;
                (PublicKey::Rsa(key), symmetric_of(&params.symmetric))
            }
            (TpmuPublicParms::Ecc(params), TpmuPublicId::Ecc(point)) => {
                if params.curve_id != TpmEccCurve::NistP256 {
                    return Err(unsupported(format!(
                        "ECC curve {:?}, not NIST P-256",
                        params.curve_id
                    )));
                }
                let (x, y) = (pad32(&point.x), pad32(&point.y));
                let (Some(x), Some(y)) = (x, y) else {
                    return Err(unsupported("ECC point coordinates over 32 bytes".into()));
                };
                let point =
                    p256::EncodedPoint::from_affine_coordinates(&x.into(), &y.into(), false);
                let key = p256::ecdsa::VerifyingKey::from_encoded_point(&point)
                    .map_err(|_| unsupported("ECC point is not on P-256".into()))?;
                (PublicKey::P256(key), symmetric_of(&params.symmetric))
            }
            _ => {
                return Err(unsupported(format!(
                    "object type {:?}, not RSA or ECC",
                    public.object_type
                )));
            }
        };
        Ok(Self {
            bytes: bytes.to_vec(),
            name_alg: public.name_alg.value(),
            attributes: public.object_attributes.bits(),
            auth_policy: public.auth_policy.to_vec(),
            key,
            symmetric,
        })
    }

    /// The `TPMT_PUBLIC` bytes (the TPM2B without its size).
    pub fn public_area(&self) -> &[u8] {
        &self.bytes[2..]
    }

    /// The object's name: its name algorithm (big-endian) and the SHA-256
    /// of its `TPMT_PUBLIC`.
    pub fn name(&self) -> Vec<u8> {
        let mut name = self.name_alg.to_be_bytes().to_vec();
        name.extend_from_slice(&Sha256::digest(self.public_area()));
        name
    }

    /// Whether it is a restricted signing key that never leaves its TPM
    /// (what an AK must be).
    pub fn is_attestation_key(&self) -> bool {
        let needed = TpmaObject::RESTRICTED.bits()
            | TpmaObject::SIGN_ENCRYPT.bits()
            | TpmaObject::FIXED_TPM.bits()
            | TpmaObject::FIXED_PARENT.bits()
            | TpmaObject::SENSITIVE_DATA_ORIGIN.bits();
        self.attributes & needed == needed && self.attributes & TpmaObject::DECRYPT.bits() == 0
    }

    /// A short description: key type and size.
    pub fn describe(&self) -> String {
        match &self.key {
            PublicKey::Rsa(key) => {
                use rsa::traits::PublicKeyParts as _;
                format!("RSA-{}", key.size() * 8)
            }
            PublicKey::P256(_) => "ECC P-256".into(),
        }
    }

    /// SHA-256 of the TPM2B bytes, hex: how AKs are named in reports.
    pub fn fingerprint(&self) -> String {
        hex(&Sha256::digest(&self.bytes))
    }

    /// Checks a quote's signature over `message` (the `TPMS_ATTEST`).
    pub fn verify(&self, message: &[u8], signature: &QuoteSignature) -> Result<(), SignatureError> {
        use p256::ecdsa::signature::Verifier as _;
        match (&self.key, signature) {
            (
                PublicKey::Rsa(key),
                QuoteSignature::RsaSsa {
                    hash: TPM_ALG_SHA256,
                    signature,
                },
            ) => {
                let key = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key.clone());
                let signature = rsa::pkcs1v15::Signature::try_from(signature.as_slice())
                    .map_err(|_| SignatureError::Invalid)?;
                key.verify(message, &signature)
                    .map_err(|_| SignatureError::Invalid)
            }
            (
                PublicKey::P256(key),
                QuoteSignature::Ecdsa {
                    hash: TPM_ALG_SHA256,
                    r,
                    s,
                },
            ) => {
                let (Some(r), Some(s)) = (pad32(r), pad32(s)) else {
                    return Err(SignatureError::Invalid);
                };
                let signature = p256::ecdsa::Signature::from_scalars(r, s)
                    .map_err(|_| SignatureError::Invalid)?;
                key.verify(message, &signature)
                    .map_err(|_| SignatureError::Invalid)
            }
            (key, signature) => Err(SignatureError::Scheme {
                signature: signature.clone(),
                key: match key {
                    PublicKey::Rsa(_) => "RSA (RSASSA SHA-256)",
                    PublicKey::P256(_) => "P-256 (ECDSA SHA-256)",
                },
            }),
        }
    }
}

fn symmetric_of(def: &tpm2_protocol::data::TpmtSymDefObject) -> Option<(u16, u16, u16)> {
    match (&def.key_bits, &def.mode) {
        (TpmuSymKeyBits::Aes(bits), TpmuSymMode::Aes(mode)) => {
            Some((def.algorithm.value(), bits.value(), mode.value()))
        }
        _ => None,
    }
}

/// Left-pads a big-endian integer of at most 32 bytes.
fn pad32(bytes: &[u8]) -> Option<[u8; 32]> {
    let bytes = match bytes.iter().position(|&b| b != 0) {
        Some(first) => &bytes[first..],
        None => &[],
    };
    if bytes.len() > 32 {
        return None;
    }
    let mut out = [0u8; 32];
    out[32 - bytes.len()..].copy_from_slice(bytes);
    Some(out)
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// A selection for people: `sha256:9,12,15`.
pub fn describe_selection(selection: &[PcrSelection]) -> String {
    if selection.is_empty() {
        return "nothing".into();
    }
    selection
        .iter()
        .map(|s| {
            let bank = match s.hash {
                TPM_ALG_SHA256 => "sha256".to_string(),
                0x0004 => "sha1".to_string(),
                0x000c => "sha384".to_string(),
                other => format!("alg{other:#06x}"),
            };
            let pcrs: Vec<String> = s.pcrs().map(|p| p.to_string()).collect();
            format!("{bank}:{}", pcrs.join(","))
        })
        .collect::<Vec<_>>()
        .join("+")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A quote tpm2-tools 5.4 wrote on swtpm 0.7.1 (`tpm2_quote -l
    /// sha256:9,12,15 -q 00112233445566778899aabbccddeeff -m`).
    const MESSAGE: &str = "ff54434780180022000b70fea1c6d2bfafd632915f4de15c5a3b27f6ebe88c1b45f6e70a974c761e0d700010\
00112233445566778899aabbccddeeff0000000000002424000000020000000001201910230016363600000001\
000b03009200\
00207b19771d72cd4e8522c9008d101ef8aae1afc7b77ab062be4476676897f1f39c";

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn parses_a_real_quote() {
        let bytes = unhex(MESSAGE);
        assert_eq!(
            attest_header(&bytes),
            Some((TPM_GENERATED_VALUE, TPM_ST_ATTEST_QUOTE))
        );
        let quote = QuoteInfo::parse(&bytes).unwrap();
        assert_eq!(quote.extra_data, unhex("00112233445566778899aabbccddeeff"));
        assert_eq!(quote.clock.clock, 0x2424);
        assert_eq!(quote.clock.reset_count, 2);
        assert_eq!(quote.clock.restart_count, 0);
        assert!(quote.clock.safe);
        assert_eq!(describe_selection(&quote.selection), "sha256:9,12,15");
        assert_eq!(quote.pcr_digest.len(), 32);
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            QuoteInfo::parse(&trailing),
            Err(TpmParseError::Trailing { extra: 1, .. })
        ));
        let mut magic = bytes.clone();
        magic[0] = 0;
        assert!(QuoteInfo::parse(&magic).is_err());
        assert!(QuoteInfo::parse(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn pads_and_strips_integers() {
        let mut one = [0u8; 32];
        one[31] = 1;
        assert_eq!(pad32(&[0, 1]), Some(one));
        assert_eq!(pad32(&[0; 33]), Some([0; 32]));
        assert_eq!(pad32(&[1; 33]), None);
    }
}
