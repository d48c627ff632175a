//! Where the kernel goes, and which memory the final page tables map.
//!
//! Hermit 0.11 hands the allocator every RAM region from the device tree, except
//! that the region holding the kernel starts only at the kernel's end. So all of
//! the loader's own memory (its image, the page tables, the boot info, the
//! device tree, the kernel's boot stack) must sit below the kernel, in the same
//! RAM region: the loader is linked below 2 MiB and the kernel goes at the first
//! 2 MiB boundary above it, [`KERNEL_LOAD_ADDRESS`], on every hypervisor.
//!
//! That address is fixed because sealing measures RELRO as relocated for it
//! (`vigil_core::v1::relro`): the kernel never goes anywhere else. Where the
//! image module lies in the way (Xen's toolstack puts it right after the
//! loader), the module is moved to the top of the loader's RAM region first;
//! if that is impossible the boot fails, naming the address.

use core::fmt;
use core::ops::Range;

/// A 2 MiB page, the kernel's alignment and the granule of the final mapping.
pub const PAGE_2M: u64 = 0x20_0000;

pub use vigil_core::v1::relro::KERNEL_LOAD_ADDRESS;

/// Why the kernel cannot be placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// The loader itself is not inside usable RAM.
    LoaderNotInRam,
    /// The loader reaches the kernel's fixed address.
    LoaderInTheWay {
        /// The loader's end.
        loader_end: u64,
    },
    /// The image module cannot be moved out of the kernel's way.
    ModuleInTheWay {
        /// Where the module lies.
        module_start: u64,
        /// Its length.
        module_len: u64,
    },
    /// No room for the kernel above the loader in the loader's RAM region.
    NoRoom {
        /// Bytes the kernel needs.
        needed: u64,
        /// The loader's RAM region.
        region_end: u64,
    },
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::LoaderNotInRam => write!(f, "the loader is not in a usable RAM region"),
            Self::LoaderInTheWay { loader_end } => write!(
                f,
                "the loader ends at {loader_end:#x}, above the sealed kernel load address {KERNEL_LOAD_ADDRESS:#x}"
            ),
            Self::ModuleInTheWay {
                module_start,
                module_len,
            } => write!(
                f,
                "the image module ({module_len:#x} bytes at {module_start:#x}) overlaps the sealed kernel load address {KERNEL_LOAD_ADDRESS:#x} and cannot be moved above the kernel; give the guest more memory"
            ),
            Self::NoRoom { needed, region_end } => write!(
                f,
                "no room for a {needed:#x}-byte kernel below {region_end:#x} outside the image module; give the guest more memory"
            ),
        }
    }
}

const fn align_up(value: u64, align: u64) -> u64 {
    value.div_ceil(align) * align
}

fn overlaps(a: &Range<u64>, b: &Range<u64>) -> bool {
    a.start < b.end && b.start < a.end
}

/// Where the kernel goes, and where the image module must first move to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The kernel's load address: always [`KERNEL_LOAD_ADDRESS`].
    pub kernel: u64,
    /// If the module overlaps the kernel: the address (4 KiB-aligned, at
    /// the top of the loader's RAM region, above the kernel) to move its
    /// first `image_len` bytes to before loading. The ranges may overlap
    /// (a memmove).
    pub move_module_to: Option<u64>,
}

/// Places a `size`-byte kernel at [`KERNEL_LOAD_ADDRESS`] in the RAM region
/// that holds the loader, and, if the image module (of which the kernel is
/// loaded from the first `image_len` bytes) is in the way, finds where to
/// move it. Anything else is an error: the kernel never goes elsewhere.
pub fn place_kernel_fixed(
    ram: &[Range<u64>],
    loader: &Range<u64>,
    module: &Range<u64>,
    image_len: u64,
    size: u64,
) -> Result<Placement, LayoutError> {
    let region = ram
        .iter()
        .find(|r| r.start <= loader.start && loader.end <= r.end)
        .ok_or(LayoutError::LoaderNotInRam)?;
    if loader.end > KERNEL_LOAD_ADDRESS {
        return Err(LayoutError::LoaderInTheWay {
            loader_end: loader.end,
        });
    }
    let kernel = KERNEL_LOAD_ADDRESS
        ..KERNEL_LOAD_ADDRESS
            .checked_add(size)
            .ok_or(LayoutError::NoRoom {
                needed: size,
                region_end: region.end,
            })?;
    if kernel.end > region.end {
        return Err(LayoutError::NoRoom {
            needed: size,
            region_end: region.end,
        });
    }
    let image = module.start..module.start.saturating_add(image_len).min(module.end);
    if !overlaps(&kernel, &image) {
        return Ok(Placement {
            kernel: kernel.start,
            move_module_to: None,
        });
    }
    let in_the_way = LayoutError::ModuleInTheWay {
        module_start: module.start,
        module_len: image_len,
    };
    let to = region
        .end
        .checked_sub(image_len)
        .map(|top| top & !0xfff)
        .filter(|&to| to >= kernel.end)
        .ok_or(in_the_way)?;
    Ok(Placement {
        kernel: kernel.start,
        move_module_to: Some(to),
    })
}

