//! The verifier against real TPM evidence: a swtpm, tpm2-tools, the launch
//! events of vigil-core extended for real. `#[ignore]`d because they need
//! swtpm, swtpm-tools and tpm2-tools (`scripts/test` runs them):
//! `cargo test -p vigil-verify -- --ignored`.

mod support;

use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use support::{AK_HANDLE, Domain, Launch, OTHER_AK_HANDLE, ReportSpec, nonce};
use vigil_core::v1::evidence::Evidence;
use vigil_core::v1::report::{Nonce, ReportKey, Verdict};
use vigil_verify::agent::{Agent, AgentError, Identity};
use vigil_verify::appraise::{Appraisal, Policy, Request, Status, appraise};
use vigil_verify::credential::{Credential, make_credential};
use vigil_verify::ekcert;
use vigil_verify::enroll::{self, Trust, TrustBasis};
use vigil_verify::tpm::{TpmPublic, hex};

const DOMAIN: &str = "demo";

/// A launched domain and a fresh quote of it.
struct Scene {
    domain: Domain,
    launch: Launch,
    ak: TpmPublic,
}

impl Scene {
    fn new() -> Self {
        let domain = Domain::new();
        let launch = Launch::new(1, 3, 7);
        domain.launch(&launch);
        let ak = TpmPublic::parse(&domain.ak_public).unwrap();
        Self { domain, launch, ak }
    }

    fn policy(&self) -> Policy {
        Policy {
            manifest_keys: vec![self.launch.manifest_public_key()],
            min_security_version: 2,
        }
    }

    /// Evidence for `nonce` as the agent would build it (list v2 log).
    fn evidence(&self, nonce: &Nonce) -> Evidence {
        let quote = self.domain.quote(AK_HANDLE, nonce);
        self.launch.evidence(
            DOMAIN,
            nonce,
            quote,
            &self.domain.ak_public,
            self.launch.event_log(true),
            Some(
                self.launch
                    .runtime_report(&ReportSpec::intact(*nonce), None),
            ),
        )
    }

    fn appraise(&self, evidence: &Evidence, nonce: &Nonce, policy: &Policy) -> Appraisal {
        appraise(
            evidence,
            &Request {
                domain: DOMAIN,
                nonce,
                ak: &self.ak,
                previous: None,
            },
            policy,
        )
    }
}

fn failing(appraisal: &Appraisal) -> Vec<&'static str> {
    appraisal
        .claims
        .iter()
        .filter(|c| c.status > Status::Affirming)
        .map(|c| c.name)
        .collect()
}

#[track_caller]
fn assert_affirming(appraisal: &Appraisal) {
    assert_eq!(
        appraisal.status,
        Status::Affirming,
        "{}",
        vigil_verify::ear::render_text(appraisal, true)
    );
}

/// The claim fails, and the whole appraisal is at least `status`.
#[track_caller]
fn assert_fails(appraisal: &Appraisal, claim: &str, status: Status) {
    let text = vigil_verify::ear::render_text(appraisal, false);
    let found = appraisal
        .claims
        .iter()
        .find(|c| c.name == claim)
        .unwrap_or_else(|| panic!("no claim {claim}"));
    assert!(found.status >= Status::Warning, "{claim} passed:\n{text}");
    assert!(
        appraisal.status >= status && found.status == status,
        "{claim} is {}, appraisal {}, expected {status}:\n{text}",
        found.status,
        appraisal.status
    );
}

