//! The reference block that sealing fills in ([`vigil_core::v1::refblock`]).
//!
//! The block is a static of its own in the writable section
//! [`refblock::SECTION`]. `vigil-build seal` overwrites it in the image file,
//! and at boot the per-boot report key is written into its key slot, so the
//! bytes the service was compiled with are not the bytes it runs with. The
//! block is therefore made of atomics: the compiler must treat its content as
//! unknown and read memory every time, instead of folding in the initial
//! value.

use std::sync::atomic::{AtomicU8, Ordering};

use vigil_core::v1::refblock::{self, RefBlock, RefBlockError, SIZE};

/// The block's storage.
#[repr(C, align(64))]
struct Block([AtomicU8; SIZE]);

// SAFETY: (of the `link_section`) the section holds only this static, which
// is plain initialized data; the linker places it in a writable load segment
// like `.data` (checked by `vigil-build seal`, which refuses an image whose
// block is elsewhere).
#[allow(unsafe_code)]
#[used]
#[unsafe(link_section = ".vigil_ref")]
static BLOCK: Block = Block(unsealed());

const fn unsealed() -> [AtomicU8; SIZE] {
    let mut block = [const { AtomicU8::new(0) }; SIZE];
    let mut i = 0;
    while i < SIZE {
        block[i] = AtomicU8::new(refblock::UNSEALED[i]);
        i += 1;
    }
    block
}

/// The block's bytes as they are in memory now.
pub fn bytes() -> [u8; SIZE] {
    let mut out = [0u8; SIZE];
    for (byte, cell) in out.iter_mut().zip(&BLOCK.0) {
        *byte = cell.load(Ordering::Relaxed);
    }
    out
}

/// The block's parsed content.
pub fn read() -> Result<RefBlock, RefBlockError> {
    refblock::parse(&bytes())
}

/// The per-boot report key's secret seed, if the loader provisioned one: the
/// block's key slot ([`refblock::key_slot`]). dom0's measured launch hands it
/// to the loader, which writes it here; the slot is empty in every image file.
/// Never log or print it.
pub fn report_seed() -> Option<[u8; 32]> {
    refblock::key_slot(&bytes())
}

/// Where the block lies in memory at run time.
pub fn runtime_address() -> u64 {
    std::ptr::addr_of!(BLOCK) as u64
}

/// How far the image was moved from its link-time addresses when loaded: the
/// block's runtime address minus the link-time address sealing recorded.
pub fn load_offset(link_vaddr: u64) -> u64 {
    runtime_address().wrapping_sub(link_vaddr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unsealed_build_carries_the_unsealed_block() {
        assert_eq!(bytes(), refblock::UNSEALED);
        assert_eq!(read(), Ok(RefBlock::Unsealed));
        assert_eq!(report_seed(), None);
        assert_eq!(runtime_address() % 64, 0);
    }
}
