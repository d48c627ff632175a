//! PCI resources the firmware left unassigned.
//!
//! SeaBIOS gives every PCI function's base address registers (BARs) an
//! address and turns decoding on; qboot, the minimal firmware that brings a
//! QEMU `pc` guest to this loader about 35 ms sooner under TCG, gives none
//! (the RTL8139's I/O and memory BARs read 0). Hermit 0.11 only reads BARs,
//! so on qboot its drivers found no device. The loader therefore does what
//! the firmware skipped: on bus 0 (QEMU `pc` has no other), every
//! implemented BAR that reads 0 gets an address — I/O from [`IO_WINDOW`],
//! memory from [`mem_window`], both clear of RAM, of the BARs already
//! assigned and of each other — and its function decodes it. Where the
//! firmware assigned everything (SeaBIOS, Xen's hvmloader) or there is no
//! PCI at all (Xen PVH, QEMU `microvm`: every read is all ones), nothing is
//! written.
//!
//! The decisions are here, on a [`ConfigSpace`]; `boot` reaches the real one
//! through ports 0xcf8/0xcfc.

use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

/// Access to bus 0's configuration space: 32-bit registers by device,
/// function and (4-aligned) offset.
pub trait ConfigSpace {
    /// The register's value; all ones where no function answers.
    fn read(&mut self, device: u8, function: u8, offset: u8) -> u32;
    /// Writes the register.
    fn write(&mut self, device: u8, function: u8, offset: u8, value: u32);
}

/// I/O ports handed out, as SeaBIOS does: above the legacy ISA range.
pub const IO_WINDOW: Range<u64> = 0xc000..0x1_0000;
/// Where memory BARs may go at the earliest: QEMU `pc` never puts RAM
/// between here and 4 GiB (its `max-ram-below-4g`).
const MEM_WINDOW_START: u64 = 0xe000_0000;
/// Where memory BARs end: the I/O APIC, HPET, local APIC and the firmware's
/// ROM lie above.
const MEM_WINDOW_END: u64 = 0xfec0_0000;

/// The PIIX3 PCI-to-ISA bridge of QEMU `pc` (function 00:01.0), whose
/// registers 0x60–0x63 route PIRQ A–D to ISA interrupts.
const PIIX3: u32 = 0x7000_8086;
const PIRQ_ROUTES: u8 = 0x60;
/// A route's "disabled" bit.
const ROUTE_DISABLED: u8 = 0x80;
const INTERRUPT: u8 = 0x3c;
const COMMAND: u8 = 0x04;
const COMMAND_IO: u32 = 1 << 0;
const COMMAND_MEMORY: u32 = 1 << 1;
const HEADER_TYPE: u8 = 0x0c;
const FIRST_BAR: u8 = 0x10;
const BARS: u8 = 6;

/// The memory window for `ram`: from the end of RAM below 4 GiB (or
/// 0xe000_0000 if that is higher) to the I/O APIC.
pub fn mem_window(ram: &[Range<u64>]) -> Range<u64> {
    let ram_top = ram
        .iter()
        .filter(|r| r.start < MEM_WINDOW_END)
        .map(|r| r.end)
        .max()
        .unwrap_or(0);
    ram_top.next_multiple_of(1 << 20).max(MEM_WINDOW_START)..MEM_WINDOW_END
}

/// What a BAR decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Io,
    Mem32,
    /// A 64-bit memory BAR: this register and the next.
    Mem64,
}

impl Kind {
    /// The register's low bits that describe the BAR, not its address.
    fn flag_bits(self) -> u32 {
        if self == Kind::Io { 0x3 } else { 0xf }
    }

