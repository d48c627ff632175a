//! A Xen domain's xl.cfg, rendered from the templates in
//! `xen-config/templates/` from typed, checked values only.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::XenError;

/// The HVM template: direct kernel boot, an emulated RTL8139, COM1 to a file.
pub const HVM_TEMPLATE: &str = include_str!("../../templates/hvm.cfg");
/// The PVH template: no device model, so no NIC and no serial port.
pub const PVH_TEMPLATE: &str = include_str!("../../templates/pvh.cfg");

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
    /// The domain's name (the rule of [`crate::name::is_valid`]).
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
    if !crate::name::is_valid(name) {
        return Err(XenError::BadName { name: name.into() });
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
