//! The sealed manifest (v1): what was built and how it must be launched.
//!
//! `vigil-build seal` writes it as `manifest.json` and signs its exact bytes;
//! `vigil-dom0` and the verifier parse it with [`Manifest::parse`]. The format
//! is documented in `docs/manifest.md`.
//!
//! # Canonical form
//! A manifest has exactly one byte form: [`Manifest::emit`] writes the fields in
//! declaration order, pretty-printed with two-space indentation, and one final
//! newline. [`Manifest::parse`] refuses anything else (unknown fields, other
//! whitespace, other field order), so sealing the same inputs twice gives the
//! same bytes, and a reader never acts on a field the signer did not write.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::refblock::{MAX_INTERVAL_MS, MAX_REGIONS, MIN_INTERVAL_MS, Reaction, RegionName};

/// The `schema` field of every v1 manifest.
pub const SCHEMA: &str = "vigil.manifest.v1";

/// A SHA-256 digest, written as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// Parses 64 lowercase hex digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Some(Self(out))
    }
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Digest::from_hex(&text)
            .ok_or_else(|| serde::de::Error::custom("a SHA-256 digest is 64 lowercase hex digits"))
    }
}

/// The sealed service's identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Its name.
    pub name: String,
    /// Its version, for people.
    pub version: String,
    /// Increases with every release that fixes a security problem; dom0 refuses
    /// a bundle below its configured floor (rollback protection).
    pub security_version: u64,
}

/// A file of the bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// Its name inside the bundle directory.
    pub file: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// SHA-256 of its bytes.
    pub sha256: Digest,
}

/// Where the reference block lies in the image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceBlock {
    /// The section that holds it.
    pub section: String,
    /// Its link-time virtual address.
    pub vaddr: u64,
    /// Its offset in the image file.
    pub file_offset: u64,
    /// Its length in bytes.
    pub bytes: u64,
}

/// A measured region: code or read-only data, as it is in guest memory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasuredRegion {
    /// What it holds (`code`, `rodata`).
    pub name: String,
    /// The ELF sections it spans, for people.
    pub sections: Vec<String>,
    /// Its link-time virtual address (from its ELF load segment).
    pub vaddr: u64,
    /// Its offset in the image file (its bytes in memory are these bytes).
    pub file_offset: u64,
    /// Its length in bytes.
    pub bytes: u64,
    /// SHA-256 of its bytes.
    pub sha256: Digest,
    /// Present only for a relocated region (`relro`, a compatible extension
    /// of v1, see `docs/manifest.md`): the load address its digest holds
    /// for. Its bytes in memory are then the file bytes at `file_offset`
    /// with the image's `R_X86_64_RELATIVE` relocations applied for this
    /// address ([`super::relro::relocate`]). Absent (not written) for
    /// regions whose memory is their file bytes, so manifests without a
    /// relocated region keep their exact bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relocated_at: Option<u64>,
}

/// A loaded part of the image that is deliberately not measured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExcludedRegion {
    /// What it holds.
    pub name: String,
    /// Its link-time virtual address.
    pub vaddr: u64,
    /// Its length in guest memory.
    pub bytes: u64,
    /// Why it cannot be measured.
    pub reason: String,
}

/// What the in-image watchdog does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Watchdog {
    /// How often it re-hashes the measured regions, in milliseconds.
    pub interval_ms: u32,
    /// What it does on a mismatch.
    pub reaction: Reaction,
}

/// How the image was built.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// The image flavor (`hvm`, `virtio`, `microvm`).
    pub flavor: String,
    /// The pinned toolchain.
    pub toolchain: String,
    /// `rustc --version` of that toolchain.
    pub rustc: String,
    /// The kernel crate and version, e.g. `hermit-kernel 0.11.0`.
    pub kernel: String,
    /// The kernel's cargo features.
    pub kernel_features: Vec<String>,
    /// The source revision (a git commit, `-dirty` if the tree had changes).
    pub source_revision: String,
    /// `SOURCE_DATE_EPOCH` of the build (the commit time).
    pub source_date_epoch: u64,
}

/// A v1 manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// The service.
    pub service: Service,
    /// The image (Hermit kernel and service, one ELF), sealed.
    pub image: Artifact,
    /// The PVH boot loader.
    pub loader: Artifact,
    /// The kernel command line the guest must get, exactly.
    pub kernel_cmdline: String,
    /// The measured regions, in address order.
    pub regions: Vec<MeasuredRegion>,
    /// The loaded parts that are not measured, and why.
    pub excluded: Vec<ExcludedRegion>,
    /// The reference block sealing filled in.
    pub reference_block: ReferenceBlock,
    /// The watchdog's policy.
    pub watchdog: Watchdog,
    /// PCR 9 (SHA-256 bank) after dom0 extended the loader and the image.
    pub pcr9: Digest,
    /// How the image was built.
    pub provenance: Provenance,
}

