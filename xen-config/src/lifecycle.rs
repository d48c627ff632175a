//! Launched domains after the launch: their state, waiting for one to stop,
//! stopping them, listing them. A domain is known by its record
//! ([`crate::domain`]); its guest and swtpm by their pids (or, on Xen, the
//! domain's name).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::console;
use crate::domain::{DOMAIN_FILE, DomainDir, DomainRecord, Runtime};
use crate::error::{LaunchError, Result};
use crate::process;
use crate::qmp::Qmp;
use crate::swtpm;
use crate::xen;

/// Whether a domain's guest runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestState {
    /// It runs.
    Running,
    /// It stopped on its own, was halted by the watchdog, or was killed.
    Exited,
}

impl GuestState {
    /// `running` or `exited`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Exited => "exited",
        }
    }
}

/// A domain's state now.
#[derive(Clone, Debug, Serialize)]
pub struct DomainStatus {
    /// What was launched.
    #[serde(flatten)]
    pub record: DomainRecord,
    /// Whether the guest runs.
    pub state: GuestState,
    /// Whether its swtpm runs.
    pub vtpm_running: bool,
    /// Why an exited guest stopped, as far as its console tells: the
    /// watchdog's `halt` reaction names the violation there. `None` while
    /// running.
    pub exit_reason: Option<String>,
    /// The last lines of the guest's console.
    pub console_tail: Vec<String>,
}

/// Why a guest with this console output stopped.
fn exit_reason(console: &str) -> String {
    match vigil_core::v1::console::halt_message(console) {
        Some(message) => format!("halted by the watchdog: {message}"),
        None => "the guest stopped on its own or was stopped outside vigil-dom0; see console_tail"
            .to_owned(),
    }
}

/// Whether the guest of `record` (in `domain`) runs.
pub fn guest_runs(domain: &DomainDir, record: &DomainRecord) -> bool {
    match record.runtime {
        Runtime::Qemu { qemu_pid, .. } => process::alive(qemu_pid, domain.path()),
        Runtime::Xen { .. } => xen::exists(domain.name()),
    }
}

/// Whether the swtpm of `record` (in `domain`) runs.
pub fn vtpm_runs(domain: &DomainDir, record: &DomainRecord) -> bool {
    process::alive(record.swtpm_pid, domain.path())
}

/// The state of one domain.
pub fn status(state_root: &Path, name: &str) -> Result<DomainStatus> {
    status_of(&DomainDir::new(state_root, name)?)
}

/// The state of the domain in `domain`.
pub fn status_of(domain: &DomainDir) -> Result<DomainStatus> {
    let domain = domain.clone();
    let record = domain.read_record()?;
    let running = guest_runs(&domain, &record);
    let text = std::fs::read(domain.console()).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    Ok(DomainStatus {
        state: if running {
            GuestState::Running
        } else {
            GuestState::Exited
        },
        exit_reason: (!running).then(|| exit_reason(&text)),
        vtpm_running: vtpm_runs(&domain, &record),
        console_tail: console::last_lines(&text, console::TAIL_LINES)
            .lines()
            .map(str::to_owned)
            .collect(),
        record,
    })
}

