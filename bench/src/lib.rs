//! `vigil-bench`: Vigil's cost, measured side by side in one run.
//!
//! Each benchmark writes a Markdown report and the raw numbers as JSON,
//! headed by the exact command that produced them.

pub mod cpio;
pub mod error;
pub mod guest;
pub mod http;
pub mod interrupt;
pub mod linux;
pub mod stats;
pub mod tamper;
pub mod wrk;

use std::path::Path;
use std::process::Command;

use crate::error::BenchError;

/// Fails unless `image_dir` holds what `vigil-build build` writes.
pub fn require_image(image_dir: &Path) -> Result<(), BenchError> {
    for file in [
        vigil_dom0::image::IMAGE_FILE,
        vigil_dom0::image::LOADER_FILE,
        vigil_dom0::image::INFO_FILE,
    ] {
        let path = image_dir.join(file);
        if !path.is_file() {
            return Err(BenchError::MissingInput {
                path,
                remedy: "build the image with `target/release/vigil-build build` \
                         (`--flavor virtio` for target/vigil/virtio)",
            });
        }
    }
    Ok(())
}

/// The machine a benchmark ran on, for its report.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Machine {
    /// The CPU model (`/proc/cpuinfo`).
    pub cpu: String,
    /// CPUs this process may use.
    pub cores: usize,
    /// Total memory, GiB.
    pub memory_gib: f64,
    /// The host kernel's release.
    pub host_kernel: String,
    /// `qemu-system-x86_64 --version`'s first line.
    pub qemu: String,
    /// Whether `/dev/kvm` can be opened (whether guests use it is the
    /// accelerator the report names).
    pub kvm_device: bool,
    /// Whether the CPU has the SHA extensions (`sha_ni`).
    pub sha_ni: bool,
}

impl Machine {
    /// This machine.
    pub fn probe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let sha_ni = cpuinfo
            .lines()
            .find(|l| l.starts_with("flags"))
            .is_some_and(|l| l.split_whitespace().any(|f| f == "sha_ni"));
        let memory_gib = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("MemTotal:")?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map_or(0.0, |kib| kib / (1024.0 * 1024.0));
        let qemu = Command::new(vigil_dom0::qemu::QEMU)
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.lines().next().map(str::to_owned))
            .unwrap_or_else(|| "QEMU not found".into());
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_gib,
            host_kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            qemu,
            kvm_device: vigil_dom0::accel::kvm_device_usable(),
            sha_ni,
        }
    }

    /// One line for a report.
    pub fn describe(&self) -> String {
        format!(
            "Machine: {}, {} cores, {:.0} GiB; host kernel {}; {}; /dev/kvm {}; SHA-NI {}.",
            self.cpu,
            self.cores,
            self.memory_gib,
            self.host_kernel,
            self.qemu,
            if self.kvm_device {
                "usable"
            } else {
                "not usable"
            },
            if self.sha_ni { "yes" } else { "no" },
        )
    }
}

/// A description of the machine a benchmark ran on, for its report.
pub fn machine_description() -> String {
    Machine::probe().describe()
}
