//! Challenge → verdict: Vigil's remote attestation beside the same check
//! done with the tpm2-tools command-line flow, interleaved in one run.
//!
//! One measured domain (a real guest under QEMU, its swtpm) and the agent
//! (`vigil_dom0::agent`, the code `vigil-dom0 serve` runs) on loopback.
//! - **Vigil**: `vigil_verify::check::check` — a fresh nonce, the evidence
//!   over HTTP (PCR reads, `TPM2_Quote`, the EK certificate, the event log,
//!   the manifest, the guest's signed runtime report for the same nonce),
//!   the appraisal of every claim, the EAR. Every round must be affirming.
//! - **tpm2-tools**: `tpm2_quote` of the same PCRs with the same AK and a
//!   fresh nonce, `tpm2_checkquote -e` (signature, nonce, PCR digest, event
//!   log replay), and `tpm2_eventlog`: three processes, the way a script
//!   does it. It checks less (no manifest, no runtime report, no PCR
//!   selection comparison).
//!
//! Rounds alternate between the two, after warm-up rounds of each.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, ensure};
use rand_core::OsRng;
use serde::{Deserialize, Serialize};
use vigil_bench::error::BenchError;
use vigil_bench::interrupt;
use vigil_bench::stats::{load_average, max, median, min};
use vigil_build::seal::{SealOptions, seal};
use vigil_core::v1::config::ServiceConfig;
use vigil_core::v1::refblock::Reaction;
use vigil_dom0::accel::AccelChoice;
use vigil_dom0::domain::DomainRecord;
use vigil_dom0::launch::{self, LaunchOptions};
use vigil_dom0::sched::WatchdogVcpu;
use vigil_verify::agent::HttpAgent;
use vigil_verify::appraise::{Policy, Status};
use vigil_verify::enroll::{Store, Trust};

/// swtpm's local CA issuer, which signs the EK certificates.
const LOCAL_CA_ISSUER: &str = "/var/lib/swtpm-localca/issuercert.pem";
/// Rounds of each side before the measured ones.
const WARM_UP: usize = 3;
/// The targets the numbers are held against.
const TARGET_MEDIAN_MS: f64 = 50.0;
const TARGET_SPEEDUP: f64 = 3.0;

/// What to run.
#[derive(Clone, Debug)]
pub struct AttestBench {
    /// The directory `vigil-build build` wrote.
    pub image_dir: PathBuf,
    /// Measured rounds of each side.
    pub rounds: usize,
    /// Where the temporary directory is made.
    pub work_dir: PathBuf,
}

/// One side's times, in milliseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Times {
    /// Every measured round.
    pub ms: Vec<f64>,
}

