//! Remote attestation end to end: a guest launched by `vigil-dom0 launch`,
//! the agent (`vigil-dom0 serve`, the real binary) answering over HTTP, and
//! the verifier's library enrolling the domain's AK (EK certificate against
//! swtpm's local CA, then MakeCredential/ActivateCredential) and appraising
//! fresh evidence. tpm2-tools judge the agent's quotes and event log
//! independently. Every negative case must give a verdict that is not
//! affirming and names the claim that failed.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use common::dom0::{Setup, stderr};
use rand_core::OsRng;
use vigil_bench::tamper;
use vigil_core::v1::evidence::Evidence;
use vigil_core::v1::report::Nonce;
use vigil_verify::agent::{Agent, AgentError, HttpAgent, Identity};
use vigil_verify::appraise::{Appraisal, Policy, Status};
use vigil_verify::check::{self, Outcome};
use vigil_verify::enroll::{self, Store, Trust};

/// swtpm's local CA, whose issuer signs every EK certificate
/// `swtpm_setup --create-ek-cert` makes.
const LOCAL_CA_ISSUER: &str = "/var/lib/swtpm-localca/issuercert.pem";

/// One guest at a time: the tamper case needs the watchdog's checks to run,
/// and they use only spare host CPU (see tests/watchdog.rs).
static ONE_GUEST_AT_A_TIME: Mutex<()> = Mutex::new(());

/// `vigil-dom0 serve` on a port the OS picks, stopped when dropped.
struct AgentProcess {
    child: Child,
    url: String,
}

