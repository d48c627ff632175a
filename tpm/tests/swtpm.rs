//! vigil-tpm against a real swtpm (started as dom0 starts it, provisioned
//! by `swtpm_setup --create-ek-cert`), each result checked with an
//! independent tool: tpm2-tools 5.4 on the same socket, and openssl.

mod common;

use common::{VtpmDir, hex, path_str, pcr_file, run, tpm2};
use sha2::{Digest, Sha256};
use vigil_tpm::{
    AK_HANDLE, AkAlgorithm, CredentialBlob, EK_CERT_NV_INDEX, EK_HANDLE, PcrSelection,
    ShutdownType, TpmError,
};

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// `tpm2_pcrread sha256:N` → lowercase hex.
fn tpm2_pcrread(socket: &std::path::Path, pcr: u8) -> String {
    let output = tpm2(socket, "tpm2_pcrread", &[&format!("sha256:{pcr}")]);
    let text = String::from_utf8_lossy(&output.stdout);
    let value = text
        .split("0x")
        .nth(1)
        .unwrap_or_else(|| panic!("no value in {text}"));
    value.trim().to_ascii_lowercase()
}

#[test]
#[ignore = "needs swtpm, swtpm_setup and tpm2-tools: run by scripts/test (cargo test -- --ignored)"]
fn extend_and_pcr_read_agree_with_tpm2_pcrread() {
    let dir = VtpmDir::provisioned();
    let swtpm = dir.start();
    let mut tpm = swtpm.tpm();
    let fresh = tpm.pcr_read(PcrSelection::LAUNCH).unwrap();
    assert_eq!(fresh.selection, PcrSelection::LAUNCH);
    assert!(
        fresh.values.iter().all(|(_, v)| *v == [0; 32]),
        "Startup(CLEAR) zeroes PCRs"
    );

    let mut expected = [[0u8; 32]; 24];
    for (pcr, data) in [
        (9u8, &b"loader"[..]),
        (9, b"image"),
        (12, b"manifest"),
        (15, b"key"),
    ] {
        let digest = sha256(data);
        tpm.extend(pcr, &digest).unwrap();
        let mut both = expected[usize::from(pcr)].to_vec();
        both.extend_from_slice(&digest);
        expected[usize::from(pcr)] = sha256(&both);
    }
    let values = tpm.pcr_read(PcrSelection::LAUNCH).unwrap();
    assert_eq!(values.selection, PcrSelection::LAUNCH);
    assert!(values.update_counter > fresh.update_counter);
    for pcr in [9u8, 12, 15] {
        let value = values.get(pcr).unwrap();
        assert_eq!(
            *value,
            expected[usize::from(pcr)],
            "PCR {pcr} = the extend chain"
        );
        assert_eq!(hex(value), tpm2_pcrread(swtpm.socket(), pcr), "PCR {pcr}");
        assert_eq!(tpm.read_pcr(pcr).unwrap(), *value);
    }
    // More than 8 PCRs: the TPM answers for the first 8 and says so.
    let all = PcrSelection::new(&(0..24).collect::<Vec<_>>()).unwrap();
    let partial = tpm.pcr_read(all).unwrap();
    assert_eq!(partial.values.len(), 8);
    assert_eq!(
        partial.selection,
        PcrSelection::new(&(0..8).collect::<Vec<_>>()).unwrap()
    );
    // A PCR that does not exist is the TPM's to refuse.
    let err = tpm.extend(24, &[0; 32]).unwrap_err();
    assert!(matches!(err, TpmError::Extend { pcr: 24, .. }), "{err}");
    assert_eq!(tpm.get_random(16).unwrap().len(), 16);
}

