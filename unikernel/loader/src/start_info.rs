//! What the hypervisor hands a PVH entry: `struct hvm_start_info` (Xen's
//! `public/arch-x86/hvm/start_info.h`, version 1), read once and copied out.
//!
//! QEMU's and Xen's PVH boot put the start info, the module list and the memory
//! map wherever they like (on microvm, on the firmware's stack), so the loader
//! copies everything it needs into [`BootParams`] before it touches memory.

use core::fmt;
use core::ops::Range;

/// `hvm_start_info.magic`.
pub const MAGIC: u32 = 0x336e_c578;
/// Memory-map entries kept; more is an error.
pub const MAX_REGIONS: usize = 64;
/// Bytes of kernel command line kept (NUL excluded); longer is an error.
pub const MAX_CMDLINE: usize = 4096;
/// `hvm_memmap_table_entry.type` for usable RAM (the E820 type).
const MEMMAP_RAM: u32 = 1;

/// Byte offsets in `struct hvm_start_info`.
mod offset {
    pub const MAGIC: u64 = 0;
    pub const VERSION: u64 = 4;
    pub const NR_MODULES: u64 = 12;
    pub const MODLIST_PADDR: u64 = 16;
    pub const CMDLINE_PADDR: u64 = 24;
    pub const RSDP_PADDR: u64 = 32;
    pub const MEMMAP_PADDR: u64 = 40;
    pub const MEMMAP_ENTRIES: u64 = 48;
}
/// `sizeof(struct hvm_modlist_entry)`: paddr, size, cmdline_paddr, reserved.
const MODLIST_ENTRY_SIZE: u64 = 32;
/// `sizeof(struct hvm_memmap_table_entry)`: addr, size, type, reserved.
const MEMMAP_ENTRY_SIZE: u64 = 24;

/// Reads guest-physical memory. The loader reads identity-mapped memory; tests
/// read a byte buffer.
pub trait PhysMem {
    /// Fills `buf` from physical address `addr`; false if that range cannot be read.
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool;
}

/// The start info's contents, copied out.
#[derive(Clone, Debug)]
pub struct BootParams {
    /// Usable RAM, in the order the memory map lists it.
    pub ram: [Range<u64>; MAX_REGIONS],
    /// How many entries of `ram` are used.
    pub ram_len: usize,
    /// The kernel command line (`-append`), without its NUL.
    pub cmdline: [u8; MAX_CMDLINE],
    /// How many bytes of `cmdline` are used.
    pub cmdline_len: usize,
    /// Physical address of the ACPI RSDP, 0 if none was given.
    pub rsdp: u64,
    /// Module 0: the Hermit image (`-initrd`).
    pub image: Range<u64>,
}

impl BootParams {
    /// The usable RAM regions.
    pub fn ram(&self) -> &[Range<u64>] {
        &self.ram[..self.ram_len]
    }

    /// The kernel command line.
    pub fn cmdline(&self) -> &str {
        // `read` checked that these bytes are UTF-8.
        core::str::from_utf8(&self.cmdline[..self.cmdline_len]).unwrap_or("")
    }
}

/// Why the start info cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartInfoError {
    /// Memory the start info points to cannot be read.
    Unreadable {
        /// What was being read.
        what: &'static str,
        /// Where.
        addr: u64,
    },
    /// Not a PVH start info.
    BadMagic(u32),
    /// Version 0 has no memory map, and the kernel needs one.
    NoMemoryMap {
        /// The version found.
        version: u32,
    },
    /// No module: the Hermit image must be passed as module 0 (`-initrd`).
    NoImage,
    /// Module 0 is empty or wraps around.
    BadImage {
        /// Its address.
        addr: u64,
        /// Its size.
        size: u64,
    },
    /// More RAM regions than [`MAX_REGIONS`].
    TooManyRegions(u32),
    /// No usable RAM in the memory map.
    NoRam,
    /// A command line of [`MAX_CMDLINE`] bytes or more.
    CmdlineTooLong,
    /// A command line that is not UTF-8.
    CmdlineNotUtf8,
}

impl fmt::Display for StartInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Unreadable { what, addr } => write!(f, "cannot read the {what} at {addr:#x}"),
            Self::BadMagic(magic) => write!(
                f,
                "not a PVH start info (magic {magic:#x}, expected {MAGIC:#x})"
            ),
            Self::NoMemoryMap { version } => write!(
                f,
                "start info version {version} has no memory map (version 1 or later needed)"
            ),
            Self::NoImage => write!(f, "no module: pass the Hermit image as module 0 (-initrd)"),
            Self::BadImage { addr, size } => {
                write!(f, "module 0 at {addr:#x} has an unusable size {size:#x}")
            }
            Self::TooManyRegions(n) => {
                write!(
                    f,
                    "{n} memory-map entries (at most {MAX_REGIONS} are supported)"
                )
            }
            Self::NoRam => write!(f, "the memory map lists no usable RAM"),
            Self::CmdlineTooLong => {
                write!(f, "kernel command line is {MAX_CMDLINE} bytes or longer")
            }
            Self::CmdlineNotUtf8 => write!(f, "kernel command line is not UTF-8"),
        }
    }
}

