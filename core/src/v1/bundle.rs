//! Verifying a sealed bundle: signature, digests, reference block.
//!
//! A bundle is a directory with the image, the loader, `manifest.json` and
//! `manifest.sig` (the raw 64-byte ed25519 signature over the manifest's exact
//! bytes). [`verify`] works on their bytes, so the builder's `verify`, dom0's
//! launch and the verifier make exactly the same checks; reading the files is
//! the caller's job.
//!
//! Every check is reported with what was expected and what was found, whether
//! or not an earlier one failed, so a failing bundle says everything that is
//! wrong with it at once.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use ed25519_dalek::{Signature, VerifyingKey};

use super::events::{predict_pcr9, sha256};
use super::manifest::{Digest, Manifest, MeasuredRegion};
use super::refblock::{self, RefBlock, Region, RegionName, Sealed};

/// The file names inside a bundle.
pub const IMAGE_FILE: &str = "vigil-image";
/// The loader's file name inside a bundle.
pub const LOADER_FILE: &str = "vigil-loader";
/// The manifest's file name inside a bundle.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The signature's file name inside a bundle.
pub const SIGNATURE_FILE: &str = "manifest.sig";

/// The bytes of a bundle's files.
#[derive(Clone, Copy, Debug)]
pub struct BundleFiles<'a> {
    /// `manifest.json`.
    pub manifest: &'a [u8],
    /// `manifest.sig`.
    pub signature: &'a [u8],
    /// The image.
    pub image: &'a [u8],
    /// The loader.
    pub loader: &'a [u8],
}

/// One check and its outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "manifest", derive(serde::Serialize))]
pub struct Check {
    /// What was checked, e.g. `signature` or `region code sha256`.
    pub name: String,
    /// Whether it held.
    pub passed: bool,
    /// What it should be.
    pub expected: String,
    /// What it is.
    pub actual: String,
}

/// The outcome of [`verify`].
#[derive(Clone, Debug)]
pub struct Verdict {
    /// Every check made, in order.
    pub checks: Vec<Check>,
    /// The manifest, if it parsed.
    pub manifest: Option<Manifest>,
}

impl Verdict {
    /// Whether every check held.
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }

    /// The checks that failed.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.passed)
    }

    fn check(&mut self, name: impl Into<String>, expected: String, actual: String) {
        self.checks.push(Check {
            name: name.into(),
            passed: expected == actual,
            expected,
            actual,
        });
    }
}

/// Why a public key file cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// Not PEM text.
    NotPem,
    /// PEM, but with another label than `PUBLIC KEY` (e.g. a private key).
    Label(String),
    /// A public key for another algorithm (its OID).
    Algorithm(String),
    /// An ed25519 SubjectPublicKeyInfo that does not hold a valid key.
    Corrupt,
}

impl core::fmt::Display for KeyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NotPem => f.write_str("not a PEM file (expected -----BEGIN PUBLIC KEY-----)"),
            Self::Label(label) => write!(
                f,
                "a PEM {label:?}, not a \"PUBLIC KEY\" (an SPKI public key is expected here)"
            ),
            Self::Algorithm(oid) => write!(
                f,
                "a public key for algorithm {oid} ({}); Vigil uses ed25519 (1.3.101.112)",
                algorithm_name(oid)
            ),
            Self::Corrupt => f.write_str("an ed25519 public key whose content is corrupt"),
        }
    }
}

impl core::error::Error for KeyError {}

/// A name for people, for the key algorithms they are likely to try.
pub fn algorithm_name(oid: &str) -> &'static str {
    match oid {
        "1.3.101.112" => "ed25519",
        "1.3.101.113" => "ed448",
        "1.3.101.110" => "x25519",
        "1.2.840.113549.1.1.1" => "RSA",
        "1.2.840.10045.2.1" => "EC",
        "1.2.840.10040.4.1" => "DSA",
        _ => "unknown",
    }
}

/// Reads an ed25519 public key from SPKI PEM (what `vigil-build keygen` and
/// `openssl pkey -pubout` write).
pub fn public_key_from_pem(text: &str) -> Result<VerifyingKey, KeyError> {
    use ed25519_dalek::pkcs8::spki::SubjectPublicKeyInfoRef;
    use ed25519_dalek::pkcs8::spki::der::Decode;
    use ed25519_dalek::pkcs8::spki::der::pem;

    let (label, der) = pem::decode_vec(text.trim().as_bytes()).map_err(|_| KeyError::NotPem)?;
    if label != "PUBLIC KEY" {
        return Err(KeyError::Label(label.to_string()));
    }
    let info = SubjectPublicKeyInfoRef::from_der(&der).map_err(|_| KeyError::Corrupt)?;
    let oid = info.algorithm.oid.to_string();
    if oid != "1.3.101.112" {
        return Err(KeyError::Algorithm(oid));
    }
    VerifyingKey::try_from(info).map_err(|_| KeyError::Corrupt)
}

/// SHA-256 of a public key's 32 raw bytes, in hex: how keys are named.
pub fn key_fingerprint(key: &VerifyingKey) -> String {
    Digest(sha256(key.as_bytes())).to_string()
}

