//! A first look at the image before `hermit-entry` parses it.
//!
//! `hermit-entry`'s parser assumes a well-formed ELF (it indexes and unwraps),
//! so a truncated or foreign file would end the boot with a panic about slice
//! indices. These checks turn the common cases into a message that says what
//! is wrong with the image.

const ELF64_HEADER: usize = 64;
const PROGRAM_HEADER: u64 = 56;
const SECTION_HEADER: u64 = 64;
const EM_X86_64: u16 = 62;

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

fn table_fits(len: u64, offset: u64, count: u16, entry: u64) -> bool {
    offset
        .checked_add(u64::from(count) * entry)
        .is_some_and(|end| end <= len)
}

/// Whether `image` is an x86-64 ELF64 file whose header tables lie inside it.
pub fn check(image: &[u8]) -> Result<(), &'static str> {
    if image.len() < ELF64_HEADER || !image.starts_with(b"\x7fELF") {
        return Err("the image (module 0) is not an ELF file");
    }
    if image[4] != 2 || image[5] != 1 {
        return Err("the image is not a little-endian ELF64 file");
    }
    if u16_at(image, 18) != EM_X86_64 {
        return Err("the image is not built for x86-64");
    }
    let len = image.len() as u64;
    if !table_fits(len, u64_at(image, 32), u16_at(image, 56), PROGRAM_HEADER)
        || !table_fits(len, u64_at(image, 40), u16_at(image, 60), SECTION_HEADER)
    {
        return Err("the image is truncated: its header tables end past the end of the file");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Vec<u8> {
        let mut h = vec![0u8; 4096];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        h[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        h[56..58].copy_from_slice(&4u16.to_le_bytes()); // e_phnum
        h[40..48].copy_from_slice(&1024u64.to_le_bytes()); // e_shoff
        h[60..62].copy_from_slice(&8u16.to_le_bytes()); // e_shnum
        h
    }

    #[test]
    fn accepts_a_plausible_elf() {
        assert_eq!(check(&header()), Ok(()));
    }

    #[test]
    fn names_what_is_wrong() {
        assert!(check(b"garbage").unwrap_err().contains("not an ELF"));
        let mut h = header();
        h[4] = 1;
        assert!(check(&h).unwrap_err().contains("ELF64"));
        let mut h = header();
        h[18] = 40;
        assert!(check(&h).unwrap_err().contains("x86-64"));
        let h = header();
        assert!(check(&h[..1500]).unwrap_err().contains("truncated"));
        let mut h = header();
        h[40..48].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(check(&h).unwrap_err().contains("truncated"));
    }
}
