//! The loader as it runs: PVH entry, long mode, load the image, jump.
//!
//! This is the only module with `unsafe` code, and the only one that is built
//! for the bare-metal target alone. Everything it decides (what to read, where
//! the kernel goes, what to map, what the device tree says) comes from the
//! host-tested modules next to it.

use core::alloc::{GlobalAlloc, Layout};
use core::arch::{asm, global_asm};
use core::cell::UnsafeCell;
use core::fmt::Write;
use core::mem::MaybeUninit;
use core::ops::Range;
use core::sync::atomic::{AtomicU16, AtomicUsize, Ordering, compiler_fence};

use hermit_entry::boot_info::{
    BootInfo, DeviceTreeAddress, HardwareInfo, PlatformInfo, RawBootInfo, SerialPortBase,
};
use hermit_entry::elf::KernelObject;
use uart_16550::SerialPort;
use vigil_core::v2::handover::{self, Handover};

use crate::layout::{place_kernel_fixed, ram_end};
use crate::paging::{PageTables, Table};
use crate::refslot;
use crate::start_info::{self, BootParams, PhysMem};

/// COM1, where QEMU's `-serial` and Xen's HVM serial are.
const COM1: u16 = 0x3f8;
/// Xen's debug console port (`XEN_HVM_DEBUGCONS_IOPORT`): a line written
/// there goes to Xen's console (`xl dmesg`, shown when Xen runs with
/// `guest_loglvl=all`). The console of a PVH guest, which has no COM1. Only
/// ever written: Xen 4.17 fails a read of it.
const XEN_DEBUG_CONSOLE: u16 = 0xe9;
/// Where the console goes: COM1, or [`XEN_DEBUG_CONSOLE`] where there is no
/// COM1 (set once, by [`choose_console`]).
static CONSOLE_PORT: AtomicU16 = AtomicU16::new(COM1);
/// The boot stack the kernel expects (its `KERNEL_STACK_SIZE`).
const KERNEL_STACK_SIZE: usize = 0x8000;
/// Heap for the device tree, the ELF loader's bookkeeping and the PCI BARs.
/// Measured at the jump to the kernel: 2104 bytes with the sealed command
/// line, 19173 with a 4000-byte one (the device tree's buffer grows by
/// doubling, and a bump allocator keeps every size it outgrew). 32 KiB
/// covers the longest command line start_info takes and keeps the loader
/// below 2 MiB.
const HEAP_SIZE: usize = 32 << 10;

