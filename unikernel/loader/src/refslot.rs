//! The per-boot secrets: where they go in the loaded kernel.
//!
//! dom0 boots a per-boot copy of the initrd: the verified image bytes followed
//! by the trailer of [`vigil_core::v2::handover`], which carries the per-boot
//! entropy seed and the report key's secret seed (or a v1 trailer: the key
//! only). The loader loads the image from the bytes before the trailer only,
//! and, after the kernel has been loaded and relocated, writes in guest
//! memory
//! - the key into the key slot of the image's reference block
//!   ([`refblock::SECTION`]);
//! - the entropy seed into the kernel's entropy slot ([`entropy::SECTION`]).
//!
//! This module finds those sections through the image's section header table
//! and `.shstrtab` (they are sections, not segments), checks that each is
//! what it should be and that the load puts it in memory, and fills it. It
//! reads only the image bytes it is given and refuses any offset, size or
//! index that does not fit, without panicking. Wiping the trailer and the
//! loader's copies of the seeds takes volatile writes, which `boot` does.

use core::fmt;
use core::ops::Range;

use vigil_core::v1::entropy;
use vigil_core::v1::refblock::{self, KEY_SLOT, KEY_STATE, SIZE};

const ELF64_HEADER: usize = 64;
const SECTION_HEADER: usize = 64;
const SHT_NOBITS: u32 = 8;
const SHF_ALLOC: u64 = 0x2;
const SHF_WRITE: u64 = 0x1;

/// One section header, as far as the loader needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Section {
    /// Its link-time virtual address (`sh_addr`).
    pub vaddr: u64,
    /// Its size in bytes (`sh_size`).
    pub size: u64,
    /// Where its bytes are in the file (`sh_offset`).
    pub offset: u64,
    /// `sh_type`.
    pub kind: u32,
    /// `sh_flags`.
    pub flags: u64,
}

/// Why the key cannot be written into the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefSlotError {
    /// The section header table or `.shstrtab` does not fit in the image.
    Malformed(&'static str),
    /// The image has no reference block section.
    Missing,
    /// The image has more than one section of that name.
    Duplicate,
    /// The section is not [`refblock::SIZE`] bytes long.
    WrongSize(u64),
    /// The section is not loaded, writable, file-backed data.
    NotLoadedData,
    /// The section's bytes in the file are not a reference block.
    NotABlock(refblock::RefBlockError),
    /// The section's address lies outside the memory the kernel is loaded into.
    OutsideKernel {
        /// The section's link-time address.
        vaddr: u64,
    },
    /// An entropy seed was handed over, but the image has no entropy slot.
    NoEntropySlot,
    /// The entropy slot section is not [`entropy::SIZE`] bytes of loaded,
    /// writable, file-backed data, or there is more than one.
    BadEntropySlot,
    /// The entropy slot's bytes in the file are not an empty slot.
    NotAnEmptySlot(Option<entropy::SlotError>),
}

impl fmt::Display for RefSlotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let section = refblock::SECTION;
        match *self {
            Self::Malformed(what) => write!(f, "the image's {what} is malformed"),
            Self::Missing => write!(
                f,
                "a report key was handed over, but the image has no {section} section to receive it"
            ),
            Self::Duplicate => write!(f, "the image has more than one {section} section"),
            Self::WrongSize(size) => write!(
                f,
                "the image's {section} section is {size} bytes, the reference block is {SIZE}"
            ),
            Self::NotLoadedData => write!(
                f,
                "the image's {section} section is not writable data loaded from the file"
            ),
            Self::NotABlock(err) => write!(f, "the image's {section} section: {err}"),
            Self::OutsideKernel { vaddr } => write!(
                f,
                "the image's section at {vaddr:#x} lies outside the loaded kernel"
            ),
            Self::NoEntropySlot => write!(
                f,
                "an entropy seed was handed over, but the image has no {} section to receive it \
                 (a kernel without Vigil's patch 0026a)",
                entropy::SECTION
            ),
            Self::BadEntropySlot => write!(
                f,
                "the image's {} section is not one {}-byte block of writable data loaded from the file",
                entropy::SECTION,
                entropy::SIZE
            ),
            Self::NotAnEmptySlot(Some(err)) => write!(f, "the image's {}: {err}", entropy::SECTION),
            Self::NotAnEmptySlot(None) => write!(
                f,
                "the image's {} section is already filled in the file",
                entropy::SECTION
            ),
        }
    }
}

