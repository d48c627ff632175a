//! The page tables the kernel starts with.
//!
//! Hermit 0.11 keeps using the tables it is given and assumes physical memory
//! is identity-mapped. It needs the first 2 MiB mapped with 4 KiB pages (it
//! remaps 0x8000 to start the other CPUs) and nothing mapped beyond RAM (it maps
//! the APIC and device memory itself). So: one 4 KiB page table for frame 0,
//! 2 MiB pages for every other frame that overlaps RAM ([`huge_frames`]).
//!
//! Only the kernel's own 2 MiB frames and frame 0 (this loader, which runs
//! until its jump, and Hermit's processor start-up code at 0x8000) are
//! executable; every other frame is mapped no-execute (the heap and the
//! stacks Hermit maps elsewhere alias these frames). Inside its frames the
//! service then narrows execute to its code (`vigil_service::protect`).

use core::fmt;
use core::ops::Range;

use crate::layout::{PAGE_2M, huge_frames};

const PRESENT: u64 = 1;
const WRITABLE: u64 = 1 << 1;
const HUGE: u64 = 1 << 7;
const NO_EXECUTE: u64 = 1 << 63;
const ENTRIES: usize = 512;
const GIB: u64 = 1 << 30;

/// Address space the tables can map: one page directory per GiB.
pub const MAX_GIB: usize = 64;

/// One page-aligned table of 512 entries.
#[derive(Clone, Copy)]
#[repr(C, align(4096))]
pub struct Table(pub [u64; ENTRIES]);

/// The whole set of tables, in one place so it can live in the loader's image.
#[repr(C)]
pub struct PageTables {
    /// Level 4.
    pub pml4: Table,
    /// Level 3, covering the first 512 GiB.
    pub pdpt: Table,
    /// 4 KiB pages for the first 2 MiB.
    pub first_2m: Table,
    /// One level-2 table per GiB.
    pub pd: [Table; MAX_GIB],
}

/// RAM reaches beyond what the tables can map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooMuchRam {
    /// The first frame that cannot be mapped.
    pub frame: u64,
}

impl fmt::Display for TooMuchRam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RAM at {:#x} is beyond the {MAX_GIB} GiB this loader maps",
            self.frame
        )
    }
}

impl PageTables {
    /// All entries empty.
    pub const fn new() -> Self {
        Self {
            pml4: Table([0; ENTRIES]),
            pdpt: Table([0; ENTRIES]),
            first_2m: Table([0; ENTRIES]),
            pd: [Table([0; ENTRIES]); MAX_GIB],
        }
    }

