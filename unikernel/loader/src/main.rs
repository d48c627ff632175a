//! Vigil's boot loader.
//!
//! QEMU (`-kernel loader -initrd image`) and Xen (PVH, or HVM direct kernel
//! boot) enter it through its PVH note with the Hermit image as module 0. It
//! reads the start info, loads and relocates the image right above itself
//! (from the bytes before a per-boot key trailer, if module 0 has one, then
//! writes that key into the image's reference block and wipes the trailer),
//! describes the machine to the kernel in a device tree (memory, ACPI RSDP,
//! command line passed through unchanged), builds the page tables Hermit 0.11
//! expects and jumps to the kernel.
//!
//! Only `boot` is bare-metal code; the decisions live in modules that are
//! unit-tested on the host.

#![cfg_attr(target_os = "none", no_std, no_main)]
#![cfg_attr(not(target_os = "none"), allow(dead_code))]

extern crate alloc;

#[cfg(target_os = "none")]
mod boot;
mod elf_check;
mod fdt;
mod layout;
mod paging;
mod pci;
mod refslot;
mod start_info;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "vigil-loader is a PVH boot image for QEMU's -kernel or Xen; \
         build it with `vigil-build build`, seal it with `vigil-build seal` and boot it \
         with `vigil-dom0 launch`"
    );
    std::process::exit(2);
}