/// Every launched domain under `state_root`, by name.
pub fn list(state_root: &Path) -> Result<Vec<DomainStatus>> {
    let Ok(entries) = std::fs::read_dir(state_root) else {
        return Ok(Vec::new());
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join(DOMAIN_FILE).is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names.iter().map(|name| status(state_root, name)).collect()
}

/// A domain's launch event log as JSON, for people: every record (PCR,
/// event type, digest, data as text or hex), the launch event list version,
/// the per-boot report key from PCR 15's event, and each launch PCR
/// replayed. The binary log itself is [`DomainDir::eventlog`].
pub fn eventlog(domain: &DomainDir) -> Result<serde_json::Value> {
    use vigil_core::v1::eventlog;
    let path = domain.eventlog();
    let bytes = std::fs::read(&path).map_err(|_| LaunchError::UnknownDomain {
        name: domain.name().into(),
    })?;
    let records = eventlog::parse(&bytes).map_err(|err| LaunchError::BadImageDir {
        path: path.clone(),
        problem: err.to_string(),
    })?;
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let version = vigil_core::v2::events::list_version(&records);
    let events: Vec<serde_json::Value> = records
        .iter()
        .map(|r| {
            let mut event = serde_json::json!({
                "pcr": r.pcr,
                "event_type": format!("{:#x}", r.event_type),
                "sha256": hex(&r.sha256),
                "data": std::str::from_utf8(r.data).map_or_else(|_| hex(r.data), str::to_owned),
            });
            if let Some(key) = version
                .filter(|_| r.pcr == 15)
                .and_then(|v| v.report_key(r.data))
            {
                event["report_key"] = hex(&key).into();
            }
            event
        })
        .collect();
    let replayed: serde_json::Map<String, serde_json::Value> = vigil_core::v1::events::LAUNCH_PCRS
        .iter()
        .map(|&pcr| {
            (
                pcr.to_string(),
                hex(&eventlog::replay(&records, u32::from(pcr))).into(),
            )
        })
        .collect();
    Ok(serde_json::json!({
        "domain": domain.name(),
        "list_version": version.map(|v| v.number()),
        "events": events,
        "replayed_pcrs": replayed,
    }))
}

/// How often [`wait`] looks at a domain.
const WAIT_POLL: Duration = Duration::from_millis(200);

/// Waits until a domain's guest no longer runs (it stopped on its own, was
/// halted by the watchdog, or was stopped), and returns its state then, with
/// the reason. Fails if `timeout` passes first, or when `cancel` is set; the
/// guest is left as it is either way.
pub fn wait(
    state_root: &Path,
    name: &str,
    timeout: Option<Duration>,
    cancel: &AtomicBool,
) -> Result<DomainStatus> {
    let started = Instant::now();
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(LaunchError::WaitInterrupted { name: name.into() });
        }
        let status = status(state_root, name)?;
        if status.state != GuestState::Running {
            return Ok(status);
        }
        if let Some(limit) = timeout {
            if started.elapsed() >= limit {
                return Err(LaunchError::WaitTimeout {
                    name: name.into(),
                    seconds: limit.as_secs(),
                });
            }
        }
        std::thread::sleep(WAIT_POLL);
    }
}

/// Stops a domain: its guest (QEMU: QMP `quit`, then SIGTERM and SIGKILL;
/// Xen: `xl destroy`), then its swtpm in order. With `purge`, also deletes
/// its vTPM state and directory.
pub fn stop(state_root: &Path, name: &str, purge: bool) -> Result<DomainRecord> {
    let domain = DomainDir::new(state_root, name)?;
    let record = domain.read_record()?;
    match record.runtime {
        Runtime::Xen { .. } => xen::destroy(name),
        Runtime::Qemu { qemu_pid, .. } => {
            if process::alive(qemu_pid, domain.path()) {
                if let Ok(mut qmp) = Qmp::connect(&domain.qmp(), Duration::from_secs(2)) {
                    let _ = qmp.execute("quit");
                }
                process::terminate(qemu_pid, domain.path(), process::TERM_GRACE);
            }
        }
    }
    swtpm::stop_detached(record.swtpm_pid, &record.tpm_socket);
    domain.clean_runtime();
    if purge {
        std::fs::remove_dir_all(domain.path())
            .map_err(LaunchError::io("removing", domain.path()))?;
    }
    Ok(record)
}

/// Stops what an earlier launch of this domain left running although its
/// guest has stopped (a watchdog halt, a crash): its swtpm still holds the
/// vTPM state's lock. Fails if the guest itself still runs.
pub fn clear_stopped(domain: &DomainDir) -> Result<()> {
    let Ok(record) = domain.read_record() else {
        return Ok(());
    };
    if guest_runs(domain, &record) {
        let pid = match record.runtime {
            Runtime::Qemu { qemu_pid, .. } => qemu_pid,
            Runtime::Xen { .. } => 0,
        };
        return Err(LaunchError::DomainRunning {
            name: domain.name().into(),
            pid,
        });
    }
    swtpm::stop_detached(record.swtpm_pid, &record.tpm_socket);
    Ok(())
}
