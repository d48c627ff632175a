//! The in-image watchdog against a real attacker's tool: a guest launched by
//! `vigil-dom0 launch`, serving load, gets one byte of its code or read-only
//! data changed from outside through QEMU's gdbstub with gdb. The watchdog
//! must notice within two intervals and react as sealed; the signed runtime
//! report must show it, checked with the shared core and the launch's event
//! log.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use common::dom0::{Setup, stderr};
use vigil_bench::tamper;
use vigil_core::v1::refblock::Reaction;
use vigil_core::v1::report::{self, Verdict};

/// The sealed interval of every bundle here (the default).
const INTERVAL: Duration = Duration::from_millis(1000);

struct Domain {
    name: String,
    dir: PathBuf,
    addr: SocketAddr,
    /// Held while the guest lives ([`ONE_GUEST_AT_A_TIME`]).
    _alone: MutexGuard<'static, ()>,
}

/// One guest under load at a time. By default the host runs the watchdog's
/// vCPU in its idle class (`vigil_dom0::sched`): checks use only spare host
/// CPU. Several guests under load at once leave a two-core machine none, and
/// their checks then wait — by design, but not what these tests are about.
static ONE_GUEST_AT_A_TIME: Mutex<()> = Mutex::new(());

fn launch(setup: &Setup, bundle: &str, name: &str) -> Domain {
    let alone = ONE_GUEST_AT_A_TIME
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let output = setup.launch(bundle, "k.pub", name, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let record: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let url = record["url"].as_str().unwrap();
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    Domain {
        name: name.into(),
        dir: setup.path("state").join(name),
        addr,
        _alone: alone,
    }
}

impl Domain {
    fn get(&self, path: &str) -> common::Response {
        let mut client =
            common::Client::connect_with_console(self.addr, Some(self.dir.join("console.log")));
        client.request("GET", path, None)
    }

    fn integrity(&self) -> serde_json::Value {
        let response = self.get("/v1/integrity");
        assert_eq!(response.status, 200, "{}", response.text());
        response.json()
    }

    /// The runtime address of a link-time address.
    fn runtime(&self, vaddr: u64) -> u64 {
        vaddr + tamper::load_offset(&self.integrity()).unwrap()
    }

    /// Changes one byte of guest memory at `address` from outside
    /// (QEMU's gdbstub and gdb); returns when the write was done.
    fn poke(&self, address: u64) -> Instant {
        tamper::flip_byte(&self.dir.join("qmp.sock"), address)
            .unwrap()
            .1
    }

    /// Polls `/v1/integrity` until `state` says violated; the time it took.
    fn detection(&self, since: Instant) -> (Duration, serde_json::Value) {
        loop {
            let status = self.integrity();
            if status["state"] == "violated" {
                return (since.elapsed(), status);
            }
            assert!(
                since.elapsed() < 10 * INTERVAL,
                "no violation found: {status}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn console(&self) -> String {
        std::fs::read_to_string(self.dir.join("console.log")).unwrap_or_default()
    }
}

fn cold_code(setup: &Setup) -> u64 {
    tamper::cold_code(&setup.path("bundle")).unwrap()
}

fn cold_rodata(setup: &Setup) -> u64 {
    tamper::cold_rodata(&setup.path("bundle")).unwrap()
}

/// Requests `/v1/kv/load` in a loop on one connection until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<Vec<u16>>>,
}

impl Load {
    fn start(domain: &Domain) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let (addr, console) = (domain.addr, domain.dir.join("console.log"));
        let thread = {
            let (stop, ok) = (Arc::clone(&stop), Arc::clone(&ok));
            thread::spawn(move || {
                let mut client = common::Client::connect_with_console(addr, Some(console));
                let mut other = Vec::new();
                assert_eq!(client.request("PUT", "/v1/kv/load", Some(b"1")).status, 201);
                while !stop.load(Ordering::Relaxed) {
                    match client.request("GET", "/v1/kv/load", None).status {
                        200 => ok.fetch_add(1, Ordering::Relaxed),
                        status => {
                            other.push(status);
                            break;
                        }
                    };
                }
                other
            })
        };
        Self {
            stop,
            ok,
            thread: Some(thread),
        }
    }

    fn answered(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops; the statuses other than 200 seen (the load ends at the first).
    fn finish(mut self) -> Vec<u16> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// The report for a fresh nonce, verified with the key the launch extended
/// into PCR 15 (from the event log), not the one the guest names.
fn verified_report(setup: &Setup, domain: &Domain) -> report::Report {
    let nonce = "5a".repeat(24);
    let response = domain.get(&format!("/v1/attestation/report?nonce={nonce}"));
    assert_eq!(response.status, 200, "{}", response.text());
    let body = response.json();
    let events = setup.dom0(&["eventlog", &domain.name]);
    let events: serde_json::Value = serde_json::from_slice(&events.stdout).unwrap();
    let key_event = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["pcr"] == 15)
        .unwrap();
    let public: [u8; 32] = hex(key_event["report_key"].as_str().unwrap())
        .try_into()
        .unwrap();
    assert_eq!(body["public_key"], key_event["report_key"]);
    let signature: [u8; 64] = hex(body["signature"].as_str().unwrap()).try_into().unwrap();
    let bytes = hex(body["report"].as_str().unwrap());
    let report = report::verify(&public, &bytes, &signature).expect("a valid report");
    assert_eq!(report.nonce.as_bytes(), hex(&nonce));
    assert_eq!(
        report.boot_id.to_vec(),
        hex(key_event["sha256"].as_str().unwrap()),
        "boot id = the PCR 15 event's digest"
    );
    report
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn region<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap()
}

#[test]
#[ignore = "boots the built image under QEMU: run by scripts/test"]
fn changed_code_is_found_within_two_intervals_while_serving() {
    let setup = Setup::new();
    let domain = launch(&setup, "bundle", "code");
    let load = Load::start(&domain);

    // No false positive under load: several checks, all intact.
    thread::sleep(3 * INTERVAL);
    let before = domain.integrity();
    assert_eq!(before["state"], "intact", "{before}");
    assert_eq!(before["policy"], "log");
    // vigil-dom0's default two vCPUs: the watchdog checks on the second.
    assert_eq!(before["vcpu"], 1, "{before}");
    assert!(before["checks"].as_u64().unwrap() >= 2, "{before}");
    assert_eq!(before["violations"], 0);
    let intact = verified_report(&setup, &domain);
    assert_eq!(intact.verdict, Verdict::Intact);

    let address = domain.runtime(cold_code(&setup));
    let served = load.answered();
    let written = domain.poke(address);
    let (latency, status) = domain.detection(written);
    assert!(latency <= 2 * INTERVAL, "found after {latency:?}");

    let code = region(&status, "code");
    assert_eq!(code["matches"], false, "{status}");
    assert_ne!(code["actual"], code["expected"]);
    assert_eq!(region(&status, "rodata")["matches"], true);
    assert_eq!(status["first_violation"]["region"], "code");
    assert_eq!(status["degraded"], false);

    // `log` keeps serving: the load went on through the write and after it.
    thread::sleep(INTERVAL / 2);
    assert!(load.answered() > served, "the load stalled");
    assert_eq!(domain.get("/healthz").status, 200);
    assert_eq!(load.finish(), Vec::<u16>::new());

    // The signed report shows the mismatch, against the manifest's digests.
    let report = verified_report(&setup, &domain);
    assert_eq!(report.verdict, Verdict::Violated);
    assert!(report.first_violation_ms.is_some());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(setup.path("bundle/manifest.json")).unwrap())
            .unwrap();
    for reported in report.regions() {
        let sealed = manifest["regions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == reported.name.as_str())
            .unwrap();
        let equal = hex(sealed["sha256"].as_str().unwrap()) == reported.sha256;
        assert_eq!(equal, reported.name.as_str() != "code", "{reported:?}");
    }
    let metrics = domain.get("/metrics").text();
    assert!(
        metrics.contains("\nvigil_integrity_intact 0\n"),
        "{metrics}"
    );
    assert!(domain.console().contains("vigil-watchdog: region `code`"));
}

#[test]
#[ignore = "boots the built image under QEMU: run by scripts/test"]
fn a_redirected_pointer_in_relro_is_found_within_two_intervals() {
    let setup = Setup::new();
    setup.seal("relro", 1000, Reaction::Degrade);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(setup.path("relro").join("manifest.json")).unwrap())
            .unwrap();
    let sealed = manifest["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "relro")
        .expect("the manifest measures relro")
        .clone();
    let domain = launch(&setup, "relro", "relro");
    let load = Load::start(&domain);
    thread::sleep(INTERVAL);
    let status = domain.integrity();
    assert_eq!(status["state"], "intact", "{status}");
    assert_eq!(region(&status, "relro")["matches"], true, "{status}");
    assert_eq!(tamper::load_offset(&status).unwrap(), 0x20_0000);

    let pointer = tamper::cold_pointer(&setup.path("relro")).unwrap();
    let start = sealed["vaddr"].as_u64().unwrap();
    assert!((start..start + sealed["bytes"].as_u64().unwrap()).contains(&pointer));
    let (before, written) =
        tamper::redirect_pointer(&domain.dir.join("qmp.sock"), domain.runtime(pointer)).unwrap();
    // The loader relocated it: it points into the loaded image.
    assert!(before >= 0x20_0000, "{before:#x}");
    let (latency, status) = domain.detection(written);
    assert!(latency <= 2 * INTERVAL, "found after {latency:?}");
    assert_eq!(region(&status, "relro")["matches"], false, "{status}");
    assert_eq!(region(&status, "code")["matches"], true);
    assert_eq!(region(&status, "rodata")["matches"], true);
    assert_eq!(status["first_violation"]["region"], "relro");
    assert_eq!(status["degraded"], true);
    assert_eq!(load.finish(), vec![503]);
    assert!(domain.console().contains("vigil-watchdog: region `relro`"));
    assert_eq!(verified_report(&setup, &domain).verdict, Verdict::Violated);
}

#[test]
#[ignore = "boots the built image under QEMU: run by scripts/test"]
fn changed_read_only_data_degrades_the_service() {
    let setup = Setup::new();
    setup.seal("degrade", 1000, Reaction::Degrade);
    let domain = launch(&setup, "degrade", "rodata");
    let load = Load::start(&domain);
    thread::sleep(INTERVAL);
    let address = domain.runtime(cold_rodata(&setup));
    let written = domain.poke(address);
    let (latency, status) = domain.detection(written);
    assert!(latency <= 2 * INTERVAL, "found after {latency:?}");
    assert_eq!(region(&status, "rodata")["matches"], false, "{status}");
    assert_eq!(region(&status, "code")["matches"], true);
    assert_eq!(status["degraded"], true);

    // The load's next request got the 503; so does everyone else's.
    assert_eq!(load.finish(), vec![503]);
    let health = domain.get("/healthz");
    assert_eq!(health.status, 503);
    assert!(
        health.text().contains("region `rodata`"),
        "{}",
        health.text()
    );
    assert_eq!(domain.get("/metrics").status, 200);
    assert_eq!(verified_report(&setup, &domain).verdict, Verdict::Violated);
}

#[test]
#[ignore = "boots the built image under QEMU: run by scripts/test"]
fn halt_ends_the_guest_and_leaves_the_reason() {
    let setup = Setup::new();
    setup.seal("halt", 1000, Reaction::Halt);
    let domain = launch(&setup, "halt", "halt");
    thread::sleep(INTERVAL);
    let address = domain.runtime(cold_code(&setup));
    let written = domain.poke(address);
    let status = loop {
        let output = setup.dom0(&["status", "halt"]);
        let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        if status["state"] == "exited" {
            break status;
        }
        assert!(
            written.elapsed() < 10 * INTERVAL,
            "still running: {}",
            domain.console()
        );
        thread::sleep(Duration::from_millis(50));
    };
    assert!(
        written.elapsed() <= 2 * INTERVAL + Duration::from_secs(1),
        "halted after {:?}",
        written.elapsed()
    );
    let reason = status["exit_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("watchdog") && reason.contains("region `code`"),
        "{status}"
    );
    let tail = status["console_tail"].to_string();
    assert!(tail.contains("vigil-watchdog: HALT"), "{tail}");

    // The halted guest's swtpm still runs; a relaunch stops it and starts a
    // fresh one (it used to fail on swtpm's state lock and orphan the old
    // one), and a stop then leaves nothing running.
    assert_eq!(status["vtpm_running"], true, "{status}");
    let old_swtpm = status["swtpm_pid"].as_u64().unwrap();
    let again = setup.launch("halt", "k.pub", "halt", &[]);
    assert!(again.status.success(), "{}", stderr(&again));
    let record: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_ne!(record["swtpm_pid"].as_u64().unwrap(), old_swtpm);
    let stop = setup.dom0(&["stop", "halt"]);
    assert!(stop.status.success(), "{}", stderr(&stop));
    assert_eq!(setup.processes(), 0, "nothing of the domain left running");
}
