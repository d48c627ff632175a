//! The reference block: what the guest needs of the seal, inside the image.
//!
//! The guest never sees the manifest. What its watchdog needs (the measured
//! regions and their digests, the reaction policy and the interval) is written
//! by `vigil-build seal` into a reserved block of the image: a writable section
//! named [`SECTION`], [`SIZE`] bytes long. The block is excluded from the
//! region digests (it is in a writable segment, and it changes at boot: the
//! per-boot report key is written into its key slot) and covered by the image
//! digest, which is taken after sealing filled it in.
//!
//! # Layout (v1, little-endian, [`SIZE`] bytes)
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 8 | magic `VIGILREF` |
//! | 8 | 2 | layout version, 1 |
//! | 10 | 2 | state: 0 unsealed (as built), 1 sealed |
//! | 12 | 4 | block size, [`SIZE`] |
//! | 16 | 8 | the block's own link-time virtual address (0 while unsealed) |
//! | 24 | 1 | reaction: 1 log, 2 degrade, 3 halt (0 while unsealed) |
//! | 25 | 3 | zero |
//! | 28 | 4 | watchdog interval in milliseconds (0 while unsealed) |
//! | 32 | 4 | number of regions, at most [`MAX_REGIONS`] |
//! | 36 | 4 | zero |
//! | 40 | 64 × 8 | regions: name (16 bytes, ASCII, zero-padded), link-time virtual address (8), length (8), SHA-256 (32); unused entries zero |
//! | 552 | 4 | key slot state: 0 empty, 1 filled |
//! | 556 | 4 | zero |
//! | 560 | 32 | key slot: the per-boot report key's secret seed |
//! | 592 | 432 | zero |
//!
//! The guest finds its load offset as the block's runtime address minus the
//! link-time address recorded at offset 16, and each region at its link-time
//! address plus that offset.
//!
//! The image as built carries [`UNSEALED`]; sealing replaces it with
//! [`Sealed::emit`]. The key slot is empty in every sealed image: it is filled
//! in guest memory at boot, never in a file.

use core::fmt;

/// The name of the section that holds the block.
pub const SECTION: &str = ".vigil_ref";
/// The block's size in bytes.
pub const SIZE: usize = 1024;
/// The first eight bytes of every block.
pub const MAGIC: [u8; 8] = *b"VIGILREF";
/// The layout version this module reads and writes.
pub const VERSION: u16 = 1;
/// Regions a block holds at most.
pub const MAX_REGIONS: usize = 8;
/// Bytes of a region name.
pub const NAME_BYTES: usize = 16;
/// The shortest watchdog interval a seal may set, in milliseconds.
pub const MIN_INTERVAL_MS: u32 = 10;
/// The longest watchdog interval a seal may set, in milliseconds (one hour).
pub const MAX_INTERVAL_MS: u32 = 3_600_000;

const STATE_UNSEALED: u16 = 0;
const STATE_SEALED: u16 = 1;
const REGIONS_AT: usize = 40;
const REGION_BYTES: usize = 64;
const KEY_STATE_AT: usize = REGIONS_AT + MAX_REGIONS * REGION_BYTES;
const KEY_AT: usize = KEY_STATE_AT + 8;
/// Where the key slot lies in the block, and its length.
pub const KEY_SLOT: core::ops::Range<usize> = KEY_AT..KEY_AT + 32;
/// Where the key slot's state word lies in the block.
pub const KEY_STATE: core::ops::Range<usize> = KEY_STATE_AT..KEY_STATE_AT + 4;

/// The block as built into the image, before sealing.
pub const UNSEALED: [u8; SIZE] = {
    let mut block = [0u8; SIZE];
    let mut i = 0;
    while i < MAGIC.len() {
        block[i] = MAGIC[i];
        i += 1;
    }
    let version = VERSION.to_le_bytes();
    block[8] = version[0];
    block[9] = version[1];
    let size = (SIZE as u32).to_le_bytes();
    block[12] = size[0];
    block[13] = size[1];
    block[14] = size[2];
    block[15] = size[3];
    block
};