// The PVH entry. The hypervisor enters `pvh_start32` in 32-bit protected mode,
// paging off, interrupts off, with the physical address of `hvm_start_info` in
// ebx; it gives no usable stack and its GDT lives in firmware memory. So: load
// our own GDT, map the first 4 GiB with 2 MiB pages, enter long mode, and call
// `loader_main` on our own stack. The final page tables are built in Rust.
global_asm!(
    r#"
    .section .note.Xen, "a", @note
    .balign 4
    .long 4                     /* namesz: "Xen\0" */
    .long 8                     /* descsz: 8 bytes, also in the ELF32 copy (Xen and QEMU read the low 4) */
    .long 18                    /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .quad pvh_start32
    .balign 4

    .section .text.pvh32, "ax"
    .code32
    .global pvh_start32
pvh_start32:
    cli
    cld
    movl %ebx, %esi                 /* keep the start info address */
    lgdt boot_gdt_ptr
    movl $0x10, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    movl %eax, %fs
    movl %eax, %gs
    movl $boot_stack_top, %esp

    /* Zero PML4, PDPT and the four page directories (6 pages). */
    movl $boot_pml4, %edi
    xorl %eax, %eax
    movl $(6 * 4096 / 4), %ecx
    rep stosl

    movl $boot_pdpt, %eax
    orl $0x3, %eax
    movl %eax, boot_pml4

    movl $boot_pd, %eax
    orl $0x3, %eax
    movl $boot_pdpt, %edi
    movl $4, %ecx
1:  movl %eax, (%edi)
    addl $4096, %eax
    addl $8, %edi
    loop 1b

    movl $0x83, %eax                /* present, writable, 2 MiB */
    movl $boot_pd, %edi
    movl $2048, %ecx
2:  movl %eax, (%edi)
    addl $0x200000, %eax
    addl $8, %edi
    loop 2b

    movl %cr4, %eax
    orl $(1 << 5), %eax             /* PAE */
    movl %eax, %cr4
    movl $boot_pml4, %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx          /* EFER */
    rdmsr
    orl $((1 << 8) | (1 << 11)), %eax /* LME, NXE */
    wrmsr
    movl %cr0, %eax
    orl $((1 << 31) | 1), %eax      /* PG, PE */
    movl %eax, %cr0
    ljmp $0x08, $pvh_start64

    .code64
pvh_start64:
    movl $0x10, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    xorl %eax, %eax
    movl %eax, %fs
    movl %eax, %gs
    movabsq $boot_stack_top, %rsp
    movl %esi, %edi                 /* loader_main(start_info) */
    call loader_main
3:  hlt
    jmp 3b

    .section .rodata.pvh, "a"
    .balign 16
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff        /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff        /* 0x10: data */
boot_gdt_end:
boot_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt

    .section .bss.pvh, "aw", @nobits
    .balign 4096
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096
boot_pd:
    .skip 4 * 4096
boot_stack:
    .skip 64 * 1024
boot_stack_top:
    "#,
    options(att_syntax)
);

unsafe extern "C" {
    static __loader_start: u8;
    static __loader_end: u8;
}

/// A `static` the loader writes once, on its only CPU, before anything reads it.
struct BootCell<T>(UnsafeCell<T>);

// SAFETY: the loader runs on one CPU with interrupts off; nothing is shared.
unsafe impl<T> Sync for BootCell<T> {}

impl<T> BootCell<T> {
    const fn new(value: T) -> Self {
        Self(UnsafeCell::new(value))
    }

    /// # Safety
    /// The caller must not hold another reference to this cell's contents.
    #[allow(clippy::mut_from_ref)]
    unsafe fn get_mut(&self) -> &mut T {
        // SAFETY: single CPU, no interrupts, and the caller holds no other reference.
        unsafe { &mut *self.0.get() }
    }
}

static PARAMS: BootCell<BootParams> = BootCell::new(BootParams::empty());
static PAGE_TABLES: BootCell<PageTables> = BootCell::new(PageTables::new());
static RAW_BOOT_INFO: BootCell<MaybeUninit<RawBootInfo>> = BootCell::new(MaybeUninit::uninit());

/// The ACPI RSDP's size from ACPI 2.0 on (ACPI 1.0's is the first 20 bytes).
const RSDP_SIZE: usize = 36;
#[repr(C, align(16))]
struct Rsdp([u8; RSDP_SIZE]);
/// A copy of the RSDP, where the kernel can read it (see `copy_rsdp`).
static RSDP_COPY: BootCell<Rsdp> = BootCell::new(Rsdp([0; RSDP_SIZE]));

#[repr(C, align(4096))]
struct Stack([u8; KERNEL_STACK_SIZE]);
static KERNEL_STACK: BootCell<Stack> = BootCell::new(Stack([0; KERNEL_STACK_SIZE]));

/// Identity-mapped physical memory below 4 GiB (what the entry code maps).
struct IdentityMapped;

impl PhysMem for IdentityMapped {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        let Some(end) = addr.checked_add(buf.len() as u64) else {
            return false;
        };
        if addr == 0 || end > 1 << 32 {
            return false;
        }
        // SAFETY: the entry code identity-maps all of the first 4 GiB, and this
        // range lies inside it; the loader only reads what the hypervisor wrote.
        unsafe {
            core::ptr::copy_nonoverlapping(addr as *const u8, buf.as_mut_ptr(), buf.len());
        }
        true
    }
}