#[test]
#[ignore = "needs swtpm and tpm2-tools"]
fn genuine_evidence_is_affirmed_and_tpm2_checkquote_agrees() {
    let scene = Scene::new();
    let n = nonce(1);
    let evidence = scene.evidence(&n);
    let appraisal = scene.appraise(&evidence, &n, &scene.policy());
    assert_affirming(&appraisal);
    assert_eq!(appraisal.list_version, Some(2));
    assert_eq!(
        appraisal.boot_id.as_deref(),
        Some(hex(&scene.launch.report_key.boot_id()).as_str())
    );
    assert!(appraisal.clock.unwrap().safe);
    let checked = scene.domain.checkquote(&evidence.quote, &n);
    assert!(
        checked.status.success(),
        "tpm2_checkquote refused: {}",
        String::from_utf8_lossy(&checked.stderr)
    );

    // The same quote with a v1 log: the PCR values do not depend on the
    // list version, and v1 logs still replay.
    let mut v1 = evidence.clone();
    v1.event_log.0 = scene.launch.event_log(false);
    let appraisal = scene.appraise(&v1, &n, &scene.policy());
    assert_affirming(&appraisal);
    assert_eq!(appraisal.list_version, Some(1));

    // The evidence JSON round-trips through its codec.
    let parsed = Evidence::parse(&evidence.emit()).unwrap();
    assert_affirming(&scene.appraise(&parsed, &n, &scene.policy()));

    // VIGIL_WRITE_FIXTURES=1 refreshes tests/data (see its README).
    if std::env::var_os("VIGIL_WRITE_FIXTURES").is_some() {
        use ed25519_dalek::pkcs8::EncodePublicKey as _;
        let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("evidence.json"), evidence.emit()).unwrap();
        std::fs::write(data.join("ak.pub"), &scene.domain.ak_public).unwrap();
        std::fs::write(data.join("nonce"), hex(n.as_bytes())).unwrap();
        std::fs::write(
            data.join("manifest.pub.pem"),
            scene
                .launch
                .manifest_public_key()
                .to_public_key_pem(Default::default())
                .unwrap(),
        )
        .unwrap();
    }
}