fn bytes_at<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at.checked_add(N)?)?.try_into().ok()
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    bytes_at(bytes, at).map(u16::from_le_bytes)
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    bytes_at(bytes, at).map(u32::from_le_bytes)
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    bytes_at(bytes, at).map(u64::from_le_bytes)
}

/// `len` bytes of `image` from `offset`, if they lie inside it.
fn slice(image: &[u8], offset: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    image.get(start..end)
}

/// Section header `index` (of the table at `table`).
fn header(table: &[u8], index: usize) -> Option<(u32, Section)> {
    let at = index.checked_mul(SECTION_HEADER)?;
    let entry = table.get(at..at.checked_add(SECTION_HEADER)?)?;
    Some((
        u32_at(entry, 0)?,
        Section {
            kind: u32_at(entry, 4)?,
            flags: u64_at(entry, 8)?,
            vaddr: u64_at(entry, 16)?,
            offset: u64_at(entry, 24)?,
            size: u64_at(entry, 32)?,
        },
    ))
}

/// Whether the string at `at` in `strtab` is `name`, NUL-terminated.
fn name_is(strtab: &[u8], at: u32, name: &[u8]) -> bool {
    let Ok(at) = usize::try_from(at) else {
        return false;
    };
    let Some(end) = at.checked_add(name.len()) else {
        return false;
    };
    strtab.get(at..end) == Some(name) && strtab.get(end) == Some(&0)
}

/// The section named `name` in the little-endian ELF64 file `image`, found
/// through its section header table and `.shstrtab`; `Ok(None)` if there is
/// none (or no section header table at all).
pub fn find_section(image: &[u8], name: &str) -> Result<Option<Section>, RefSlotError> {
    if image.len() < ELF64_HEADER || !image.starts_with(b"\x7fELF") || image[4] != 2 {
        return Err(RefSlotError::Malformed("ELF header"));
    }
    let bad_table = RefSlotError::Malformed("section header table");
    let shoff = u64_at(image, 40).ok_or(bad_table)?;
    let entsize = u16_at(image, 58).ok_or(bad_table)?;
    let count = u16_at(image, 60).ok_or(bad_table)?;
    let shstrndx = u16_at(image, 62).ok_or(bad_table)?;
    if count == 0 {
        // No section headers (or more than 0xff00, which a Hermit image never
        // has): there is nothing to look up.
        return Ok(None);
    }
    if usize::from(entsize) != SECTION_HEADER {
        return Err(bad_table);
    }
    let table = slice(image, shoff, u64::from(count) * SECTION_HEADER as u64).ok_or(bad_table)?;
    let bad_names = RefSlotError::Malformed("section name table (.shstrtab)");
    if shstrndx >= count {
        return Err(bad_names);
    }
    let (_, names) = header(table, usize::from(shstrndx)).ok_or(bad_names)?;
    if names.kind == SHT_NOBITS {
        return Err(bad_names);
    }
    let strtab = slice(image, names.offset, names.size).ok_or(bad_names)?;

    let mut found = None;
    for index in 0..usize::from(count) {
        let (name_at, section) = header(table, index).ok_or(bad_table)?;
        if name_is(strtab, name_at, name.as_bytes()) {
            if found.is_some() {
                return Err(RefSlotError::Duplicate);
            }
            found = Some(section);
        }
    }
    Ok(found)
}

/// The reference block section of `image`: exactly [`refblock::SIZE`]
/// bytes, allocated, writable and file-backed, and its file bytes a valid
/// (sealed or unsealed) reference block.
pub fn find_block(image: &[u8]) -> Result<Section, RefSlotError> {
    let section = find_section(image, refblock::SECTION)?.ok_or(RefSlotError::Missing)?;
    if section.size != SIZE as u64 {
        return Err(RefSlotError::WrongSize(section.size));
    }
    if section.kind == SHT_NOBITS
        || section.flags & (SHF_ALLOC | SHF_WRITE) != SHF_ALLOC | SHF_WRITE
    {
        return Err(RefSlotError::NotLoadedData);
    }
    let bytes = slice(image, section.offset, section.size)
        .ok_or(RefSlotError::Malformed("reference block section offset"))?;
    refblock::parse(bytes).map_err(RefSlotError::NotABlock)?;
    Ok(section)
}