/// Why bytes are not a valid v1 manifest.
#[derive(Debug)]
#[non_exhaustive]
pub enum ManifestError {
    /// Not JSON, or not a manifest's structure.
    Json(serde_json::Error),
    /// The `schema` field is not [`SCHEMA`].
    Schema(String),
    /// Valid, but not in canonical form.
    NotCanonical,
    /// A field's value is not allowed.
    Invalid(&'static str),
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Json(err) => write!(f, "not a v1 manifest: {err}"),
            Self::Schema(schema) => write!(f, "manifest schema is {schema:?}, expected {SCHEMA:?}"),
            Self::NotCanonical => f.write_str(
                "manifest is not in canonical form (field order, two-space indentation, one final newline)",
            ),
            Self::Invalid(what) => write!(f, "invalid manifest: {what}"),
        }
    }
}

impl core::error::Error for ManifestError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Self::Json(err) => Some(err),
            _ => None,
        }
    }
}

impl Manifest {
    /// The canonical bytes: what is signed.
    pub fn emit(&self) -> Vec<u8> {
        // Serializing these types cannot fail: every map key is a string.
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// Parses and checks canonical manifest bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        let manifest: Manifest = serde_json::from_slice(bytes).map_err(ManifestError::Json)?;
        if manifest.schema != SCHEMA {
            return Err(ManifestError::Schema(manifest.schema));
        }
        manifest.validate()?;
        if manifest.emit() != bytes {
            return Err(ManifestError::NotCanonical);
        }
        Ok(manifest)
    }

