//! The kernel's entropy slot: where the loader puts the per-boot entropy
//! seed for the kernel's random pool.
//!
//! Vigil's kernel (patch `0026a`, `unikernel/kernel/patches/`) reserves
//! [`SIZE`] bytes in a writable section of their own, [`SECTION`], holding
//! [`EMPTY`] in the image file. When dom0 hands the loader an entropy seed
//! (the initrd trailer, [`crate::v2::handover`]), the loader finds the
//! section by name in the image, writes the seed into the slot in guest
//! memory after the kernel is loaded and sets the state word to 1. At boot,
//! before anything asks for a random number, the kernel reads the slot,
//! mixes the seed with RDSEED and RDRAND (where the CPU has them) into its
//! ChaCha20 pool and zeroes the slot. The slot is in a writable segment, so
//! it is not measured, and it is empty in every image file (the image
//! digest covers that).
//!
//! The kernel cannot link this crate, so it spells the layout out itself;
//! `vigil-build build` checks that every image it makes carries exactly
//! [`EMPTY`] in [`SECTION`], so the two cannot drift apart unnoticed.
//!
//! # Layout (v1, little-endian, [`SIZE`] bytes)
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 8 | magic `VIGILRNG` |
//! | 8 | 4 | layout version, 1 |
//! | 12 | 4 | state: 0 empty, 1 filled by the loader |
//! | 16 | 32 | the entropy seed (zero while empty) |
//! | 48 | 16 | zero |

use core::fmt;
use core::ops::Range;

/// The name of the kernel's section that holds the slot.
pub const SECTION: &str = ".vigil_entropy";
/// The slot's size in bytes.
pub const SIZE: usize = 64;
/// Its first eight bytes.
pub const MAGIC: [u8; 8] = *b"VIGILRNG";
/// The layout version this module reads and writes.
pub const VERSION: u32 = 1;
/// Where the state word lies in the slot.
pub const STATE: Range<usize> = 12..16;
/// Where the seed lies in the slot.
pub const SEED: Range<usize> = 16..48;
/// The state word of a slot the loader filled.
pub const FILLED: u32 = 1;

/// The slot as built into the kernel (and as it stays in every image file).
pub const EMPTY: [u8; SIZE] = {
    let mut slot = [0u8; SIZE];
    let mut i = 0;
    while i < MAGIC.len() {
        slot[i] = MAGIC[i];
        i += 1;
    }
    let version = VERSION.to_le_bytes();
    let mut i = 0;
    while i < version.len() {
        slot[8 + i] = version[i];
        i += 1;
    }
    slot
};

/// Why bytes are not an entropy slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlotError {
    /// Fewer than [`SIZE`] bytes.
    Truncated(usize),
    /// The first eight bytes are not [`MAGIC`].
    BadMagic,
    /// A layout version this module does not know.
    Version(u32),
    /// The state word is neither 0 nor [`FILLED`].
    State(u32),
    /// A byte that must be zero is not.
    NonZero(usize),
}

impl fmt::Display for SlotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated(len) => write!(f, "entropy slot is {len} bytes, needs {SIZE}"),
            Self::BadMagic => f.write_str("entropy slot does not start with VIGILRNG"),
            Self::Version(v) => write!(f, "entropy slot layout version {v}, expected {VERSION}"),
            Self::State(s) => write!(f, "entropy slot state {s} is neither empty nor filled"),
            Self::NonZero(at) => write!(f, "entropy slot byte {at} must be zero"),
        }
    }
}

impl core::error::Error for SlotError {}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

/// Checks the first [`SIZE`] bytes of `bytes` as a slot and tells whether
/// the loader filled it. The seed itself is not copied out: the loader only
/// ever writes it, and the kernel reads it in place.
pub fn is_filled(bytes: &[u8]) -> Result<bool, SlotError> {
    let slot = bytes.get(..SIZE).ok_or(SlotError::Truncated(bytes.len()))?;
    if slot[..8] != MAGIC {
        return Err(SlotError::BadMagic);
    }
    let version = u32_at(slot, 8);
    if version != VERSION {
        return Err(SlotError::Version(version));
    }
    if let Some(i) = slot[SEED.end..].iter().position(|&b| b != 0) {
        return Err(SlotError::NonZero(SEED.end + i));
    }
    match u32_at(slot, STATE.start) {
        0 => match slot[SEED].iter().position(|&b| b != 0) {
            Some(i) => Err(SlotError::NonZero(SEED.start + i)),
            None => Ok(false),
        },
        FILLED => Ok(true),
        other => Err(SlotError::State(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_empty_slot_is_empty() {
        assert_eq!(is_filled(&EMPTY), Ok(false));
        assert_eq!(&EMPTY[..12], b"VIGILRNG\x01\0\0\0");
        assert!(EMPTY[12..].iter().all(|&b| b == 0));
    }

    #[test]
    fn a_filled_slot_is_filled() {
        let mut slot = EMPTY;
        slot[STATE].copy_from_slice(&FILLED.to_le_bytes());
        slot[SEED].copy_from_slice(&[9; 32]);
        assert_eq!(is_filled(&slot), Ok(true));
    }

    #[test]
    fn malformed_slots_are_refused() {
        assert_eq!(is_filled(&EMPTY[..10]), Err(SlotError::Truncated(10)));
        let cases: &[(usize, u8, SlotError)] = &[
            (0, b'X', SlotError::BadMagic),
            (8, 2, SlotError::Version(2)),
            (12, 7, SlotError::State(7)),
            (20, 1, SlotError::NonZero(20)),
            (63, 1, SlotError::NonZero(63)),
        ];
        for &(at, value, expected) in cases {
            let mut slot = EMPTY;
            slot[at] = value;
            assert_eq!(is_filled(&slot), Err(expected), "byte {at}");
        }
    }
}
