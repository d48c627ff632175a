//! What a guest's serial console says: the lines the host acts on
//! (`vigil_core::v1::console`), signs of a failed boot, and its last lines
//! for error messages and `vigil-dom0 status`.

use std::net::Ipv4Addr;
use std::path::Path;

use vigil_core::v1::console::{LOADER_ERROR, READY};

/// How many console lines errors and `status` show.
pub const TAIL_LINES: usize = 20;

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
        if line.contains(READY) {
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
            } else if line.contains(LOADER_ERROR.trim_end()) {
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

/// The last `lines` lines of the console file at `path` (empty if unreadable).
pub fn tail_of(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    last_lines(&String::from_utf8_lossy(&text), lines)
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
}
