//! Records the command/response exchanges of the main flows against a real
//! swtpm and replays them through `Replay`: the client must send the same
//! bytes again given the same answers. With `VIGIL_TPM_RECORD=1` the
//! recordings are written to `tests/data/` (the fixtures the unit tests
//! replay; see `tests/data/README.md`).

mod common;

use common::{Recorder, VtpmDir};
use vigil_tpm::transport::Replay;
use vigil_tpm::{
    AK_HANDLE, AkAlgorithm, Connection, CredentialBlob, EK_HANDLE, PcrSelection, ShutdownType, Tpm,
    UnixSocket,
};

/// The nonce the recorded quotes carry.
const NONCE: [u8; 32] = [0x5a; 32];

fn recorder(socket: &std::path::Path) -> Tpm<Recorder<UnixSocket>> {
    Tpm::new(Recorder::new(UnixSocket::new(
        socket,
        Connection::PerCommand,
    )))
}

fn activate<T: vigil_tpm::Transport>(tpm: &mut Tpm<T>, blob: &CredentialBlob) -> Vec<u8> {
    tpm.activate_credential(
        AK_HANDLE,
        EK_HANDLE,
        &blob.credential_blob,
        &blob.encrypted_secret,
    )
    .unwrap()
}

/// Parses the fixture format back into exchanges.
fn exchanges(log: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let unhex = |s: &str| -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    };
    let lines: Vec<&str> = log.lines().filter(|l| !l.starts_with('#')).collect();
    lines
        .chunks(2)
        .map(|pair| {
            (
                unhex(pair[0].strip_prefix("> ").unwrap()),
                unhex(pair[1].strip_prefix("< ").unwrap()),
            )
        })
        .collect()
}

/// Replays `log` through `flow` and saves it when asked to.
fn check_and_save<R: PartialEq + std::fmt::Debug>(
    name: &str,
    about: &str,
    log: &str,
    recorded: R,
    flow: impl FnOnce(&mut Tpm<Replay>) -> R,
) {
    let mut replay = Tpm::new(Replay::new(exchanges(log)));
    assert_eq!(flow(&mut replay), recorded, "{name}: replay");
    assert!(
        replay.transport().is_done(),
        "{name}: every exchange replayed"
    );
    if std::env::var_os("VIGIL_TPM_RECORD").is_some() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(format!("{name}.txt"));
        std::fs::write(&path, format!("# {about}\n{log}")).unwrap();
    }
}