impl AgentProcess {
    fn start(setup: &Setup) -> Self {
        let mut child = setup
            .dom0_command(&["serve", "--listen", "127.0.0.1:0"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stderr.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .split_whitespace()
            .find(|word| word.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .trim_end_matches('/')
            .to_owned();
        Self { child, url }
    }

    fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let (status, response) = match ureq::get(&format!("{}{path}", self.url)).call() {
            Ok(response) => (response.status(), response),
            Err(ureq::Error::Status(code, response)) => (code, response),
            Err(err) => panic!("{path}: {err}"),
        };
        let text = response.into_string().unwrap();
        (status, serde_json::from_str(&text).unwrap())
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// A launched domain, its agent, and a verifier that enrolled it.
struct World {
    setup: Setup,
    agent: AgentProcess,
    store: Store,
    record: serde_json::Value,
    _alone: MutexGuard<'static, ()>,
}

impl World {
    fn new(name: &str) -> Self {
        Self::launched(name, &[])
    }

    /// A domain launched with `extra` launch arguments.
    fn launched(name: &str, extra: &[&str]) -> Self {
        let alone = ONE_GUEST_AT_A_TIME
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let setup = Setup::new();
        let output = setup.launch("bundle", "k.pub", name, extra);
        assert!(output.status.success(), "{}", stderr(&output));
        let record: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let agent = AgentProcess::start(&setup);
        let store = Store::new(setup.path("verifier"));
        first_check_done(record["url"].as_str().unwrap());
        Self {
            setup,
            agent,
            store,
            record,
            _alone: alone,
        }
    }

    fn http(&self) -> HttpAgent {
        HttpAgent::new(&self.agent.url)
    }

    fn enroll(&self, name: &str) {
        let pem = std::fs::read_to_string(LOCAL_CA_ISSUER).unwrap();
        let anchors = vigil_verify::ekcert::anchors_from_pem(&pem).unwrap();
        let enrollment = enroll::enroll(
            &self.http(),
            name,
            &Trust::Ca(anchors),
            SystemTime::now(),
            &mut OsRng,
        )
        .unwrap();
        self.store.save(&enrollment).unwrap();
    }

    fn policy(&self, key: &str, floor: u64) -> Policy {
        let text = std::fs::read_to_string(self.setup.path(key)).unwrap();
        Policy {
            manifest_keys: vec![vigil_core::v1::bundle::public_key_from_pem(&text).unwrap()],
            min_security_version: floor,
        }
    }

    fn check(&self, name: &str) -> Outcome {
        check::check(
            &self.http(),
            &self.store,
            name,
            &self.policy("k.pub", 0),
            SystemTime::now(),
            &mut OsRng,
        )
        .unwrap()
    }

    fn socket(&self) -> PathBuf {
        PathBuf::from(self.record["tpm_socket"].as_str().unwrap())
    }

    fn domain_dir(&self, name: &str) -> PathBuf {
        self.setup.path("state").join(name)
    }
}

/// The guest's `/v1/integrity` answer.
fn integrity(url: &str) -> serde_json::Value {
    let text = ureq::get(&format!("{url}v1/integrity"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Waits until the watchdog has finished its first check: until then its
/// runtime report says "pending", which a verifier rightly does not affirm.
fn first_check_done(url: &str) {
    let started = Instant::now();
    while integrity(url)["checks"].as_u64().unwrap_or(0) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no check finished"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The names of the claims that did not pass.
fn failed(appraisal: &Appraisal) -> Vec<&'static str> {
    appraisal
        .claims
        .iter()
        .filter(|c| !c.passed())
        .map(|c| c.name)
        .collect()
}

fn tpm2(socket: &Path, tool: &str, args: &[&str], dir: &Path) -> std::process::Output {
    let output = Command::new(tool)
        .args(["-T", &format!("swtpm:path={}", socket.display())])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|err| panic!("{tool} (tpm2-tools): {err}"));
    // No resource manager: free what the tool left loaded.
    let _ = Command::new("tpm2_flushcontext")
        .args(["-T", &format!("swtpm:path={}", socket.display()), "-t"])
        .output();
    output
}

fn nonce(byte: u8) -> Nonce {
    Nonce::new(&[byte; 16]).unwrap()
}

#[test]
#[ignore = "boots the built image under QEMU: run by scripts/test"]
fn a_launched_domain_is_enrolled_and_affirmed_and_tpm2_tools_agree() {
    let world = World::new("att");
    world.enroll("att");
    let outcome = world.check("att");
    assert_eq!(
        outcome.appraisal.status,
        Status::Affirming,
        "failed: {:?}",
        failed(&outcome.appraisal)
    );
    assert_eq!(outcome.appraisal.list_version, Some(2));
    let runtime = outcome
        .appraisal
        .runtime
        .expect("a verified runtime report");
    assert!(runtime.checks >= 1, "{runtime:?}");

    // tpm2_checkquote accepts the agent's quote, and with -e replays the
    // event log to the quoted PCR values; tpm2_eventlog reads the v2 log
    // without a warning.
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let n = nonce(7);
    let evidence = world.http().evidence("att", &n).unwrap();
    for (file, bytes) in [
        ("quote.msg", &evidence.quote.message.0),
        ("quote.sig", &evidence.quote.signature.0),
        ("quote.pcrs", &evidence.quote.pcrs.0),
        ("eventlog.bin", &evidence.event_log.0),
    ] {
        std::fs::write(dir.join(file), bytes).unwrap();
    }
    let socket = world.socket();
    let public = tpm2(
        &socket,
        "tpm2_readpublic",
        &["-c", "0x81010002", "-f", "pem", "-o", "ak.pem"],
        dir,
    );
    assert!(public.status.success(), "{}", stderr(&public));
    let hex: String = n.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
    let checked = Command::new("tpm2_checkquote")
        .args(["-u", "ak.pem", "-m", "quote.msg", "-s", "quote.sig"])
        .args([
            "-f",
            "quote.pcrs",
            "-g",
            "sha256",
            "-e",
            "eventlog.bin",
            "-q",
            &hex,
        ])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(checked.status.success(), "{}", stderr(&checked));
    let log = Command::new("tpm2_eventlog")
        .arg(dir.join("eventlog.bin"))
        .output()
        .unwrap();
    assert!(log.status.success(), "{}", stderr(&log));
    assert!(
        !String::from_utf8_lossy(&log.stderr).contains("WARN"),
        "{}",
        stderr(&log)
    );
    assert!(String::from_utf8_lossy(&log.stdout).contains("EV_EVENT_TAG"));

    // A replayed nonce: evidence for an old challenge is not an answer to
    // a new one.
    let old: Evidence = evidence;
    let ak = world
        .store
        .load(&world.http().id(), "att")
        .unwrap()
        .unwrap();
    let replayed = vigil_verify::appraise::appraise(
        &old,
        &vigil_verify::appraise::Request {
            domain: "att",
            nonce: &nonce(8),
            ak: &ak.ak().unwrap(),
            previous: None,
        },
        &world.policy("k.pub", 0),
    );
    assert_ne!(replayed.status, Status::Affirming);
    assert!(
        failed(&replayed).contains(&"nonce"),
        "{:?}",
        failed(&replayed)
    );

    // A manifest signed by a key the verifier does not trust, and a floor
    // above the sealed security version.
    for (key, floor, claim) in [
        ("other.pub", 0, "manifest-signature"),
        ("k.pub", 9, "security-version"),
    ] {
        let outcome = check::check(
            &world.http(),
            &world.store,
            "att",
            &world.policy(key, floor),
            SystemTime::now(),
            &mut OsRng,
        )
        .unwrap();
        assert_ne!(outcome.appraisal.status, Status::Affirming, "{claim}");
        assert!(
            failed(&outcome.appraisal).contains(&claim),
            "{claim}: {:?}",
            failed(&outcome.appraisal)
        );
    }
}

#[test]
#[ignore = "boots the built image under QEMU: run by scripts/test"]
fn the_agent_answers_bad_requests_and_queues_concurrent_challenges() {
    let world = World::new("busy");
    let agent = &world.agent;
    let (status, list) = agent.get("/v1/domains");
    assert_eq!(status, 200);
    assert_eq!(list[0]["name"], "busy");
    assert_eq!(list[0]["state"], "running");
    for (path, want) in [
        ("/v1/domains/busy/evidence?nonce=zz", 400),
        ("/v1/domains/busy/evidence?nonce=0011", 400),
        ("/v1/domains/busy/evidence", 400),
        (
            "/v1/domains/nobody/evidence?nonce=00112233445566778899aabbccddeeff",
            404,
        ),
        ("/v1/domains/Bad_Name/identity", 404),
        ("/v1/nothing", 404),
    ] {
        let (status, body) = agent.get(path);
        assert_eq!(status, want, "{path}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
    }

    // Eight challenges at once: each gets its own quote, in turn.
    let http = world.http();
    std::thread::scope(|scope| {
        let answers: Vec<_> = (0..8u8)
            .map(|i| {
                let http = &http;
                scope.spawn(move || (i, http.evidence("busy", &nonce(i + 1))))
            })
            .collect();
        for answer in answers {
            let (i, evidence) = answer.join().unwrap();
            let evidence = evidence.unwrap();
            assert_eq!(evidence.nonce.0, nonce(i + 1));
            assert!(evidence.runtime_report.is_some(), "{evidence:?}");
        }
    });

    // A guest that stopped (its QEMU killed behind vigil-dom0's back): the
    // agent says so at once, with its state, and does not hang.
    let pid = world.record["qemu_pid"].as_u64().unwrap();
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    let started = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() && started.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    let (status, body) =
        agent.get("/v1/domains/busy/evidence?nonce=00112233445566778899aabbccddeeff");
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("exited"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
#[ignore = "boots the built image under QEMU: run by scripts/test"]
fn tampering_on_the_host_or_in_the_guest_is_not_affirmed() {
    let world = World::new("prey");
    world.enroll("prey");
    assert_eq!(world.check("prey").appraisal.status, Status::Affirming);

    // Someone on the host extends PCR 9 after the launch.
    let work = tempfile::tempdir().unwrap();
    let extended = tpm2(
        &world.socket(),
        "tpm2_pcrextend",
        &["9:sha256=0000000000000000000000000000000000000000000000000000000000000001"],
        work.path(),
    );
    assert!(extended.status.success(), "{}", stderr(&extended));
    let outcome = world.check("prey");
    assert_ne!(outcome.appraisal.status, Status::Affirming);
    assert!(
        failed(&outcome.appraisal).contains(&"pcr-9-replay"),
        "{:?}",
        failed(&outcome.appraisal)
    );

    // Guest code changed in memory from outside (QEMU's gdbstub): the
    // watchdog finds it, and the signed runtime report makes the verdict
    // contraindicated.
    let address = tamper::cold_code(&world.setup.path("bundle")).unwrap();
    let url = world.record["url"].as_str().unwrap();
    let runtime = address + tamper::load_offset(&integrity(url)).unwrap();
    tamper::flip_byte(&world.domain_dir("prey").join("qmp.sock"), runtime).unwrap();
    let started = Instant::now();
    let outcome = loop {
        let outcome = world.check("prey");
        let violated = outcome
            .appraisal
            .claims
            .iter()
            .any(|c| c.name == "report-verdict" && !c.passed());
        if violated || started.elapsed() > Duration::from_secs(10) {
            break outcome;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        outcome.appraisal.status,
        Status::Contraindicated,
        "{:?}",
        failed(&outcome.appraisal)
    );
    assert!(failed(&outcome.appraisal).contains(&"report-verdict"));
}

/// An agent that answers every evidence request with another domain's
/// evidence (a compromised or confused host).
struct LyingAgent {
    inner: HttpAgent,
    instead: &'static str,
}

impl Agent for LyingAgent {
    fn id(&self) -> String {
        self.inner.id()
    }
    fn identity(&self, domain: &str) -> Result<Identity, AgentError> {
        self.inner.identity(domain)
    }
    fn activate(
        &self,
        domain: &str,
        credential: &vigil_verify::credential::Credential,
    ) -> Result<Vec<u8>, AgentError> {
        self.inner.activate(domain, credential)
    }
    fn evidence(&self, _: &str, nonce: &Nonce) -> Result<Evidence, AgentError> {
        self.inner.evidence(self.instead, nonce)
    }
}

#[test]
#[ignore = "boots the built image under QEMU: run by scripts/test"]
fn an_agent_that_answers_with_another_domains_evidence_is_caught() {
    let world = World::new("honest");
    let output = world.setup.launch("bundle", "k.pub", "other", &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let other: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    first_check_done(other["url"].as_str().unwrap());
    world.enroll("honest");
    let lying = LyingAgent {
        inner: world.http(),
        instead: "other",
    };
    let outcome = check::check(
        &lying,
        &world.store,
        "honest",
        &world.policy("k.pub", 0),
        SystemTime::now(),
        &mut OsRng,
    )
    .unwrap();
    assert_eq!(outcome.appraisal.status, Status::Contraindicated);
    let failed = failed(&outcome.appraisal);
    assert!(failed.contains(&"domain"), "{failed:?}");
    assert!(failed.contains(&"quote-signature"), "{failed:?}");
}

#[test]
#[ignore = "boots the built image under QEMU: run by scripts/test"]
fn an_ecc_attestation_key_is_enrolled_and_affirmed() {
    let world = World::launched("ecc", &["--attestation-key", "ecc"]);
    world.enroll("ecc");
    let outcome = world.check("ecc");
    assert_eq!(
        outcome.appraisal.status,
        Status::Affirming,
        "failed: {:?}",
        failed(&outcome.appraisal)
    );
    // The quote is signed with ECDSA: a TPMT_SIGNATURE whose algorithm is
    // TPM_ALG_ECDSA (0x0018).
    let evidence = world.http().evidence("ecc", &nonce(3)).unwrap();
    assert_eq!(&evidence.quote.signature.0[..2], &[0x00, 0x18]);
}
