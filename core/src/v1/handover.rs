//! Handing the per-boot report key to the guest: the initrd trailer, v1.
//!
//! Superseded by [v2](crate::v2::handover), which also carries the per-boot
//! entropy seed; dom0 writes v2, and the loader reads both (through
//! [`crate::v2::handover::split`]).
//!
//! The private key must reach the guest without appearing on a command line,
//! in a log, in the device tree or in the event log, and without changing the
//! verified image. dom0 writes a per-boot copy of the initrd: the verified
//! image bytes, unchanged, followed by this [`TRAILER_SIZE`]-byte trailer.
//! The loader finds the trailer at the end of the module, loads the image
//! from the bytes before it, writes the seed into the reference block's key
//! slot ([`super::refblock::KEY_SLOT`], state word [`super::refblock::KEY_STATE`]
//! set to 1) in guest memory, and wipes the trailer. dom0 deletes the file
//! once QEMU has read it.
//!
//! # Layout (v1, little-endian, at the very end of the module)
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 32 | the ed25519 secret seed |
//! | 32 | 4 | trailer version, 1 |
//! | 36 | 4 | trailer size, [`TRAILER_SIZE`] |
//! | 40 | 8 | magic `VIGILKEY` |

/// The trailer's size.
pub const TRAILER_SIZE: usize = 48;
/// Its last eight bytes.
pub const TRAILER_MAGIC: [u8; 8] = *b"VIGILKEY";
/// The trailer version this module reads and writes.
pub const TRAILER_VERSION: u32 = 1;

/// The trailer for `seed`.
pub fn trailer(seed: &[u8; 32]) -> [u8; TRAILER_SIZE] {
    let mut out = [0u8; TRAILER_SIZE];
    out[..32].copy_from_slice(seed);
    out[32..36].copy_from_slice(&TRAILER_VERSION.to_le_bytes());
    out[36..40].copy_from_slice(&(TRAILER_SIZE as u32).to_le_bytes());
    out[40..].copy_from_slice(&TRAILER_MAGIC);
    out
}

/// Splits a module into the image and the seed its trailer carries, if it
/// ends with a v1 trailer; otherwise the whole module is the image.
pub fn split(module: &[u8]) -> (&[u8], Option<[u8; 32]>) {
    let Some(at) = module.len().checked_sub(TRAILER_SIZE) else {
        return (module, None);
    };
    let tail = &module[at..];
    if tail[40..] != TRAILER_MAGIC
        || tail[32..36] != TRAILER_VERSION.to_le_bytes()
        || tail[36..40] != (TRAILER_SIZE as u32).to_le_bytes()
    {
        return (module, None);
    }
    let mut seed = [0u8; 32];
    seed.copy_from_slice(&tail[..32]);
    (&module[..at], Some(seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trailer_splits_off_exactly() {
        let mut module = [0u8; 100 + TRAILER_SIZE];
        module[..100].copy_from_slice(&[7u8; 100]);
        module[100..].copy_from_slice(&trailer(&[3; 32]));
        let (image, seed) = split(&module);
        assert_eq!(image, &[7u8; 100][..]);
        assert_eq!(seed, Some([3; 32]));
        assert_eq!(&module[100 + 40..], b"VIGILKEY");
    }

    #[test]
    fn without_a_trailer_the_module_is_the_image() {
        let module = [1u8; 200];
        assert_eq!(split(&module), (&module[..], None));
        assert_eq!(split(&module[..10]), (&module[..10], None));
        let mut wrong_version = [0u8; 60];
        wrong_version[12..].copy_from_slice(&trailer(&[3; 32]));
        wrong_version[12 + 32] = 2;
        assert_eq!(split(&wrong_version).1, None);
    }
}
