//! Where the kernel goes, and which memory the final page tables map.
//!
//! Hermit 0.11 hands the allocator every RAM region from the device tree, except
//! that the region holding the kernel starts only at the kernel's end. So all of
//! the loader's own memory (its image, the page tables, the boot info, the
//! device tree, the kernel's boot stack) must sit below the kernel, in the same
//! RAM region: the loader is linked below 2 MiB and the kernel goes at the first
//! free 2 MiB boundary above it.

use core::fmt;
use core::ops::Range;

/// A 2 MiB page, the kernel's alignment and the granule of the final mapping.
pub const PAGE_2M: u64 = 0x20_0000;

/// Why the kernel cannot be placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// The loader itself is not inside usable RAM.
    LoaderNotInRam,
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

/// The lowest 2 MiB-aligned address at or above `loader.end`, in the RAM
/// region that holds the loader, where `size` bytes fit without touching the
/// image module.
pub fn place_kernel(
    ram: &[Range<u64>],
    loader: &Range<u64>,
    module: &Range<u64>,
    size: u64,
) -> Result<u64, LayoutError> {
    let region = ram
        .iter()
        .find(|r| r.start <= loader.start && loader.end <= r.end)
        .ok_or(LayoutError::LoaderNotInRam)?;
    let no_room = LayoutError::NoRoom {
        needed: size,
        region_end: region.end,
    };
    let mut start = align_up(loader.end, PAGE_2M);
    loop {
        let end = start.checked_add(size).ok_or(no_room)?;
        if end > region.end {
            return Err(no_room);
        }
        let candidate = start..end;
        if !overlaps(&candidate, module) {
            return Ok(start);
        }
        start = align_up(module.end, PAGE_2M);
    }
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
    fn kernel_goes_right_above_the_loader() {
        let loader = MIB..MIB + 0x6_0000;
        let module = 0x1fe0_0000..0x1ff8_0000;
        assert_eq!(
            place_kernel(&QEMU_PC, &loader, &module, 3 * MIB),
            Ok(2 * MIB)
        );
    }

    #[test]
    fn kernel_skips_the_module() {
        let loader = MIB..MIB + 0x6_0000;
        let module = 3 * MIB..4 * MIB;
        assert_eq!(
            place_kernel(&QEMU_PC, &loader, &module, 3 * MIB),
            Ok(4 * MIB)
        );
    }

    #[test]
    fn too_little_memory_is_an_error() {
        let ram = [0..0x9fc00, MIB..8 * MIB];
        let loader = MIB..MIB + 0x6_0000;
        // At 2 MiB the kernel would overlap the module; above it, RAM ends first.
        let module = 4 * MIB..5 * MIB;
        assert_eq!(
            place_kernel(&ram, &loader, &module, 3 * MIB),
            Err(LayoutError::NoRoom {
                needed: 3 * MIB,
                region_end: 8 * MIB
            })
        );
        assert_eq!(
            place_kernel(&ram, &(16 * MIB..17 * MIB), &module, MIB),
            Err(LayoutError::LoaderNotInRam)
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
