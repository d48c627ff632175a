//! The device tree the kernel reads its platform from.
//!
//! Hermit 0.11 on x86_64 takes its memory only from `/memory@…` nodes, the ACPI
//! RSDP from `/hermit,rsdp`, and its command line from `/chosen/bootargs`.

use alloc::format;
use alloc::vec::Vec;
use core::ops::Range;

use vm_fdt::{FdtWriter, FdtWriterResult as Result};

/// Builds the device tree: one memory node per RAM region, the RSDP (when the
/// hypervisor gave one), and the command line.
pub fn build(ram: &[Range<u64>], rsdp: u64, cmdline: &str) -> Result<Vec<u8>> {
    let mut fdt = FdtWriter::new()?;
    let root = fdt.begin_node("")?;
    fdt.property_string("compatible", "hermit,pvh")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;

    for region in ram {
        let node = fdt.begin_node(&format!("memory@{:x}", region.start))?;
        fdt.property_string("device_type", "memory")?;
        fdt.property_array_u64("reg", &[region.start, region.end - region.start])?;
        fdt.end_node(node)?;
    }

    if rsdp != 0 {
        let node = fdt.begin_node(&format!("hermit,rsdp@{rsdp:x}"))?;
        fdt.property_array_u64("reg", &[rsdp, 1])?;
        fdt.end_node(node)?;
    }

    let chosen = fdt.begin_node("chosen")?;
    fdt.property_string("bootargs", cmdline)?;
    fdt.end_node(chosen)?;

    fdt.end_node(root)?;
    fdt.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's own device-tree reader (the `fdt` crate) finds everything.
    #[test]
    fn kernel_finds_memory_rsdp_and_bootargs() {
        let ram = [0..0x9fc00, 0x10_0000..0x2000_0000];
        let blob = build(&ram, 0xf52e0, "-- --port=8080").unwrap();
        let fdt = fdt::Fdt::new(&blob).unwrap();

        let regions: Vec<(usize, usize)> = fdt
            .find_all_nodes("/memory")
            .map(|m| {
                let reg = m.reg().unwrap().next().unwrap();
                (reg.starting_address as usize, reg.size.unwrap())
            })
            .collect();
        assert_eq!(regions, [(0, 0x9fc00), (0x10_0000, 0x1ff0_0000)]);

        let rsdp = fdt.find_node("/hermit,rsdp").unwrap().reg().unwrap().next();
        assert_eq!(rsdp.unwrap().starting_address as usize, 0xf52e0);
        assert_eq!(fdt.chosen().bootargs(), Some("-- --port=8080"));
    }

    #[test]
    fn no_rsdp_node_without_rsdp() {
        let region = 0x10_0000..0x200_0000;
        let blob = build(core::slice::from_ref(&region), 0, "").unwrap();
        let fdt = fdt::Fdt::new(&blob).unwrap();
        assert!(fdt.find_node("/hermit,rsdp").is_none());
        assert_eq!(fdt.chosen().bootargs(), Some(""));
    }
}