    /// Fills the tables for `ram`, executable only in frame 0 and the 2 MiB
    /// frames that overlap `kernel`. `phys` gives a table's physical address
    /// (its own address, on an identity-mapped loader).
    pub fn build(
        &mut self,
        ram: &[Range<u64>],
        kernel: &Range<u64>,
        phys: impl Fn(&Table) -> u64,
    ) -> Result<(), TooMuchRam> {
        // Emptied in place, not `*self = Self::new()`: that builds the 268 KiB
        // value on the stack first whenever the optimizer does not turn it
        // into a `memset` of `self`, and the loader's boot stack is 64 KiB
        // (a build where it did not ran its stack probe into the boot page
        // tables below the stack and triple-faulted before printing a line).
        let Self {
            pml4,
            pdpt,
            first_2m,
            pd,
        } = self;
        for table in [pml4, pdpt, first_2m].into_iter().chain(pd.iter_mut()) {
            table.0.fill(0);
        }
        for (i, entry) in self.first_2m.0.iter_mut().enumerate() {
            *entry = (i as u64 * 0x1000) | PRESENT | WRITABLE;
        }
        self.pd[0].0[0] = phys(&self.first_2m) | PRESENT | WRITABLE;

        for frame in huge_frames(ram) {
            let gib = usize::try_from(frame / GIB).unwrap_or(usize::MAX);
            let Some(pd) = self.pd.get_mut(gib) else {
                return Err(TooMuchRam { frame });
            };
            let index = ((frame % GIB) / PAGE_2M) as usize;
            let executable = frame < kernel.end && kernel.start < frame + PAGE_2M;
            let no_execute = if executable { 0 } else { NO_EXECUTE };
            pd.0[index] = frame | PRESENT | WRITABLE | HUGE | no_execute;
        }

        for gib in 0..MAX_GIB {
            if self.pd[gib].0.iter().any(|&e| e != 0) {
                self.pdpt.0[gib] = phys(&self.pd[gib]) | PRESENT | WRITABLE;
            }
        }
        self.pml4.0[0] = phys(&self.pdpt) | PRESENT | WRITABLE;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(table: &Table) -> u64 {
        table as *const Table as u64
    }

    /// Walks the tables like the MMU: the physical address `virt` maps to.
    fn translate(tables: &PageTables, virt: u64) -> Option<u64> {
        let follow = |entry: u64| -> Option<&Table> {
            if entry & PRESENT == 0 {
                return None;
            }
            let target = entry & !0xfff & ((1 << 52) - 1);
            [&tables.pdpt, &tables.first_2m]
                .into_iter()
                .chain(tables.pd.iter())
                .find(|t| addr(t) == target)
        };
        let l3 = follow(tables.pml4.0[(virt >> 39) as usize & 511])?;
        let l2_entry = l3.0[(virt >> 30) as usize & 511];
        let l2 = follow(l2_entry)?;
        let l2e = l2.0[(virt >> 21) as usize & 511];
        if l2e & PRESENT == 0 {
            return None;
        }
        if l2e & HUGE != 0 {
            return Some((l2e & !(PAGE_2M - 1) & ((1 << 52) - 1)) + (virt & (PAGE_2M - 1)));
        }
        let l1 = follow(l2e)?;
        let l1e = l1.0[(virt >> 12) as usize & 511];
        (l1e & PRESENT != 0).then(|| (l1e & !0xfff) + (virt & 0xfff))
    }

    #[test]
    fn identity_maps_ram_and_nothing_else() {
        let ram = [0..0x9fc00, 0x10_0000..0x1ffe_0000];
        let mut tables = Box::new(PageTables::new());
        tables.build(&ram, &(0x20_0000..0x33_0000), addr).unwrap();
        for virt in [
            0,
            0x8000,
            0xb8000,
            0x10_0000,
            0x20_0000,
            0x1234_5678,
            0x1fff_ffff,
        ] {
            assert_eq!(translate(&tables, virt), Some(virt), "{virt:#x}");
        }
        for virt in [0x2000_0000, 0xfec0_0000, 0xfee0_0000, 0x1_0000_0000] {
            assert_eq!(translate(&tables, virt), None, "{virt:#x}");
        }
        // The first 2 MiB use 4 KiB pages, the rest 2 MiB pages.
        assert_eq!(tables.pd[0].0[0] & HUGE, 0);
        assert_ne!(tables.pd[0].0[1] & HUGE, 0);
    }

    #[test]
    fn only_frame_0_and_the_kernel_frames_are_executable() {
        let ram = [0..0x9fc00, 0x10_0000..0x1ffe_0000];
        let mut tables = Box::new(PageTables::new());
        // A kernel over two frames: 0x200000.. and 0x400000..
        tables.build(&ram, &(0x20_0000..0x40_1000), addr).unwrap();
        let pd = &tables.pd[0].0;
        assert_eq!(
            pd[0] & NO_EXECUTE,
            0,
            "frame 0: the loader, the AP start-up code"
        );
        assert!(tables.first_2m.0.iter().all(|e| e & NO_EXECUTE == 0));
        assert_eq!(pd[1] & NO_EXECUTE, 0);
        assert_eq!(pd[2] & NO_EXECUTE, 0);
        for (i, entry) in pd.iter().enumerate().skip(3).filter(|(_, e)| **e != 0) {
            assert_ne!(entry & NO_EXECUTE, 0, "frame {i}");
        }
        // Still present and writable.
        assert_eq!(translate(&tables, 0x1234_5678), Some(0x1234_5678));
        assert_ne!(pd[100] & WRITABLE, 0);
    }

    #[test]
    fn ram_above_4g() {
        let ram = [0x10_0000..0xc000_0000, 0x1_0000_0000..0x1_8000_0000];
        let mut tables = Box::new(PageTables::new());
        tables.build(&ram, &(0x20_0000..0x30_0000), addr).unwrap();
        assert_eq!(translate(&tables, 0x1_7fff_f000), Some(0x1_7fff_f000));
        assert_eq!(translate(&tables, 0xd000_0000), None);
    }

    #[test]
    fn too_much_ram() {
        let region = 0x10_0000..(MAX_GIB as u64 + 1) * GIB;
        let mut tables = Box::new(PageTables::new());
        assert_eq!(
            tables.build(
                core::slice::from_ref(&region),
                &(0x20_0000..0x30_0000),
                addr
            ),
            Err(TooMuchRam {
                frame: MAX_GIB as u64 * GIB
            })
        );
    }
}