/// Checks a bundle against the key it must be signed with, and a minimum
/// security version.
pub fn verify(files: &BundleFiles<'_>, key: &VerifyingKey, min_security_version: u64) -> Verdict {
    let mut verdict = Verdict {
        checks: Vec::new(),
        manifest: None,
    };
    let signed_by = format!("valid ed25519 signature by key {}", key_fingerprint(key));
    let signature = match Signature::from_slice(files.signature) {
        Ok(signature) => match key.verify_strict(files.manifest, &signature) {
            Ok(()) => signed_by.clone(),
            Err(_) => {
                "signature does not verify with this key over these manifest bytes".to_string()
            }
        },
        Err(_) => format!(
            "{} bytes, not a 64-byte ed25519 signature",
            files.signature.len()
        ),
    };
    verdict.check("signature", signed_by, signature);

    let manifest = match Manifest::parse(files.manifest) {
        Ok(manifest) => {
            verdict.check(
                "manifest",
                "a canonical v1 manifest".into(),
                "a canonical v1 manifest".into(),
            );
            manifest
        }
        Err(err) => {
            verdict.check(
                "manifest",
                "a canonical v1 manifest".into(),
                err.to_string(),
            );
            return verdict;
        }
    };

    verdict.check(
        "security_version",
        format!("at least {min_security_version}"),
        if manifest.service.security_version >= min_security_version {
            format!("at least {min_security_version}")
        } else {
            manifest.service.security_version.to_string()
        },
    );
    for (what, artifact, bytes) in [
        ("image", &manifest.image, files.image),
        ("loader", &manifest.loader, files.loader),
    ] {
        verdict.check(
            format!("{what} bytes"),
            artifact.bytes.to_string(),
            bytes.len().to_string(),
        );
        verdict.check(
            format!("{what} sha256"),
            artifact.sha256.to_string(),
            Digest(sha256(bytes)).to_string(),
        );
    }
    verdict.check(
        "pcr9",
        manifest.pcr9.to_string(),
        Digest(predict_pcr9(
            &manifest.loader.sha256.0,
            &manifest.image.sha256.0,
        ))
        .to_string(),
    );

    let mut regions = Vec::new();
    for region in &manifest.regions {
        let actual = match region.relocated_at {
            Some(load_address) => relocated_digest(files.image, region, load_address),
            None => slice(files.image, region.file_offset, region.bytes).map_or_else(
                || "beyond the end of the image".to_string(),
                |bytes| Digest(sha256(bytes)).to_string(),
            ),
        };
        verdict.check(
            format!("region {} sha256", region.name),
            region.sha256.to_string(),
            actual,
        );
        if let Ok(name) = RegionName::new(&region.name) {
            regions.push(Region {
                name,
                vaddr: region.vaddr,
                len: region.bytes,
                sha256: region.sha256.0,
            });
        }
    }
    let block = &manifest.reference_block;
    let expected = Sealed::new(
        block.vaddr,
        manifest.watchdog.reaction,
        manifest.watchdog.interval_ms,
        &regions,
    )
    .map_or_else(
        |err| err.to_string(),
        |sealed| describe(&RefBlock::Sealed(sealed)),
    );
    let actual = match slice(files.image, block.file_offset, block.bytes) {
        None => "beyond the end of the image".to_string(),
        Some(bytes) => match refblock::parse(bytes) {
            Ok(parsed) => describe(&parsed),
            Err(err) => err.to_string(),
        },
    };
    verdict.check("reference block", expected, actual);
    verdict.manifest = Some(manifest);
    verdict
}

/// The digest of a relocated region (`relro`) as the loader leaves it in
/// memory at `load_address`, or why it cannot be computed.
fn relocated_digest(image: &[u8], region: &MeasuredRegion, load_address: u64) -> String {
    let range = match super::relro::find(image) {
        Ok(Some(range)) => range,
        Ok(None) => return "the image has no RELRO segment".to_string(),
        Err(err) => return format!("RELRO: {err}"),
    };
    if (range.vaddr, range.file_offset, range.bytes)
        != (region.vaddr, region.file_offset, region.bytes)
    {
        return format!(
            "the image's RELRO segment is {:#x}+{:#x} (file offset {:#x}), not this region",
            range.vaddr, range.bytes, range.file_offset
        );
    }
    let Ok(len) = usize::try_from(range.bytes) else {
        return "RELRO is too large".to_string();
    };
    let mut bytes = vec![0u8; len];
    match super::relro::relocate(image, &range, load_address, &mut bytes) {
        Ok(_) => Digest(sha256(&bytes)).to_string(),
        Err(err) => format!("RELRO: {err}"),
    }
}

fn slice(bytes: &[u8], offset: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    bytes.get(start..end)
}

/// A one-line description of a block, for expected/actual comparisons.
fn describe(block: &RefBlock) -> String {
    match block {
        RefBlock::Unsealed => "unsealed".to_string(),
        RefBlock::Sealed(sealed) => {
            let mut text = format!(
                "sealed at {:#x}, {} every {} ms",
                sealed.link_vaddr, sealed.reaction, sealed.interval_ms
            );
            for region in sealed.regions() {
                text.push_str(&format!(
                    "; {} {:#x}+{:#x} {}",
                    region.name.as_str(),
                    region.vaddr,
                    region.len,
                    Digest(region.sha256)
                ));
            }
            text
        }
    }
}