/// What the watchdog does when a region's digest does not match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "manifest", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "manifest", serde(rename_all = "lowercase"))]
pub enum Reaction {
    /// Report the violation (console, metrics, reports) and keep serving.
    Log,
    /// Also answer business endpoints and `/healthz` with 503, until reboot.
    Degrade,
    /// Print the violation to the console and shut the guest down.
    Halt,
}

impl Reaction {
    /// Every reaction, in code order.
    pub const ALL: [Reaction; 3] = [Reaction::Log, Reaction::Degrade, Reaction::Halt];

    /// The word used in manifests and on command lines.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reaction::Log => "log",
            Reaction::Degrade => "degrade",
            Reaction::Halt => "halt",
        }
    }

    /// Parses [`Reaction::as_str`]'s words.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == name)
    }

    const fn code(self) -> u8 {
        match self {
            Reaction::Log => 1,
            Reaction::Degrade => 2,
            Reaction::Halt => 3,
        }
    }

    const fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Reaction::Log),
            2 => Some(Reaction::Degrade),
            3 => Some(Reaction::Halt),
            _ => None,
        }
    }
}

impl fmt::Display for Reaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A region name: 1 to [`NAME_BYTES`] bytes of ASCII letters, digits, `.`,
/// `_` or `-`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RegionName {
    bytes: [u8; NAME_BYTES],
    len: u8,
}

impl RegionName {
    /// Checks and stores `name`.
    pub fn new(name: &str) -> Result<Self, RefBlockError> {
        let valid = !name.is_empty()
            && name.len() <= NAME_BYTES
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !valid {
            return Err(RefBlockError::BadRegionName);
        }
        let mut bytes = [0u8; NAME_BYTES];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        Ok(Self {
            bytes,
            len: name.len() as u8,
        })
    }

    /// Reads a name stored as [`NAME_BYTES`] bytes, zero-padded (the form
    /// in reference blocks and reports). A non-zero byte after the padding
    /// starts is [`RefBlockError::NonZero`] with its index in `raw`.
    pub fn from_padded(raw: &[u8]) -> Result<Self, RefBlockError> {
        let raw = raw.get(..NAME_BYTES).ok_or(RefBlockError::BadRegionName)?;
        let len = raw.iter().position(|&b| b == 0).unwrap_or(NAME_BYTES);
        if let Some(i) = raw[len..].iter().position(|&b| b != 0) {
            return Err(RefBlockError::NonZero(len + i));
        }
        core::str::from_utf8(&raw[..len])
            .map_err(|_| RefBlockError::BadRegionName)
            .and_then(Self::new)
    }

    /// The name as stored: [`NAME_BYTES`] bytes, zero-padded.
    pub fn padded(&self) -> [u8; NAME_BYTES] {
        self.bytes
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored (checked in `new`).
        core::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

impl fmt::Debug for RegionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// One measured region: where it lies at link time, and its digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Region {
    /// What the region holds, e.g. `code` or `rodata`.
    pub name: RegionName,
    /// Its link-time virtual address.
    pub vaddr: u64,
    /// Its length in bytes (never 0).
    pub len: u64,
    /// SHA-256 of its bytes as they are in guest memory.
    pub sha256: [u8; 32],
}

/// The content of a sealed block (everything but the key slot).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Sealed {
    /// The block's own link-time virtual address.
    pub link_vaddr: u64,
    /// What the watchdog does on a mismatch.
    pub reaction: Reaction,
    /// How often the watchdog checks, in milliseconds.
    pub interval_ms: u32,
    regions: [Option<Region>; MAX_REGIONS],
}

