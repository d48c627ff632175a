//! The image's RELRO part as it is in guest memory: the fixed load address,
//! and the file bytes of the `PT_GNU_RELRO` segment with the image's dynamic
//! relocations applied for that address.
//!
//! The image is a static PIE. Its RELRO segment (`.tdata`, `.data.rel.ro`,
//! `.dynamic`, `.got`) holds pointers (vtables, function pointers, GOT
//! entries) that the loader fixes once, with `R_X86_64_RELATIVE`
//! relocations (value = load address + addend), and that nothing changes
//! afterwards. So their content after relocation is known at seal time,
//! provided the load address is: the loader always puts the kernel at
//! [`KERNEL_LOAD_ADDRESS`] (on QEMU and on Xen) and refuses to boot if it
//! cannot. Sealing ([`relocate`] in `vigil-build`) and bundle verification
//! compute the same bytes; the watchdog hashes them in live memory.
//!
//! Pure parsing on bytes: no allocation, no `unsafe`; the caller provides the
//! output buffer.

use core::fmt;

/// Where the loader puts the kernel, on every hypervisor: the first 2 MiB
/// boundary above the loader (linked at `0x178000`, ending below 2 MiB).
/// The sealed RELRO digest holds for this address only.
pub const KERNEL_LOAD_ADDRESS: u64 = 0x20_0000;

/// `R_X86_64_RELATIVE`: the only relocation type allowed in RELRO.
pub const R_X86_64_RELATIVE: u32 = 8;

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_GNU_RELRO: u32 = 0x6474_e552;
const DT_NULL: u64 = 0;
const DT_RELA: u64 = 7;
const DT_RELASZ: u64 = 8;
const DT_RELAENT: u64 = 9;
const DT_REL: u64 = 17;
const DT_RELR: u64 = 36;
const RELA_BYTES: u64 = 24;

/// The file-backed part of the image's `PT_GNU_RELRO` segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelroRange {
    /// Its link-time address.
    pub vaddr: u64,
    /// Its offset in the image file.
    pub file_offset: u64,
    /// Its file-backed length (what is measured).
    pub bytes: u64,
    /// Its length in memory (with the zero padding lld adds up to a page).
    pub mem_bytes: u64,
}

/// Why the RELRO part cannot be computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelroError {
    /// The ELF headers are cut short or inconsistent.
    Malformed(&'static str),
    /// A relocation table type the loader's result cannot be predicted for.
    UnsupportedTable(&'static str),
    /// A relocation other than `R_X86_64_RELATIVE` modifies RELRO.
    OtherType {
        /// Its link-time target address.
        offset: u64,
        /// Its type.
        kind: u32,
    },
    /// A relocation crosses the border of the RELRO part, or hits its
    /// zero padding.
    Straddles {
        /// Its link-time target address.
        offset: u64,
    },
    /// The output buffer is not the RELRO part's length.
    BufferSize,
}

impl fmt::Display for RelroError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Malformed(what) => write!(f, "malformed ELF: {what}"),
            Self::UnsupportedTable(what) => write!(
                f,
                "the image has a {what} relocation table; only RELA with R_X86_64_RELATIVE \
                 can be predicted for RELRO"
            ),
            Self::OtherType { offset, kind } => write!(
                f,
                "a relocation of type {kind} at {offset:#x} modifies RELRO; only \
                 R_X86_64_RELATIVE ({R_X86_64_RELATIVE}) can be predicted at seal time"
            ),
            Self::Straddles { offset } => write!(
                f,
                "the relocation at {offset:#x} crosses the border of RELRO's file-backed part"
            ),
            Self::BufferSize => f.write_str("the output buffer is not RELRO's length"),
        }
    }
}

impl core::error::Error for RelroError {}

