//! The initrd trailer, version 2: the per-boot entropy seed, and the
//! per-boot report key when there is one.
//!
//! [v1](crate::v1::handover) carried the report key only. The guest's
//! kernel also needs a secret, unpredictable seed for its random pool (TCP
//! sequence numbers, DHCP transaction ids, Rust's hash seeds, anything that
//! calls `sys_read_entropy`): QEMU's TCG has no RDSEED, and a pool seeded
//! from the time-stamp counter alone is guessable. dom0 makes both per boot from
//! the host's `getrandom` and hands them over the same private way: a
//! per-boot copy of the initrd, the verified image bytes unchanged,
//! followed by this trailer. Neither secret is logged, written to the event
//! log or extended into a PCR.
//!
//! The loader writes the report key into the reference block's key slot
//! ([`crate::v1::refblock::KEY_SLOT`]) and the entropy seed into the
//! kernel's entropy slot ([`crate::v1::entropy`]), both in guest memory,
//! then wipes the trailer and its own copies. A trailer may carry the
//! entropy seed without a key (a boot that must not get the key).
//!
//! # Layout (v2, little-endian, at the very end of the module)
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 32 | the entropy seed |
//! | 32 | 32 | the report key's ed25519 secret seed; zero without a key |
//! | 64 | 4 | contents: bit 0 set = a report key is present; other bits zero |
//! | 68 | 4 | zero |
//! | 72 | 4 | trailer version, 2 |
//! | 76 | 4 | trailer size, [`TRAILER_SIZE`] |
//! | 80 | 8 | magic `VIGILKEY` |
//!
//! The last 16 bytes are laid out as in v1 (version, size, magic), so a
//! reader tells the versions apart from the end of the module;
//! [`split`] reads both. A loader that knows only v1 does not recognise a
//! v2 trailer (it would load the module as an image with 88 bytes too
//! many, and hand over no key): a sealed bundle brings its own loader, so
//! a bundle sealed before v2 existed must be sealed again to be launched
//! by a dom0 that writes v2.

use core::fmt;

use crate::v1::handover as v1;

/// The v2 trailer's size.
pub const TRAILER_SIZE: usize = 88;
/// Its last eight bytes (as in v1).
pub const TRAILER_MAGIC: [u8; 8] = v1::TRAILER_MAGIC;
/// The trailer version this module writes.
pub const TRAILER_VERSION: u32 = 2;
/// The contents bit that says a report key is present.
const HAS_KEY: u32 = 1;

/// The secrets a trailer hands over. `Debug` shows which are present,
/// never their bytes. Not `Clone`: no copy is made by accident; the one
/// reader that holds them, the loader, wipes them itself (volatile writes)
/// once they are in place.
#[derive(PartialEq, Eq)]
pub struct Handover {
    /// The per-boot entropy seed (v2 always carries one; v1 none).
    pub entropy: Option<[u8; 32]>,
    /// The per-boot report key's secret seed.
    pub key: Option<[u8; 32]>,
}

impl fmt::Debug for Handover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |present: bool| if present { "<redacted>" } else { "none" };
        f.debug_struct("Handover")
            .field("entropy", &shown(self.entropy.is_some()))
            .field("key", &shown(self.key.is_some()))
            .finish()
    }
}

/// Why the end of a module is a trailer this module cannot read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrailerError {
    /// The module ends with the magic, but the version and size are not a
    /// known pair (v1 and 48 bytes, v2 and 88), or the module is shorter
    /// than the size says.
    Unknown {
        /// The version field.
        version: u32,
        /// The size field.
        size: u32,
    },
    /// A v2 trailer whose contents word has unknown bits, or whose reserved
    /// or absent-key bytes are not zero.
    Malformed,
}

impl fmt::Display for TrailerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown { version, size } => write!(
                f,
                "the initrd ends with a handover trailer of version {version} and size {size}, \
                 which this loader does not read (it reads v1 and v2)"
            ),
            Self::Malformed => f.write_str("the initrd's v2 handover trailer is malformed"),
        }
    }
}

impl core::error::Error for TrailerError {}