#[test]
#[ignore = "needs swtpm, swtpm_setup and tpm2-tools: run by scripts/test (cargo test -- --ignored)"]
fn ek_certificate_and_ek_agree_with_tpm2_nvread_and_openssl() {
    let dir = VtpmDir::provisioned();
    let swtpm = dir.start();
    let mut tpm = swtpm.tpm();

    let nv = tpm.nv_read_public(EK_CERT_NV_INDEX).unwrap();
    assert_eq!(nv.index, EK_CERT_NV_INDEX);
    let cert = tpm.read_ek_certificate().unwrap();
    assert_eq!(cert.len(), usize::from(nv.data_size));
    let nvread = dir.path().join("nvread.der");
    tpm2(
        swtpm.socket(),
        "tpm2_nvread",
        &["0x01c00002", "-o", path_str(&nvread)],
    );
    assert_eq!(cert, std::fs::read(&nvread).unwrap(), "= tpm2_nvread");

    // The certified key is the EK swtpm_setup persisted, and the one the
    // TCG default template gives.
    let persisted = tpm.read_public(EK_HANDLE).unwrap();
    let (transient, created) = tpm.create_ek().unwrap();
    tpm.flush(transient).unwrap();
    assert_eq!(
        created.public, persisted.public,
        "CreatePrimary(template L-1) = swtpm_setup's EK"
    );
    assert_eq!(created.name, persisted.name);

    let cert_path = dir.path().join("ek.der");
    std::fs::write(&cert_path, &cert).unwrap();
    let pubkey = run(
        "openssl",
        &[
            "x509",
            "-inform",
            "der",
            "-in",
            path_str(&cert_path),
            "-pubkey",
            "-noout",
        ],
    );
    let pem = dir.path().join("ek-cert-pub.pem");
    std::fs::write(&pem, &pubkey.stdout).unwrap();
    let modulus = run(
        "openssl",
        &["rsa", "-pubin", "-in", path_str(&pem), "-modulus", "-noout"],
    );
    let modulus = String::from_utf8(modulus.stdout).unwrap();
    let modulus = modulus
        .trim()
        .strip_prefix("Modulus=")
        .unwrap()
        .to_ascii_lowercase();
    // TPM2B_PUBLIC of an RSA key ends with the 256-byte modulus.
    let ours = &persisted.public[persisted.public.len() - 256..];
    assert_eq!(modulus, hex(ours), "the certificate's key = the EK");
    // tpm2_readpublic writes the same TPM2B_PUBLIC.
    let ek_pub = dir.path().join("ek.pub");
    tpm2(
        swtpm.socket(),
        "tpm2_readpublic",
        &["-c", "0x81010001", "-o", path_str(&ek_pub)],
    );
    assert_eq!(persisted.public, std::fs::read(&ek_pub).unwrap());
}

/// The AK's name: nameAlg, then SHA-256 of its TPMT_PUBLIC.
fn computed_name(public: &[u8]) -> Vec<u8> {
    let mut name = vec![0x00, 0x0b];
    name.extend_from_slice(&sha256(&public[2..]));
    name
}

fn check_identity(dir: &VtpmDir, socket: &std::path::Path, alg: AkAlgorithm) {
    let mut tpm = vigil_tpm::Tpm::connect(socket);
    let first = tpm.ensure_attestation_key(alg).unwrap();
    assert!(!first.created_ek, "swtpm_setup persisted the EK");
    assert!(first.created_ak);
    let again = tpm.ensure_attestation_key(alg).unwrap();
    assert!(!again.created_ak);
    assert_eq!((&again.ek, &again.ak), (&first.ek, &first.ak));
    assert_eq!(first.ak.name, computed_name(&first.ak.public));
    assert_eq!(first.ek.name, computed_name(&first.ek.public));

    let ak_pub = dir.path().join("ak.pub");
    let output = tpm2(
        socket,
        "tpm2_readpublic",
        &["-c", "0x81010002", "-o", path_str(&ak_pub)],
    );
    assert_eq!(
        first.ak.public,
        std::fs::read(&ak_pub).unwrap(),
        "= tpm2_readpublic -o"
    );
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains(&format!("name: {}", hex(&first.ak.name))),
        "{text}"
    );
    assert!(
        text.contains("fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign"),
        "{text}"
    );
    // No transient objects or sessions left behind.
    let handles = tpm2(socket, "tpm2_getcap", &["handles-transient"]);
    assert!(
        handles.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&handles.stdout)
    );
    let sessions = tpm2(socket, "tpm2_getcap", &["handles-loaded-session"]);
    assert!(
        sessions.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&sessions.stdout)
    );
}

