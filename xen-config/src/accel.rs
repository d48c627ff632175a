//! Choosing between KVM and TCG: KVM only where a real boot shows it works.
//!
//! `/dev/kvm` opening is not enough. On some hosts (nested virtualization with
//! a limited KVM) Hermit 0.11 dies at its first `xgetbv` with "KVM internal
//! error", and QEMU then *pauses* the VM instead of exiting. So the launcher
//! boots the real image once under KVM (no network forwarding), waits for the
//! service's start-up line or for the VM to stop, and remembers the answer per
//! host: QEMU version, host kernel, CPU model and Hermit kernel version.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vigil_core::v1::config::ServiceConfig;

use crate::image::BootImage;
use crate::qemu::{Accel, QEMU, QemuConfig, kernel_cmdline};

/// How long a probe boot may take under KVM.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// The Hermit kernel the images run; part of the cache key.
const HERMIT_KERNEL: &str = "hermit-kernel 0.11.0";

/// What the user asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AccelChoice {
    /// KVM if a probe boot works on this host (cached), else TCG.
    Auto,
    /// KVM, without probing.
    Kvm,
    /// TCG.
    Tcg,
}

/// A cached probe result.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct ProbeRecord {
    key: String,
    kvm_works: bool,
}

/// Whether `/dev/kvm` can be opened for reading and writing.
pub fn kvm_device_usable() -> bool {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

fn host_key() -> String {
    let qemu = Command::new(QEMU)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    format!("{qemu} | {} | {cpu} | {HERMIT_KERNEL}", kernel.trim())
}

/// Where probe results are kept: `$XDG_CACHE_HOME/vigil` or `~/.cache/vigil`.
pub fn cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("vigil"))
}

fn cached(path: &Path, key: &str) -> Option<bool> {
    let text = std::fs::read_to_string(path).ok()?;
    let record: ProbeRecord = serde_json::from_str(&text).ok()?;
    (record.key == key).then_some(record.kvm_works)
}

/// Boots `image` under KVM once and reports whether the service came up.
/// The probe guest is always stopped.
pub fn probe_kvm(image: &BootImage, work_dir: &Path) -> bool {
    let config = QemuConfig {
        image: image.clone(),
        accel: Accel::Kvm,
        memory_mib: 256,
        cpus: 1,
        cmdline: kernel_cmdline(&ServiceConfig::default()),
        forward: None,
        console: work_dir.join("kvm-probe-console.log"),
        qmp: work_dir.join("kvm-probe-qmp.sock"),
    };
    let Ok(mut guest) = config.spawn() else {
        return false;
    };
    let works = guest.wait_console(vigil_core::v1::console::READY, PROBE_TIMEOUT);
    drop(guest);
    let _ = std::fs::remove_file(&config.console);
    works
}

/// Picks the accelerator. Returns it and a one-line reason for the user.
pub fn choose(choice: AccelChoice, image: &BootImage, work_dir: &Path) -> (Accel, String) {
    match choice {
        AccelChoice::Tcg => (Accel::Tcg, "as requested".into()),
        AccelChoice::Kvm => (Accel::Kvm, "as requested".into()),
        AccelChoice::Auto if !kvm_device_usable() => {
            (Accel::Tcg, "/dev/kvm is not available".into())
        }
        AccelChoice::Auto => {
            let key = host_key();
            let cache = cache_dir().map(|d| d.join("kvm-probe.json"));
            if let Some(works) = cache.as_deref().and_then(|p| cached(p, &key)) {
                return verdict(works, "cached probe");
            }
            let works = probe_kvm(image, work_dir);
            if let Some(path) = &cache {
                let record = ProbeRecord {
                    key,
                    kvm_works: works,
                };
                if let Some(dir) = path.parent() {
                    let _ = std::fs::create_dir_all(dir);
                }
                if let Ok(text) = serde_json::to_string(&record) {
                    let _ = std::fs::write(path, text);
                }
            }
            verdict(works, "probe boot")
        }
    }
}

fn verdict(works: bool, how: &str) -> (Accel, String) {
    if works {
        (Accel::Kvm, format!("KVM works on this host ({how})"))
    } else {
        (
            Accel::Tcg,
            format!("KVM cannot run the image on this host ({how}); using TCG"),
        )
    }
}
