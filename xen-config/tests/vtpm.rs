//! A domain's vTPM: the swtpm process as dom0 runs it (provisioned on its
//! first start, stopped in order), spoken to with `vigil-tpm`, checked with
//! tpm2-tools (PCR values read by `tpm2_pcrread`, the event log replayed by
//! `tpm2_eventlog`) and openssl (the EK certificate's chain).

use std::process::Command;

use vigil_core::v1::eventlog::{self, Record};
use vigil_core::v1::events::{LaunchInputs, sha256};
use vigil_dom0::swtpm::Swtpm;
use vigil_tpm::{ShutdownType, Tpm};

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
    let vtpm = Swtpm::start(dir.path()).unwrap();
    let mut tpm = Tpm::connect(vtpm.socket());
    for pcr in [9, 12, 15] {
        assert_eq!(tpm.read_pcr(pcr).unwrap(), [0; 32], "fresh Startup(CLEAR)");
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
        tpm.extend(event.spec.pcr, &event.digest).unwrap();
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
        let ours = tpm.read_pcr(pcr).unwrap();
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
        tpm.read_pcr(9).unwrap(),
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
        let value = hex(&tpm.read_pcr(pcr).unwrap());
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
    let first = Swtpm::start(dir.path()).unwrap();
    let mut tpm = Tpm::connect(first.socket());
    tpm.extend(9, &sha256(b"x")).unwrap();
    assert_ne!(tpm.read_pcr(9).unwrap(), [0; 32]);
    first.stop();
    let again = Swtpm::start(dir.path()).unwrap();
    assert_eq!(Tpm::connect(again.socket()).read_pcr(9).unwrap(), [0; 32]);
    assert!(dir.path().join("state/tpm2-00.permall").exists());
    drop(again);
}

#[test]
fn a_new_vtpm_gets_an_ek_certificate_that_chains_to_the_local_ca() {
    let dir = tempfile::tempdir().unwrap();
    let vtpm = Swtpm::start(dir.path()).unwrap();
    let mut tpm = Tpm::connect(vtpm.socket());
    let certificate = tpm.read_ek_certificate().unwrap();
    let cert_path = dir.path().join("ek.der");
    std::fs::write(&cert_path, &certificate).unwrap();
    let ca = std::path::Path::new("/var/lib/swtpm-localca");
    // openssl verify reads PEM.
    let pem = dir.path().join("ek.pem");
    let converted = Command::new("openssl")
        .args(["x509", "-inform", "DER", "-in"])
        .arg(&cert_path)
        .arg("-out")
        .arg(&pem)
        .output()
        .unwrap();
    assert!(converted.status.success(), "{converted:?}");
    let verified = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(ca.join("swtpm-localca-rootca-cert.pem"))
        .arg("-untrusted")
        .arg(ca.join("issuercert.pem"))
        .arg(&pem)
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    vtpm.stop();
}

#[test]
fn an_orderly_stop_keeps_the_clock_safe_and_a_kill_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let vtpm = Swtpm::start(dir.path()).unwrap();
    vtpm.stop();
    let vtpm = Swtpm::start(dir.path()).unwrap();
    let mut tpm = Tpm::connect(vtpm.socket());
    assert!(tpm.read_clock().unwrap().clock_info.safe, "after Shutdown");
    // What a stop without TPM2_Shutdown does (why dom0 never stops so):
    // SIGKILL, then the next start reports an unsafe clock.
    let pid = vtpm.detach();
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let vtpm = Swtpm::start(dir.path()).unwrap();
    let mut tpm = Tpm::connect(vtpm.socket());
    assert!(!tpm.read_clock().unwrap().clock_info.safe, "after a kill");
    tpm.restore_clock_safe().unwrap();
    tpm.shutdown(ShutdownType::Clear).unwrap();
    vtpm.stop();
    let vtpm = Swtpm::start(dir.path()).unwrap();
    assert!(
        Tpm::connect(vtpm.socket())
            .read_clock()
            .unwrap()
            .clock_info
            .safe
    );
    vtpm.stop();
}
