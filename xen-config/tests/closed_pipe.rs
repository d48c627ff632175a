//! Every printing command of `vigil-dom0` ends quietly when its reader goes
//! away (`vigil-dom0 status demo | grep -q running`): exit status as usual,
//! nothing on stderr, no panic. The domain is a recorded one whose guest has
//! exited, so no QEMU is needed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use vigil_core::v1::eventlog::{self, Record};
use vigil_core::v1::events::LaunchInputs;
use vigil_core::v1::manifest::Digest;
use vigil_dom0::domain::{DOMAIN_FILE, DomainRecord, EVENTLOG_FILE, RECORD_SCHEMA, Runtime};
use vigil_dom0::qemu::Accel;
use vigil_dom0::sched::WatchdogVcpu;

/// A state directory with domain `gone`: its record, event log and console,
/// as a guest that stopped leaves them.
fn exited_domain(state: &Path) {
    let dir = state.join("gone");
    fs::create_dir_all(&dir).unwrap();
    let record = DomainRecord {
        schema: RECORD_SCHEMA.into(),
        name: "gone".into(),
        runtime: Runtime::Qemu {
            qemu_pid: u32::MAX,
            accel: Accel::Tcg,
            watchdog_vcpu: WatchdogVcpu::Idle,
        },
        swtpm_pid: u32::MAX,
        url: "http://127.0.0.1:1/".into(),
        vcpus: 2,
        bundle: PathBuf::from("/nonexistent"),
        service: "vigil-service test".into(),
        security_version: 1,
        manifest_sha256: Digest([1; 32]),
        signed_by: "00".into(),
        report_key: Digest([2; 32]),
        pcrs: vec![(9, Digest([3; 32]))],
        boot_seconds: 0.5,
        launched_at: 0,
        tpm_socket: dir.join("tpm/tpm.sock"),
    };
    fs::write(
        dir.join(DOMAIN_FILE),
        serde_json::to_vec_pretty(&record).unwrap(),
    )
    .unwrap();
    let inputs = LaunchInputs {
        loader_sha256: [4; 32],
        image_sha256: [5; 32],
        manifest: b"{}",
        cmdline: "-- --port=8080",
        report_key: &[6; 32],
    };
    let records: Vec<Record<'_>> = inputs
        .events()
        .into_iter()
        .map(|event| Record {
            pcr: u32::from(event.spec.pcr),
            event_type: event.spec.event_type,
            sha256: event.digest,
            data: event.data,
        })
        .collect();
    fs::write(dir.join(EVENTLOG_FILE), eventlog::encode(&records)).unwrap();
    // Long enough that the output fills more than one write.
    let console: String = (0..200).map(|i| format!("console line {i}\n")).collect();
    fs::write(dir.join("console.log"), console).unwrap();
}

/// Runs `vigil-dom0 <args>` with its stdout on a pipe whose reader is
/// already closed: every write fails with EPIPE, deterministically.
fn into_closed_pipe(state: &Path, args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Command::new(env!("CARGO_BIN_EXE_vigil-dom0"))
        .args(args)
        .env("VIGIL_STATE_DIR", state)
        .stdout(writer)
        .output()
        .unwrap()
}

#[test]
fn a_closed_stdout_ends_every_printing_command_quietly() {
    let state = tempfile::tempdir().unwrap();
    exited_domain(state.path());
    for args in [
        &["list"][..],
        &["list", "--json"],
        &["status", "gone"],
        &["eventlog", "gone"],
        &["wait", "gone"],
        &["--help"],
        &["launch", "--help"],
    ] {
        let output = into_closed_pipe(state.path(), args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn wait_returns_the_exit_reason_of_a_stopped_guest() {
    let state = tempfile::tempdir().unwrap();
    exited_domain(state.path());
    let output = Command::new(env!("CARGO_BIN_EXE_vigil-dom0"))
        .args(["wait", "gone", "--timeout", "5"])
        .env("VIGIL_STATE_DIR", state.path())
        .output()
        .unwrap();
    assert!(output.status.success());
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(status["state"], "exited");
    assert!(status["exit_reason"].as_str().unwrap().contains("stopped"));
    let unknown = Command::new(env!("CARGO_BIN_EXE_vigil-dom0"))
        .args(["wait", "nobody"])
        .env("VIGIL_STATE_DIR", state.path())
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(9));
}