#[test]
#[ignore = "needs swtpm and tpm2-tools"]
fn a_relabelled_selection_passes_tpm2_checkquote_but_not_vigil() {
    let scene = Scene::new();
    let n = nonce(2);
    let mut evidence = scene.evidence(&n);
    // PCR 9's value relabelled as PCR 10's: the selection bitmap of the
    // presented PCR file is byte 8 (0x92 = PCRs 9, 12, 15 of byte 1).
    assert_eq!(evidence.quote.pcrs.0[8], 0x92);
    evidence.quote.pcrs.0[8] = 0x94;
    let checked = scene.domain.checkquote(&evidence.quote, &n);
    assert!(
        checked.status.success(),
        "tpm2_checkquote 5.4 was expected to accept the relabelled file: {}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let appraisal = scene.appraise(&evidence, &n, &scene.policy());
    assert_fails(&appraisal, "pcr-selection", Status::Contraindicated);
    let claim = appraisal
        .claims
        .iter()
        .find(|c| c.name == "pcr-selection")
        .unwrap();
    assert_eq!(claim.expected, "the signed selection, sha256:9,12,15");
    assert_eq!(claim.actual, "presented sha256:10,12,15");
    // The signature and digest still verify: only the new claim catches it.
    for passing in ["quote-signature", "pcr-digest", "nonce"] {
        assert!(!failing(&appraisal).contains(&passing), "{passing}");
    }
}

#[test]
#[ignore = "needs swtpm and tpm2-tools"]
fn every_negative_case_names_its_failing_claim() {
    let scene = Scene::new();
    let policy = scene.policy();
    let n = nonce(3);
    let good = scene.evidence(&n);
    assert_affirming(&scene.appraise(&good, &n, &policy));

    // A replayed nonce: yesterday's evidence for today's challenge.
    let today = nonce(4);
    let appraisal = scene.appraise(&good, &today, &policy);
    assert_fails(&appraisal, "nonce", Status::Contraindicated);
    assert_fails(&appraisal, "report-nonce", Status::Contraindicated);

    // Evidence signed by another domain's AK.
    let other_ak = scene.domain.other_ak();
    let quote = scene.domain.quote(OTHER_AK_HANDLE, &n);
    let mut foreign = good.clone();
    foreign.quote = quote;
    foreign.ak_public.0 = other_ak;
    let appraisal = scene.appraise(&foreign, &n, &policy);
    assert_fails(&appraisal, "quote-signature", Status::Contraindicated);
    assert_fails(&appraisal, "ak-public", Status::Contraindicated);
    assert_eq!(
        appraisal.vector[&vigil_verify::appraise::TrustClaim::InstanceIdentity],
        99
    );

    // An edited event log: another command line in the log (its last
    // occurrence: the manifest's bytes, logged before it, contain it too).
    let mut edited = good.clone();
    let log = &mut edited.event_log.0;
    let at = log
        .windows(14)
        .rposition(|w| w == b"-- --port=8080")
        .unwrap();
    log[at + 13] = b'1';
    let appraisal = scene.appraise(&edited, &n, &policy);
    assert_fails(&appraisal, "log-cmdline", Status::Contraindicated);

    // ... and a log edited consistently (the digest changed with the data):
    // the replay no longer gives the quoted PCR 12.
    let mut consistent = good.clone();
    let records = vigil_core::v1::eventlog::parse(&good.event_log.0).unwrap();
    let mut records: Vec<_> = records.into_iter().collect();
    records[3].data = b"-- --port=8081";
    records[3].sha256 = vigil_core::v1::events::sha256(b"-- --port=8081");
    consistent.event_log.0 = vigil_core::v1::eventlog::encode(&records);
    let appraisal = scene.appraise(&consistent, &n, &policy);
    assert_fails(&appraisal, "pcr-12-replay", Status::Contraindicated);
    assert_fails(&appraisal, "log-cmdline", Status::Contraindicated);

    // A manifest signed by an untrusted key.
    let untrusted = Policy {
        manifest_keys: vec![Launch::new(9, 3, 7).manifest_public_key()],
        min_security_version: 2,
    };
    let appraisal = scene.appraise(&good, &n, &untrusted);
    assert_fails(&appraisal, "manifest-signature", Status::Contraindicated);

    // A manifest below the security floor.
    let floor = Policy {
        manifest_keys: policy.manifest_keys.clone(),
        min_security_version: 4,
    };
    let appraisal = scene.appraise(&good, &n, &floor);
    assert_fails(&appraisal, "security-version", Status::Warning);

    // A violated runtime report (the watchdog found changed code).
    let mut violated = good.clone();
    let spec = ReportSpec {
        verdict: Verdict::Violated,
        ..ReportSpec::intact(n)
    };
    violated.runtime_report = Some(scene.launch.runtime_report(&spec, None));
    let appraisal = scene.appraise(&violated, &n, &policy);
    assert_fails(&appraisal, "report-verdict", Status::Contraindicated);
    assert_fails(&appraisal, "report-regions", Status::Contraindicated);
    assert_eq!(appraisal.status, Status::Contraindicated);

    // A runtime report from another boot (signed by another per-boot key).
    let mut other_boot = good.clone();
    let other_key = ReportKey::from_seed(&[8; 32]);
    other_boot.runtime_report = Some(
        scene
            .launch
            .runtime_report(&ReportSpec::intact(n), Some(&other_key)),
    );
    let appraisal = scene.appraise(&other_boot, &n, &policy);
    assert_fails(&appraisal, "report-signature", Status::Contraindicated);

    // A stale report: the watchdog's latest check is 5 intervals old.
    let mut stale = good.clone();
    let spec = ReportSpec {
        uptime_ms: 20_000,
        last_check_ms: 15_000,
        ..ReportSpec::intact(n)
    };
    stale.runtime_report = Some(scene.launch.runtime_report(&spec, None));
    let appraisal = scene.appraise(&stale, &n, &policy);
    assert_fails(&appraisal, "report-fresh", Status::Warning);
    assert_eq!(appraisal.status, Status::Warning);

    // No runtime report at all: the runtime is not recognized (a warning).
    let mut absent = good.clone();
    absent.runtime_report = None;
    absent.runtime_report_error = Some("guest unreachable".into());
    let appraisal = scene.appraise(&absent, &n, &policy);
    assert_fails(&appraisal, "runtime-report", Status::Warning);

    // An agent answering with a different domain's evidence.
    let mut other_domain = good.clone();
    other_domain.domain = "other".into();
    let appraisal = scene.appraise(&other_domain, &n, &policy);
    assert_fails(&appraisal, "domain", Status::Contraindicated);

    // The TPM's counters went back since the last quote.
    let mut previous = scene.appraise(&good, &n, &policy).clock.unwrap();
    previous.reset_count += 1;
    let appraisal = appraise(
        &good,
        &Request {
            domain: DOMAIN,
            nonce: &n,
            ak: &scene.ak,
            previous: Some(previous),
        },
        &policy,
    );
    assert_fails(&appraisal, "tpm-counters", Status::Contraindicated);

    // PCR 9 extended after launch by someone else on the host (last: it
    // changes the TPM for good).
    scene.domain.extend(9, &[0xee; 32]);
    let n = nonce(5);
    let late = scene.evidence(&n);
    let appraisal = scene.appraise(&late, &n, &policy);
    assert_fails(&appraisal, "pcr-9-replay", Status::Contraindicated);
    assert_fails(&appraisal, "pcr-9-manifest", Status::Contraindicated);
    // The quote itself is genuine.
    assert!(!failing(&appraisal).contains(&"quote-signature"));
}

#[test]
#[ignore = "needs swtpm and tpm2-tools"]
fn tpm2_eventlog_parses_the_v2_log_without_warning() {
    let launch = Launch::new(1, 3, 7);
    let dir = tempfile::tempdir().unwrap();
    let path = support::write(dir.path(), "v2.log", &launch.event_log(true));
    let output = Command::new("tpm2_eventlog").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.trim().is_empty(), "tpm2_eventlog warned: {stderr}");
    assert!(stdout.contains("EV_EVENT_TAG"), "{stdout}");
    assert_eq!(
        stdout.matches("PCRIndex:").count(),
        6,
        "header and 5 events: {stdout}"
    );
    // The v1 log is what v2 fixes: tpm2_eventlog warns about its EV_IPL key.
    let v1 = support::write(dir.path(), "v1.log", &launch.event_log(false));
    let output = Command::new("tpm2_eventlog").arg(&v1).output().unwrap();
    eprintln!(
        "v1 log, tpm2_eventlog stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
#[ignore = "needs swtpm and tpm2-tools"]
fn tpm2_checkquote_replays_the_v2_log() {
    let scene = Scene::new();
    let n = nonce(6);
    let evidence = scene.evidence(&n);
    let tpm = &scene.domain.tpm;
    support::write(tpm.dir.path(), "launch.log", &evidence.event_log.0);
    let checked = scene.domain.checkquote(&evidence.quote, &n);
    assert!(checked.status.success());
    let output = Command::new("tpm2_checkquote")
        .args([
            "-u",
            "ak.pem",
            "-m",
            "check.msg",
            "-s",
            "check.sig",
            "-f",
            "check.pcrs",
            "-g",
            "sha256",
            "-e",
            "launch.log",
            "-q",
        ])
        .arg(hex(n.as_bytes()))
        .current_dir(tpm.dir.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "tpm2_checkquote -e: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The TPM side of an agent, through tpm2-tools: identity and
/// ActivateCredential (the HTTP agent is dom0's; the protocol is the same).
struct ToolAgent<'a> {
    domain: &'a Domain,
    scene: Option<&'a Scene>,
}

impl Agent for ToolAgent<'_> {
    fn id(&self) -> String {
        "tools".into()
    }

    fn identity(&self, _: &str) -> Result<Identity, AgentError> {
        Ok(Identity {
            ek_certificate: vigil_core::v1::evidence::Base64(self.domain.ek_certificate.clone()),
            ek_public: vigil_core::v1::evidence::Base64(self.domain.ek_public.clone()),
            ak_public: vigil_core::v1::evidence::Base64(self.domain.ak_public.clone()),
            ak_name: hex(&self.domain.ak_name),
        })
    }

    fn activate(&self, _: &str, credential: &Credential) -> Result<Vec<u8>, AgentError> {
        Ok(support::activate(self.domain, credential))
    }

    fn evidence(&self, _: &str, nonce: &Nonce) -> Result<Evidence, AgentError> {
        Ok(self.scene.expect("a launched scene").evidence(nonce))
    }
}

#[test]
#[ignore = "needs swtpm and tpm2-tools"]
fn enrollment_checks_the_ek_certificate_and_activates_a_credential() {
    let domain = Domain::new();
    let ek = TpmPublic::parse(&domain.ek_public).unwrap();
    let ak = TpmPublic::parse(&domain.ak_public).unwrap();
    assert!(ak.is_attestation_key());
    assert_eq!(ak.name(), domain.ak_name, "our AK name is the TPM's");

    // MakeCredential here → a real tpm2_activatecredential recovers the secret.
    let secret = *b"vigil credential secret 32 bytes";
    let credential = make_credential(&ek, &ak.name(), &secret, &mut rand_core::OsRng).unwrap();
    assert_eq!(support::activate(&domain, &credential), secret);

    // The EK certificate verifies against the test's local CA, certifies
    // this EK, and not against another CA.
    let ca = std::fs::read_to_string(domain.tpm.path("ca/issuercert.pem")).unwrap();
    let anchors = ekcert::anchors_from_pem(&ca).unwrap();
    ekcert::verify(&domain.ek_certificate, &anchors, &ek, SystemTime::now()).unwrap();
    let root =
        std::fs::read_to_string(domain.tpm.path("ca/swtpm-localca-rootca-cert.pem")).unwrap();
    let root_only = ekcert::anchors_from_pem(&root).unwrap();
    assert!(matches!(
        ekcert::verify(&domain.ek_certificate, &root_only, &ek, SystemTime::now()),
        Err(ekcert::EkCertError::Untrusted { .. })
    ));
    let other_ek = {
        let mut other = ek.clone();
        other.key = ak.key.clone();
        other
    };
    assert!(matches!(
        ekcert::verify(
            &domain.ek_certificate,
            &anchors,
            &other_ek,
            SystemTime::now()
        ),
        Err(ekcert::EkCertError::KeyMismatch)
    ));

    // The whole enrollment through an agent.
    let agent = ToolAgent {
        domain: &domain,
        scene: None,
    };
    let enrollment = enroll::enroll(
        &agent,
        DOMAIN,
        &Trust::Ca(anchors.clone()),
        SystemTime::now(),
        &mut rand_core::OsRng,
    )
    .unwrap();
    assert_eq!(enrollment.trust, TrustBasis::EkCa);
    assert_eq!(enrollment.ak_public.0, domain.ak_public);
    assert!(matches!(
        enroll::enroll(
            &agent,
            DOMAIN,
            &Trust::Ca(root_only),
            SystemTime::now(),
            &mut rand_core::OsRng
        ),
        Err(enroll::EnrollError::EkCertificate(_))
    ));
    let pinned = enroll::enroll(
        &agent,
        DOMAIN,
        &Trust::PinOnFirstContact,
        SystemTime::now(),
        &mut rand_core::OsRng,
    )
    .unwrap();
    assert_eq!(pinned.trust, TrustBasis::Pinned);
}

#[test]
#[ignore = "needs swtpm and tpm2-tools"]
fn check_round_records_the_counters() {
    let scene = Scene::new();
    let agent = ToolAgent {
        domain: &scene.domain,
        scene: Some(&scene),
    };
    let state = tempfile::tempdir().unwrap();
    let store = enroll::Store::new(state.path());
    let enrollment = enroll::enroll(
        &agent,
        DOMAIN,
        &Trust::PinOnFirstContact,
        SystemTime::now(),
        &mut rand_core::OsRng,
    )
    .unwrap();
    store.save(&enrollment).unwrap();
    let policy = scene.policy();
    let first = vigil_verify::check::check(
        &agent,
        &store,
        DOMAIN,
        &policy,
        SystemTime::now(),
        &mut rand_core::OsRng,
    )
    .unwrap();
    assert_affirming(&first.appraisal);
    assert_eq!(first.previous, None);
    let second = vigil_verify::check::check(
        &agent,
        &store,
        DOMAIN,
        &policy,
        SystemTime::now(),
        &mut rand_core::OsRng,
    )
    .unwrap();
    assert_affirming(&second.appraisal);
    assert_eq!(second.previous, first.appraisal.clock);
    assert!(second.appraisal.clock.unwrap().clock >= first.appraisal.clock.unwrap().clock);
    assert_ne!(first.nonce, second.nonce);
}

/// Appraisal time on real evidence: `cargo test --release -p vigil-verify
/// --test swtpm -- --ignored --nocapture appraisal_time`.
#[test]
#[ignore = "needs swtpm and tpm2-tools"]
fn appraisal_time() {
    let scene = Scene::new();
    let n = nonce(7);
    let evidence = scene.evidence(&n);
    let policy = scene.policy();
    let json = evidence.emit();
    let mut times = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        let parsed = Evidence::parse(&json).unwrap();
        let appraisal = scene.appraise(&parsed, &n, &policy);
        let ear = vigil_verify::ear::Ear::new(&appraisal, n.as_bytes(), 0);
        std::hint::black_box((appraisal.status, ear));
        times.push(started.elapsed());
    }
    times.sort();
    let median = times[times.len() / 2];
    let p99 = times[times.len() * 99 / 100];
    eprintln!(
        "appraisal (evidence JSON parse + appraise + EAR), 200 runs: median {:.3} ms, p99 {:.3} ms",
        median.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    assert!(median < Duration::from_millis(50));
}