fn read_u32(mem: &impl PhysMem, addr: u64, what: &'static str) -> Result<u32, StartInfoError> {
    let mut buf = [0; 4];
    if mem.read(addr, &mut buf) {
        Ok(u32::from_le_bytes(buf))
    } else {
        Err(StartInfoError::Unreadable { what, addr })
    }
}

fn read_u64(mem: &impl PhysMem, addr: u64, what: &'static str) -> Result<u64, StartInfoError> {
    let mut buf = [0; 8];
    if mem.read(addr, &mut buf) {
        Ok(u64::from_le_bytes(buf))
    } else {
        Err(StartInfoError::Unreadable { what, addr })
    }
}

/// Reads the start info at `addr` and everything it points to into `out`.
pub fn read(mem: &impl PhysMem, addr: u64, out: &mut BootParams) -> Result<(), StartInfoError> {
    let magic = read_u32(mem, addr + offset::MAGIC, "start info")?;
    if magic != MAGIC {
        return Err(StartInfoError::BadMagic(magic));
    }
    let version = read_u32(mem, addr + offset::VERSION, "start info")?;
    if version < 1 {
        return Err(StartInfoError::NoMemoryMap { version });
    }

    let nr_modules = read_u32(mem, addr + offset::NR_MODULES, "start info")?;
    if nr_modules == 0 {
        return Err(StartInfoError::NoImage);
    }
    let modlist = read_u64(mem, addr + offset::MODLIST_PADDR, "start info")?;
    let image_addr = read_u64(mem, modlist, "module list")?;
    let image_size = read_u64(mem, modlist + 8, "module list")?;
    let _ = MODLIST_ENTRY_SIZE; // only module 0 is used
    out.image = match image_addr.checked_add(image_size) {
        Some(end) if image_size > 0 => image_addr..end,
        _ => {
            return Err(StartInfoError::BadImage {
                addr: image_addr,
                size: image_size,
            });
        }
    };

    out.rsdp = read_u64(mem, addr + offset::RSDP_PADDR, "start info")?;

    let cmdline = read_u64(mem, addr + offset::CMDLINE_PADDR, "start info")?;
    out.cmdline_len = 0;
    if cmdline != 0 {
        let mut len = 0;
        loop {
            let mut byte = [0];
            if !mem.read(cmdline + len as u64, &mut byte) {
                return Err(StartInfoError::Unreadable {
                    what: "command line",
                    addr: cmdline,
                });
            }
            if byte[0] == 0 {
                break;
            }
            if len == MAX_CMDLINE {
                return Err(StartInfoError::CmdlineTooLong);
            }
            out.cmdline[len] = byte[0];
            len += 1;
        }
        if core::str::from_utf8(&out.cmdline[..len]).is_err() {
            return Err(StartInfoError::CmdlineNotUtf8);
        }
        out.cmdline_len = len;
    }

    let memmap = read_u64(mem, addr + offset::MEMMAP_PADDR, "start info")?;
    let entries = read_u32(mem, addr + offset::MEMMAP_ENTRIES, "start info")?;
    out.ram_len = 0;
    for i in 0..u64::from(entries) {
        let entry = memmap + i * MEMMAP_ENTRY_SIZE;
        let start = read_u64(mem, entry, "memory map")?;
        let size = read_u64(mem, entry + 8, "memory map")?;
        let ty = read_u32(mem, entry + 16, "memory map")?;
        // microvm ends its map with an all-zero entry; skip empty entries.
        if ty != MEMMAP_RAM || size == 0 {
            continue;
        }
        let Some(end) = start.checked_add(size) else {
            continue;
        };
        if out.ram_len == MAX_REGIONS {
            return Err(StartInfoError::TooManyRegions(entries));
        }
        out.ram[out.ram_len] = start..end;
        out.ram_len += 1;
    }
    if out.ram_len == 0 {
        return Err(StartInfoError::NoRam);
    }
    Ok(())
}

