//! `vigil-bench`: Vigil's cost, measured side by side in one run.
//!
//! Each benchmark writes a Markdown report and the raw numbers as JSON,
//! headed by the exact command that produced them.

pub mod compare;
pub mod http;
pub mod stats;
pub mod tamper;
pub mod wrk;

use std::process::Command;

/// A description of the machine a benchmark ran on, for its report.
pub fn machine_description() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let qemu = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_else(|| "QEMU not found".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "Machine: {cpu}, {cores} cores; host kernel {}; {qemu}.",
        kernel.trim()
    )
}
