//! The vTPM client against a real swtpm, checked with tpm2-tools: PCR values
//! read by `tpm2_pcrread`, and the event log replayed by `tpm2_eventlog`.

use std::process::Command;

use vigil_core::v1::eventlog::{self, Record};
use vigil_core::v1::events::{LaunchInputs, sha256};
use vigil_dom0::tpm::Vtpm;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `tpm2_pcrread` of PCR `pcr` (SHA-256) through the swtpm TCTI.
fn tpm2_pcrread(socket: &std::path::Path, pcr: u8) -> String {
    let output = Command::new("tpm2_pcrread")
        .arg("-T")
        .arg(format!("swtpm:path={}", socket.display()))
        .arg(format!("sha256:{pcr}"))
        .output()
        .expect("tpm2_pcrread runs (apt package tpm2-tools)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let value = text
        .split("0x")
        .nth(1)
        .unwrap_or_else(|| panic!("no value in {text}"));
    value.trim().to_ascii_lowercase()
}

#[test]
fn launch_events_extend_a_real_vtpm_and_the_log_replays_with_tpm2_tools() {
    let dir = tempfile::tempdir().unwrap();
    let vtpm = Vtpm::start(dir.path()).unwrap();
    for pcr in [9, 12, 15] {
        assert_eq!(vtpm.read_pcr(pcr).unwrap(), [0; 32], "fresh Startup(CLEAR)");
    }
    let key = [0x42u8; 32];
    let inputs = LaunchInputs {
        loader_sha256: sha256(b"loader bytes"),
        image_sha256: sha256(b"image bytes"),
        manifest: b"{\"schema\": \"test\"}\n",
        cmdline: "-- --port=8080 --log=info",
        report_key: &key,
    };
    let mut records = Vec::new();
    for event in inputs.events() {
        vtpm.extend(event.spec.pcr, &event.digest).unwrap();
        records.push(Record {
            pcr: u32::from(event.spec.pcr),
            event_type: event.spec.event_type,
            sha256: event.digest,
            data: event.data,
        });
    }
    let log = eventlog::encode(&records);
    let log_path = dir.path().join("eventlog.bin");
    std::fs::write(&log_path, &log).unwrap();

    for pcr in [9u8, 12, 15] {
        let ours = vtpm.read_pcr(pcr).unwrap();
        assert_eq!(
            ours,
            eventlog::replay(&records, u32::from(pcr)),
            "PCR {pcr}"
        );
        assert_eq!(
            tpm2_pcrread(vtpm.socket(), pcr),
            hex(&ours),
            "PCR {pcr} per tpm2_pcrread"
        );
    }
    assert_eq!(
        vtpm.read_pcr(9).unwrap(),
        vigil_core::v1::events::predict_pcr9(&inputs.loader_sha256, &inputs.image_sha256)
    );

    // tpm2_eventlog parses the log and replays it to the same values.
    let output = Command::new("tpm2_eventlog")
        .arg(&log_path)
        .output()
        .expect("tpm2_eventlog runs (apt package tpm2-tools)");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    for pcr in [9u8, 12, 15] {
        let value = hex(&vtpm.read_pcr(pcr).unwrap());
        let line = text
            .lines()
            .find(|l| {
                l.split(':').next().map(str::trim) == Some(pcr.to_string().as_str())
                    && l.contains("0x")
            })
            .unwrap_or_else(|| panic!("no replayed PCR {pcr} in:\n{text}"));
        assert!(
            line.to_ascii_lowercase().contains(&value),
            "PCR {pcr}: {line}"
        );
    }
    assert!(text.contains("EV_IPL"), "{text}");
    vtpm.stop();
}

#[test]
fn the_tpm_state_persists_but_every_start_clears_the_pcrs() {
    let dir = tempfile::tempdir().unwrap();
    let first = Vtpm::start(dir.path()).unwrap();
    first.extend(9, &sha256(b"x")).unwrap();
    assert_ne!(first.read_pcr(9).unwrap(), [0; 32]);
    first.stop();
    let again = Vtpm::start(dir.path()).unwrap();
    assert_eq!(again.read_pcr(9).unwrap(), [0; 32]);
    assert!(dir.path().join("state/tpm2-00.permall").exists());
    drop(again);
}