#[test]
#[ignore = "needs swtpm, swtpm_setup and tpm2-tools: run by scripts/test (cargo test -- --ignored)"]
fn attestation_key_is_made_once_kept_across_restarts_and_matches_tpm2_readpublic() {
    let dir = VtpmDir::provisioned();
    let swtpm = dir.start();
    check_identity(&dir, swtpm.socket(), AkAlgorithm::RsaSsaSha256);
    let before = swtpm
        .tpm()
        .ensure_attestation_key(AkAlgorithm::RsaSsaSha256)
        .unwrap();
    swtpm.tpm().shutdown(ShutdownType::Clear).unwrap();
    swtpm.terminate();
    let swtpm = dir.start();
    let after = swtpm
        .tpm()
        .ensure_attestation_key(AkAlgorithm::RsaSsaSha256)
        .unwrap();
    assert!(!after.created_ak && !after.created_ek);
    assert_eq!(after.ak, before.ak, "the AK persists in the vTPM state");
    // One AK per domain: asking for the other algorithm is refused.
    let err = swtpm
        .tpm()
        .ensure_attestation_key(AkAlgorithm::EcdsaP256Sha256)
        .unwrap_err();
    assert!(
        matches!(err, TpmError::UnexpectedKey { handle, .. } if handle == AK_HANDLE),
        "{err}"
    );
    // Removing the persistent AK (what --purge does) lets a new one be made.
    swtpm.tpm().evict(AK_HANDLE).unwrap();
    let new = swtpm
        .tpm()
        .ensure_attestation_key(AkAlgorithm::RsaSsaSha256)
        .unwrap();
    assert!(new.created_ak);
    assert_ne!(new.ak, before.ak);
}

#[test]
#[ignore = "needs swtpm, swtpm_setup and tpm2-tools: run by scripts/test (cargo test -- --ignored)"]
fn ecc_attestation_key_matches_tpm2_readpublic() {
    let dir = VtpmDir::provisioned();
    let swtpm = dir.start();
    check_identity(&dir, swtpm.socket(), AkAlgorithm::EcdsaP256Sha256);
}

#[test]
#[ignore = "needs swtpm, swtpm_setup and tpm2-tools: run by scripts/test (cargo test -- --ignored)"]
fn ek_is_created_and_persisted_when_missing() {
    let dir = VtpmDir::provisioned();
    let swtpm = dir.start();
    let mut tpm = swtpm.tpm();
    let provisioned = tpm.read_public(EK_HANDLE).unwrap();
    tpm.evict(EK_HANDLE).unwrap();
    let identity = tpm
        .ensure_attestation_key(AkAlgorithm::RsaSsaSha256)
        .unwrap();
    assert!(identity.created_ek && identity.created_ak);
    assert_eq!(
        identity.ek, provisioned,
        "the same seed, the same template, the same EK"
    );
    assert_eq!(tpm.read_public(EK_HANDLE).unwrap(), provisioned);
}