impl Sealed {
    /// A sealed block's content. Fails if there are no regions or more than
    /// [`MAX_REGIONS`], a region is empty or wraps around the address space,
    /// or the interval is outside [`MIN_INTERVAL_MS`]..=[`MAX_INTERVAL_MS`].
    pub fn new(
        link_vaddr: u64,
        reaction: Reaction,
        interval_ms: u32,
        regions: &[Region],
    ) -> Result<Self, RefBlockError> {
        if regions.is_empty() || regions.len() > MAX_REGIONS {
            return Err(RefBlockError::RegionCount(regions.len()));
        }
        if !(MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&interval_ms) {
            return Err(RefBlockError::Interval(interval_ms));
        }
        let mut slots = [None; MAX_REGIONS];
        for (slot, region) in slots.iter_mut().zip(regions) {
            if region.len == 0 || region.vaddr.checked_add(region.len).is_none() {
                return Err(RefBlockError::BadRegion);
            }
            *slot = Some(*region);
        }
        Ok(Self {
            link_vaddr,
            reaction,
            interval_ms,
            regions: slots,
        })
    }

    /// The measured regions, in order.
    pub fn regions(&self) -> impl Iterator<Item = &Region> {
        self.regions.iter().flatten()
    }

    /// The block bytes, with an empty key slot.
    pub fn emit(&self) -> [u8; SIZE] {
        let mut block = UNSEALED;
        block[10..12].copy_from_slice(&STATE_SEALED.to_le_bytes());
        block[16..24].copy_from_slice(&self.link_vaddr.to_le_bytes());
        block[24] = self.reaction.code();
        block[28..32].copy_from_slice(&self.interval_ms.to_le_bytes());
        let count = self.regions().count() as u32;
        block[32..36].copy_from_slice(&count.to_le_bytes());
        for (i, region) in self.regions().enumerate() {
            let at = REGIONS_AT + i * REGION_BYTES;
            block[at..at + NAME_BYTES].copy_from_slice(&region.name.bytes);
            block[at + 16..at + 24].copy_from_slice(&region.vaddr.to_le_bytes());
            block[at + 24..at + 32].copy_from_slice(&region.len.to_le_bytes());
            block[at + 32..at + 64].copy_from_slice(&region.sha256);
        }
        block
    }
}

/// A parsed block.
// Not boxed: the core has no allocator without the `manifest` feature, and a
// block is parsed once per check.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefBlock {
    /// As built: sealing has not filled it in.
    Unsealed,
    /// Filled in by sealing.
    Sealed(Sealed),
}

/// Why bytes are not a valid reference block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefBlockError {
    /// Fewer than [`SIZE`] bytes.
    Truncated(usize),
    /// The first eight bytes are not [`MAGIC`].
    BadMagic,
    /// A layout version this module does not know.
    Version(u16),
    /// The size field is not [`SIZE`].
    Size(u32),
    /// The state field is neither unsealed nor sealed.
    State(u16),
    /// An unknown reaction code.
    Reaction(u8),
    /// An interval outside the allowed range.
    Interval(u32),
    /// No regions, or more than [`MAX_REGIONS`].
    RegionCount(usize),
    /// A region name that is empty, too long or not plain ASCII.
    BadRegionName,
    /// A region that is empty or wraps around the address space.
    BadRegion,
    /// A byte that must be zero is not (or an unsealed block has content).
    NonZero(usize),
}

impl fmt::Display for RefBlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated(len) => write!(f, "reference block is {len} bytes, needs {SIZE}"),
            Self::BadMagic => f.write_str("reference block does not start with VIGILREF"),
            Self::Version(v) => write!(f, "reference block layout version {v}, expected {VERSION}"),
            Self::Size(s) => write!(f, "reference block size field is {s}, expected {SIZE}"),
            Self::State(s) => write!(
                f,
                "reference block state {s} is neither unsealed nor sealed"
            ),
            Self::Reaction(r) => write!(f, "unknown watchdog reaction code {r}"),
            Self::Interval(ms) => write!(
                f,
                "watchdog interval {ms} ms is outside {MIN_INTERVAL_MS}..={MAX_INTERVAL_MS} ms"
            ),
            Self::RegionCount(n) => {
                write!(f, "{n} measured regions; a block holds 1 to {MAX_REGIONS}")
            }
            Self::BadRegionName => {
                f.write_str("a region name must be 1 to 16 ASCII letters, digits, '.', '_' or '-'")
            }
            Self::BadRegion => f.write_str("a measured region is empty or wraps around"),
            Self::NonZero(at) => write!(f, "reference block byte {at} must be zero"),
        }
    }
}

