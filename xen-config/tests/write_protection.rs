//! W^X inside the guest (issue 17): a sealed image's code and read-only data
//! are write-protected, so a write to them from inside the guest faults; the
//! kernel stops it and ends the thread that made it, and the watchdog reacts
//! as sealed within one interval. The writer is the test image's service
//! (`vigil-build build --test-hooks`, never a production image), which
//! writes to its own code three seconds after it starts.

mod common;

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use common::dom0::{Setup, stderr};
use vigil_build::seal::{SealOptions, seal};
use vigil_core::v1::config::ServiceConfig;
use vigil_core::v1::refblock::Reaction;

/// The sealed interval.
const INTERVAL: Duration = Duration::from_millis(1000);
/// What the kernel prints when it stops a write (kernel patch 0028a).
const KERNEL_LINE: &str = "vigil-kernel: write to protected memory at";

/// The test image: `$VIGIL_TEST_HOOKS_IMAGE_DIR`, or
/// `target/vigil/hvm-test-hooks` of this checkout.
fn test_image_dir() -> PathBuf {
    std::env::var_os("VIGIL_TEST_HOOKS_IMAGE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/vigil/hvm-test-hooks")
        })
}

/// Seals the test image into bundle `out` of `setup`'s directory.
fn seal_test_image(setup: &Setup, out: &str, reaction: Reaction) {
    let dir = test_image_dir();
    assert!(
        dir.join("vigil-image").is_file(),
        "no test image in {}: run `vigil-build build --test-hooks` first",
        dir.display()
    );
    let sealing = seal(&SealOptions {
        image_dir: dir,
        key: setup.path("k.pem"),
        out: setup.path(out),
        service_name: "vigil-service".into(),
        service_version: "test".into(),
        security_version: 3,
        interval_ms: u32::try_from(INTERVAL.as_millis()).unwrap(),
        reaction,
        service: ServiceConfig::default(),
    })
    .unwrap();
    assert_eq!(
        sealing.manifest.provenance.flavor, "hvm+test-hooks",
        "the manifest says it is a test image"
    );
}

/// Launches bundle `bundle` as domain `name`; its URL and directory.
fn launch(setup: &Setup, bundle: &str, name: &str) -> (String, PathBuf) {
    let output = setup.launch(bundle, "k.pub", name, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let record: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let url = record["url"]
        .as_str()
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    (url, setup.path("state").join(name))
}

fn console(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("console.log")).unwrap_or_default()
}

/// Polls the console until it holds `needle`; when it first did.
fn wait_for_line(dir: &std::path::Path, needle: &str, within: Duration) -> Instant {
    let started = Instant::now();
    loop {
        if console(dir).contains(needle) {
            return Instant::now();
        }
        assert!(
            started.elapsed() < within,
            "no `{needle}` on the console after {within:?}:\n{}",
            console(dir)
        );
        thread::sleep(Duration::from_millis(10));
    }
}

fn get(url: &str, path: &str) -> common::Response {
    let addr = url.trim_start_matches("http://").parse().unwrap();
    common::Client::connect(addr).request("GET", path, None)
}

#[test]
#[ignore = "boots the built test image under QEMU: run by scripts/test"]
fn a_write_to_protected_code_is_stopped_and_degrades_within_one_interval() {
    let setup = Setup::new();
    seal_test_image(&setup, "degrade", Reaction::Degrade);
    let (url, dir) = launch(&setup, "degrade", "wx-degrade");

    let before = get(&url, "/v1/integrity").json();
    assert_eq!(before["protection"]["state"], "applied", "{before}");
    assert!(before["protection"]["code_pages"].as_u64().unwrap() > 0);
    assert_eq!(get(&url, "/healthz").status, 200);

    let stopped = wait_for_line(&dir, KERNEL_LINE, Duration::from_secs(30));
    let reacted = wait_for_line(
        &dir,
        "reaction: degrade (503 until reboot)",
        INTERVAL + Duration::from_secs(5),
    );
    let took = reacted - stopped;
    assert!(
        took <= INTERVAL + Duration::from_millis(200),
        "the watchdog reacted {took:?} after the kernel stopped the write:\n{}",
        console(&dir)
    );
    let text = console(&dir);
    assert!(
        !text.contains("was NOT stopped"),
        "the write went through:\n{text}"
    );

    // The kernel ended the writing thread only: the service answers, degraded.
    let health = get(&url, "/healthz");
    assert_eq!(health.status, 503, "{}", health.text());
    assert!(
        health.text().contains("a write to region `code`"),
        "{}",
        health.text()
    );
    let status = get(&url, "/v1/integrity").json();
    assert_eq!(status["state"], "violated", "{status}");
    assert_eq!(status["write_faults"], 1, "{status}");
    let first = &status["first_violation"];
    assert_eq!(first["cause"], "written", "{status}");
    assert_eq!(first["region"], "code", "{status}");
    assert!(first["address"].as_str().unwrap().starts_with("0x"));
    // The bytes themselves never changed.
    for region in status["regions"].as_array().unwrap() {
        assert_eq!(region["matches"], true, "{status}");
    }
    let metrics = get(&url, "/metrics").text();
    assert!(
        metrics.contains("vigil_integrity_write_faults_total 1\n"),
        "{metrics}"
    );
    let nonce = "a5".repeat(16);
    let report = get(&url, &format!("/v1/attestation/report?nonce={nonce}")).json();
    assert_eq!(report["verdict"], "violated", "{report}");

    let stop = setup.dom0(&["stop", "wx-degrade"]);
    assert!(stop.status.success(), "{}", stderr(&stop));
}

#[test]
#[ignore = "boots the built test image under QEMU: run by scripts/test"]
fn a_write_to_protected_code_halts_when_sealed_so() {
    let setup = Setup::new();
    seal_test_image(&setup, "halt", Reaction::Halt);
    let (_url, dir) = launch(&setup, "halt", "wx-halt");
    let stopped = wait_for_line(&dir, KERNEL_LINE, Duration::from_secs(30));
    let status = loop {
        let output = setup.dom0(&["status", "wx-halt"]);
        let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        if status["state"] == "exited" {
            break status;
        }
        assert!(
            stopped.elapsed() < 10 * INTERVAL,
            "still running:\n{}",
            console(&dir)
        );
        thread::sleep(Duration::from_millis(20));
    };
    // One interval, plus QEMU's exit and the status poll.
    assert!(
        stopped.elapsed() <= INTERVAL + Duration::from_secs(1),
        "halted {:?} after the write",
        stopped.elapsed()
    );
    let reason = status["exit_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("watchdog") && reason.contains("a write to region `code`"),
        "{status}"
    );
    let stop = setup.dom0(&["stop", "wx-halt"]);
    assert!(stop.status.success(), "{}", stderr(&stop));
    assert_eq!(setup.processes(), 0, "nothing of the domain left running");
}