/// The kernel's entropy slot section of `image`: exactly
/// [`entropy::SIZE`] bytes, allocated, writable and file-backed, and its
/// file bytes an empty slot.
pub fn find_entropy_slot(image: &[u8]) -> Result<Section, RefSlotError> {
    let section = match find_section(image, entropy::SECTION) {
        Ok(Some(section)) => section,
        Ok(None) => return Err(RefSlotError::NoEntropySlot),
        Err(RefSlotError::Duplicate) => return Err(RefSlotError::BadEntropySlot),
        Err(err) => return Err(err),
    };
    if section.size != entropy::SIZE as u64
        || section.kind == SHT_NOBITS
        || section.flags & (SHF_ALLOC | SHF_WRITE) != SHF_ALLOC | SHF_WRITE
    {
        return Err(RefSlotError::BadEntropySlot);
    }
    let bytes = slice(image, section.offset, section.size)
        .ok_or(RefSlotError::Malformed("entropy slot section offset"))?;
    match entropy::is_filled(bytes) {
        Ok(false) => Ok(section),
        Ok(true) => Err(RefSlotError::NotAnEmptySlot(None)),
        Err(err) => Err(RefSlotError::NotAnEmptySlot(Some(err))),
    }
}

/// Where the block lies in the memory the kernel was loaded into: `memory`
/// starts at link-time address `base` (`hermit-entry`'s `start_addr`, 0 for a
/// relocatable image) and is `len` bytes long.
pub fn block_range(block: &Section, base: u64, len: usize) -> Result<Range<usize>, RefSlotError> {
    section_range(block, base, len)
}

/// Where `section` lies in the memory the kernel was loaded into (as
/// [`block_range`]), all `section.size` bytes of it.
pub fn section_range(
    section: &Section,
    base: u64,
    len: usize,
) -> Result<Range<usize>, RefSlotError> {
    let outside = RefSlotError::OutsideKernel {
        vaddr: section.vaddr,
    };
    let start = section
        .vaddr
        .checked_sub(base)
        .and_then(|offset| usize::try_from(offset).ok())
        .ok_or(outside)?;
    let size = usize::try_from(section.size).map_err(|_| outside)?;
    let end = start.checked_add(size).ok_or(outside)?;
    if end > len {
        return Err(outside);
    }
    Ok(start..end)
}

/// Writes `seed` into the key slot of the block at `block` in the loaded
/// kernel's `memory`, and marks the slot filled (state 1). `put` stores one
/// byte into one cell of `memory` (the loader's memory is `MaybeUninit`).
pub fn fill<T>(
    memory: &mut [T],
    block: Range<usize>,
    seed: &[u8; 32],
    mut put: impl FnMut(&mut T, u8),
) -> Result<(), RefSlotError> {
    let outside = RefSlotError::OutsideKernel {
        vaddr: block.start as u64,
    };
    let block = memory.get_mut(block).ok_or(outside)?;
    if block.len() != SIZE {
        return Err(outside);
    }
    for (cell, byte) in block[KEY_SLOT].iter_mut().zip(seed) {
        put(cell, *byte);
    }
    for (cell, byte) in block[KEY_STATE].iter_mut().zip(1u32.to_le_bytes()) {
        put(cell, byte);
    }
    Ok(())
}

/// Writes the entropy `seed` into the kernel's entropy slot at `slot` in
/// the loaded kernel's `memory`, and marks it filled. `put` as in [`fill`].
pub fn fill_entropy<T>(
    memory: &mut [T],
    slot: Range<usize>,
    seed: &[u8; 32],
    mut put: impl FnMut(&mut T, u8),
) -> Result<(), RefSlotError> {
    let outside = RefSlotError::OutsideKernel {
        vaddr: slot.start as u64,
    };
    let slot = memory.get_mut(slot).ok_or(outside)?;
    if slot.len() != entropy::SIZE {
        return Err(outside);
    }
    for (cell, byte) in slot[entropy::SEED].iter_mut().zip(seed) {
        put(cell, *byte);
    }
    for (cell, byte) in slot[entropy::STATE]
        .iter_mut()
        .zip(entropy::FILLED.to_le_bytes())
    {
        put(cell, byte);
    }
    Ok(())
}