    /// The command register's bit that turns decoding of this kind on.
    fn decode(self) -> u32 {
        if self == Kind::Io {
            COMMAND_IO
        } else {
            COMMAND_MEMORY
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Bar {
    device: u8,
    function: u8,
    /// The register's offset.
    offset: u8,
    kind: Kind,
    /// The address it decodes (0: none assigned).
    address: u64,
    size: u64,
}

impl Bar {
    fn range(&self) -> Range<u64> {
        self.address..self.address + self.size
    }
}

/// A BAR that found no room.
#[derive(Debug, PartialEq, Eq)]
pub struct NoRoom {
    device: u8,
    function: u8,
    offset: u8,
    size: u64,
}

impl fmt::Display for NoRoom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PCI 00:{:02x}.{}: BAR at {:#x} ({:#x} bytes) fits in no free address range",
            self.device, self.function, self.offset, self.size
        )
    }
}

/// Assigns every unassigned BAR on bus 0 and turns its function's decoding
/// on; returns how many it assigned.
pub fn assign(config: &mut impl ConfigSpace, ram: &[Range<u64>]) -> Result<usize, NoRoom> {
    let bars = probe(config);
    let mut used: Vec<Range<u64>> = bars
        .iter()
        .filter(|b| b.address != 0)
        .map(Bar::range)
        .collect();
    let mut todo: Vec<Bar> = bars.into_iter().filter(|b| b.address == 0).collect();
    // Largest first: each is aligned to its size, so this packs them. (A
    // selection sort: the loader has a few KiB of room left, and the
    // standard sorts take more; there are a handful of BARs.)
    for i in 0..todo.len() {
        let largest =
            (i..todo.len()).fold(i, |l, j| if todo[j].size > todo[l].size { j } else { l });
        todo.swap(i, largest);
    }
    let mem = mem_window(ram);
    for bar in &mut todo {
        let window = if bar.kind == Kind::Io {
            IO_WINDOW
        } else {
            mem.clone()
        };
        let address = find_room(&window, bar.size, &used).ok_or(NoRoom {
            device: bar.device,
            function: bar.function,
            offset: bar.offset,
            size: bar.size,
        })?;
        bar.address = address;
        used.push(bar.range());
    }
    for bar in &todo {
        let (device, function) = (bar.device, bar.function);
        let low = config.read(device, function, bar.offset);
        let flags = low & bar.kind.flag_bits();
        config.write(device, function, bar.offset, bar.address as u32 | flags);
        if bar.kind == Kind::Mem64 {
            config.write(device, function, bar.offset + 4, (bar.address >> 32) as u32);
        }
        let command = config.read(device, function, COMMAND);
        // The status half of the register is write-one-to-clear: write zeros.
        config.write(
            device,
            function,
            COMMAND,
            (command & 0xffff) | bar.kind.decode(),
        );
    }
    set_interrupt_lines(config, &todo);
    Ok(todo.len())
}

/// Sets the interrupt line of each function that got a BAR here to the ISA
/// interrupt its pin reaches through the PIIX3's PIRQ routes.
///
/// The firmware that assigned no BARs set no trustworthy lines either:
/// qboot routes PIRQ A–D to 10, 10, 11, 11 as SeaBIOS does, but writes
/// lines with another slot-to-PIRQ rotation than QEMU's PIIX3 wires
/// (slot 2's INTA reaches PIRQ B, qboot wrote PIRQ C's 11), and Hermit then
/// waits on an interrupt the NIC never raises. Functions the firmware set
/// up (SeaBIOS, Xen's hvmloader, which rotates differently) keep theirs.
fn set_interrupt_lines(config: &mut impl ConfigSpace, assigned: &[Bar]) {
    if config.read(1, 0, 0) != PIIX3 {
        return;
    }
    let routes = config.read(1, 0, PIRQ_ROUTES).to_le_bytes();
    let mut done: Vec<(u8, u8)> = Vec::new();
    for bar in assigned {
        let (device, function) = (bar.device, bar.function);
        if done.contains(&(device, function)) {
            continue;
        }
        done.push((device, function));
        let interrupt = config.read(device, function, INTERRUPT);
        let pin = (interrupt >> 8) & 0xff;
        if !(1..=4).contains(&pin) {
            continue;
        }
        // QEMU's PIIX3: INTx of slot s reaches PIRQ (x + s - 1) mod 4.
        let pirq = (pin as usize - 1 + usize::from(device) + 3) % 4;
        let route = routes[pirq];
        if route & ROUTE_DISABLED == 0 {
            let line = u32::from(route & 0x0f);
            config.write(device, function, INTERRUPT, (interrupt & !0xff) | line);
        }
    }
}

/// The lowest `size`-aligned address in `window` where `size` bytes overlap
/// nothing in `used`.
fn find_room(window: &Range<u64>, size: u64, used: &[Range<u64>]) -> Option<u64> {
    let mut at = window.start.next_multiple_of(size);
    loop {
        let end = at.checked_add(size)?;
        if end > window.end {
            return None;
        }
        match used.iter().find(|u| u.start < end && at < u.end) {
            Some(clash) => at = clash.end.next_multiple_of(size),
            None => return Some(at),
        }
    }
}

/// Every implemented BAR of bus 0's type-0 functions, with its address and
/// size. Sizing writes all ones to a BAR and reads back which bits stick;
/// the function's decoding is off meanwhile and everything is restored.
fn probe(config: &mut impl ConfigSpace) -> Vec<Bar> {
    let mut bars = Vec::new();
    for device in 0..32 {
        if config.read(device, 0, 0) & 0xffff == 0xffff {
            continue;
        }
        let functions = if config.read(device, 0, HEADER_TYPE) >> 16 & 0x80 != 0 {
            8
        } else {
            1
        };
        for function in 0..functions {
            if config.read(device, function, 0) & 0xffff == 0xffff {
                continue;
            }
            // Bridges (type 1) and CardBus (type 2) have other layouts.
            if config.read(device, function, HEADER_TYPE) >> 16 & 0x7f != 0 {
                continue;
            }
            let command = config.read(device, function, COMMAND) & 0xffff;
            config.write(
                device,
                function,
                COMMAND,
                command & !(COMMAND_IO | COMMAND_MEMORY),
            );
            let mut index = 0;
            while index < BARS {
                let offset = FIRST_BAR + 4 * index;
                let (bar, registers) = size_bar(config, device, function, offset, index + 1 < BARS);
                bars.extend(bar);
                index += registers;
            }
            config.write(device, function, COMMAND, command);
        }
    }
    bars
}

/// The BAR at `offset` (None if unimplemented) and how many registers it
/// takes.
fn size_bar(
    config: &mut impl ConfigSpace,
    device: u8,
    function: u8,
    offset: u8,
    has_next: bool,
) -> (Option<Bar>, u8) {
    let low = config.read(device, function, offset);
    config.write(device, function, offset, u32::MAX);
    let low_mask = config.read(device, function, offset);
    config.write(device, function, offset, low);
    let bar = |kind, address, size| Bar {
        device,
        function,
        offset,
        kind,
        address,
        size,
    };
    if low & 1 == 1 {
        // I/O: only the low 16 bits address anything on x86.
        let mask = (low_mask & !0x3) | 0xffff_0000;
        if mask == 0xffff_0000 {
            return (None, 1);
        }
        let size = u64::from((!mask).wrapping_add(1));
        return (Some(bar(Kind::Io, u64::from(low & 0xfffc), size)), 1);
    }
    if (low >> 1) & 0x3 == 0x2 && has_next {
        let high = config.read(device, function, offset + 4);
        config.write(device, function, offset + 4, u32::MAX);
        let high_mask = config.read(device, function, offset + 4);
        config.write(device, function, offset + 4, high);
        let mask = (u64::from(high_mask) << 32) | u64::from(low_mask & !0xf);
        if mask == 0 {
            return (None, 2);
        }
        let address = (u64::from(high) << 32) | u64::from(low & !0xf);
        return (Some(bar(Kind::Mem64, address, (!mask).wrapping_add(1))), 2);
    }
    let mask = low_mask & !0xf;
    if mask == 0 {
        return (None, 1);
    }
    let size = u64::from((!mask).wrapping_add(1));
    (Some(bar(Kind::Mem32, u64::from(low & !0xf), size)), 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const MIB: u64 = 1 << 20;
    const QEMU_PC: [Range<u64>; 2] = [0..0x9fc00, MIB..0x1ffe_0000];

    /// A BAR as hardware implements it: the bits of an address `size`
    /// bytes long are writable, the type bits are fixed.
    #[derive(Clone, Copy)]
    struct FakeBar {
        value: u32,
        size: u64,
        /// The fixed low bits (I/O: 1; 64-bit memory: 0x4; prefetchable 0x8).
        flags: u32,
        /// The high half of a 64-bit BAR.
        high: bool,
    }

    #[derive(Default)]
    struct Fake {
        /// Registers by (device, function, offset).
        regs: BTreeMap<(u8, u8, u8), u32>,
        bars: BTreeMap<(u8, u8, u8), FakeBar>,
        writes: usize,
    }

    impl Fake {
        fn function(&mut self, device: u8, function: u8, id: u32, multi: bool) {
            self.regs.insert((device, function, 0), id);
            self.regs.insert(
                (device, function, HEADER_TYPE),
                if multi { 0x80 << 16 } else { 0 },
            );
            self.regs.insert((device, function, COMMAND), 0x0010_0000);
        }
        fn io(&mut self, device: u8, offset: u8, size: u64, address: u32) {
            let bar = FakeBar {
                value: address | 1,
                size,
                flags: 1,
                high: false,
            };
            self.bars.insert((device, 0, offset), bar);
        }
        fn mem32(&mut self, device: u8, offset: u8, size: u64, address: u32) {
            let bar = FakeBar {
                value: address,
                size,
                flags: 0,
                high: false,
            };
            self.bars.insert((device, 0, offset), bar);
        }
        fn mem64(&mut self, device: u8, offset: u8, size: u64) {
            let bar = FakeBar {
                value: 0xc,
                size,
                flags: 0xc,
                high: false,
            };
            self.bars.insert((device, 0, offset), bar);
            let high = FakeBar {
                value: 0,
                size,
                flags: 0,
                high: true,
            };
            self.bars.insert((device, 0, offset + 4), high);
        }
        fn bar(&self, device: u8, offset: u8) -> u32 {
            self.bars[&(device, 0, offset)].value & !0xf
        }
    }

    impl ConfigSpace for Fake {
        fn read(&mut self, device: u8, function: u8, offset: u8) -> u32 {
            if let Some(bar) = self.bars.get(&(device, function, offset)) {
                return bar.value;
            }
            let present = self.regs.contains_key(&(device, function, 0));
            match self.regs.get(&(device, function, offset)) {
                Some(v) => *v,
                None if present => 0,
                None => u32::MAX,
            }
        }
        fn write(&mut self, device: u8, function: u8, offset: u8, value: u32) {
            self.writes += 1;
            if let Some(bar) = self.bars.get_mut(&(device, function, offset)) {
                bar.value = if bar.high {
                    // Sizes here are below 4 GiB: the high half is all address.
                    value
                } else {
                    let address_bits = !((bar.size as u32).wrapping_sub(1)) & !0xf;
                    (value & address_bits) | bar.flags
                };
                return;
            }
            // An unimplemented BAR is hard-wired to 0.
            if (FIRST_BAR..FIRST_BAR + 4 * BARS).contains(&offset) {
                return;
            }
            self.regs.insert((device, function, offset), value);
        }
    }

    /// QEMU `pc` under qboot: host bridge, ISA bridge (PIRQ A–D routed to
    /// 10, 10, 11, 11), an RTL8139 with unassigned BARs and the interrupt
    /// line qboot writes (11, for INTA).
    fn qboot_pc() -> Fake {
        let mut fake = Fake::default();
        fake.function(0, 0, 0x1237_8086, false);
        fake.function(1, 0, PIIX3, true);
        fake.regs.insert((1, 0, PIRQ_ROUTES), 0x0b0b_0a0a);
        fake.function(2, 0, 0x8139_10ec, false);
        fake.regs.insert((2, 0, INTERRUPT), 0x0000_010b);
        fake.io(2, 0x10, 0x100, 0);
        fake.mem32(2, 0x14, 0x100, 0);
        fake
    }

    #[test]
    fn qboot_rtl8139_gets_io_and_memory_and_decodes_them() {
        let mut fake = qboot_pc();
        assert_eq!(assign(&mut fake, &QEMU_PC), Ok(2));
        assert_eq!(fake.bars[&(2, 0, 0x10)].value, 0xc001);
        assert_eq!(fake.bar(2, 0x14), 0xe000_0000);
        let command = fake.regs[&(2, 0, COMMAND)];
        assert_eq!(
            command,
            COMMAND_IO | COMMAND_MEMORY,
            "status bits written as 0"
        );
    }

    #[test]
    fn virtio_modern_64_bit_bar_goes_below_4_gib_clear_of_others() {
        let mut fake = qboot_pc();
        fake.function(3, 0, 0x1041_1af4, false);
        fake.mem64(3, 0x20, 0x4000);
        fake.mem32(3, 0x14, 0x1000, 0);
        assert_eq!(assign(&mut fake, &QEMU_PC), Ok(4));
        let bars = [fake.bar(2, 0x14), fake.bar(3, 0x14), fake.bar(3, 0x20)];
        assert_eq!(fake.bars[&(3, 0, 0x24)].value, 0, "high half");
        let ranges = [(bars[0], 0x100), (bars[1], 0x1000), (bars[2], 0x4000)];
        for (i, (a, size)) in ranges.iter().enumerate() {
            assert_eq!(a % size, 0, "aligned: {a:#x}");
            assert!(u64::from(*a) >= 0xe000_0000 && u64::from(a + size) <= MEM_WINDOW_END);
            for (b, other) in &ranges[i + 1..] {
                assert!(a + size <= *b || b + other <= *a, "{a:#x} overlaps {b:#x}");
            }
        }
    }

    #[test]
    fn interrupt_lines_follow_the_piix3_routes() {
        let mut fake = qboot_pc();
        // Slot 3, INTA reaches PIRQ C: 11; slot 4, INTB reaches PIRQ A: 10.
        fake.function(3, 0, 0x1041_1af4, false);
        fake.mem32(3, 0x14, 0x1000, 0);
        fake.regs.insert((3, 0, INTERRUPT), 0x0000_0100);
        fake.function(4, 0, 0x1234_5678, false);
        fake.mem32(4, 0x14, 0x1000, 0);
        fake.regs.insert((4, 0, INTERRUPT), 0x0000_0205);
        assign(&mut fake, &QEMU_PC).unwrap();
        assert_eq!(
            fake.regs[&(2, 0, INTERRUPT)],
            0x0000_010a,
            "slot 2 INTA: PIRQ B"
        );
        assert_eq!(fake.regs[&(3, 0, INTERRUPT)], 0x0000_010b);
        assert_eq!(fake.regs[&(4, 0, INTERRUPT)], 0x0000_020a);
    }

    #[test]
    fn interrupt_lines_of_firmware_set_functions_and_disabled_routes_stay() {
        let mut fake = qboot_pc();
        fake.regs.insert((1, 0, PIRQ_ROUTES), 0x0b0b_800a);
        fake.function(5, 0, 0x1234_5678, false);
        fake.mem32(5, 0x10, 0x1000, 0xe100_0000);
        fake.regs.insert((5, 0, INTERRUPT), 0x0000_0107);
        assign(&mut fake, &QEMU_PC).unwrap();
        assert_eq!(
            fake.regs[&(2, 0, INTERRUPT)],
            0x0000_010b,
            "PIRQ B disabled"
        );
        assert_eq!(fake.regs[&(5, 0, INTERRUPT)], 0x0000_0107, "firmware's");
    }

    #[test]
    fn firmware_assigned_bars_are_left_alone_and_avoided() {
        let mut fake = qboot_pc();
        // One already assigned where the first free slot would be.
        fake.function(4, 0, 0x1234_5678, false);
        fake.mem32(4, 0x10, 0x1000, 0xe000_0000);
        fake.io(4, 0x14, 0x100, 0xc000);
        assign(&mut fake, &QEMU_PC).unwrap();
        assert_eq!(fake.bar(4, 0x10), 0xe000_0000);
        assert_eq!(fake.bars[&(4, 0, 0x14)].value, 0xc001);
        assert_eq!(fake.bars[&(2, 0, 0x10)].value, 0xc101);
        assert_eq!(fake.bar(2, 0x14), 0xe000_1000);
    }

    #[test]
    fn fully_assigned_bus_is_not_written_beyond_sizing() {
        let mut fake = Fake::default();
        fake.function(2, 0, 0x8139_10ec, false);
        fake.io(2, 0x10, 0x100, 0xc000);
        fake.mem32(2, 0x14, 0x100, 0xfebc_0000);
        fake.regs.insert((2, 0, COMMAND), 0x3);
        assert_eq!(assign(&mut fake, &QEMU_PC), Ok(0));
        assert_eq!(fake.bar(2, 0x14), 0xfebc_0000);
        assert_eq!(fake.regs[&(2, 0, COMMAND)], 0x3, "decoding restored");
    }

    #[test]
    fn no_pci_at_all_writes_nothing() {
        let mut fake = Fake::default();
        assert_eq!(assign(&mut fake, &QEMU_PC), Ok(0));
        assert_eq!(fake.writes, 0);
    }

    #[test]
    fn memory_window_starts_above_ram() {
        assert_eq!(mem_window(&QEMU_PC).start, 0xe000_0000);
        let big = [0..0x9fc00, MIB..0xf000_0000, 0x1_0000_0000..0x2_0000_0000];
        assert_eq!(mem_window(&big), 0xf000_0000..MEM_WINDOW_END);
    }

    #[test]
    fn a_bar_too_large_is_an_error_naming_it() {
        let mut fake = qboot_pc();
        fake.mem32(2, 0x18, 0x4000_0000, 0);
        let err = assign(&mut fake, &QEMU_PC).unwrap_err();
        assert!(err.to_string().contains("00:02.0"), "{err}");
    }
}