#[test]
#[ignore = "needs swtpm and swtpm_setup: run by scripts/test (cargo test -- --ignored)"]
fn main_flows_replay_byte_for_byte() {
    let dir = VtpmDir::provisioned();
    let swtpm = dir.start();
    let socket = swtpm.socket();

    let mut tpm = recorder(socket);
    let created = tpm
        .ensure_attestation_key(AkAlgorithm::RsaSsaSha256)
        .unwrap();
    let log = std::mem::take(&mut tpm.transport_mut().log);
    check_and_save(
        "ensure-create-ak",
        "ensure_attestation_key(RSA) on a vTPM provisioned by swtpm_setup (EK present, no AK)",
        &log,
        created.clone(),
        |tpm| {
            tpm.ensure_attestation_key(AkAlgorithm::RsaSsaSha256)
                .unwrap()
        },
    );

    let found = tpm
        .ensure_attestation_key(AkAlgorithm::RsaSsaSha256)
        .unwrap();
    let log = std::mem::take(&mut tpm.transport_mut().log);
    check_and_save(
        "ensure-provisioned",
        "ensure_attestation_key(RSA) when the EK and the AK are persistent",
        &log,
        found,
        |tpm| {
            tpm.ensure_attestation_key(AkAlgorithm::RsaSsaSha256)
                .unwrap()
        },
    );

    for (pcr, byte) in [(9u8, 0x91u8), (12, 0x12), (15, 0x15)] {
        tpm.extend(pcr, &[byte; 32]).unwrap();
    }
    let values = tpm.pcr_read(PcrSelection::LAUNCH).unwrap();
    let log = std::mem::take(&mut tpm.transport_mut().log);
    check_and_save(
        "pcr",
        "extend PCR 9, 12, 15 with 32 bytes of 0x91, 0x12, 0x15, then PCR_Read of 9,12,15",
        &log,
        values.clone(),
        |tpm| {
            for (pcr, byte) in [(9u8, 0x91u8), (12, 0x12), (15, 0x15)] {
                tpm.extend(pcr, &[byte; 32]).unwrap();
            }
            tpm.pcr_read(PcrSelection::LAUNCH).unwrap()
        },
    );

    let quote = tpm.quote(AK_HANDLE, &NONCE, PcrSelection::LAUNCH).unwrap();
    let log = std::mem::take(&mut tpm.transport_mut().log);
    check_and_save(
        "quote-rsa",
        "quote(AK RSA, nonce 32 x 0x5a, PCR 9,12,15) after the extends of pcr.txt",
        &log,
        quote,
        |tpm| tpm.quote(AK_HANDLE, &NONCE, PcrSelection::LAUNCH).unwrap(),
    );

    let cert = tpm.read_ek_certificate().unwrap();
    let log = std::mem::take(&mut tpm.transport_mut().log);
    check_and_save(
        "ek-certificate",
        "read_ek_certificate: NV_ReadPublic, GetCapability(NV_BUFFER_MAX), NV_Read",
        &log,
        cert,
        |tpm| tpm.read_ek_certificate().unwrap(),
    );

    // A credential for the AK, made offline by tpm2_makecredential.
    let ek_pub = dir.path().join("ek.pub");
    let secret = dir.path().join("secret");
    let blob = dir.path().join("blob");
    std::fs::write(&ek_pub, &created.ek.public).unwrap();
    std::fs::write(&secret, [0x42u8; 32]).unwrap();
    common::run(
        "tpm2_makecredential",
        &[
            "-T",
            "none",
            "-e",
            common::path_str(&ek_pub),
            "-s",
            common::path_str(&secret),
            "-n",
            &common::hex(&created.ak.name),
            "-o",
            common::path_str(&blob),
        ],
    );
    let blob = CredentialBlob::from_tpm2_tools(&std::fs::read(&blob).unwrap()).unwrap();
    let got = activate(&mut tpm, &blob);
    assert_eq!(got, [0x42; 32]);
    let log = std::mem::take(&mut tpm.transport_mut().log);
    check_and_save(
        "activate-credential",
        "activate_credential(AK, EK) of a tpm2_makecredential blob for the AK's name, secret 32 x 0x42",
        &log,
        got,
        |tpm| activate(tpm, &blob),
    );

    // The clock after an unorderly stop, and its recovery.
    drop(tpm);
    swtpm.terminate();
    let swtpm = dir.start();
    let mut tpm = recorder(swtpm.socket());
    let recovery = tpm.restore_clock_safe().unwrap();
    assert!(recovery.set_to.is_some());
    let log = std::mem::take(&mut tpm.transport_mut().log);
    check_and_save(
        "clock-recovery",
        "restore_clock_safe after swtpm was stopped by SIGTERM without Shutdown",
        &log,
        recovery,
        |tpm| tpm.restore_clock_safe().unwrap(),
    );
    tpm.shutdown(ShutdownType::Clear).unwrap();

    // The ECC AK, in a vTPM of its own.
    let dir = VtpmDir::provisioned();
    let swtpm = dir.start();
    let mut tpm = recorder(swtpm.socket());
    tpm.ensure_attestation_key(AkAlgorithm::EcdsaP256Sha256)
        .unwrap();
    tpm.transport_mut().log.clear();
    let quote = tpm.quote(AK_HANDLE, &NONCE, PcrSelection::LAUNCH).unwrap();
    let log = std::mem::take(&mut tpm.transport_mut().log);
    check_and_save(
        "quote-ecc",
        "quote(AK ECC P-256, nonce 32 x 0x5a, PCR 9,12,15) on a fresh vTPM (PCRs zero)",
        &log,
        quote,
        |tpm| tpm.quote(AK_HANDLE, &NONCE, PcrSelection::LAUNCH).unwrap(),
    );
}