/// The console: COM1, or Xen's debug console port.
struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let port = CONSOLE_PORT.load(Ordering::Relaxed);
        if port == XEN_DEBUG_CONSOLE {
            for byte in s.bytes() {
                // SAFETY: writing Xen's debug console port has no effect
                // besides the console line (and none where it is absent).
                unsafe { outb(XEN_DEBUG_CONSOLE, byte) };
            }
            return Ok(());
        }
        // SAFETY: `choose_console` found a UART at COM1.
        let mut port = unsafe { SerialPort::new(port) };
        for byte in s.bytes() {
            port.send(byte);
        }
        Ok(())
    }
}

/// Writes `value` to the I/O port `port`.
///
/// # Safety
/// The port must be one whose writes have no effect beyond the device's.
unsafe fn outb(port: u16, value: u8) {
    // SAFETY: the caller's promise.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack)) };
}

/// Reads the I/O port `port`.
///
/// # Safety
/// The port must be one whose reads have no side effect.
unsafe fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: the caller's promise.
    unsafe { asm!("in al, dx", out("al") value, in("dx") port, options(nomem, nostack)) };
    value
}

/// Bus 0's configuration space through the PCI configuration mechanism #1
/// (address at port 0xcf8, data at 0xcfc), which QEMU `pc` and Xen HVM
/// have; elsewhere every read is all ones.
struct PortConfigSpace;

impl PortConfigSpace {
    /// Selects the register for the next data access.
    fn select(device: u8, function: u8, offset: u8) {
        let address = 0x8000_0000
            | (u32::from(device & 0x1f) << 11)
            | (u32::from(function & 0x7) << 8)
            | u32::from(offset & 0xfc);
        // SAFETY: writing the configuration address register only chooses
        // which register the data port reaches.
        unsafe {
            asm!("out dx, eax", in("dx") 0xcf8u16, in("eax") address, options(nomem, nostack))
        };
    }
}

impl crate::pci::ConfigSpace for PortConfigSpace {
    fn read(&mut self, device: u8, function: u8, offset: u8) -> u32 {
        Self::select(device, function, offset);
        let value: u32;
        // SAFETY: reading a configuration register has no side effect.
        unsafe { asm!("in eax, dx", out("eax") value, in("dx") 0xcfcu16, options(nomem, nostack)) };
        value
    }

    fn write(&mut self, device: u8, function: u8, offset: u8, value: u32) {
        Self::select(device, function, offset);
        // SAFETY: `crate::pci` writes only BARs (while sizing them, with
        // decoding off, or to give them free addresses) and command
        // registers (decoding on); no device is in use before the kernel.
        unsafe { asm!("out dx, eax", in("dx") 0xcfcu16, in("eax") value, options(nomem, nostack)) };
    }
}

/// Chooses the console port: COM1 if a 16550 answers there, else Xen's
/// debug console port. A UART's scratch register (base + 7) keeps what is
/// written to it; a Xen PVH guest has no UART, and there every port without
/// a device reads as 0xff.
fn choose_console() {
    let scratch = COM1 + 7;
    let present = [0x5a_u8, 0xa5].iter().all(|&probe| {
        // SAFETY: the scratch register has no function besides holding a
        // byte; where there is no UART the port is unused.
        unsafe {
            outb(scratch, probe);
            inb(scratch) == probe
        }
    });
    if present {
        // SAFETY: a 16550 answered at COM1.
        unsafe { SerialPort::new(COM1) }.init();
    } else {
        CONSOLE_PORT.store(XEN_DEBUG_CONSOLE, Ordering::Relaxed);
    }
}

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            let _ = writeln!(Console, "[loader] {}: {}", record.level(), record.args());
        }
    }

    fn flush(&self) {}
}

/// A bump allocator: the loader allocates a few KiB and never frees.
struct Bump {
    next: AtomicUsize,
    heap: UnsafeCell<[u8; HEAP_SIZE]>,
}