impl core::error::Error for RefBlockError {}

fn u16_at(block: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([block[at], block[at + 1]])
}

fn u32_at(block: &[u8], at: usize) -> u32 {
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(&block[at..at + 4]);
    u32::from_le_bytes(bytes)
}

fn u64_at(block: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&block[at..at + 8]);
    u64::from_le_bytes(bytes)
}

fn zero(block: &[u8], range: core::ops::Range<usize>) -> Result<(), RefBlockError> {
    match block[range.clone()].iter().position(|&b| b != 0) {
        Some(i) => Err(RefBlockError::NonZero(range.start + i)),
        None => Ok(()),
    }
}

/// Parses the first [`SIZE`] bytes of `bytes` as a block. The key slot is not
/// looked at: use [`key_slot`] for it.
pub fn parse(bytes: &[u8]) -> Result<RefBlock, RefBlockError> {
    let block = bytes
        .get(..SIZE)
        .ok_or(RefBlockError::Truncated(bytes.len()))?;
    if block[..8] != MAGIC {
        return Err(RefBlockError::BadMagic);
    }
    let version = u16_at(block, 8);
    if version != VERSION {
        return Err(RefBlockError::Version(version));
    }
    let size = u32_at(block, 12);
    if size as usize != SIZE {
        return Err(RefBlockError::Size(size));
    }
    zero(block, KEY_STATE.end..KEY_SLOT.start)?;
    zero(block, KEY_SLOT.end..SIZE)?;
    match u16_at(block, 10) {
        STATE_UNSEALED => {
            zero(block, 16..KEY_STATE.start)?;
            Ok(RefBlock::Unsealed)
        }
        STATE_SEALED => {
            zero(block, 25..28)?;
            zero(block, 36..40)?;
            let reaction =
                Reaction::from_code(block[24]).ok_or(RefBlockError::Reaction(block[24]))?;
            let count = u32_at(block, 32) as usize;
            if count == 0 || count > MAX_REGIONS {
                return Err(RefBlockError::RegionCount(count));
            }
            let mut regions = [None; MAX_REGIONS];
            for (i, slot) in regions.iter_mut().enumerate() {
                let at = REGIONS_AT + i * REGION_BYTES;
                if i >= count {
                    zero(block, at..at + REGION_BYTES)?;
                    continue;
                }
                let name =
                    RegionName::from_padded(&block[at..at + NAME_BYTES]).map_err(|error| {
                        match error {
                            RefBlockError::NonZero(i) => RefBlockError::NonZero(at + i),
                            other => other,
                        }
                    })?;
                let mut sha256 = [0u8; 32];
                sha256.copy_from_slice(&block[at + 32..at + 64]);
                *slot = Some(Region {
                    name,
                    vaddr: u64_at(block, at + 16),
                    len: u64_at(block, at + 24),
                    sha256,
                });
            }
            let found: [Region; MAX_REGIONS] = regions.map(|r| {
                r.unwrap_or(Region {
                    name: RegionName {
                        bytes: [0; NAME_BYTES],
                        len: 0,
                    },
                    vaddr: 0,
                    len: 0,
                    sha256: [0; 32],
                })
            });
            Sealed::new(
                u64_at(block, 16),
                reaction,
                u32_at(block, 28),
                &found[..count],
            )
            .map(RefBlock::Sealed)
        }
        other => Err(RefBlockError::State(other)),
    }
}