impl Times {
    fn percentile(&self, p: f64) -> f64 {
        let mut sorted = self.ms.clone();
        sorted.sort_by(f64::total_cmp);
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted
            .get(rank.saturating_sub(1).min(sorted.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    }
}

/// The report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttestReport {
    /// Vigil's challenge → verdict.
    pub vigil: Times,
    /// The tpm2-tools flow, whole.
    pub cli: Times,
    /// Its parts: `tpm2_quote`, `tpm2_checkquote -e`, `tpm2_eventlog`.
    pub cli_parts: [Times; 3],
    /// The guest's runtime report alone (a GET of its own, same round):
    /// the part of Vigil's round the tpm2-tools flow has no equivalent of.
    pub guest_report: Times,
    /// The claims Vigil checked per round.
    pub claims: usize,
    /// The accelerator of the guest.
    pub accel: String,
    /// Load averages at the start and the end.
    pub load_average_start: String,
    /// At the end.
    pub load_average_end: String,
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// Runs a tpm2-tools command in `dir`, failing with its stderr.
fn tool(program: &'static str, args: &[String], dir: &Path) -> Result<()> {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|err| vigil_bench::error::spawn_error(program, "tpm2-tools", err))?;
    ensure!(
        output.status.success(),
        "{program} failed: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The domain the benchmark launched; stopped (and purged) when dropped.
struct Domain {
    state_root: PathBuf,
    record: DomainRecord,
}

impl Drop for Domain {
    fn drop(&mut self) {
        if let Err(err) = vigil_dom0::lifecycle::stop(&self.state_root, &self.record.name, true) {
            eprintln!("vigil-bench: stopping {}: {err}", self.record.name);
        }
    }
}

/// Runs the benchmark.
pub fn run(bench: &AttestBench) -> Result<AttestReport> {
    if bench.rounds == 0 {
        return Err(BenchError::BadOption {
            option: "--rounds",
            problem: "must be at least 1",
        }
        .into());
    }
    vigil_bench::require_image(&bench.image_dir)?;
    for program in [
        "tpm2_quote",
        "tpm2_checkquote",
        "tpm2_eventlog",
        "tpm2_readpublic",
    ] {
        which::which(program).map_err(|_| BenchError::MissingTool {
            program,
            package: "tpm2-tools",
        })?;
    }
    let load_average_start = load_average();
    fs::create_dir_all(&bench.work_dir)?;
    let dir = tempfile::Builder::new()
        .prefix("vigil-bench-attest-")
        .tempdir_in(&bench.work_dir)?;
    let work = dir.path().canonicalize()?;

    // A sealed bundle, launched measured.
    eprintln!("vigil-bench: sealing and launching a measured domain");
    vigil_build::keys::generate(&work.join("signing.pem"), &work.join("signing.pub.pem"))?;
    let bundle = work.join("bundle");
    seal(&SealOptions {
        image_dir: bench.image_dir.clone(),
        key: work.join("signing.pem"),
        out: bundle.clone(),
        service_name: "vigil-service".into(),
        service_version: env!("CARGO_PKG_VERSION").into(),
        security_version: 1,
        interval_ms: 1000,
        reaction: Reaction::Log,
        service: ServiceConfig::default(),
    })?;
    interrupt::check()?;
    let state_root = work.join("state");
    let record = launch::launch(
        &LaunchOptions {
            bundle,
            trust: work.join("signing.pub.pem"),
            min_version: 0,
            name: "bench".into(),
            state_root: state_root.clone(),
            host_port: 0,
            accel: AccelChoice::Tcg,
            memory_mib: 512,
            cpus: launch::DEFAULT_VCPUS,
            watchdog_vcpu: WatchdogVcpu::Idle,
            boot_timeout: Duration::from_secs(60),
            backend: launch::Backend::Qemu,
            ak_algorithm: vigil_tpm::AkAlgorithm::RsaSsaSha256,
        },
        interrupt::flag(),
    )
    .context("launching the domain")?;
    let domain = Domain { state_root, record };

    // The agent, on loopback, for as long as the benchmark runs.
    let listener =
        vigil_dom0::agent::Listener::bind("127.0.0.1:0".parse()?, domain.state_root.clone())?;
    let agent_url = format!(
        "http://{}",
        listener.local_addr().context("the agent's address")?
    );
    let stop_agent = AtomicBool::new(false);
    let report = std::thread::scope(|scope| {
        scope.spawn(|| listener.serve(&stop_agent));
        let report = measure(bench, &work, &domain, &agent_url);
        stop_agent.store(true, Ordering::Relaxed);
        report
    })?;
    drop(domain);
    Ok(AttestReport {
        load_average_start,
        load_average_end: load_average(),
        ..report
    })
}

fn measure(
    bench: &AttestBench,
    work: &Path,
    domain: &Domain,
    agent_url: &str,
) -> Result<AttestReport> {
    let agent = HttpAgent::new(agent_url);
    let store = Store::new(work.join("verifier"));
    let pem = fs::read_to_string(LOCAL_CA_ISSUER)
        .with_context(|| format!("reading swtpm's local CA {LOCAL_CA_ISSUER}"))?;
    let anchors = vigil_verify::ekcert::anchors_from_pem(&pem)?;
    wait_first_check(&domain.record.url)?;
    let enrollment = vigil_verify::enroll::enroll(
        &agent,
        "bench",
        &Trust::Ca(anchors),
        SystemTime::now(),
        &mut OsRng,
    )?;
    store.save(&enrollment)?;
    let key = fs::read_to_string(work.join("signing.pub.pem"))?;
    let policy = Policy {
        manifest_keys: vec![vigil_core::v1::bundle::public_key_from_pem(&key)?],
        min_security_version: 0,
    };

    // The tpm2-tools side's inputs: the AK as PEM, the event log.
    let tools = work.join("tools");
    fs::create_dir_all(&tools)?;
    let tcti = format!("swtpm:path={}", domain.record.tpm_socket.display());
    tool(
        "tpm2_readpublic",
        &[
            "-T".into(),
            tcti.clone(),
            "-c".into(),
            "0x81010002".into(),
            "-f".into(),
            "pem".into(),
            "-o".into(),
            "ak.pem".into(),
        ],
        &tools,
    )?;
    let domain_dir = domain.state_root.join(&domain.record.name);
    fs::copy(domain_dir.join("eventlog.bin"), tools.join("eventlog.bin"))?;

    let mut vigil = Times::default();
    let mut cli = Times::default();
    let mut cli_parts: [Times; 3] = Default::default();
    let mut guest_report = Times::default();
    let report_url = format!("{}v1/attestation/report?nonce=", domain.record.url);
    let mut claims = 0;
    eprintln!(
        "vigil-bench: {} rounds of each side (after {WARM_UP} warm-up rounds)",
        bench.rounds
    );
    for round in 0..WARM_UP + bench.rounds {
        interrupt::check()?;
        let measured = round >= WARM_UP;

        let started = Instant::now();
        let outcome = vigil_verify::check::check(
            &agent,
            &store,
            "bench",
            &policy,
            SystemTime::now(),
            &mut OsRng,
        )?;
        let took = ms(started);
        ensure!(
            outcome.appraisal.status == Status::Affirming,
            "round {round}: Vigil's verdict is {:?}, not affirming: {:?}",
            outcome.appraisal.status,
            outcome
                .appraisal
                .claims
                .iter()
                .filter(|c| !c.passed())
                .map(|c| c.name)
                .collect::<Vec<_>>()
        );
        claims = outcome.appraisal.claims.len();
        if measured {
            vigil.ms.push(took);
        }

        let nonce = hex(vigil_verify::check::fresh_nonce(&mut OsRng).as_bytes());
        let started = Instant::now();
        let fetched = ureq::get(&format!("{report_url}{nonce}"))
            .call()
            .map(|r| r.into_string().is_ok());
        ensure!(
            matches!(fetched, Ok(true)),
            "round {round}: the guest's report: {fetched:?}"
        );
        if measured {
            guest_report.ms.push(ms(started));
        }

        let started = Instant::now();
        let steps: [(&'static str, Vec<String>); 3] = [
            (
                "tpm2_quote",
                [
                    "-T",
                    &tcti,
                    "-c",
                    "0x81010002",
                    "-l",
                    "sha256:9,12,15",
                    "-q",
                    &nonce,
                    "-m",
                    "quote.msg",
                    "-s",
                    "quote.sig",
                    "-o",
                    "quote.pcrs",
                    "-g",
                    "sha256",
                ]
                .map(String::from)
                .to_vec(),
            ),
            (
                "tpm2_checkquote",
                [
                    "-u",
                    "ak.pem",
                    "-m",
                    "quote.msg",
                    "-s",
                    "quote.sig",
                    "-f",
                    "quote.pcrs",
                    "-g",
                    "sha256",
                    "-e",
                    "eventlog.bin",
                    "-q",
                    &nonce,
                ]
                .map(String::from)
                .to_vec(),
            ),
            ("tpm2_eventlog", vec!["eventlog.bin".into()]),
        ];
        let mut parts = [0.0; 3];
        for (i, (program, args)) in steps.iter().enumerate() {
            let step = Instant::now();
            tool(program, args, &tools)?;
            parts[i] = ms(step);
        }
        let took = ms(started);
        if measured {
            cli.ms.push(took);
            for (times, part) in cli_parts.iter_mut().zip(parts) {
                times.ms.push(part);
            }
        }
        if measured && (round - WARM_UP + 1).is_multiple_of(20) {
            eprintln!(
                "vigil-bench: {} of {} rounds",
                round - WARM_UP + 1,
                bench.rounds
            );
        }
    }
    Ok(AttestReport {
        vigil,
        cli,
        cli_parts,
        guest_report,
        claims,
        accel: domain.record.runtime.accel_name().into(),
        load_average_start: String::new(),
        load_average_end: String::new(),
    })
}

/// Waits until the guest's watchdog has finished its first check (before
/// that, its report is "pending" and the verdict not affirming).
fn wait_first_check(url: &str) -> Result<()> {
    let started = Instant::now();
    loop {
        interrupt::check()?;
        let body = ureq::get(&format!("{url}v1/integrity"))
            .call()
            .ok()
            .and_then(|r| r.into_string().ok())
            .unwrap_or_default();
        let checks = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["checks"].as_u64())
            .unwrap_or(0);
        if checks > 0 {
            return Ok(());
        }
        ensure!(
            started.elapsed() < Duration::from_secs(30),
            "the guest's watchdog finished no check within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The Markdown report.
pub fn markdown(report: &AttestReport, command_line: &str, machine: &str) -> String {
    let row = |name: &str, times: &Times| {
        format!(
            "| {name} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
            median(&times.ms),
            times.percentile(99.0),
            min(&times.ms),
            max(&times.ms)
        )
    };
    let (vigil, cli) = (median(&report.vigil.ms), median(&report.cli.ms));
    let speedup = cli / vigil;
    let verdict = |ok: bool| if ok { "met" } else { "**not met**" };
    let mut out = format!(
        "# Challenge → verdict: Vigil beside the tpm2-tools flow\n\n\
         `{command_line}`\n\n{machine} Guest under {}; load average {} at the start, {} at the end.\n\n\
         {} rounds of each side, interleaved, after {WARM_UP} warm-up rounds. Vigil's round is \
         `vigil_verify::check::check` against the agent (`vigil-dom0 serve`'s code) on \
         loopback: a fresh nonce, the evidence (quote, PCR values, EK certificate, event log, \
         manifest, the guest's signed runtime report), {} claims appraised, the EAR; every \
         round affirming. The tpm2-tools round is `tpm2_quote` + `tpm2_checkquote -e` + \
         `tpm2_eventlog` on the same vTPM and AK, which checks less (no manifest, no runtime \
         report, no PCR selection comparison). The agent fetches the guest's report while the \
         vTPM quotes; the report's own time is shown for scale (under TCG the guest signs \
         slowly).\n\n\
         | flow | median ms | p99 ms | min ms | max ms |\n|---|---:|---:|---:|---:|\n",
        report.accel,
        report.load_average_start,
        report.load_average_end,
        report.vigil.ms.len(),
        report.claims,
    );
    out.push_str(&row("Vigil: challenge → EAR", &report.vigil));
    out.push_str(&row(
        "  the guest's signed runtime report alone (its own GET)",
        &report.guest_report,
    ));
    out.push_str(&row(
        "tpm2-tools: quote + checkquote + eventlog",
        &report.cli,
    ));
    for (name, times) in ["tpm2_quote", "tpm2_checkquote -e", "tpm2_eventlog"]
        .iter()
        .zip(&report.cli_parts)
    {
        out.push_str(&row(&format!("  of which `{name}`"), times));
    }
    out.push_str(&format!(
        "\nVigil's median is {vigil:.1} ms (target < {TARGET_MEDIAN_MS} ms: {}), {speedup:.1}× \
         faster than the tpm2-tools flow (target ≥ {TARGET_SPEEDUP}×: {}).\n",
        verdict(vigil < TARGET_MEDIAN_MS),
        verdict(speedup >= TARGET_SPEEDUP)
    ));
    out
}