fn u16_at(bytes: &[u8], at: u64) -> Option<u16> {
    let at = usize::try_from(at).ok()?;
    Some(u16::from_le_bytes(
        bytes.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(bytes: &[u8], at: u64) -> Option<u32> {
    let at = usize::try_from(at).ok()?;
    Some(u32::from_le_bytes(
        bytes.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(bytes: &[u8], at: u64) -> Option<u64> {
    let at = usize::try_from(at).ok()?;
    Some(u64::from_le_bytes(
        bytes.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

#[derive(Clone, Copy)]
struct Segment {
    kind: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
    memsz: u64,
}

fn segments(image: &[u8]) -> Result<impl Iterator<Item = Option<Segment>> + '_, RelroError> {
    const BAD: RelroError = RelroError::Malformed("program headers");
    if image.get(..4) != Some(b"\x7fELF") || image.get(4) != Some(&2) || image.get(5) != Some(&1) {
        return Err(RelroError::Malformed("not a little-endian 64-bit ELF"));
    }
    let phoff = u64_at(image, 0x20).ok_or(BAD)?;
    let phentsize = u64::from(u16_at(image, 0x36).ok_or(BAD)?);
    let phnum = u64::from(u16_at(image, 0x38).ok_or(BAD)?);
    if phentsize < 56 {
        return Err(BAD);
    }
    Ok((0..phnum).map(move |i| {
        let at = phoff.checked_add(i.checked_mul(phentsize)?)?;
        Some(Segment {
            kind: u32_at(image, at)?,
            offset: u64_at(image, at + 8)?,
            vaddr: u64_at(image, at + 16)?,
            filesz: u64_at(image, at + 32)?,
            memsz: u64_at(image, at + 40)?,
        })
    }))
}

fn segment_list(image: &[u8]) -> Result<([Option<Segment>; 3], usize), RelroError> {
    // RELRO, DYNAMIC, and how many LOADs (looked up again by address).
    let mut found = [None; 3];
    let mut loads = 0;
    for segment in segments(image)? {
        let segment = segment.ok_or(RelroError::Malformed("program headers cut short"))?;
        match segment.kind {
            PT_GNU_RELRO => found[0] = Some(segment),
            PT_DYNAMIC => found[1] = Some(segment),
            PT_LOAD => loads += 1,
            _ => {}
        }
    }
    Ok((found, loads))
}

/// The file offset of a link-time address, through the `PT_LOAD` that maps it.
fn file_offset(image: &[u8], vaddr: u64, len: u64) -> Result<u64, RelroError> {
    for segment in segments(image)?.flatten() {
        if segment.kind == PT_LOAD
            && vaddr >= segment.vaddr
            && vaddr.saturating_add(len) <= segment.vaddr.saturating_add(segment.filesz)
        {
            return Ok(segment.offset + (vaddr - segment.vaddr));
        }
    }
    Err(RelroError::Malformed(
        "a dynamic table lies outside the file-backed load segments",
    ))
}

/// The image's RELRO part, if it has one.
pub fn find(image: &[u8]) -> Result<Option<RelroRange>, RelroError> {
    let ([relro, _, _], _) = segment_list(image)?;
    let Some(relro) = relro else {
        return Ok(None);
    };
    if relro.filesz > relro.memsz
        || relro
            .offset
            .checked_add(relro.filesz)
            .is_none_or(|end| end > image.len() as u64)
    {
        return Err(RelroError::Malformed(
            "the RELRO segment lies beyond the file",
        ));
    }
    Ok(Some(RelroRange {
        vaddr: relro.vaddr,
        file_offset: relro.offset,
        bytes: relro.filesz,
        mem_bytes: relro.memsz,
    }))
}

/// One dynamic relocation: target address, type, addend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rela {
    /// The link-time address it writes.
    pub offset: u64,
    /// Its type (`r_info`'s low 32 bits).
    pub kind: u32,
    /// Its addend.
    pub addend: i64,
}

/// The image's dynamic relocations (`DT_RELA`), in table order; an image
/// without a dynamic segment has none. `DT_REL` or `DT_RELR` tables are
/// refused: the loader (hermit-entry) applies only `DT_RELA`.
pub fn relocations(
    image: &[u8],
) -> Result<impl Iterator<Item = Result<Rela, RelroError>> + '_, RelroError> {
    let ([_, dynamic, _], _) = segment_list(image)?;
    let (mut rela, mut relasz, mut relaent) = (None, 0, RELA_BYTES);
    if let Some(dynamic) = dynamic {
        let mut at = dynamic.offset;
        let end = dynamic.offset.saturating_add(dynamic.filesz);
        while at.saturating_add(16) <= end {
            let tag = u64_at(image, at).ok_or(RelroError::Malformed("the dynamic segment"))?;
            let value =
                u64_at(image, at + 8).ok_or(RelroError::Malformed("the dynamic segment"))?;
            match tag {
                DT_NULL => break,
                DT_RELA => rela = Some(value),
                DT_RELASZ => relasz = value,
                DT_RELAENT => relaent = value,
                DT_REL => return Err(RelroError::UnsupportedTable("DT_REL")),
                DT_RELR => return Err(RelroError::UnsupportedTable("DT_RELR")),
                _ => {}
            }
            at += 16;
        }
    }
    if relaent != RELA_BYTES {
        return Err(RelroError::Malformed("DT_RELAENT is not 24"));
    }
    let (table, count) = match rela {
        Some(vaddr) if relasz > 0 => (file_offset(image, vaddr, relasz)?, relasz / RELA_BYTES),
        _ => (0, 0),
    };
    Ok((0..count).map(move |i| {
        let at = table + i * RELA_BYTES;
        let bad = RelroError::Malformed("the relocation table");
        let info = u64_at(image, at + 8).ok_or(bad)?;
        Ok(Rela {
            offset: u64_at(image, at).ok_or(bad)?,
            kind: info as u32,
            addend: u64_at(image, at + 16).ok_or(bad)? as i64,
        })
    }))
}

/// Writes RELRO's file bytes into `out` (exactly `range.bytes` long) and
/// applies every relocation that targets RELRO as the loader does for a
/// kernel at `load_address`: `R_X86_64_RELATIVE` writes `load_address +
/// addend` (8 bytes, little-endian). Any other type in RELRO, or one that
/// crosses its border or hits its padding, is an error. Returns how many
/// relocations it applied.
pub fn relocate(
    image: &[u8],
    range: &RelroRange,
    load_address: u64,
    out: &mut [u8],
) -> Result<usize, RelroError> {
    let start = usize::try_from(range.file_offset).map_err(|_| RelroError::BufferSize)?;
    let len = usize::try_from(range.bytes).map_err(|_| RelroError::BufferSize)?;
    if out.len() != len {
        return Err(RelroError::BufferSize);
    }
    let source = image
        .get(start..start.saturating_add(len))
        .ok_or(RelroError::Malformed(
            "the RELRO segment lies beyond the file",
        ))?;
    out.copy_from_slice(source);
    let file_end = range.vaddr.saturating_add(range.bytes);
    let mem_end = range.vaddr.saturating_add(range.mem_bytes.max(range.bytes));
    let mut applied = 0;
    for rela in relocations(image)? {
        let rela = rela?;
        let end = rela.offset.saturating_add(8);
        if end <= range.vaddr || rela.offset >= mem_end {
            continue;
        }
        if rela.kind != R_X86_64_RELATIVE {
            return Err(RelroError::OtherType {
                offset: rela.offset,
                kind: rela.kind,
            });
        }
        if rela.offset < range.vaddr || end > file_end {
            return Err(RelroError::Straddles {
                offset: rela.offset,
            });
        }
        let at = (rela.offset - range.vaddr) as usize;
        let value = load_address.wrapping_add_signed(rela.addend);
        out[at..at + 8].copy_from_slice(&value.to_le_bytes());
        applied += 1;
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal static-PIE-like ELF: one R load segment holding the
    /// relocation table, one RW load segment that is also RELRO, and a
    /// dynamic segment inside it.
    pub(crate) fn image(relas: &[(u64, u32, i64)]) -> [u8; 0x400] {
        let mut elf = [0u8; 0x400];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&4u16.to_le_bytes());
        let mut ph = |i: usize, kind: u32, offset: u64, vaddr: u64, filesz: u64, memsz: u64| {
            let at = 0x40 + i * 56;
            elf[at..at + 4].copy_from_slice(&kind.to_le_bytes());
            elf[at + 8..at + 16].copy_from_slice(&offset.to_le_bytes());
            elf[at + 16..at + 24].copy_from_slice(&vaddr.to_le_bytes());
            elf[at + 32..at + 40].copy_from_slice(&filesz.to_le_bytes());
            elf[at + 40..at + 48].copy_from_slice(&memsz.to_le_bytes());
        };
        // R: file 0..0x200 at 0; RW + RELRO: file 0x200..0x300 at 0x1200
        // (0x100 more of padding in memory); DYNAMIC: its first 0x40 bytes.
        ph(0, PT_LOAD, 0, 0, 0x200, 0x200);
        ph(1, PT_LOAD, 0x200, 0x1200, 0x100, 0x200);
        ph(2, PT_GNU_RELRO, 0x200, 0x1200, 0x100, 0x200);
        ph(3, PT_DYNAMIC, 0x200, 0x1200, 0x40, 0x40);
        let dynamic = [
            (DT_RELA, 0x180),
            (DT_RELASZ, 24 * relas.len() as u64),
            (DT_RELAENT, 24),
            (DT_NULL, 0),
        ];
        for (i, (tag, value)) in dynamic.iter().enumerate() {
            let at = 0x200 + i * 16;
            elf[at..at + 8].copy_from_slice(&tag.to_le_bytes());
            elf[at + 8..at + 16].copy_from_slice(&value.to_le_bytes());
        }
        for (i, (offset, kind, addend)) in relas.iter().enumerate() {
            let at = 0x180 + i * 24;
            elf[at..at + 8].copy_from_slice(&offset.to_le_bytes());
            elf[at + 8..at + 16].copy_from_slice(&u64::from(*kind).to_le_bytes());
            elf[at + 16..at + 24].copy_from_slice(&addend.to_le_bytes());
        }
        elf
    }

    #[test]
    fn relative_relocations_in_relro_are_applied_for_the_load_address() {
        // One in RELRO, one outside (below it: ignored).
        let elf = image(&[(0x1248, 8, 0x1234), (0x10, 8, 5)]);
        let range = find(&elf).unwrap().unwrap();
        assert_eq!(
            range,
            RelroRange {
                vaddr: 0x1200,
                file_offset: 0x200,
                bytes: 0x100,
                mem_bytes: 0x200
            }
        );
        let mut out = [0u8; 0x100];
        assert_eq!(relocate(&elf, &range, 0x20_0000, &mut out), Ok(1));
        assert_eq!(out[0x48..0x50], 0x20_1234u64.to_le_bytes());
        assert_eq!(out[..0x48], elf[0x200..0x248]);
        let mut other = [0u8; 0x100];
        relocate(&elf, &range, 0x80_0000, &mut other).unwrap();
        assert_ne!(out, other);
    }

    #[test]
    fn other_relocations_in_relro_are_refused() {
        let elf = image(&[(0x1248, 1, 0)]);
        let range = find(&elf).unwrap().unwrap();
        let mut out = [0u8; 0x100];
        assert_eq!(
            relocate(&elf, &range, KERNEL_LOAD_ADDRESS, &mut out),
            Err(RelroError::OtherType {
                offset: 0x1248,
                kind: 1
            })
        );
        for offset in [0x11fc, 0x12fc, 0x1300] {
            let elf = image(&[(offset, 8, 0)]);
            assert_eq!(
                relocate(&elf, &range, KERNEL_LOAD_ADDRESS, &mut out),
                Err(RelroError::Straddles { offset }),
                "{offset:#x}"
            );
        }
        assert_eq!(
            relocate(&elf, &range, KERNEL_LOAD_ADDRESS, &mut [0u8; 3]),
            Err(RelroError::BufferSize)
        );
    }

    #[test]
    fn garbage_is_refused() {
        assert!(find(b"not an elf").is_err());
        let mut elf = image(&[]);
        elf[0x38] = 0xff;
        assert!(find(&elf).is_err());
    }
}