/// The v2 trailer for `entropy` and, if given, the report key `key`.
pub fn trailer(entropy: &[u8; 32], key: Option<&[u8; 32]>) -> [u8; TRAILER_SIZE] {
    let mut out = [0u8; TRAILER_SIZE];
    out[..32].copy_from_slice(entropy);
    if let Some(key) = key {
        out[32..64].copy_from_slice(key);
        out[64..68].copy_from_slice(&HAS_KEY.to_le_bytes());
    }
    out[72..76].copy_from_slice(&TRAILER_VERSION.to_le_bytes());
    out[76..80].copy_from_slice(&(TRAILER_SIZE as u32).to_le_bytes());
    out[80..].copy_from_slice(&TRAILER_MAGIC);
    out
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn seed_at(bytes: &[u8], at: usize) -> [u8; 32] {
    let mut seed = [0u8; 32];
    seed.copy_from_slice(&bytes[at..at + 32]);
    seed
}

/// Splits a module into the image and what its trailer hands over: a v2
/// trailer, a v1 trailer (a key, no entropy seed), or none (the whole
/// module is the image). A module that ends with the trailer magic but no
/// trailer this module reads is an error, never an image.
pub fn split(module: &[u8]) -> Result<(&[u8], Option<Handover>), TrailerError> {
    let Some(tail_at) = module.len().checked_sub(16) else {
        return Ok((module, None));
    };
    let tail = &module[tail_at..];
    if tail[8..] != TRAILER_MAGIC {
        return Ok((module, None));
    }
    let (version, size) = (u32_at(tail, 0), u32_at(tail, 4));
    let unknown = TrailerError::Unknown { version, size };
    let at = match (version, size as usize) {
        (v1::TRAILER_VERSION, v1::TRAILER_SIZE) | (TRAILER_VERSION, TRAILER_SIZE) => {
            module.len().checked_sub(size as usize).ok_or(unknown)?
        }
        _ => return Err(unknown),
    };
    let trailer = &module[at..];
    let handover = if version == v1::TRAILER_VERSION {
        Handover {
            entropy: None,
            key: Some(seed_at(trailer, 0)),
        }
    } else {
        let contents = u32_at(trailer, 64);
        let has_key = contents == HAS_KEY;
        if contents & !HAS_KEY != 0
            || trailer[68..72] != [0; 4]
            || (!has_key && trailer[32..64].iter().any(|&b| b != 0))
        {
            return Err(TrailerError::Malformed);
        }
        Handover {
            entropy: Some(seed_at(trailer, 0)),
            key: has_key.then(|| seed_at(trailer, 32)),
        }
    };
    Ok((&module[..at], Some(handover)))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::ToString;
    use std::vec::Vec;

    use super::*;

    fn module(image: &[u8], trailer: &[u8]) -> Vec<u8> {
        let mut out = image.to_vec();
        out.extend_from_slice(trailer);
        out
    }

    #[test]
    fn a_v2_trailer_splits_off_exactly() {
        let image = [7u8; 100];
        let with_key = module(&image, &trailer(&[1; 32], Some(&[2; 32])));
        let (loaded, handover) = split(&with_key).unwrap();
        assert_eq!(loaded, &image[..]);
        assert_eq!(
            handover,
            Some(Handover {
                entropy: Some([1; 32]),
                key: Some([2; 32]),
            })
        );
        let without_key = module(&image, &trailer(&[3; 32], None));
        let (loaded, handover) = split(&without_key).unwrap();
        assert_eq!(loaded, &image[..]);
        assert_eq!(
            handover,
            Some(Handover {
                entropy: Some([3; 32]),
                key: None,
            })
        );
    }

    #[test]
    fn fixture_bytes_are_stable() {
        let bytes = trailer(&[0xaa; 32], Some(&[0xbb; 32]));
        assert_eq!(&bytes[..32], &[0xaa; 32]);
        assert_eq!(&bytes[32..64], &[0xbb; 32]);
        assert_eq!(
            &bytes[64..88],
            b"\x01\0\0\0\0\0\0\0\x02\0\0\0\x58\0\0\0VIGILKEY"
        );
        let no_key = trailer(&[0xaa; 32], None);
        assert_eq!(&no_key[32..72], &[0; 40]);
    }

    #[test]
    fn a_v1_trailer_still_reads_as_a_key_without_entropy() {
        let image = [7u8; 100];
        let old = module(&image, &v1::trailer(&[5; 32]));
        let (loaded, handover) = split(&old).unwrap();
        assert_eq!(loaded, &image[..]);
        assert_eq!(
            handover,
            Some(Handover {
                entropy: None,
                key: Some([5; 32]),
            })
        );
    }

    #[test]
    fn without_a_trailer_the_module_is_the_image() {
        let plain = [1u8; 200];
        assert_eq!(split(&plain), Ok((&plain[..], None)));
        assert_eq!(split(&plain[..10]), Ok((&plain[..10], None)));
        assert_eq!(split(&[]), Ok((&[][..], None)));
    }

    #[test]
    fn an_unknown_or_malformed_trailer_is_an_error() {
        let image = [7u8; 100];
        let good = module(&image, &trailer(&[1; 32], Some(&[2; 32])));
        let end = good.len();
        let mut version3 = good.clone();
        version3[end - 16] = 3;
        assert_eq!(
            split(&version3),
            Err(TrailerError::Unknown {
                version: 3,
                size: 88
            })
        );
        let mut v1_sized_88 = good.clone();
        v1_sized_88[end - 16] = 1;
        assert!(matches!(
            split(&v1_sized_88),
            Err(TrailerError::Unknown { .. })
        ));
        // Shorter than its size says.
        assert!(split(&good[good.len() - 40..]).is_err());
        let mut flags = good.clone();
        flags[end - 24] = 3;
        assert_eq!(split(&flags), Err(TrailerError::Malformed));
        let mut reserved = good.clone();
        reserved[end - 18] = 1;
        assert_eq!(split(&reserved), Err(TrailerError::Malformed));
        let mut key_without_flag = module(&image, &trailer(&[1; 32], None));
        let at = key_without_flag.len() - TRAILER_SIZE + 40;
        key_without_flag[at] = 1;
        assert_eq!(split(&key_without_flag), Err(TrailerError::Malformed));
        assert!(
            TrailerError::Unknown {
                version: 3,
                size: 88
            }
            .to_string()
            .contains("version 3")
        );
    }

    #[test]
    fn debug_never_shows_the_secrets() {
        let handover = Handover {
            entropy: Some([0x41; 32]),
            key: None,
        };
        let shown = std::format!("{handover:?}");
        assert_eq!(shown, r#"Handover { entropy: "<redacted>", key: "none" }"#);
    }
}