/// The key slot of a block: the 32-byte seed if it is filled, `None` if it
/// is empty (or `bytes` is too short to hold one).
pub fn key_slot(bytes: &[u8]) -> Option<[u8; 32]> {
    let state = bytes.get(KEY_STATE)?;
    if state != 1u32.to_le_bytes() {
        return None;
    }
    let mut seed = [0u8; 32];
    seed.copy_from_slice(bytes.get(KEY_SLOT)?);
    Some(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(name: &str, vaddr: u64, len: u64, fill: u8) -> Region {
        Region {
            name: RegionName::new(name).unwrap(),
            vaddr,
            len,
            sha256: [fill; 32],
        }
    }

    fn sealed() -> Sealed {
        Sealed::new(
            0x11_d690,
            Reaction::Degrade,
            1000,
            &[
                region("rodata", 0, 0x2a76c, 0xaa),
                region("code", 0x2b770, 0xdd73f, 0xbb),
            ],
        )
        .unwrap()
    }

    #[test]
    fn unsealed_block_parses_as_unsealed() {
        assert_eq!(parse(&UNSEALED), Ok(RefBlock::Unsealed));
        assert_eq!(key_slot(&UNSEALED), None);
    }

    #[test]
    fn sealed_block_round_trips() {
        let block = sealed().emit();
        assert_eq!(parse(&block), Ok(RefBlock::Sealed(sealed())));
        assert_eq!(&block[..8], b"VIGILREF");
        assert_eq!(key_slot(&block), None);
    }

    #[test]
    fn fixture_bytes_are_stable() {
        // The layout is v1: these offsets must never move.
        let block = sealed().emit();
        assert_eq!(&block[8..16], &[1, 0, 1, 0, 0, 4, 0, 0]);
        assert_eq!(&block[16..24], &0x11_d690u64.to_le_bytes());
        assert_eq!(block[24], 2);
        assert_eq!(&block[28..36], &[0xe8, 3, 0, 0, 2, 0, 0, 0]);
        assert_eq!(&block[40..46], b"rodata");
        assert_eq!(&block[104..108], b"code");
        assert_eq!(&block[104 + 16..104 + 24], &0x2b770u64.to_le_bytes());
        assert_eq!(&block[104 + 32..104 + 64], &[0xbb; 32]);
        assert!(block[168..].iter().all(|&b| b == 0));
    }

    #[test]
    fn filled_key_slot_is_read_back() {
        let mut block = sealed().emit();
        block[KEY_STATE].copy_from_slice(&1u32.to_le_bytes());
        block[KEY_SLOT].copy_from_slice(&[7; 32]);
        assert_eq!(key_slot(&block), Some([7; 32]));
        assert!(matches!(parse(&block), Ok(RefBlock::Sealed(_))));
    }

    #[test]
    fn malformed_blocks_are_refused() {
        let good = sealed().emit();
        assert_eq!(parse(&good[..100]), Err(RefBlockError::Truncated(100)));
        let cases: &[(usize, u8, RefBlockError)] = &[
            (0, b'X', RefBlockError::BadMagic),
            (8, 2, RefBlockError::Version(2)),
            (13, 8, RefBlockError::Size(0x800)),
            (10, 5, RefBlockError::State(5)),
            (24, 9, RefBlockError::Reaction(9)),
            (32, 9, RefBlockError::RegionCount(9)),
            (1000, 1, RefBlockError::NonZero(1000)),
            (200, 1, RefBlockError::NonZero(200)),
        ];
        for &(at, value, expected) in cases {
            let mut block = good;
            block[at] = value;
            assert_eq!(parse(&block), Err(expected), "byte {at}");
        }
        let mut unsealed = UNSEALED;
        unsealed[30] = 1;
        assert_eq!(parse(&unsealed), Err(RefBlockError::NonZero(30)));
        let mut slow = good;
        slow[28..32].copy_from_slice(&5u32.to_le_bytes());
        assert_eq!(parse(&slow), Err(RefBlockError::Interval(5)));
    }

    #[test]
    fn invalid_content_cannot_be_sealed() {
        assert_eq!(
            Sealed::new(0, Reaction::Log, 1000, &[]),
            Err(RefBlockError::RegionCount(0))
        );
        assert_eq!(
            Sealed::new(0, Reaction::Log, 1000, &[region("a", u64::MAX, 2, 0)]),
            Err(RefBlockError::BadRegion)
        );
        assert_eq!(RegionName::new(""), Err(RefBlockError::BadRegionName));
        assert_eq!(
            RegionName::new("seventeen-chars-x"),
            Err(RefBlockError::BadRegionName)
        );
        assert_eq!(RegionName::new("naïve"), Err(RefBlockError::BadRegionName));
    }
}
