//! Changing a running guest's memory from outside, the way an attacker with
//! access to the host's QEMU would: through QEMU's gdbstub, with gdb
//! (Debian's package `gdb`). Used by the watchdog benchmark and its tests.
//!
//! The targets are cold: the first byte of a function that runs once at
//! start-up, and a string only read if the watchdog fails to start. The
//! guest keeps running with either changed.

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

/// Flips every bit of the byte at guest address `address` (a second call
/// restores it): starts QEMU's gdbstub on a free loopback port through the
/// domain's QMP socket, lets gdb read, write and read back the byte, then
/// resumes the guest and stops the stub. Returns the byte as it was and when
/// the write was done (gdb's exit).
pub fn flip_byte(qmp_socket: &Path, address: u64) -> Result<(u8, Instant)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut qmp = Qmp::connect(qmp_socket, Duration::from_secs(5))?;
    qmp.human(&format!("gdbserver tcp:127.0.0.1:{port}"))?;
    let byte = format!("*(unsigned char *){address:#x}");
    let output = Command::new("gdb")
        .args(["-batch", "-nx"])
        .args(["-ex", "set architecture i386:x86-64"])
        .args(["-ex", &format!("target remote 127.0.0.1:{port}")])
        .args(["-ex", &format!("print/x {byte}")])
        .args(["-ex", &format!("set var {byte} = {byte} ^ 0xff")])
        .args(["-ex", &format!("print/x {byte}")])
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
    let values: Vec<u8> = text
        .lines()
        .filter_map(|line| line.split_once(" = 0x"))
        .filter_map(|(_, hex)| u8::from_str_radix(hex.trim(), 16).ok())
        .collect();
    ensure!(
        values.len() == 2 && values[1] == values[0] ^ 0xff,
        "gdb did not change the byte at {address:#x}: {text}"
    );
    Ok((values[0], written))
}
