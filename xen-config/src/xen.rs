//! The Xen backend's domain configuration: an xl.cfg rendered from the
//! templates in `xen-config/templates/`, and `xl create`.
//!
//! A [`XenConfig`] holds typed values only. [`render`] checks every one of
//! them and writes each as a complete xl.cfg value (a quoted, escaped string
//! or a decimal number) in place of its `@PLACEHOLDER@`, so no setting can
//! add a key, end a string or start a comment: the templates alone decide
//! which keys a domain gets. The keys are xl.cfg(5) of Xen 4.17.
//!
//! The vTPM is never attached (no `vtpm` key): dom0 owns the domain's swtpm,
//! extends it before boot and quotes on request. PVH has no device model,
//! and Debian's HVM device model (`qemu-system-xen`) has no TPM support.
//!
//! Both templates destroy the domain on power-off, reboot and crash: every
//! boot must be a measured launch, never a restart behind dom0's back.

use std::fmt;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The HVM template: direct kernel boot, an emulated RTL8139, COM1 to a file.
pub const HVM_TEMPLATE: &str = include_str!("../templates/hvm.cfg");
/// The PVH template: no device model, so no NIC and no serial port.
pub const PVH_TEMPLATE: &str = include_str!("../templates/pvh.cfg");

/// The Debian 12 package that provides `xl` (Xen 4.17's toolstack).
pub const XL_PACKAGE: &str = "xen-utils-4.17";

/// The longest kernel command line the loader accepts (its buffer is 4 KiB,
/// with the terminating NUL).
pub const MAX_CMDLINE_BYTES: usize = 4095;
/// Guest memory limits, in MiB.
pub const MEMORY_MIB: std::ops::RangeInclusive<u32> = 32..=1_048_576;
/// Virtual CPU limits (Xen 4.17's HVM limit is 128).
pub const VCPUS: std::ops::RangeInclusive<u32> = 1..=128;

/// A Xen domain to create: everything its xl.cfg says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XenConfig {
    /// The domain's name (the rule of [`crate::launch::check_name`]).
    pub name: String,
    /// The loader (`vigil-loader`), from the verified private copy.
    pub kernel: PathBuf,
    /// The sealed image (`vigil-image`), from the verified private copy.
    pub ramdisk: PathBuf,
    /// The kernel command line, exactly as the manifest seals it.
    pub cmdline: String,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// HVM or PVH, and what comes with it.
    pub kind: GuestKind,
}

/// The kind of guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuestKind {
    /// An HVM guest: direct kernel boot through the device model, with an
    /// emulated RTL8139 (the `hvm` image flavor drives it).
    Hvm(HvmDevices),
    /// A PVH guest: no device model, so no NIC and no serial port.
    Pvh,
}

/// The emulated devices of an HVM guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HvmDevices {
    /// The dom0 bridge the NIC joins (a Linux interface name, e.g. `xenbr0`).
    pub bridge: String,
    /// The NIC's MAC address; without one, xl picks one in Xen's 00:16:3e.
    pub mac: Option<MacAddress>,
    /// The file in dom0 that receives the guest's COM1 (its console).
    pub serial_log: PathBuf,
}

/// A unicast Ethernet address.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddress(pub [u8; 6]);

impl MacAddress {
    /// Parses `xx:xx:xx:xx:xx:xx` (hex digits, either case).
    pub fn parse(text: &str) -> Result<Self, XenError> {
        let bad = || XenError::BadMac { mac: text.into() };
        let mut out = [0u8; 6];
        let mut parts = text.split(':');
        for byte in &mut out {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Self(out))
    }
}

impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What can go wrong with a Xen domain's configuration or its creation.
#[derive(Debug, thiserror::Error)]
pub enum XenError {
    /// A domain name that is not allowed.
    #[error(
        "domain name {name:?} is not allowed: use 1 to 32 of a-z, 0-9 and '-', not starting with '-'"
    )]
    BadName {
        /// The name.
        name: String,
    },
    /// A path that cannot go into an xl.cfg.
    #[error("the {what} path {path:?} cannot be used in an xl.cfg: {problem}")]
    BadPath {
        /// Which path (`kernel`, `ramdisk`, `serial log`, ...).
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A kernel command line that cannot go into an xl.cfg.
    #[error("the kernel command line cannot be used in an xl.cfg: {problem}")]
    BadCmdline {
        /// What is wrong with it.
        problem: String,
    },
    /// A number outside what the domain may have.
    #[error("{what} is {value}; it must be {min} to {max}")]
    OutOfRange {
        /// Which setting.
        what: &'static str,
        /// Its value.
        value: u32,
        /// The lowest allowed.
        min: u32,
        /// The highest allowed.
        max: u32,
    },
    /// A bridge name that is not a Linux interface name.
    #[error(
        "bridge {bridge:?} is not allowed: use 1 to 15 of A-Z, a-z, 0-9, '.', '_' and '-' (a Linux interface name)"
    )]
    BadBridge {
        /// The name.
        bridge: String,
    },
    /// A MAC address that is malformed, multicast or all zeros.
    #[error("MAC address {mac:?} is not allowed: use six hex pairs, xx:xx:xx:xx:xx:xx, unicast")]
    BadMac {
        /// The address as given.
        mac: String,
    },
    /// A template and the renderer disagree (a bug in vigil-dom0).
    #[error("xl.cfg template {template}: {problem}")]
    Template {
        /// Which template.
        template: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// `xl` is not installed.
    #[error(
        "`xl` was not found on PATH: install the Debian package `{package}` on a Xen 4.17 dom0 (see docs/xen.md)"
    )]
    MissingXl {
        /// The package that provides it.
        package: &'static str,
    },
    /// This host does not run Xen, or is not Xen's control domain.
    #[error("this host cannot create Xen domains: {reason} (see docs/xen.md)")]
    NotXenHost {
        /// Why.
        reason: String,
    },
    /// `xl create` failed.
    #[error("`xl create {config}` failed ({status}): {stderr}")]
    CreateFailed {
        /// The configuration file.
        config: PathBuf,
        /// How `xl` ended.
        status: String,
        /// What it said.
        stderr: String,
    },
    /// The domain went away while it booted (it powered off or crashed;
    /// both destroy it).
    #[error("the Xen domain {name} stopped while it booted{}", tail(.console))]
    GuestStopped {
        /// The domain.
        name: String,
        /// The last lines of its console.
        console: String,
    },
    /// The guest's console reported a failure (a kernel panic, a loader
    /// error); the domain was destroyed.
    #[error("the Xen domain {name} failed to boot: {failure}{}", tail(.console))]
    GuestFailed {
        /// The domain.
        name: String,
        /// The console line that says so.
        failure: String,
        /// The last lines of its console.
        console: String,
    },
    /// The guest gave no sign of a working service in time; the domain was
    /// destroyed.
    #[error("the Xen domain {name} did not come up within {seconds} s: {waiting_for}{}", tail(.console))]
    BootTimeout {
        /// The domain.
        name: String,
        /// The time limit.
        seconds: u64,
        /// What was still missing.
        waiting_for: String,
        /// The last lines of its console.
        console: String,
    },
    /// Reading, writing or running something failed.
    #[error("{action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

impl XenError {
    /// The documented exit code of `vigil-dom0` for this failure
    /// ([`crate::error::exit`]).
    pub fn exit_code(&self) -> u8 {
        use crate::error::exit;
        match self {
            Self::BadName { .. }
            | Self::BadPath { .. }
            | Self::BadCmdline { .. }
            | Self::OutOfRange { .. }
            | Self::BadBridge { .. }
            | Self::BadMac { .. } => exit::BAD_INPUT,
            Self::Template { .. } => exit::INTERNAL,
            Self::MissingXl { .. } | Self::NotXenHost { .. } => exit::MISSING,
            Self::CreateFailed { .. }
            | Self::GuestStopped { .. }
            | Self::GuestFailed { .. }
            | Self::BootTimeout { .. } => exit::BOOT_FAILED,
            Self::Io { .. } => exit::HOST,
        }
    }

    fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}

/// Renders the domain's xl.cfg from its template.
///
/// Fails, naming the setting, if any value is out of range or contains
/// something that is not allowed in it.
pub fn render(config: &XenConfig) -> Result<String, XenError> {
    let mut values = vec![
        ("NAME", quoted(&checked_name(&config.name)?)),
        ("KERNEL", quoted(checked_path("kernel", &config.kernel)?)),
        ("RAMDISK", quoted(checked_path("ramdisk", &config.ramdisk)?)),
        ("CMDLINE", quoted(checked_cmdline(&config.cmdline)?)),
        (
            "MEMORY_MIB",
            checked_number("memory (MiB)", config.memory_mib, MEMORY_MIB)?.to_string(),
        ),
        (
            "VCPUS",
            checked_number("vcpus", config.vcpus, VCPUS)?.to_string(),
        ),
    ];
    let (template_name, template) = match &config.kind {
        GuestKind::Hvm(devices) => {
            values.push(("VIF", quoted(&vif_spec(devices)?)));
            let serial = checked_path("serial log", &devices.serial_log)?;
            values.push(("SERIAL", quoted(&format!("file:{serial}"))));
            ("hvm.cfg", HVM_TEMPLATE)
        }
        GuestKind::Pvh => ("pvh.cfg", PVH_TEMPLATE),
    };
    fill(template_name, template, &values)
}

/// Renders the domain's xl.cfg and writes it to `path` (mode 0600, replacing
/// what was there).
pub fn write(config: &XenConfig, path: &Path) -> Result<(), XenError> {
    let text = render(config)?;
    let staged = path.with_extension("cfg.new");
    let _ = fs::remove_file(&staged);
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&staged)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .and_then(|()| fs::rename(&staged, path))
        .map_err(XenError::io("writing", path))
}

/// The `vif` entry of an HVM guest: an emulated RTL8139 on `bridge`.
fn vif_spec(devices: &HvmDevices) -> Result<String, XenError> {
    let bridge = &devices.bridge;
    // A vif spec is split at ',' and '=' by xl; these characters have neither.
    let ok = (1..=15).contains(&bridge.len())
        && bridge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && bridge != "."
        && bridge != "..";
    if !ok {
        return Err(XenError::BadBridge {
            bridge: bridge.clone(),
        });
    }
    let mut spec = format!("model=rtl8139,bridge={bridge}");
    if let Some(mac) = devices.mac {
        if mac.0[0] & 1 != 0 || mac.0 == [0; 6] {
            return Err(XenError::BadMac {
                mac: mac.to_string(),
            });
        }
        spec.push_str(&format!(",mac={mac}"));
    }
    Ok(spec)
}

fn checked_name(name: &str) -> Result<String, XenError> {
    crate::launch::check_name(name).map_err(|_| XenError::BadName { name: name.into() })?;
    Ok(name.to_owned())
}

/// An absolute, normal path of `A-Z a-z 0-9 / . _ + -` only: nothing that
/// xl.cfg, a vif spec or QEMU's option syntax would read as syntax.
fn checked_path<'a>(what: &'static str, path: &'a Path) -> Result<&'a str, XenError> {
    let bad = |problem: &str| XenError::BadPath {
        what,
        path: path.to_path_buf(),
        problem: problem.into(),
    };
    let text = path.to_str().ok_or_else(|| bad("it is not UTF-8"))?;
    if !path.is_absolute() {
        return Err(bad("it must be absolute"));
    }
    if text.len() > 4095 {
        return Err(bad("it is longer than 4095 bytes"));
    }
    if let Some(c) = text
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '+' | '-')))
    {
        return Err(bad(&format!(
            "it contains {c:?}; only A-Z, a-z, 0-9, '/', '.', '_', '+' and '-' are allowed"
        )));
    }
    if text.ends_with('/') {
        return Err(bad("it names a directory"));
    }
    if text[1..]
        .split('/')
        .any(|part| matches!(part, "" | "." | ".."))
    {
        return Err(bad("it must be normal: no '.', '..' or empty components"));
    }
    Ok(text)
}