    /// The cross-field checks [`Manifest::parse`] makes.
    pub fn validate(&self) -> Result<(), ManifestError> {
        let invalid = |what| Err(ManifestError::Invalid(what));
        if self.service.name.is_empty() {
            return invalid("service.name is empty");
        }
        if self.regions.is_empty() || self.regions.len() > MAX_REGIONS {
            return invalid("regions: there must be 1 to 8 measured regions");
        }
        let mut end = 0u64;
        for region in &self.regions {
            if RegionName::new(&region.name).is_err() {
                return invalid(
                    "regions: a name must be 1 to 16 ASCII letters, digits, '.', '_' or '-'",
                );
            }
            if region.bytes == 0 {
                return invalid("regions: a region is empty");
            }
            if region.vaddr < end {
                return invalid("regions: not in address order, or overlapping");
            }
            let (Some(region_end), Some(_)) = (
                region.vaddr.checked_add(region.bytes),
                region.file_offset.checked_add(region.bytes),
            ) else {
                return invalid("regions: a region wraps around");
            };
            if region
                .relocated_at
                .is_some_and(|at| at != super::relro::KERNEL_LOAD_ADDRESS)
            {
                return invalid(
                    "regions: relocated_at is not the kernel load address the loader uses (0x200000)",
                );
            }
            if region.file_offset.saturating_add(region.bytes) > self.image.bytes {
                return invalid("regions: a region lies beyond the end of the image");
            }
            end = region_end;
        }
        let block = &self.reference_block;
        if block.bytes != super::refblock::SIZE as u64 {
            return invalid("reference_block.bytes is not the v1 block size");
        }
        if block.file_offset.saturating_add(block.bytes) > self.image.bytes {
            return invalid("reference_block lies beyond the end of the image");
        }
        if self.regions.iter().any(|r| {
            r.vaddr < block.vaddr.saturating_add(block.bytes)
                && block.vaddr < r.vaddr.saturating_add(r.bytes)
        }) {
            return invalid("reference_block overlaps a measured region");
        }
        if !(MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&self.watchdog.interval_ms) {
            return invalid("watchdog.interval_ms is outside 10..=3600000");
        }
        if self.kernel_cmdline.contains('\0') {
            return invalid("kernel_cmdline contains a NUL byte");
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use alloc::borrow::ToOwned;
    use alloc::vec;

    use super::*;

    pub(crate) fn sample() -> Manifest {
        Manifest {
            schema: SCHEMA.to_owned(),
            service: Service {
                name: "vigil-service".to_owned(),
                version: "0.1.0".to_owned(),
                security_version: 1,
            },
            image: Artifact {
                file: "vigil-image".to_owned(),
                bytes: 4_000_000,
                sha256: Digest([1; 32]),
            },
            loader: Artifact {
                file: "vigil-loader".to_owned(),
                bytes: 1_000_000,
                sha256: Digest([2; 32]),
            },
            kernel_cmdline: "-- --port=8080".to_owned(),
            regions: vec![
                MeasuredRegion {
                    name: "rodata".to_owned(),
                    sections: vec![".rodata".to_owned()],
                    vaddr: 0,
                    file_offset: 0,
                    bytes: 0x2a76c,
                    sha256: Digest([3; 32]),
                    relocated_at: None,
                },
                MeasuredRegion {
                    name: "code".to_owned(),
                    sections: vec![".text".to_owned()],
                    vaddr: 0x2b770,
                    file_offset: 0x2a770,
                    bytes: 0xdd73f,
                    sha256: Digest([4; 32]),
                    relocated_at: None,
                },
            ],
            excluded: vec![ExcludedRegion {
                name: "data".to_owned(),
                vaddr: 0x109eb0,
                bytes: 0x13150,
                reason: "writable".to_owned(),
            }],
            reference_block: ReferenceBlock {
                section: ".vigil_ref".to_owned(),
                vaddr: 0x11d690,
                file_offset: 0x11a690,
                bytes: 1024,
            },
            watchdog: Watchdog {
                interval_ms: 1000,
                reaction: Reaction::Degrade,
            },
            pcr9: Digest([5; 32]),
            provenance: Provenance {
                flavor: "hvm".to_owned(),
                toolchain: "nightly-2025-03-15".to_owned(),
                rustc: "rustc 1.87.0-nightly".to_owned(),
                kernel: "hermit-kernel 0.11.0".to_owned(),
                kernel_features: vec!["pci".to_owned(), "rtl8139".to_owned()],
                source_revision: "abc".to_owned(),
                source_date_epoch: 0,
            },
        }
    }

    #[test]
    fn round_trips_and_is_canonical() {
        let bytes = sample().emit();
        assert_eq!(Manifest::parse(&bytes).unwrap(), sample());
        assert!(bytes.ends_with(b"}\n"));
        let text = core::str::from_utf8(&bytes).unwrap();
        assert!(text.starts_with("{\n  \"schema\": \"vigil.manifest.v1\",\n  \"service\": {"));
        assert!(text.contains("\"reaction\": \"degrade\""));
        assert!(text.contains(&"03".repeat(32)));
    }

    #[test]
    fn a_relocated_region_is_a_compatible_extension() {
        // Without one, the field is not written at all.
        assert!(
            !String::from_utf8(sample().emit())
                .unwrap()
                .contains("relocated_at")
        );
        let mut relro = sample();
        relro.regions.push(MeasuredRegion {
            name: "relro".to_owned(),
            sections: vec![".data.rel.ro".to_owned(), ".got".to_owned()],
            vaddr: 0x120b28,
            file_offset: 0x11eb28,
            bytes: 0x12dc8,
            sha256: Digest([6; 32]),
            relocated_at: Some(0x20_0000),
        });
        let bytes = relro.emit();
        let text = core::str::from_utf8(&bytes).unwrap();
        assert!(text.contains("\"relocated_at\": 2097152\n"), "{text}");
        assert_eq!(Manifest::parse(&bytes).unwrap(), relro);
        relro.regions[2].relocated_at = Some(0x80_0000);
        assert!(matches!(
            Manifest::parse(&relro.emit()),
            Err(ManifestError::Invalid(_))
        ));
    }

    #[test]
    fn non_canonical_bytes_are_refused() {
        let bytes = sample().emit();
        let compact = serde_json::to_vec(&sample()).unwrap();
        assert!(matches!(
            Manifest::parse(&compact),
            Err(ManifestError::NotCanonical)
        ));
        let mut spaced = bytes.clone();
        spaced.push(b'\n');
        assert!(matches!(
            Manifest::parse(&spaced),
            Err(ManifestError::NotCanonical)
        ));
    }

    #[test]
    fn bad_manifests_are_refused() {
        let text = String::from_utf8(sample().emit()).unwrap();
        let schema = text.replace("vigil.manifest.v1", "vigil.manifest.v2");
        assert!(matches!(
            Manifest::parse(schema.as_bytes()),
            Err(ManifestError::Schema(_))
        ));
        let unknown = text.replace("\"schema\"", "\"extra\": 1,\n  \"schema\"");
        assert!(matches!(
            Manifest::parse(unknown.as_bytes()),
            Err(ManifestError::Json(_))
        ));
        let upper = text.replace(&"03".repeat(32), &"0A".repeat(32));
        assert!(matches!(
            Manifest::parse(upper.as_bytes()),
            Err(ManifestError::Json(_))
        ));
        assert!(matches!(
            Manifest::parse(b"[]"),
            Err(ManifestError::Json(_))
        ));

        let mut slow = sample();
        slow.watchdog.interval_ms = 1;
        assert!(matches!(
            Manifest::parse(&slow.emit()),
            Err(ManifestError::Invalid(_))
        ));
        let mut overlapping = sample();
        overlapping.reference_block.vaddr = 0x2b770;
        assert!(matches!(
            Manifest::parse(&overlapping.emit()),
            Err(ManifestError::Invalid(_))
        ));
        let mut unordered = sample();
        unordered.regions.reverse();
        assert!(matches!(
            Manifest::parse(&unordered.emit()),
            Err(ManifestError::Invalid(_))
        ));
        let mut beyond = sample();
        beyond.image.bytes = 10;
        assert!(matches!(
            Manifest::parse(&beyond.emit()),
            Err(ManifestError::Invalid(_))
        ));
    }

    #[test]
    fn digests_are_strict_hex() {
        assert_eq!(Digest::from_hex(&"ab".repeat(32)), Some(Digest([0xab; 32])));
        assert_eq!(Digest::from_hex(&"AB".repeat(32)), None);
        assert_eq!(Digest::from_hex("ab"), None);
        assert_eq!(Digest::from_hex(&"zz".repeat(32)), None);
    }
}