fn quote_checks_with_tpm2_checkquote(alg: AkAlgorithm) {
    let dir = VtpmDir::provisioned();
    let swtpm = dir.start();
    let socket = swtpm.socket();
    let mut tpm = swtpm.tpm();
    let identity = tpm.ensure_attestation_key(alg).unwrap();
    for (pcr, data) in [(9u8, &b"loader"[..]), (12, b"manifest"), (15, b"key")] {
        tpm.extend(pcr, &sha256(data)).unwrap();
    }
    let nonce: Vec<u8> = (0..32).map(|i| i * 7).collect();
    let quote = tpm.quote(AK_HANDLE, &nonce, PcrSelection::LAUNCH).unwrap();
    assert_eq!(quote.pcrs, PcrSelection::LAUNCH);
    assert!(quote.clock_info.safe);
    if alg == AkAlgorithm::RsaSsaSha256 {
        assert_eq!(
            quote.signature.len(),
            262,
            "RSASSA: alg, hash, TPM2B of 256 bytes"
        );
    }
    let values = tpm.pcr_read(PcrSelection::LAUNCH).unwrap();

    let path = |name: &str| dir.path().join(name);
    std::fs::write(path("msg"), &quote.message).unwrap();
    std::fs::write(path("sig"), &quote.signature).unwrap();
    std::fs::write(path("pcrs"), pcr_file(&values.values)).unwrap();
    std::fs::write(path("ak.pub"), &identity.ak.public).unwrap();
    let check = |nonce_hex: &str, pcrs: &str| {
        std::process::Command::new("tpm2_checkquote")
            .args(["-u", path_str(&path("ak.pub"))])
            .args(["-m", path_str(&path("msg"))])
            .args(["-s", path_str(&path("sig"))])
            .args(["-f", path_str(&path(pcrs))])
            .args(["-g", "sha256", "-q", nonce_hex])
            .output()
            .unwrap()
    };
    let ok = check(&hex(&nonce), "pcrs");
    assert!(
        ok.status.success(),
        "tpm2_checkquote: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // The checker checks: another nonce, or other PCR values, fail.
    assert!(!check(&hex(&[1u8; 32]), "pcrs").status.success());
    let mut other = values.values.clone();
    other[0].1[0] ^= 1;
    std::fs::write(path("pcrs-other"), pcr_file(&other)).unwrap();
    assert!(!check(&hex(&nonce), "pcrs-other").status.success());

    // tpm2_quote over the same PCRs writes the same kinds of files: the
    // same PCR file byte for byte, a signature of the same size, and a
    // message that differs only in the clock/firmware fields.
    tpm2(
        socket,
        "tpm2_quote",
        &[
            "-c",
            "0x81010002",
            "-l",
            "sha256:9,12,15",
            "-q",
            &hex(&nonce),
            "-g",
            "sha256",
            "-m",
            path_str(&path("tools.msg")),
            "-s",
            path_str(&path("tools.sig")),
            "-o",
            path_str(&path("tools.pcrs")),
        ],
    );
    assert_eq!(
        std::fs::read(path("tools.pcrs")).unwrap(),
        std::fs::read(path("pcrs")).unwrap(),
        "the PCR file format"
    );
    let tools_sig = std::fs::read(path("tools.sig")).unwrap();
    assert_eq!(tools_sig[..4], quote.signature[..4], "sigAlg and hash");
    let tools_msg = std::fs::read(path("tools.msg")).unwrap();
    assert_eq!(tools_msg.len(), quote.message.len());
    let signer_and_nonce = 4 + 2 + 2 + 34 + 2 + 32;
    assert_eq!(
        tools_msg[..signer_and_nonce],
        quote.message[..signer_and_nonce]
    );
    let quote_info = quote.message.len() - (4 + 2 + 1 + 3 + 2 + 32);
    assert_eq!(
        tools_msg[quote_info..],
        quote.message[quote_info..],
        "pcrSelect and pcrDigest"
    );
}

#[test]
#[ignore = "needs swtpm, swtpm_setup and tpm2-tools: run by scripts/test (cargo test -- --ignored)"]
fn rsa_quote_passes_tpm2_checkquote() {
    quote_checks_with_tpm2_checkquote(AkAlgorithm::RsaSsaSha256);
}

#[test]
#[ignore = "needs swtpm, swtpm_setup and tpm2-tools: run by scripts/test (cargo test -- --ignored)"]
fn ecc_quote_passes_tpm2_checkquote() {
    quote_checks_with_tpm2_checkquote(AkAlgorithm::EcdsaP256Sha256);
}

#[test]
#[ignore = "needs swtpm, swtpm_setup and tpm2-tools: run by scripts/test (cargo test -- --ignored)"]
fn activate_credential_recovers_what_tpm2_makecredential_sealed() {
    let dir = VtpmDir::provisioned();
    let swtpm = dir.start();
    let mut tpm = swtpm.tpm();
    let identity = tpm
        .ensure_attestation_key(AkAlgorithm::RsaSsaSha256)
        .unwrap();
    let path = |name: &str| dir.path().join(name);
    std::fs::write(path("ek.pub"), &identity.ek.public).unwrap();
    let secret: Vec<u8> = (0..32).map(|i| 0xc0 ^ i).collect();
    std::fs::write(path("secret"), &secret).unwrap();
    let make = |name: &[u8], out: &str| {
        run(
            "tpm2_makecredential",
            &[
                "-T",
                "none",
                "-e",
                path_str(&path("ek.pub")),
                "-s",
                path_str(&path("secret")),
                "-n",
                &hex(name),
                "-o",
                path_str(&path(out)),
            ],
        );
        std::fs::read(path(out)).unwrap()
    };
    let file = make(&identity.ak.name, "blob");
    assert_eq!(file.len(), 336);
    let blob = CredentialBlob::from_tpm2_tools(&file).unwrap();
    assert_eq!(blob.to_tpm2_tools().unwrap(), file);
    for _ in 0..3 {
        let got = tpm
            .activate_credential(
                AK_HANDLE,
                EK_HANDLE,
                &blob.credential_blob,
                &blob.encrypted_secret,
            )
            .unwrap();
        assert_eq!(got, secret);
    }
    // A credential for another key's name is refused (TPM_RC_INTEGRITY)...
    let mut other_name = identity.ak.name.clone();
    other_name[5] ^= 1;
    let other = CredentialBlob::from_tpm2_tools(&make(&other_name, "other")).unwrap();
    let err = tpm
        .activate_credential(
            AK_HANDLE,
            EK_HANDLE,
            &other.credential_blob,
            &other.encrypted_secret,
        )
        .unwrap_err();
    assert!(matches!(err, TpmError::ActivateCredential { .. }), "{err}");
    let code = match &err {
        TpmError::ActivateCredential { source, .. } => source.response_code().unwrap(),
        _ => unreachable!(),
    };
    assert!(code.to_string().contains("TPM_RC_INTEGRITY"), "{code}");
    // ... and leaves no session behind.
    let sessions = tpm2(swtpm.socket(), "tpm2_getcap", &["handles-loaded-session"]);
    assert!(
        sessions.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&sessions.stdout)
    );
}