/// The physical addresses of the trailer in module 0 (whatever follows
/// the image bytes), given the module and the length of the image before
/// the trailer; empty if there is no trailer.
pub fn trailer_range(module: &Range<u64>, image_len: usize) -> Range<u64> {
    let start = module
        .start
        .saturating_add(image_len as u64)
        .min(module.end);
    start..module.end
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_core::v1::handover as v1;
    use vigil_core::v2::handover::{self, TRAILER_SIZE};

    const SHT_PROGBITS: u32 = 1;
    const SHT_STRTAB: u32 = 3;
    const DATA: u64 = SHF_ALLOC | SHF_WRITE;

    struct Fixture<'a> {
        name: &'a str,
        kind: u32,
        flags: u64,
        vaddr: u64,
        data: &'a [u8],
    }

    fn section<'a>(name: &'a str, vaddr: u64, data: &'a [u8]) -> Fixture<'a> {
        Fixture {
            name,
            kind: SHT_PROGBITS,
            flags: DATA,
            vaddr,
            data,
        }
    }

    /// A minimal ELF64 file with a null section, `sections` and `.shstrtab`
    /// (last), the section header table at the end, as linkers lay it out.
    fn elf(sections: &[Fixture<'_>]) -> Vec<u8> {
        let mut names = vec![0u8];
        let mut name_at = Vec::new();
        for s in sections.iter().map(|s| s.name).chain([".shstrtab"]) {
            name_at.push(names.len() as u32);
            names.extend_from_slice(s.as_bytes());
            names.push(0);
        }
        let mut out = vec![0u8; ELF64_HEADER];
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = 2;
        out[5] = 1;
        out[18..20].copy_from_slice(&62u16.to_le_bytes());
        let mut headers = vec![0u8; SECTION_HEADER];
        let mut push = |out: &mut Vec<u8>, name: u32, kind, flags, vaddr, data: &[u8]| {
            while out.len() % 64 != 0 {
                out.push(0);
            }
            let offset = out.len() as u64;
            out.extend_from_slice(data);
            let mut h = [0u8; SECTION_HEADER];
            h[0..4].copy_from_slice(&name.to_le_bytes());
            h[4..8].copy_from_slice(&u32::to_le_bytes(kind));
            h[8..16].copy_from_slice(&u64::to_le_bytes(flags));
            h[16..24].copy_from_slice(&u64::to_le_bytes(vaddr));
            h[24..32].copy_from_slice(&offset.to_le_bytes());
            h[32..40].copy_from_slice(&(data.len() as u64).to_le_bytes());
            headers.extend_from_slice(&h);
        };
        for (s, &name) in sections.iter().zip(&name_at) {
            push(&mut out, name, s.kind, s.flags, s.vaddr, s.data);
        }
        push(&mut out, name_at[sections.len()], SHT_STRTAB, 0, 0, &names);
        while out.len() % 8 != 0 {
            out.push(0);
        }
        let count = sections.len() as u16 + 2;
        let shoff = out.len() as u64;
        out[40..48].copy_from_slice(&shoff.to_le_bytes());
        out[58..60].copy_from_slice(&(SECTION_HEADER as u16).to_le_bytes());
        out[60..62].copy_from_slice(&count.to_le_bytes());
        out[62..64].copy_from_slice(&(count - 1).to_le_bytes());
        out.extend_from_slice(&headers);
        out
    }

    fn image_with_block() -> Vec<u8> {
        elf(&[
            section(".text", 0x1000, &[0x90; 100]),
            section(".vigil_refx", 0x3000, &[1; 16]),
            section(".vigil_ref", 0x2000, &refblock::UNSEALED),
            section(".data", 0x2400, &[2; 32]),
        ])
    }

    #[test]
    fn finds_the_block_by_name() {
        let image = image_with_block();
        let block = find_block(&image).unwrap();
        assert_eq!(block.vaddr, 0x2000);
        assert_eq!(block.size, SIZE as u64);
        let start = block.offset as usize;
        assert_eq!(&image[start..start + 8], b"VIGILREF");
        // A name that is only a prefix of another does not match.
        let text = find_section(&image, ".tex").unwrap();
        assert_eq!(text, None);
        assert_eq!(
            find_section(&image, ".data").unwrap().unwrap().vaddr,
            0x2400
        );
    }

    #[test]
    fn no_block_is_reported_as_missing() {
        let image = elf(&[section(".data", 0x2000, &refblock::UNSEALED)]);
        assert_eq!(find_block(&image), Err(RefSlotError::Missing));
        assert!(
            RefSlotError::Missing
                .to_string()
                .contains("no .vigil_ref section")
        );
        // Renamed in .shstrtab, as a test image without a block is made by hand.
        let mut image = image_with_block();
        let at = image
            .windows(11)
            .position(|w| w == b".vigil_ref\0")
            .unwrap();
        image[at..at + 11].copy_from_slice(b".vigil_xyz\0");
        assert_eq!(find_block(&image), Err(RefSlotError::Missing));
        // No section header table at all.
        let mut image = image_with_block();
        image[60..62].copy_from_slice(&0u16.to_le_bytes());
        assert_eq!(find_block(&image), Err(RefSlotError::Missing));
    }

    #[test]
    fn a_block_that_is_not_one_is_refused() {
        let short = elf(&[section(".vigil_ref", 0x2000, &[0; 512])]);
        assert_eq!(find_block(&short), Err(RefSlotError::WrongSize(512)));
        let mut readonly = section(".vigil_ref", 0x2000, &refblock::UNSEALED);
        readonly.flags = SHF_ALLOC;
        assert_eq!(
            find_block(&elf(&[readonly])),
            Err(RefSlotError::NotLoadedData)
        );
        let mut bss = section(".vigil_ref", 0x2000, &refblock::UNSEALED);
        bss.kind = SHT_NOBITS;
        assert_eq!(find_block(&elf(&[bss])), Err(RefSlotError::NotLoadedData));
        let garbage = elf(&[section(".vigil_ref", 0x2000, &[7; SIZE])]);
        assert_eq!(
            find_block(&garbage),
            Err(RefSlotError::NotABlock(refblock::RefBlockError::BadMagic))
        );
        let twice = elf(&[
            section(".vigil_ref", 0x2000, &refblock::UNSEALED),
            section(".vigil_ref", 0x3000, &refblock::UNSEALED),
        ]);
        assert_eq!(find_block(&twice), Err(RefSlotError::Duplicate));
    }

    /// Every header field that says where something is, set to nonsense:
    /// an error, never a panic.
    #[test]
    fn nonsense_offsets_are_refused_without_panicking() {
        let good = image_with_block();
        let shoff = u64::from_le_bytes(good[40..48].try_into().unwrap()) as usize;
        let strtab_header = shoff + 5 * SECTION_HEADER;
        let block_header = shoff + 3 * SECTION_HEADER;
        let patches: &[(usize, &[u8])] = &[
            (40, &u64::MAX.to_le_bytes()),
            (40, &(good.len() as u64 - 8).to_le_bytes()),
            (58, &32u16.to_le_bytes()),
            (60, &u16::MAX.to_le_bytes()),
            (62, &9u16.to_le_bytes()),
            (62, &u16::MAX.to_le_bytes()),
            (strtab_header + 24, &u64::MAX.to_le_bytes()),
            (strtab_header + 32, &u64::MAX.to_le_bytes()),
            (strtab_header + 32, &(u64::MAX - 1).to_le_bytes()),
            (strtab_header + 4, &SHT_NOBITS.to_le_bytes()),
            (block_header, &u32::MAX.to_le_bytes()),
            (block_header, &0x7fff_fff0u32.to_le_bytes()),
            (block_header + 24, &u64::MAX.to_le_bytes()),
            (block_header + 24, &(good.len() as u64 - 100).to_le_bytes()),
        ];
        for (at, bytes) in patches {
            let mut image = good.clone();
            image[*at..*at + bytes.len()].copy_from_slice(bytes);
            assert!(find_block(&image).is_err(), "patch at {at}");
        }
        for len in 0..good.len() {
            let _ = find_block(&good[..len]);
        }
        assert!(find_block(b"\x7fELF").is_err());
        assert!(find_block(&[0u8; 64]).is_err());
    }

    #[test]
    fn the_block_is_placed_relative_to_the_load() {
        let block = find_block(&image_with_block()).unwrap();
        // Relocatable: memory starts at link-time address 0.
        assert_eq!(block_range(&block, 0, 0x3000), Ok(0x2000..0x2000 + SIZE));
        // Not relocatable: memory starts at the first segment's address.
        assert_eq!(
            block_range(&block, 0x1000, 0x2000),
            Ok(0x1000..0x1000 + SIZE)
        );
        let outside = Err(RefSlotError::OutsideKernel { vaddr: 0x2000 });
        assert_eq!(block_range(&block, 0, 0x2000 + SIZE - 1), outside);
        assert_eq!(block_range(&block, 0x2001, 0x10_0000), outside);
        let far = Section {
            vaddr: u64::MAX - 10,
            ..block
        };
        assert!(block_range(&far, 0, usize::MAX).is_err());
    }

    #[test]
    fn the_seed_lands_in_the_key_slot() {
        let image = image_with_block();
        let block = find_block(&image).unwrap();
        let mut memory = [0xaau8; 0x3000];
        let range = block_range(&block, 0, memory.len()).unwrap();
        memory[range.clone()].copy_from_slice(&refblock::UNSEALED);
        let put = |cell: &mut u8, byte| *cell = byte;
        fill(&mut memory, range.clone(), &[0x11; 32], put).unwrap();
        let loaded = &memory[range.clone()];
        assert_eq!(refblock::key_slot(loaded), Some([0x11; 32]));
        assert_eq!(refblock::parse(loaded), Ok(refblock::RefBlock::Unsealed));
        assert_eq!(&loaded[552..556], &[1, 0, 0, 0]);
        // Nothing else changed.
        let mut expected = refblock::UNSEALED;
        expected[KEY_STATE].copy_from_slice(&1u32.to_le_bytes());
        expected[KEY_SLOT].copy_from_slice(&[0x11; 32]);
        assert_eq!(loaded, expected);
        assert!(memory[..range.start].iter().all(|&b| b == 0xaa));
        assert!(memory[range.end..].iter().all(|&b| b == 0xaa));

        let mut small = [0u8; 2 * SIZE];
        assert!(fill(&mut small[..100], 0..SIZE, &[1; 32], put).is_err());
        assert!(fill(&mut small, 2 * SIZE - 10..3 * SIZE - 10, &[1; 32], put).is_err());
        assert!(fill(&mut small, 0..SIZE - 1, &[1; 32], put).is_err());
        assert!(small.iter().all(|&b| b == 0));
    }

    #[test]
    fn the_image_is_the_module_without_its_trailer() {
        let image = image_with_block();
        let mut module = image.clone();
        module.extend_from_slice(&handover::trailer(&[0x22; 32], Some(&[0x11; 32])));
        let (loaded, secrets) = handover::split(&module).unwrap();
        assert_eq!(loaded, &image[..]);
        let secrets = secrets.unwrap();
        assert_eq!(secrets.key, Some([0x11; 32]));
        assert_eq!(secrets.entropy, Some([0x22; 32]));
        assert_eq!(find_block(loaded).unwrap().vaddr, 0x2000);

        let at = 0x10_0000u64;
        let range = at..at + module.len() as u64;
        let trailer = trailer_range(&range, loaded.len());
        assert_eq!(trailer, at + image.len() as u64..range.end);
        assert_eq!(trailer.end - trailer.start, TRAILER_SIZE as u64);
        // A v1 trailer: the key, 48 bytes to wipe.
        let mut old = image.clone();
        old.extend_from_slice(&v1::trailer(&[0x11; 32]));
        let (loaded, secrets) = handover::split(&old).unwrap();
        assert_eq!(secrets.unwrap().entropy, None);
        let range = at..at + old.len() as u64;
        let trailer = trailer_range(&range, loaded.len());
        assert_eq!(trailer.end - trailer.start, v1::TRAILER_SIZE as u64);
        // Without a trailer there is nothing to wipe.
        let plain = at..at + image.len() as u64;
        assert!(trailer_range(&plain, image.len()).is_empty());
        assert!(trailer_range(&plain, image.len() + 100).is_empty());
        assert!(trailer_range(&(u64::MAX - 4..u64::MAX), usize::MAX).is_empty());
    }

    fn image_with_slot(slot: &[u8]) -> Vec<u8> {
        elf(&[
            section(".text", 0x1000, &[0x90; 100]),
            section(".vigil_entropyx", 0x3000, &[1; 16]),
            section(".vigil_entropy", 0x2040, slot),
            section(".vigil_ref", 0x2400, &refblock::UNSEALED),
        ])
    }

    #[test]
    fn the_entropy_seed_lands_in_the_kernels_slot() {
        let image = image_with_slot(&entropy::EMPTY);
        let slot = find_entropy_slot(&image).unwrap();
        assert_eq!(slot.vaddr, 0x2040);
        let mut memory = [0xaau8; 0x3000];
        let range = section_range(&slot, 0, memory.len()).unwrap();
        assert_eq!(range, 0x2040..0x2040 + entropy::SIZE);
        memory[range.clone()].copy_from_slice(&entropy::EMPTY);
        let put = |cell: &mut u8, byte| *cell = byte;
        fill_entropy(&mut memory, range.clone(), &[0x33; 32], put).unwrap();
        let loaded = &memory[range.clone()];
        assert_eq!(entropy::is_filled(loaded), Ok(true));
        let mut expected = entropy::EMPTY;
        expected[entropy::STATE].copy_from_slice(&1u32.to_le_bytes());
        expected[entropy::SEED].copy_from_slice(&[0x33; 32]);
        assert_eq!(loaded, expected);
        // Nothing else changed.
        assert!(memory[..range.start].iter().all(|&b| b == 0xaa));
        assert!(memory[range.end..].iter().all(|&b| b == 0xaa));
        // Not relocatable: memory starts at the first segment's address.
        assert_eq!(
            section_range(&slot, 0x1000, 0x2000),
            Ok(0x1040..0x1040 + entropy::SIZE)
        );
        assert!(section_range(&slot, 0, 0x2040 + entropy::SIZE - 1).is_err());
        let mut small = [0u8; 100];
        assert!(fill_entropy(&mut small, 50..114, &[1; 32], put).is_err());
        assert!(fill_entropy(&mut small, 0..63, &[1; 32], put).is_err());
        assert!(small.iter().all(|&b| b == 0));
    }

    #[test]
    fn an_image_without_a_usable_entropy_slot_is_refused() {
        assert_eq!(
            find_entropy_slot(&image_with_block()),
            Err(RefSlotError::NoEntropySlot)
        );
        assert!(
            RefSlotError::NoEntropySlot
                .to_string()
                .contains("no .vigil_entropy section")
        );
        assert_eq!(
            find_entropy_slot(&image_with_slot(&[0; 32])),
            Err(RefSlotError::BadEntropySlot)
        );
        let mut readonly = section(".vigil_entropy", 0x2000, &entropy::EMPTY);
        readonly.flags = SHF_ALLOC;
        assert_eq!(
            find_entropy_slot(&elf(&[readonly])),
            Err(RefSlotError::BadEntropySlot)
        );
        let twice = elf(&[
            section(".vigil_entropy", 0x2000, &entropy::EMPTY),
            section(".vigil_entropy", 0x3000, &entropy::EMPTY),
        ]);
        assert_eq!(find_entropy_slot(&twice), Err(RefSlotError::BadEntropySlot));
        assert_eq!(
            find_entropy_slot(&image_with_slot(&[0; 64])),
            Err(RefSlotError::NotAnEmptySlot(Some(
                entropy::SlotError::BadMagic
            )))
        );
        let mut filled = entropy::EMPTY;
        filled[entropy::STATE].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(
            find_entropy_slot(&image_with_slot(&filled)),
            Err(RefSlotError::NotAnEmptySlot(None))
        );
    }
}