// SAFETY: one CPU, no interrupts; `next` is only advanced.
unsafe impl Sync for Bump {}

// SAFETY: every block handed out lies inside `heap`, is aligned as asked, and
// is never handed out twice.
unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let base = self.heap.get() as usize;
        let start = (base + self.next.load(Ordering::Relaxed)).next_multiple_of(layout.align());
        let end = start + layout.size();
        if end > base + HEAP_SIZE {
            return core::ptr::null_mut();
        }
        self.next.store(end - base, Ordering::Relaxed);
        start as *mut u8
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}
}

#[global_allocator]
static HEAP: Bump = Bump {
    next: AtomicUsize::new(0),
    heap: UnsafeCell::new([0; HEAP_SIZE]),
};

/// Ends the boot: the reason goes to the console, then QEMU's debug-exit port
/// (if present) or a halt loop.
fn fail(what: &dyn core::fmt::Display) -> ! {
    let _ = writeln!(Console, "{}{what}", vigil_core::v1::console::LOADER_ERROR);
    // SAFETY: writing the isa-debug-exit port makes QEMU exit with status 1
    // when the device is present; elsewhere the port is unused.
    unsafe {
        asm!("out dx, eax", in("dx") 0xf4u16, in("eax") 0u32, options(nomem, nostack));
    }
    loop {
        // SAFETY: interrupts are off; hlt just stops the CPU.
        unsafe { asm!("hlt", options(nomem, nostack)) };
    }
}

/// Overwrites `len` bytes at `addr` with zeros, with volatile writes the
/// compiler cannot drop as dead stores.
///
/// # Safety
/// `[addr, addr + len)` must be writable memory that no live reference covers.
unsafe fn wipe(addr: *mut u8, len: usize) {
    for i in 0..len {
        // SAFETY: inside the range the caller vouches for.
        unsafe { core::ptr::write_volatile(addr.add(i), 0) };
    }
    compiler_fence(Ordering::SeqCst);
}

/// Zeroes the loader's copies of the per-boot secrets (the report key's
/// seed and the entropy seed).
fn wipe_secrets(secrets: &mut Handover) {
    for bytes in [&mut secrets.key, &mut secrets.entropy]
        .into_iter()
        .flatten()
    {
        // SAFETY: `bytes` is a unique borrow of 32 bytes of this stack
        // frame's caller, and nothing else refers to them.
        unsafe { wipe(bytes.as_mut_ptr(), bytes.len()) };
    }
}

/// [`fail`], after zeroing the secrets: no copy of them survives a failed boot.
fn fail_wiping(secrets: &mut Handover, what: &dyn core::fmt::Display) -> ! {
    wipe_secrets(secrets);
    fail(what)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    fail(info)
}

fn loader_range() -> Range<u64> {
    let start = (&raw const __loader_start) as u64;
    let end = (&raw const __loader_end) as u64;
    start..end
}

/// Copies the ACPI RSDP at `rsdp` into the loader's image and returns the
/// copy's address (0 for none).
///
/// Hermit reads the RSDP at the address it is given through the identity
/// mapping of RAM, and maps the other ACPI tables itself (the RSDP holds
/// only their physical addresses). Under QEMU the RSDP is in the BIOS area,
/// inside the first 2 MiB, which is mapped; on Xen PVH it is with the other
/// tables above RAM (0xfc008000), which is not, and Hermit faulted there. The
/// copy lies below the kernel, in memory Hermit never reuses.
fn copy_rsdp(rsdp: u64) -> u64 {
    if rsdp == 0 {
        return 0;
    }
    // SAFETY: first and only use of RSDP_COPY.
    let copy = unsafe { RSDP_COPY.get_mut() };
    if !IdentityMapped.read(rsdp, &mut copy.0) {
        fail(&format_args!("the ACPI RSDP at {rsdp:#x} is not readable"));
    }
    copy.0.as_ptr() as u64
}

