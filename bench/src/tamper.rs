//! Changing a running guest's memory from outside, the way an attacker with
//! access to the host's QEMU would: through QEMU's gdbstub, with gdb
//! (Debian's package `gdb`). Used by the watchdog benchmark and its tests.
//!
//! The targets are cold: the first byte of a function that runs once at
//! start-up, a string only read if the watchdog fails to start, and a
//! relocated pointer in `.data.rel.ro` only read on a panic. The guest keeps
//! running with any of them changed.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use object::{Object, ObjectSymbol};
use vigil_dom0::qmp::Qmp;

/// Part of the mangled name of `vigil_service::main`, which runs once.
const COLD_FUNCTION: &str = "13vigil_service4main17h";

/// Read-only data that is only read if the watchdog could not start.
const COLD_STRING: &[u8] = b"cannot start the watchdog";

/// The link-time address of the first byte of a function of the image that
/// never runs again after start-up.
pub fn cold_code(bundle: &Path) -> Result<u64> {
    let path = bundle.join("vigil-image");
    let image = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let file = object::File::parse(&*image).context("parsing the image")?;
    file.symbols()
        .find(|s| s.name().is_ok_and(|n| n.contains(COLD_FUNCTION)))
        .map(|s| s.address())
        .context("the image has no symbol for vigil_service::main")
}

/// The link-time address of a string in the bundle's `rodata` region that
/// is never read while the watchdog runs.
pub fn cold_rodata(bundle: &Path) -> Result<u64> {
    let image = std::fs::read(bundle.join("vigil-image")).context("reading the image")?;
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("manifest.json"))?)?;
    let region = manifest["regions"]
        .as_array()
        .and_then(|regions| regions.iter().find(|r| r["name"] == "rodata"))
        .context("the manifest has no rodata region")?;
    let number = |key: &str| {
        region[key]
            .as_u64()
            .with_context(|| format!("rodata region's {key}"))
    };
    let (start, len) = (number("file_offset")? as usize, number("bytes")? as usize);
    let bytes = image
        .get(start..start + len)
        .context("rodata region outside the image")?;
    let at = bytes
        .windows(COLD_STRING.len())
        .position(|w| w == COLD_STRING)
        .context("the cold string is not in rodata")?;
    Ok(number("vaddr")? + at as u64)
}

/// The load offset a guest's `/v1/integrity` answer reports (`"0x200000"`):
/// what to add to a link-time address to find it in guest memory.
pub fn load_offset(integrity: &serde_json::Value) -> Result<u64> {
    let text = integrity["load_offset"]
        .as_str()
        .context("/v1/integrity has no load_offset")?;
    u64::from_str_radix(text.trim_start_matches("0x"), 16)
        .with_context(|| format!("load_offset {text:?} is not hexadecimal"))
}

/// The link-time address of a relocated pointer in the bundle's `relro`
/// region (in `.data.rel.ro`) that is only read if the guest panics: the
/// file-name pointer of a panic location (`core::panic::Location`: a `&str`
/// to a `.rs` path in `.rodata`, its length, line and column).
pub fn cold_pointer(bundle: &Path) -> Result<u64> {
    use object::ObjectSection;

    let image = std::fs::read(bundle.join("vigil-image")).context("reading the image")?;
    let file = object::File::parse(&*image).context("parsing the image")?;
    let section = |name: &str| {
        file.section_by_name(name)
            .with_context(|| format!("the image has no {name} section"))
    };
    let (relro, rodata) = (section(".data.rel.ro")?, section(".rodata")?);
    let (relro_data, rodata_data) = (relro.data()?, rodata.data()?);
    let in_relro = relro.address()..relro.address() + relro.size();
    let u64_at = |at: u64| -> Option<u64> {
        let i = usize::try_from(at.checked_sub(relro.address())?).ok()?;
        Some(u64::from_le_bytes(
            relro_data.get(i..i + 8)?.try_into().ok()?,
        ))
    };
    let relocations = file
        .dynamic_relocations()
        .context("the image has no dynamic relocations")?;
    for (at, relocation) in relocations {
        if !in_relro.contains(&at) {
            continue;
        }
        let Ok(target) = u64::try_from(relocation.addend()) else {
            continue;
        };
        let (Some(len), Some(line_col)) = (u64_at(at + 8), u64_at(at + 16)) else {
            continue;
        };
        let line = line_col as u32;
        let Some(name) = target.checked_sub(rodata.address()).and_then(|i| {
            rodata_data
                .get(usize::try_from(i).ok()?..)?
                .get(..usize::try_from(len).ok()?)
        }) else {
            continue;
        };
        if (4..256).contains(&len) && name.ends_with(b".rs") && (1..100_000).contains(&line) {
            return Ok(at);
        }
    }
    bail!("no panic location found in .data.rel.ro")
}

/// Flips every bit of the byte at guest address `address` (a second call
/// restores it): starts QEMU's gdbstub on a free loopback port through the
/// domain's QMP socket, lets gdb read, write and read back the byte, then
/// resumes the guest and stops the stub. Returns the byte as it was and when
/// the write was done (gdb's exit).
pub fn flip_byte(qmp_socket: &Path, address: u64) -> Result<(u8, Instant)> {
    let (before, written) = change(
        qmp_socket,
        "unsigned char",
        address,
        "^ 0xff",
        |old, new| new == old ^ 0xff,
    )?;
    Ok((before as u8, written))
}

/// Redirects the 8-byte pointer at guest address `address` by 16 bytes, as
/// an attacker redirecting a vtable or GOT entry would (see [`flip_byte`]
/// for how). Returns the pointer as it was and when the write was done.
pub fn redirect_pointer(qmp_socket: &Path, address: u64) -> Result<(u64, Instant)> {
    change(
        qmp_socket,
        "unsigned long long",
        address,
        "+ 16",
        |old, new| new == old.wrapping_add(16),
    )
}

/// Changes the `kind` at `address` to itself followed by `operation`,
/// through QEMU's gdbstub and gdb; checks the read-back with `changed`.
fn change(
    qmp_socket: &Path,
    kind: &str,
    address: u64,
    operation: &str,
    changed: impl Fn(u64, u64) -> bool,
) -> Result<(u64, Instant)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut qmp = Qmp::connect(qmp_socket, Duration::from_secs(5))?;
    qmp.human(&format!("gdbserver tcp:127.0.0.1:{port}"))?;
    let value = format!("*({kind} *){address:#x}");
    let output = Command::new("gdb")
        .args(["-batch", "-nx"])
        .args(["-ex", "set architecture i386:x86-64"])
        .args(["-ex", &format!("target remote 127.0.0.1:{port}")])
        .args(["-ex", &format!("print/x {value}")])
        .args(["-ex", &format!("set var {value} = {value} {operation}")])
        .args(["-ex", &format!("print/x {value}")])
        .args(["-ex", "detach"])
        .output();
    let written = Instant::now();
    // Whatever gdb did, the guest runs on and the stub goes away.
    let _ = qmp.execute("cont");
    let _ = qmp.human("gdbserver none");
    let output = output.map_err(|err| crate::error::spawn_error("gdb", "gdb", err))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "gdb failed: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let values: Vec<u64> = text
        .lines()
        .filter_map(|line| line.split_once(" = 0x"))
        .filter_map(|(_, hex)| u64::from_str_radix(hex.trim(), 16).ok())
        .collect();
    ensure!(
        values.len() == 2 && changed(values[0], values[1]),
        "gdb did not change the {kind} at {address:#x}: {text}"
    );
    Ok((values[0], written))
}