impl BootParams {
    /// All fields empty; [`read`] fills them.
    pub const fn empty() -> Self {
        Self {
            ram: [const { 0..0 }; MAX_REGIONS],
            ram_len: 0,
            cmdline: [0; MAX_CMDLINE],
            cmdline_len: 0,
            rsdp: 0,
            image: 0..0,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Guest memory for tests: a byte buffer starting at physical address 0.
    pub(crate) struct FakeMem(pub Vec<u8>);

    impl PhysMem for FakeMem {
        fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
            let Ok(start) = usize::try_from(addr) else {
                return false;
            };
            match self.0.get(start..start + buf.len()) {
                Some(src) => {
                    buf.copy_from_slice(src);
                    true
                }
                None => false,
            }
        }
    }

    impl FakeMem {
        fn put(&mut self, addr: usize, bytes: &[u8]) {
            self.0[addr..addr + bytes.len()].copy_from_slice(bytes);
        }
    }

    const INFO: usize = 0x1000;
    const MODLIST: usize = 0x1100;
    const CMDLINE: usize = 0x1200;
    const MEMMAP: usize = 0x1400;

    /// A start info as QEMU's `pc` machine gives it: low RAM, a reserved hole,
    /// RAM from 1 MiB, one module and a command line.
    pub(crate) fn qemu_pc(cmdline: &[u8]) -> FakeMem {
        let mut mem = FakeMem(vec![0; 0x3000]);
        mem.put(INFO, &MAGIC.to_le_bytes());
        mem.put(INFO + 4, &1u32.to_le_bytes());
        mem.put(INFO + 12, &1u32.to_le_bytes());
        mem.put(INFO + 16, &(MODLIST as u64).to_le_bytes());
        mem.put(INFO + 24, &(CMDLINE as u64).to_le_bytes());
        mem.put(INFO + 32, &0xf52e0u64.to_le_bytes());
        mem.put(INFO + 40, &(MEMMAP as u64).to_le_bytes());
        mem.put(INFO + 48, &4u32.to_le_bytes());
        mem.put(MODLIST, &0x1f00_0000u64.to_le_bytes());
        mem.put(MODLIST + 8, &0x18_0000u64.to_le_bytes());
        mem.put(CMDLINE, cmdline);
        let map: [(u64, u64, u32); 4] = [
            (0, 0x9fc00, 1),
            (0x9fc00, 0x400, 2),
            (0x10_0000, 0x1fee_0000, 1),
            (0, 0, 0), // microvm-style terminator
        ];
        for (i, (addr, size, ty)) in map.into_iter().enumerate() {
            let at = MEMMAP + i * 24;
            mem.put(at, &addr.to_le_bytes());
            mem.put(at + 8, &size.to_le_bytes());
            mem.put(at + 16, &ty.to_le_bytes());
        }
        mem
    }

    fn parse(mem: &FakeMem) -> Result<BootParams, StartInfoError> {
        let mut out = BootParams::empty();
        read(mem, INFO as u64, &mut out).map(|()| out)
    }

    #[test]
    fn reads_what_qemu_gives() {
        let params = parse(&qemu_pc(b"-- --port=8080\0")).unwrap();
        assert_eq!(params.ram(), &[0..0x9fc00, 0x10_0000..0x1ffe_0000]);
        assert_eq!(params.cmdline(), "-- --port=8080");
        assert_eq!(params.rsdp, 0xf52e0);
        assert_eq!(params.image, 0x1f00_0000..0x1f18_0000);
    }

    #[test]
    fn empty_command_line() {
        let params = parse(&qemu_pc(b"\0")).unwrap();
        assert_eq!(params.cmdline(), "");
    }

    #[test]
    fn rejects_what_it_cannot_boot() {
        let mut mem = qemu_pc(b"\0");
        mem.put(INFO, &0u32.to_le_bytes());
        assert_eq!(parse(&mem).unwrap_err(), StartInfoError::BadMagic(0));

        let mut mem = qemu_pc(b"\0");
        mem.put(INFO + 4, &0u32.to_le_bytes());
        assert_eq!(
            parse(&mem).unwrap_err(),
            StartInfoError::NoMemoryMap { version: 0 }
        );

        let mut mem = qemu_pc(b"\0");
        mem.put(INFO + 12, &0u32.to_le_bytes());
        assert_eq!(parse(&mem).unwrap_err(), StartInfoError::NoImage);

        let mut mem = qemu_pc(b"\0");
        mem.put(MODLIST + 8, &0u64.to_le_bytes());
        assert!(matches!(
            parse(&mem).unwrap_err(),
            StartInfoError::BadImage { .. }
        ));

        let mut mem = qemu_pc(b"\xff\xfe\0");
        assert_eq!(parse(&mem).unwrap_err(), StartInfoError::CmdlineNotUtf8);
        mem.put(CMDLINE, &[b'a'; 0x1c0]);
        mem.0.truncate(CMDLINE + 0x1c0);
        assert!(matches!(
            parse(&mem).unwrap_err(),
            StartInfoError::Unreadable { .. }
        ));

        let mut mem = qemu_pc(b"\0");
        mem.put(MEMMAP + 16, &2u32.to_le_bytes());
        mem.put(MEMMAP + 24 * 2 + 16, &2u32.to_le_bytes());
        assert_eq!(parse(&mem).unwrap_err(), StartInfoError::NoRam);
    }

    #[test]
    fn overlong_command_line() {
        let mut mem = qemu_pc(b"\0");
        mem.0.resize(CMDLINE + MAX_CMDLINE + 16, b'x');
        let mut mem = FakeMem(mem.0);
        mem.0[CMDLINE..].fill(b'x');
        assert_eq!(parse(&mem).unwrap_err(), StartInfoError::CmdlineTooLong);
    }
}
