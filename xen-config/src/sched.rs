//! How the host schedules the watchdog's vCPU.
//!
//! With more than one vCPU the guest runs its watchdog alone on the last one
//! (`unikernel/service/src/vcpu.rs`). Under QEMU that vCPU is one host
//! thread, and a check keeps it busy for tens of milliseconds under TCG. At
//! the host's normal priority that thread takes a core from the threads that
//! carry requests (the service's vCPU, QEMU's I/O thread, the clients): on a
//! two-core host the service then answers at about half its rate while a
//! check runs. So by default the launch puts that one thread in Linux's
//! `SCHED_IDLE` class: checks run on host CPU time nothing else wants, and
//! yield the core the moment a request's thread wakes up. The price: on a
//! host with no idle CPU at all, checks wait, and detection takes longer
//! (each check's time and duration stay visible in `/v1/integrity`).
//! `docs/watchdog.md` has the measurements either way.
//!
//! The policy is set with `chrt` (util-linux, on every Debian system):
//! rustix has no `sched_setscheduler`, and the workspace forbids the
//! `unsafe` a direct `libc` call would need.

use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::error::{LaunchError, Result};
use crate::qmp::Qmp;

/// Linux's `SCHED_IDLE` policy number, as `/proc/<tid>/stat` reports it.
pub const SCHED_IDLE: u32 = 5;

/// How the host runs the watchdog's vCPU thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum WatchdogVcpu {
    /// Linux's idle class: checks use only host CPU nothing else wants.
    #[default]
    Idle,
    /// Like every other QEMU thread: checks compete for the host's CPU.
    Normal,
}

impl WatchdogVcpu {
    /// What a record written before the option existed means: every QEMU
    /// thread then ran at the normal policy (serde's default for them).
    pub fn unrecorded() -> Self {
        Self::Normal
    }

    /// The name used on the command line and in the domain record.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Normal => "normal",
        }
    }
}

/// The host thread of each vCPU, by vCPU index (QMP `query-cpus-fast`).
pub fn vcpu_threads(qmp: &mut Qmp) -> Result<Vec<(u32, u32)>> {
    let cpus = qmp.execute("query-cpus-fast")?;
    let malformed = || LaunchError::Qmp(format!("query-cpus-fast returned {cpus}"));
    let mut threads = Vec::new();
    for cpu in cpus.as_array().ok_or_else(malformed)? {
        let field = |name: &str| {
            cpu[name]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(malformed)
        };
        threads.push((field("cpu-index")?, field("thread-id")?));
    }
    threads.sort_unstable();
    Ok(threads)
}

/// Applies `policy` to the watchdog's vCPU of a guest with `vcpus` vCPUs
/// (the last one). Returns the policy in effect: with one vCPU the watchdog
/// shares the service's vCPU, which keeps the normal policy.
pub fn place_watchdog(qmp: &mut Qmp, vcpus: u32, policy: WatchdogVcpu) -> Result<WatchdogVcpu> {
    if vcpus < 2 || policy == WatchdogVcpu::Normal {
        return Ok(WatchdogVcpu::Normal);
    }
    let threads = vcpu_threads(qmp)?;
    let &(index, tid) = threads
        .last()
        .ok_or_else(|| LaunchError::Qmp("query-cpus-fast lists no vCPU".into()))?;
    if index + 1 != vcpus {
        return Err(LaunchError::Qmp(format!(
            "QEMU lists vCPU {index} as the last of {vcpus}"
        )));
    }
    let chrt = require_chrt()?;
    let output = Command::new(&chrt)
        .args(["--idle", "--pid", "0", &tid.to_string()])
        .output()
        .map_err(|source| LaunchError::Spawn {
            program: chrt.display().to_string(),
            source,
        })?;
    let in_effect = policy_of(tid);
    if !output.status.success() || in_effect.as_ref().ok() != Some(&SCHED_IDLE) {
        return Err(LaunchError::HostScheduling {
            thread: tid,
            problem: format!(
                "chrt {} ({:?}); its policy is now {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim(),
                match in_effect {
                    Ok(policy) => format!("{policy} (5 is SCHED_IDLE)"),
                    Err(err) => format!("unknown ({err})"),
                }
            ),
        });
    }
    Ok(WatchdogVcpu::Idle)
}

/// The `chrt` program, or which package provides it.
pub fn require_chrt() -> Result<std::path::PathBuf> {
    which::which("chrt").map_err(|_| LaunchError::MissingProgram {
        program: "chrt",
        package: "util-linux",
    })
}

/// The scheduling policy of host thread `tid` (field 41 of its
/// `/proc/<tid>/stat`: 0 normal, 3 batch, 5 idle).
pub fn policy_of(tid: u32) -> std::io::Result<u32> {
    let stat = std::fs::read_to_string(Path::new("/proc").join(tid.to_string()).join("stat"))?;
    parse_policy(&stat).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unexpected /proc/{tid}/stat"),
        )
    })
}

/// Field 41 (the scheduling policy) of a `/proc/<pid>/stat` line.
fn parse_policy(stat: &str) -> Option<u32> {
    crate::process::stat_field(stat, 41)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_is_field_41_even_with_a_strange_command_name() {
        let mut fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        fields[41 - 3] = "5".into();
        let line = format!("1234 (qemu) (x y) {}\n", fields.join(" "));
        assert_eq!(parse_policy(&line), Some(5));
        assert_eq!(parse_policy("1234 (short) S 1 2"), None);
        assert_eq!(parse_policy("no parenthesis"), None);
    }

    #[test]
    fn this_process_has_the_normal_policy() {
        // The main thread's id is the process id.
        assert_eq!(policy_of(std::process::id()).unwrap(), 0);
    }

    #[test]
    fn names_round_trip() {
        for policy in [WatchdogVcpu::Idle, WatchdogVcpu::Normal] {
            let json = serde_json::to_string(&policy).unwrap();
            assert_eq!(json, format!("\"{}\"", policy.as_str()));
        }
        assert_eq!(WatchdogVcpu::default(), WatchdogVcpu::Idle);
    }
}