#[test]
#[ignore = "needs swtpm, swtpm_setup and tpm2-tools: run by scripts/test (cargo test -- --ignored)"]
fn clock_safe_flag_is_lost_by_sigterm_and_restored() {
    let dir = VtpmDir::provisioned();

    // Orderly: Shutdown before stopping keeps safe = 1.
    let swtpm = dir.start();
    let first = swtpm.tpm().read_clock().unwrap().clock_info;
    assert!(first.safe, "a freshly provisioned vTPM is safe");
    swtpm.tpm().shutdown(ShutdownType::Clear).unwrap();
    swtpm.terminate();
    let swtpm = dir.start();
    let orderly = swtpm.tpm().read_clock().unwrap().clock_info;
    assert!(orderly.safe, "Shutdown(CLEAR) then SIGTERM keeps safe = 1");
    assert_eq!(orderly.reset_count, first.reset_count + 1);
    swtpm.tpm().shutdown(ShutdownType::State).unwrap();
    swtpm.terminate();
    let swtpm = dir.start();
    let state = swtpm.tpm().read_clock().unwrap().clock_info;
    assert!(state.safe, "Shutdown(STATE) then SIGTERM keeps safe = 1");
    assert_eq!(state.reset_count, orderly.reset_count);
    assert_eq!(
        state.restart_count,
        orderly.restart_count + 1,
        "a TPM Restart"
    );

    // SIGTERM without Shutdown: safe = 0 on the next start, and it stays
    // 0 through an orderly restart.
    swtpm.terminate();
    let swtpm = dir.start();
    let lost = swtpm.tpm().read_clock().unwrap().clock_info;
    assert!(!lost.safe, "SIGTERM without Shutdown gives safe = 0");
    swtpm.tpm().shutdown(ShutdownType::Clear).unwrap();
    swtpm.terminate();
    let swtpm = dir.start();
    let mut tpm = swtpm.tpm();
    assert!(
        !tpm.read_clock().unwrap().clock_info.safe,
        "an orderly restart does not restore it"
    );

    // A small step forward does not restore it; crossing 2^22 ms does.
    let now = tpm.read_clock().unwrap().clock_info.clock;
    tpm.clock_set(now + 1_000).unwrap();
    assert!(
        !tpm.read_clock().unwrap().clock_info.safe,
        "ClockSet +1 s is not enough"
    );
    let recovery = tpm.restore_clock_safe().unwrap();
    assert!(!recovery.before.safe && recovery.after.safe);
    let target = recovery.set_to.unwrap();
    assert_eq!(target % (1 << 22), 0);
    assert!(recovery.after.clock >= target);
    // Quotes now carry safe = 1, and it survives an orderly restart.
    tpm.ensure_attestation_key(AkAlgorithm::RsaSsaSha256)
        .unwrap();
    let quote = tpm
        .quote(AK_HANDLE, &[7; 16], PcrSelection::LAUNCH)
        .unwrap();
    assert!(quote.clock_info.safe);
    tpm.shutdown(ShutdownType::Clear).unwrap();
    swtpm.terminate();
    let swtpm = dir.start();
    let mut tpm = swtpm.tpm();
    let after = tpm.read_clock().unwrap().clock_info;
    assert!(after.safe);
    assert!(after.clock >= target, "the clock does not go back");
    assert_eq!(
        tpm.restore_clock_safe().unwrap().set_to,
        None,
        "nothing to do"
    );
    // tpm2_readclock agrees.
    let text = tpm2(swtpm.socket(), "tpm2_readclock", &[]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("safe: yes"));
}