/// The 2 MiB frames (by start address) that the final page tables map with
/// huge pages: every frame that overlaps usable RAM, except frame 0, which is
/// mapped with 4 KiB pages. This mirrors what the kernel maps itself (it
/// identity-maps RAM in 2 MiB frames and expects to find any existing mapping
/// to be the same frame), so it never finds a conflicting entry.
pub fn huge_frames(ram: &[Range<u64>]) -> impl Iterator<Item = u64> + '_ {
    let mut last = 0;
    ram.iter()
        .filter(|r| r.end > r.start)
        .flat_map(|r| {
            let first = (r.start / PAGE_2M) * PAGE_2M;
            let end = align_up(r.end, PAGE_2M);
            (first..end).step_by(PAGE_2M as usize)
        })
        .filter(move |&frame| {
            // Regions come sorted from every PVH firmware seen; skip repeats
            // where two regions share a frame.
            let fresh = frame != 0 && frame >= last;
            if fresh {
                last = frame + PAGE_2M;
            }
            fresh
        })
}

/// The end of the highest usable RAM region.
pub fn ram_end(ram: &[Range<u64>]) -> u64 {
    ram.iter().map(|r| r.end).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const QEMU_PC: [Range<u64>; 2] = [0..0x9fc00, MIB..0x1ffe_0000];

    #[test]
    fn the_kernel_always_goes_to_the_sealed_address() {
        let loader = 0x17_8000..0x1a_0000;
        // QEMU: the module at the top of RAM, nothing moves.
        let module = 0x1fa0_0000..0x1ff8_0000;
        assert_eq!(
            place_kernel_fixed(&QEMU_PC, &loader, &module, 0x50_0000, 3 * MIB),
            Ok(Placement {
                kernel: KERNEL_LOAD_ADDRESS,
                move_module_to: None
            })
        );
        // Xen: the module right after the loader; it moves to the top of RAM.
        let module = 0x1a_0000..0x6b_0000;
        assert_eq!(
            place_kernel_fixed(&QEMU_PC, &loader, &module, 0x50_0123, 3 * MIB),
            Ok(Placement {
                kernel: KERNEL_LOAD_ADDRESS,
                move_module_to: Some((0x1ffe_0000 - 0x50_0123) & !0xfff)
            })
        );
        // A trailer past the image bytes does not count.
        let module = 0x1a_0000..0x20_1000;
        assert_eq!(
            place_kernel_fixed(&QEMU_PC, &loader, &module, 0x6_0000, 3 * MIB)
                .map(|p| p.move_module_to),
            Ok(None)
        );
    }

    #[test]
    fn no_other_address_is_ever_chosen() {
        let loader = 0x17_8000..0x1a_0000;
        let ram = [0..0x9fc00, MIB..8 * MIB];
        // The module in the way, and no room above the kernel for it.
        let module = 0x1a_0000..0x6b_0000;
        assert_eq!(
            place_kernel_fixed(&ram, &loader, &module, 0x51_0000, 3 * MIB),
            Err(LayoutError::ModuleInTheWay {
                module_start: 0x1a_0000,
                module_len: 0x51_0000
            })
        );
        assert_eq!(
            place_kernel_fixed(&ram, &loader, &(7 * MIB..8 * MIB), MIB, 7 * MIB),
            Err(LayoutError::NoRoom {
                needed: 7 * MIB,
                region_end: 8 * MIB
            })
        );
        assert_eq!(
            place_kernel_fixed(&ram, &(MIB..3 * MIB), &(7 * MIB..8 * MIB), MIB, MIB),
            Err(LayoutError::LoaderInTheWay {
                loader_end: 3 * MIB
            })
        );
        assert!(
            LayoutError::ModuleInTheWay {
                module_start: 0,
                module_len: 1
            }
            .to_string()
            .contains("0x200000")
        );
    }

    #[test]
    fn huge_frames_cover_ram_but_not_frame_zero() {
        let frames: Vec<u64> = huge_frames(&QEMU_PC).collect();
        assert_eq!(frames.first(), Some(&(2 * MIB)));
        // The partial last frame (RAM ends at 0x1ffe0000) is mapped whole, as the kernel would.
        assert_eq!(frames.last(), Some(&0x1fe0_0000));
        assert_eq!(frames.len(), 255);
        assert!(frames.windows(2).all(|w| w[1] == w[0] + PAGE_2M));
    }

    #[test]
    fn huge_frames_leave_holes_unmapped() {
        // RAM split by the PCI hole, as QEMU does with more than ~3 GiB.
        let ram = [0..0x9fc00, MIB..0xc000_0000, 0x1_0000_0000..0x1_4000_0000];
        let frames: Vec<u64> = huge_frames(&ram).collect();
        assert!(
            !frames
                .iter()
                .any(|&f| (0xc000_0000..0x1_0000_0000).contains(&f))
        );
        assert_eq!(frames.last(), Some(&(0x1_4000_0000 - PAGE_2M)));
    }
}