/// Called by the entry code with the physical address of `hvm_start_info`.
#[unsafe(no_mangle)]
extern "C" fn loader_main(start_info_addr: u32) -> ! {
    choose_console();
    let _ = log::set_logger(&Logger);
    log::set_max_level(log::LevelFilter::Warn);

    // SAFETY: first and only use of PARAMS.
    let params = unsafe { PARAMS.get_mut() };
    if let Err(err) = start_info::read(&IdentityMapped, start_info_addr.into(), params) {
        fail(&err);
    }
    let ram = params.ram();
    // Before the kernel looks for devices: what the firmware left unassigned.
    if let Err(err) = crate::pci::assign(&mut PortConfigSpace, ram) {
        fail(&err);
    }

    let module_len = (params.image.end - params.image.start) as usize;
    // SAFETY: module 0 lies below 4 GiB (checked by IdentityMapped when read
    // above). Nothing writes to it until the kernel runs, except `wipe` below,
    // which writes only the trailer after its last read through this slice.
    let module =
        unsafe { core::slice::from_raw_parts(params.image.start as *const u8, module_len) };
    // Only the verified image bytes are parsed and loaded; the trailer, if
    // any, carries the per-boot secrets: the entropy seed and (unless this
    // boot must not have it) the report key's seed.
    let (image, secrets) = match handover::split(module) {
        Ok(split) => split,
        Err(err) => {
            // Something that ends like a trailer but is none this loader
            // reads: its bytes may still be secrets, so they go too.
            let tail = module_len.min(handover::TRAILER_SIZE);
            // SAFETY: the last `tail` bytes of module 0 (identity-mapped
            // RAM, see above); `module` is not read again.
            unsafe { wipe((params.image.end - tail as u64) as *mut u8, tail) };
            fail(&err)
        }
    };
    let mut secrets = secrets.unwrap_or(Handover {
        entropy: None,
        key: None,
    });
    let trailer = refslot::trailer_range(&params.image, image.len());
    // SAFETY: the trailer is the end of module 0 (identity-mapped RAM, see
    // above), and `image` does not cover it. Its only copy left is `secrets`.
    unsafe {
        wipe(
            trailer.start as *mut u8,
            (trailer.end - trailer.start) as usize,
        )
    };

    if let Err(problem) = crate::elf_check::check(image) {
        fail_wiping(&mut secrets, &problem);
    }
    // With a secret to hand over, an image without the section that receives
    // it is refused before anything is loaded: the service must never run
    // with the key lost, nor the kernel with the seed lost. (`is_some`, not
    // a match on the value: no further copy of a seed.)
    let block = if secrets.key.is_some() {
        Some(refslot::find_block(image).unwrap_or_else(|err| fail_wiping(&mut secrets, &err)))
    } else {
        None
    };
    let entropy_slot = if secrets.entropy.is_some() {
        Some(
            refslot::find_entropy_slot(image).unwrap_or_else(|err| fail_wiping(&mut secrets, &err)),
        )
    } else {
        None
    };
    let object = KernelObject::parse(image).unwrap_or_else(|err| fail_wiping(&mut secrets, &err));
    let size = object.mem_size() as u64;
    let placement = place_kernel_fixed(
        ram,
        &loader_range(),
        &params.image,
        image.len() as u64,
        size,
    )
    .unwrap_or_else(|err| fail_wiping(&mut secrets, &err));
    let start = placement.kernel;
    // The sealed RELRO digest holds for the fixed load address only: where
    // the module is in the way (Xen), its image bytes move out of it first.
    let object = match placement.move_module_to {
        None => object,
        Some(to) => {
            // SAFETY: place_kernel_fixed chose [to, to + image.len()) inside
            // the loader's RAM region (identity-mapped by the entry code),
            // above the kernel and the loader; `copy` allows the overlap with
            // the module's own bytes. `image` (and `object`, which borrows
            // it) is not used after this point; the moved slice replaces
            // them.
            let moved = unsafe {
                core::ptr::copy(image.as_ptr(), to as *mut u8, image.len());
                core::slice::from_raw_parts(to as *const u8, image.len())
            };
            KernelObject::parse(moved).unwrap_or_else(|err| fail_wiping(&mut secrets, &err))
        }
    };

    // SAFETY: place_kernel_fixed chose [start, start + size) inside RAM, above
    // the loader and outside the image bytes (moved if need be); it is
    // identity-mapped by the entry code.
    let memory =
        unsafe { core::slice::from_raw_parts_mut(start as *mut MaybeUninit<u8>, size as usize) };
    let loaded = object.load_kernel(memory, start);

    // After the load and its relocations: neither slot is relocated, and
    // the kernel's copies are what the service and the kernel read.
    let base = object.start_addr().unwrap_or_default();
    let put = |cell: &mut MaybeUninit<u8>, byte| {
        cell.write(byte);
    };
    if let (Some(block), Some(key)) = (block, &secrets.key) {
        let filled = refslot::block_range(&block, base, memory.len())
            .and_then(|range| refslot::fill(memory, range, key, put));
        if let Err(err) = filled {
            fail_wiping(&mut secrets, &err);
        }
    }
    if let (Some(slot), Some(seed)) = (entropy_slot, &secrets.entropy) {
        let filled = refslot::section_range(&slot, base, memory.len())
            .and_then(|range| refslot::fill_entropy(memory, range, seed, put));
        if let Err(err) = filled {
            fail_wiping(&mut secrets, &err);
        }
    }
    wipe_secrets(&mut secrets);

    let fdt = crate::fdt::build(ram, copy_rsdp(params.rsdp), params.cmdline())
        .unwrap_or_else(|err| fail(&format_args!("device tree: {err:?}")));
    let fdt = alloc::vec::Vec::leak(fdt);

    let boot_info = BootInfo {
        hardware_info: HardwareInfo {
            phys_addr_range: 0..ram_end(ram),
            // Without COM1 (Xen PVH), Hermit's 16550 driver on Xen's debug
            // port: the status register it polls reads 0xff ("ready"), its
            // set-up writes go nowhere, and it never reads the data port
            // without a serial interrupt, which cannot come.
            serial_port_base: SerialPortBase::new(CONSOLE_PORT.load(Ordering::Relaxed)),
            device_tree: DeviceTreeAddress::new(fdt.as_ptr() as u64),
        },
        load_info: loaded.load_info,
        platform_info: PlatformInfo::Fdt,
    };
    // SAFETY: first and only use of RAW_BOOT_INFO.
    let raw = unsafe { RAW_BOOT_INFO.get_mut() }.write(RawBootInfo::from(boot_info));

    // SAFETY: first and only use of PAGE_TABLES; the tables live in the
    // loader's image, which is identity-mapped, so their address is physical.
    let tables = unsafe { PAGE_TABLES.get_mut() };
    tables
        .build(ram, &(start..start + size), |t: &Table| {
            t as *const Table as u64
        })
        .unwrap_or_else(|err| fail(&err));
    let pml4 = &raw const tables.pml4 as u64;

    // SAFETY: first and only use of KERNEL_STACK. The kernel takes rsp as the
    // low end of its KERNEL_STACK_SIZE boot stack.
    let stack = unsafe { KERNEL_STACK.get_mut() }.0.as_mut_ptr() as u64;
    let raw = raw as *const RawBootInfo as u64;

    // SAFETY: the new tables identity-map this code, its data, the boot info,
    // the device tree, the stack and the kernel; the kernel's entry takes
    // (rdi = boot info, esi = CPU 0) and never returns.
    unsafe {
        asm!(
            "mov cr3, {pml4}",
            "mov rsp, rcx",
            "xor esi, esi",
            "jmp rax",
            pml4 = in(reg) pml4,
            in("rcx") stack,
            in("rax") loaded.entry_point,
            in("rdi") raw,
            options(noreturn)
        );
    }
}