/// Printable ASCII only (the manifest's command line goes to the guest
/// unchanged, so it is refused rather than altered).
fn checked_cmdline(cmdline: &str) -> Result<&str, XenError> {
    if cmdline.len() > MAX_CMDLINE_BYTES {
        return Err(XenError::BadCmdline {
            problem: format!(
                "it is {} bytes; the loader takes at most {MAX_CMDLINE_BYTES}",
                cmdline.len()
            ),
        });
    }
    if let Some((at, c)) = cmdline
        .char_indices()
        .find(|&(_, c)| !(' '..='~').contains(&c))
    {
        return Err(XenError::BadCmdline {
            problem: format!("byte {at} is {c:?}; only printable ASCII (space to '~') is allowed"),
        });
    }
    Ok(cmdline)
}

fn checked_number(
    what: &'static str,
    value: u32,
    range: std::ops::RangeInclusive<u32>,
) -> Result<u32, XenError> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(XenError::OutOfRange {
            what,
            value,
            min: *range.start(),
            max: *range.end(),
        })
    }
}

/// An xl.cfg string: double quotes, with `\` and `"` escaped (libxlutil's
/// lexer reads `\\` and `\"` back as one character). Callers pass printable
/// ASCII only, so there is no newline or other control character to escape.
fn quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if matches!(c, '\\' | '"') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Replaces each `@KEY@` of `template` with its value, in one pass (a value
/// is never scanned again). Every placeholder must have a value and every
/// value must be used, so template and renderer cannot drift apart silently.
fn fill(
    template_name: &'static str,
    template: &str,
    values: &[(&'static str, String)],
) -> Result<String, XenError> {
    let problem = |problem: String| XenError::Template {
        template: template_name,
        problem,
    };
    let mut used = vec![false; values.len()];
    let mut out = String::with_capacity(template.len() + 512);
    let mut rest = template;
    while let Some(start) = rest.find('@') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let end = after
            .find('@')
            .ok_or_else(|| problem("an '@' without its closing '@'".into()))?;
        let key = &after[..end];
        let index = values
            .iter()
            .position(|(k, _)| *k == key)
            .ok_or_else(|| problem(format!("unknown placeholder @{key}@")))?;
        out.push_str(&values[index].1);
        used[index] = true;
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    if let Some(index) = used.iter().position(|u| !u) {
        return Err(problem(format!(
            "no @{}@ placeholder for a value it must hold",
            values[index].0
        )));
    }
    Ok(out)
}

/// Whether this host can create Xen domains, judged from the files under
/// `root` (`/` for this host): the hypervisor is Xen, and this is its
/// control domain (dom0) with xenfs mounted.
pub fn check_xen_host(root: &Path) -> Result<(), XenError> {
    let hypervisor = fs::read_to_string(root.join("sys/hypervisor/type")).unwrap_or_default();
    if hypervisor.trim() != "xen" {
        return Err(XenError::NotXenHost {
            reason: "it does not run under Xen (/sys/hypervisor/type is not \"xen\")".into(),
        });
    }
    let capabilities = fs::read_to_string(root.join("proc/xen/capabilities")).map_err(|_| {
        XenError::NotXenHost {
            reason: "/proc/xen/capabilities is missing: xenfs is not mounted \
                     (the xen init script of `xen-utils-4.17` mounts it)"
                .into(),
        }
    })?;
    if !capabilities.split(',').any(|c| c.trim() == "control_d") {
        return Err(XenError::NotXenHost {
            reason: "it runs under Xen but is not the control domain (dom0)".into(),
        });
    }
    Ok(())
}

/// Runs `xl create <config>`, once `xl` is installed and this host is a
/// Xen dom0; otherwise says which of the two is missing.
pub fn create(config: &Path) -> Result<(), XenError> {
    let xl = which::which("xl").map_err(|_| XenError::MissingXl {
        package: XL_PACKAGE,
    })?;
    check_xen_host(Path::new("/"))?;
    // `xl create` leaves a daemon behind that watches the domain. Its output
    // goes to an unnamed file rather than a pipe, so that nothing here waits
    // for a pipe the daemon might hold open.
    let mut log = tempfile::tempfile().map_err(XenError::io("creating", &std::env::temp_dir()))?;
    let stderr = log
        .try_clone()
        .map_err(XenError::io("creating", &std::env::temp_dir()))?;
    let status = Command::new(&xl)
        .arg("create")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .status()
        .map_err(XenError::io("running", &xl))?;
    if status.success() {
        return Ok(());
    }
    let mut said = String::new();
    let _ = log
        .seek(SeekFrom::Start(0))
        .and_then(|_| log.read_to_string(&mut said));
    Err(XenError::CreateFailed {
        config: config.to_path_buf(),
        status: status.to_string(),
        stderr: said.trim().to_owned(),
    })
}

fn tail(console: &str) -> String {
    if console.trim().is_empty() {
        "; its console is empty".into()
    } else {
        format!("; last console lines:\n{console}")
    }
}

/// What a guest's console says about its boot so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsoleSigns {
    /// The service said that it listens.
    pub listening: bool,
    /// The address Hermit last took by DHCP (its `IP address:` line).
    pub address: Option<Ipv4Addr>,
    /// The line that says the guest failed: a kernel panic (with the line
    /// after it, which holds the message) or a loader error.
    pub failure: Option<String>,
}

/// Reads the signs of life (and of death) in a guest's console output.
pub fn console_signs(console: &str) -> ConsoleSigns {
    let mut signs = ConsoleSigns::default();
    let lines: Vec<String> = console.lines().map(strip_ansi).collect();
    for (index, line) in lines.iter().enumerate() {
        if line.contains(crate::accel::READY_LINE) {
            signs.listening = true;
        }
        if let Some((_, rest)) = line.split_once("IP address:") {
            let address = rest.split_whitespace().next().unwrap_or_default();
            let address = address.split('/').next().unwrap_or_default();
            if let Ok(address) = address.parse() {
                signs.address = Some(address);
            }
        }
        if signs.failure.is_none() {
            if line.contains("[PANIC]") {
                let next = lines.get(index + 1).map(String::as_str).unwrap_or_default();
                signs.failure = Some(format!("{} {}", line.trim(), next.trim()).trim().to_owned());
            } else if line.contains("[loader] error:") {
                signs.failure = Some(line.trim().to_owned());
            }
        }
    }
    signs
}

/// `text` without ANSI escape sequences (Hermit colours its log levels).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

/// The last `lines` lines of `text`.
pub fn last_lines(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// What domain `domid` wrote to Xen's debug console (I/O port 0xe9), from
/// Xen's console ring as `xl dmesg` prints it: Xen prefixes each of the
/// guest's lines with `(d<domid>) `. Xen keeps them only when it runs with
/// `guest_loglvl=all` (they are `XENLOG_G_DEBUG`).
pub fn debug_console_lines(dmesg: &str, domid: u32) -> String {
    let prefix = format!("(d{domid}) ");
    let mut out = String::new();
    for line in dmesg.lines() {
        if let Some((_, text)) = line.split_once(&prefix) {
            out.push_str(text);
            out.push('\n');
        }
    }
    out
}

/// Runs `xl` with `args`; its standard output if it succeeded.
fn xl_output(args: &[&str]) -> Option<String> {
    let output = Command::new("xl")
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The id of the Xen domain `name`, if it exists (`xl domid`).
pub fn domid(name: &str) -> Option<u32> {
    xl_output(&["domid", name])?.trim().parse().ok()
}

/// Xen's console ring (`xl dmesg`), or nothing if `xl` fails.
pub fn dmesg() -> String {
    xl_output(&["dmesg"]).unwrap_or_default()
}

/// Destroys the Xen domain `name` (`xl destroy`), if it exists.
pub fn destroy(name: &str) {
    if domid(name).is_some() {
        let _ = xl_output(&["destroy", name]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_signs_of_a_booting_guest() {
        let console = "[0][\u{1b}[32mINFO\u{1b}[0m] DHCP config acquired!\n\
                       [0][\u{1b}[32mINFO\u{1b}[0m] IP address:      10.0.5.10/24\n\
                       vigil-service: listening on port 8080\n";
        assert_eq!(
            console_signs(console),
            ConsoleSigns {
                listening: true,
                address: Some(Ipv4Addr::new(10, 0, 5, 10)),
                failure: None,
            }
        );
        assert_eq!(
            console_signs("Welcome to Hermit\n"),
            ConsoleSigns::default()
        );
    }

    #[test]
    fn console_signs_of_a_failed_guest() {
        let panic = "[0][INFO] IOAPIC v17 has 48 entries\n\
                     [0][PANIC] panicked at src/arch/x86_64/kernel/apic.rs:600:5:\n\
                     assertion failed: irq <= 24\n";
        assert_eq!(
            console_signs(panic).failure.as_deref(),
            Some(
                "[0][PANIC] panicked at src/arch/x86_64/kernel/apic.rs:600:5: assertion failed: irq <= 24"
            )
        );
        let loader = "[loader] error: no room for the kernel\n";
        assert_eq!(
            console_signs(loader).failure.as_deref(),
            Some("[loader] error: no room for the kernel")
        );
    }

    #[test]
    fn debug_console_keeps_one_domains_lines() {
        let dmesg = "(XEN) HVM: SVM enabled\n\
                     (XEN) (d3) Welcome to Hermit\n\
                     (XEN) (d13) another guest\n\
                     (XEN) [  12.5] (d3) vigil-service: listening on port 8080\n";
        assert_eq!(
            debug_console_lines(dmesg, 3),
            "Welcome to Hermit\nvigil-service: listening on port 8080\n"
        );
    }

    #[test]
    fn quoting_escapes_backslash_and_double_quote_only() {
        assert_eq!(quoted(r#"a"b\c'd"#), r#""a\"b\\c'd""#);
    }

    #[test]
    fn a_value_is_never_scanned_for_placeholders() {
        let out = fill(
            "t",
            "a = @A@\nb = @B@\n",
            &[("A", "@B@".into()), ("B", "1".into())],
        );
        assert_eq!(out.unwrap(), "a = @B@\nb = 1\n");
    }

    #[test]
    fn template_and_values_must_match() {
        assert!(fill("t", "a = @A@\n", &[]).is_err());
        assert!(fill("t", "a = 1\n", &[("A", "1".into())]).is_err());
        assert!(fill("t", "a = @A\n", &[("A", "1".into())]).is_err());
    }

    #[test]
    fn templates_use_at_signs_only_for_placeholders() {
        for template in [HVM_TEMPLATE, PVH_TEMPLATE] {
            let mut rest = template;
            while let Some(start) = rest.find('@') {
                let after = &rest[start + 1..];
                let end = after.find('@').unwrap();
                let key = &after[..end];
                assert!(
                    !key.is_empty() && key.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
                    "{key:?}"
                );
                rest = &after[end + 1..];
            }
        }
    }
}