#[test]
#[ignore = "needs swtpm, swtpm_setup and tpm2-tools: run by scripts/test (cargo test -- --ignored)"]
fn a_kept_connection_holds_the_socket_and_survives_a_swtpm_restart() {
    let dir = VtpmDir::provisioned();
    let swtpm = dir.start();
    let mut tpm = vigil_tpm::Tpm::connect_persistent(swtpm.socket());
    tpm.extend(9, &[1; 32]).unwrap();
    // swtpm serves one client at a time: another client waits while the
    // connection is open ...
    let tcti = format!("swtpm:path={}", swtpm.socket().display());
    let blocked = std::process::Command::new("timeout")
        .args(["2", "tpm2_getrandom", "-T", &tcti, "8"])
        .output()
        .unwrap();
    assert_eq!(
        blocked.status.code(),
        Some(124),
        "tpm2_getrandom waited for the socket"
    );
    // ... and is served once it is closed.
    tpm.transport_mut().disconnect();
    tpm2(swtpm.socket(), "tpm2_getrandom", &["8"]);
    // A connection swtpm closed (restart) is replaced before the next command.
    tpm.extend(9, &[2; 32]).unwrap();
    tpm.shutdown(ShutdownType::Clear).unwrap();
    swtpm.terminate();
    let swtpm = dir.start();
    assert_eq!(
        tpm.read_pcr(9).unwrap(),
        [0; 32],
        "a new TPM Reset, reached again"
    );
    drop(tpm);
    tpm2(swtpm.socket(), "tpm2_getrandom", &["8"]);
}

#[test]
#[ignore = "needs swtpm, swtpm_setup and tpm2-tools: run by scripts/test (cargo test -- --ignored)"]
fn nv_read_reads_an_index_larger_than_one_chunk() {
    let dir = VtpmDir::provisioned();
    let swtpm = dir.start();
    let data: Vec<u8> = (0..2000u32).map(|i| (i * 31 % 251) as u8).collect();
    let file = dir.path().join("nv.bin");
    std::fs::write(&file, &data).unwrap();
    tpm2(
        swtpm.socket(),
        "tpm2_nvdefine",
        &[
            "0x01500001",
            "-C",
            "o",
            "-s",
            "2000",
            "-a",
            "ownerread|ownerwrite|authread|authwrite",
        ],
    );
    tpm2(
        swtpm.socket(),
        "tpm2_nvwrite",
        &["0x01500001", "-C", "o", "-i", path_str(&file)],
    );
    let mut tpm = swtpm.tpm();
    let index = vigil_tpm::Handle(0x0150_0001);
    assert_eq!(tpm.nv_read_public(index).unwrap().data_size, 2000);
    assert_eq!(
        tpm.nv_read(index).unwrap(),
        data,
        "two NV_Read chunks (1024 + 976)"
    );
    let missing = tpm.nv_read(vigil_tpm::Handle(0x0150_0002)).unwrap_err();
    assert!(matches!(missing, TpmError::NvRead { .. }), "{missing}");
}
