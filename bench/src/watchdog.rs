//! The watchdog's cost and speed, in one run on one built image:
//!
//! - throughput: `wrk` against the image sealed with the default interval
//!   (1 s) beside the same image sealed with a one-hour interval (one check
//!   half a second after start, then none: the watchdog disabled in effect),
//!   both measured launches, both running; the one not measured is paused
//!   through QMP so that it costs nothing; rounds alternate ABBA. Once per
//!   vCPU count asked for (default: two, where the watchdog has a vCPU of its
//!   own, then one, where it shares the service's);
//! - time per full scan, from the guest's own `/v1/integrity`, idle and
//!   under load, and the idle guest's host CPU use;
//! - no false positive: optionally, minutes of load with no tampering, then
//!   zero violations;
//! - detection latency: trials that each flip one byte of code or read-only
//!   data from outside ([`vigil_bench::tamper`]) at a different phase of the
//!   interval, and time until `/v1/integrity` counts the violation; the byte
//!   is restored before the next trial.

use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde::{Deserialize, Serialize};
use vigil_bench::error::{BenchError, spawn_error};
use vigil_bench::interrupt;
use vigil_bench::stats::{self, load_average, median};
use vigil_bench::tamper;
use vigil_bench::wrk::{self, Load, LoadResult};
use vigil_build::seal::{SealOptions, seal};
use vigil_core::v1::config::ServiceConfig;
use vigil_core::v1::refblock::Reaction;
use vigil_dom0::accel::AccelChoice;
use vigil_dom0::domain::{DomainRecord, Runtime};
use vigil_dom0::launch::{self, LaunchOptions};
use vigil_dom0::qmp::Qmp;
use vigil_dom0::sched::WatchdogVcpu;

/// The default interval (what `vigil-build seal` writes without options).
pub const INTERVAL_MS: u32 = 1000;
/// The "disabled" side's interval: one hour.
const OFF_INTERVAL_MS: u32 = 3_600_000;

/// What to run.
#[derive(Debug)]
pub struct WatchdogBench {
    /// The directory `vigil-build build` wrote.
    pub image_dir: PathBuf,
    /// Throughput rounds (each measures both sides once).
    pub rounds: usize,
    /// Seconds per wrk run.
    pub seconds: u32,
    /// wrk connections.
    pub connections: u32,
    /// Tampering trials.
    pub trials: usize,
    /// Seconds of load for the no-false-positive run (0: skip).
    pub soak_seconds: u32,
    /// Where the temporary directory is made.
    pub work_dir: PathBuf,
    /// The vCPU counts to measure throughput with; the no-false-positive
    /// run and the detection trials use the first.
    pub vcpus: Vec<u32>,
    /// How the host schedules the watchdog's vCPU (both sides alike).
    pub watchdog_vcpu: WatchdogVcpu,
    /// The interval the measured side is sealed with, ms.
    pub interval_ms: u32,
    /// Idle checks to time per vCPU count.
    pub idle_scans: usize,
    /// The accelerator of both sides.
    pub accel: AccelChoice,
}

/// The numbers.
#[derive(Debug, Serialize, Deserialize)]
pub struct WatchdogReport {
    /// The sealed interval of the measured side.
    pub interval_ms: u32,
    /// Bytes the watchdog hashes per check.
    pub region_bytes: u64,
    /// Throughput and scan time, one entry per vCPU count.
    pub throughput: Vec<Throughput>,
    /// The no-false-positive run, if made.
    pub soak: Option<Soak>,
    /// How the host scheduled the watchdog's vCPU thread (`vigil-dom0
    /// launch --watchdog-vcpu`); reports made before the option existed
    /// ran it at the normal policy.
    #[serde(default = "WatchdogVcpu::unrecorded")]
    pub watchdog_vcpu_policy: WatchdogVcpu,
    /// The vCPU count of the soak and the detection trials.
    pub detection_vcpus: u32,
    /// Whether the detection trials ran while `wrk` loaded the guest.
    #[serde(default)]
    pub detection_under_load: bool,
    /// Detection latencies (ms from the write to the violation being
    /// visible in `/v1/integrity`), one per trial.
    pub detection_ms: Vec<f64>,
    /// Which region each trial changed.
    pub detection_regions: Vec<String>,
    /// Load average before and after.
    pub load_average: (String, String),
}

/// On beside off, for one vCPU count.
#[derive(Debug, Serialize, Deserialize)]
pub struct Throughput {
    /// The guests' vCPUs.
    pub vcpus: u32,
    /// The vCPU the watchdog ran on (from `/v1/integrity`).
    pub watchdog_vcpu: Option<u64>,
    /// Throughput with the watchdog at the default interval.
    pub on: Vec<LoadResult>,
    /// Throughput with the watchdog disabled (one-hour interval).
    pub off: Vec<LoadResult>,
    /// Median requests/s on ÷ off.
    pub ratio: f64,
    /// Time per full check (ms), idle, one per check.
    pub scan_idle_ms: Vec<f64>,
    /// Time per full check (ms) at the end of each loaded round.
    pub scan_loaded_ms: Vec<f64>,
    /// Host CPU the idle "on" guest's QEMU used meanwhile (% of one core).
    pub idle_host_cpu_percent: f64,
    /// The "on" guest's counters over each of its loaded runs (deltas).
    #[serde(default)]
    pub on_windows: Vec<ServiceCounters>,
}

/// The guest's own counters at one moment (`/metrics`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct ServiceCounters {
    /// Uptime (s).
    pub uptime_s: f64,
    /// HTTP responses sent, all routes.
    pub responses: f64,
    /// Of those, sent while a check was hashing.
    pub responses_during_checks: f64,
    /// Time the watchdog spent hashing (s).
    pub busy_s: f64,
}

impl ServiceCounters {
    /// Reads the counters from a Prometheus text exposition.
    pub fn parse(text: &str) -> Result<Self> {
        let mut counters = Self::default();
        let mut seen = [false; 4];
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let value: f64 = value
                .parse()
                .with_context(|| format!("/metrics: bad sample {line:?}"))?;
            let family = name.split('{').next().unwrap_or(name);
            let (slot, index) = match family {
                "vigil_uptime_seconds" => (&mut counters.uptime_s, 0),
                "vigil_http_requests_total" => (&mut counters.responses, 1),
                "vigil_integrity_responses_during_checks_total" => {
                    (&mut counters.responses_during_checks, 2)
                }
                "vigil_integrity_busy_seconds_total" => (&mut counters.busy_s, 3),
                _ => continue,
            };
            *slot += value;
            seen[index] = true;
        }
        ensure!(
            seen.iter().all(|&s| s),
            "/metrics lacks one of vigil_uptime_seconds, vigil_http_requests_total, \
             vigil_integrity_responses_during_checks_total, vigil_integrity_busy_seconds_total"
        );
        Ok(counters)
    }

    /// What happened between `self` (earlier) and `later`.
    fn until(&self, later: &Self) -> Self {
        self.each_with(later, |earlier, later| later - earlier)
    }

    /// Two windows' counters added up.
    fn plus(&self, other: &Self) -> Self {
        self.each_with(other, |a, b| a + b)
    }

    /// `op` applied to each counter of `self` and `other`.
    fn each_with(&self, other: &Self, op: impl Fn(f64, f64) -> f64) -> Self {
        Self {
            uptime_s: op(self.uptime_s, other.uptime_s),
            responses: op(self.responses, other.responses),
            responses_during_checks: op(
                self.responses_during_checks,
                other.responses_during_checks,
            ),
            busy_s: op(self.busy_s, other.busy_s),
        }
    }
}

/// In-guest cost of the checks over loaded windows (deltas of
/// [`ServiceCounters`], one per loaded "on" run): the response rate while a
/// check hashed beside the rate outside checks, in the same guest and run.
#[derive(Debug, Clone, Copy)]
pub struct DuringChecks {
    /// Share of the time a check was hashing.
    pub busy_share: f64,
    /// Responses/s while a check hashed ÷ responses/s outside checks.
    pub rate_ratio: f64,
    /// The throughput loss this implies: `busy_share × (1 − rate_ratio)`,
    /// as a fraction (the service loses nothing outside checks, by this
    /// measure's assumption; the on/off comparison covers the rest).
    pub implied_loss: f64,
}

impl DuringChecks {
    /// From one window's deltas; `None` if no check ran in it.
    pub fn of(window: &ServiceCounters) -> Option<Self> {
        let outside_s = window.uptime_s - window.busy_s;
        if window.busy_s <= 0.0 || outside_s <= 0.0 {
            return None;
        }
        let during = window.responses_during_checks / window.busy_s;
        let outside = (window.responses - window.responses_during_checks) / outside_s;
        let busy_share = window.busy_s / window.uptime_s;
        let rate_ratio = during / outside;
        Some(Self {
            busy_share,
            rate_ratio,
            implied_loss: busy_share * (1.0 - rate_ratio),
        })
    }
}

/// A long run of load without tampering.
#[derive(Debug, Serialize, Deserialize)]
pub struct Soak {
    /// Seconds of load.
    pub seconds: u32,
    /// What wrk saw.
    pub load: LoadResult,
    /// Checks the watchdog finished meanwhile.
    pub checks: u64,
    /// Checks that found a change (must be 0).
    pub violations: u64,
}

/// A launched domain of the benchmark; stopped and purged when dropped.
struct Domain {
    state_root: PathBuf,
    record: DomainRecord,
}

impl Domain {
    /// QEMU's pid (0 for a domain not under QEMU).
    fn qemu_pid(&self) -> u32 {
        match self.record.runtime {
            Runtime::Qemu { qemu_pid, .. } => qemu_pid,
            Runtime::Xen { .. } => 0,
        }
    }

    fn qmp(&self) -> Result<Qmp> {
        Ok(Qmp::connect(&self.qmp_socket(), Duration::from_secs(5))?)
    }

    fn pause(&self) -> Result<()> {
        self.qmp()?.execute("stop")?;
        Ok(())
    }

    fn resume(&self) -> Result<()> {
        self.qmp()?.execute("cont")?;
        Ok(())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.record.url.trim_end_matches('/'), path)
    }

    /// The body of `GET path`, through curl (installed by scripts/install-deps).
    fn get(&self, path: &str) -> Result<Vec<u8>> {
        let output = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "5", &self.url(path)])
            .output()
            .map_err(|err| spawn_error("curl", "curl", err))?;
        if !output.status.success() {
            return Err(BenchError::GuestFailed {
                what: format!(
                    "the guest does not answer `curl {}`: {}",
                    self.url(path),
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            }
            .into());
        }
        Ok(output.stdout)
    }

    /// `/v1/integrity`.
    fn integrity(&self) -> Result<serde_json::Value> {
        Ok(serde_json::from_slice(&self.get("/v1/integrity")?)?)
    }

    /// The counters behind the in-guest cost measure, from `/metrics`.
    fn service_counters(&self) -> Result<ServiceCounters> {
        ServiceCounters::parse(&String::from_utf8_lossy(&self.get("/metrics")?))
    }

    fn counter(&self, key: &str) -> Result<u64> {
        self.integrity()?[key]
            .as_u64()
            .with_context(|| format!("/v1/integrity has no {key}"))
    }

    fn last_check(&self) -> Result<(u64, f64, bool)> {
        let status = self.integrity()?;
        let last = &status["last_check"];
        Ok((
            last["number"].as_u64().unwrap_or(0),
            last["duration_us"].as_f64().unwrap_or(f64::NAN) / 1000.0,
            last["intact"].as_bool().unwrap_or(false),
        ))
    }

    fn qmp_socket(&self) -> PathBuf {
        self.state_root.join(&self.record.name).join("qmp.sock")
    }
}

impl Drop for Domain {
    fn drop(&mut self) {
        if let Err(err) = vigil_dom0::lifecycle::stop(&self.state_root, &self.record.name, true) {
            eprintln!("vigil-bench: stopping {}: {err}", self.record.name);
        }
    }
}

fn sealed(work: &Path, image_dir: &Path, name: &str, interval_ms: u32) -> Result<PathBuf> {
    let out = work.join(name);
    seal(&SealOptions {
        image_dir: image_dir.to_owned(),
        key: work.join("signing.pem"),
        out: out.clone(),
        service_name: "vigil-service".into(),
        service_version: env!("CARGO_PKG_VERSION").into(),
        security_version: 1,
        interval_ms,
        reaction: Reaction::Log,
        service: ServiceConfig::default(),
    })?;
    Ok(out)
}

fn launched(
    work: &Path,
    bundle: &Path,
    name: &str,
    vcpus: u32,
    watchdog_vcpu: WatchdogVcpu,
    accel: AccelChoice,
) -> Result<Domain> {
    interrupt::check()?;
    let state_root = work.join("state");
    let record = launch::launch(
        &LaunchOptions {
            bundle: bundle.to_owned(),
            trust: work.join("signing.pub.pem"),
            min_version: 0,
            name: name.into(),
            state_root: state_root.clone(),
            host_port: 0,
            accel,
            memory_mib: 512,
            cpus: vcpus,
            watchdog_vcpu,
            boot_timeout: Duration::from_secs(60),
            backend: launch::Backend::Qemu,
            ak_algorithm: vigil_tpm::AkAlgorithm::RsaSsaSha256,
        },
        interrupt::flag(),
    )
    .with_context(|| format!("launching {name}"))?;
    Ok(Domain { state_root, record })
}

/// Runs the whole benchmark.
pub fn run(bench: &WatchdogBench) -> Result<WatchdogReport> {
    if bench.rounds == 0 {
        return Err(BenchError::BadOption {
            option: "--rounds",
            problem: "must be at least 1",
        }
        .into());
    }
    let Some(&detection_vcpus) = bench.vcpus.first() else {
        return Err(BenchError::BadOption {
            option: "--vcpus",
            problem: "needs at least one count",
        }
        .into());
    };
    vigil_bench::require_image(&bench.image_dir)?;
    let load_average_start = load_average();
    fs::create_dir_all(&bench.work_dir)?;
    let dir = tempfile::Builder::new()
        .prefix("vigil-bench-watchdog-")
        .tempdir_in(&bench.work_dir)?;
    let work = dir.path().canonicalize()?;
    vigil_build::keys::generate(&work.join("signing.pem"), &work.join("signing.pub.pem"))?;
    let on_bundle = sealed(&work, &bench.image_dir, "on", bench.interval_ms)?;
    let off_bundle = sealed(&work, &bench.image_dir, "off", OFF_INTERVAL_MS)?;

    let mut throughput = Vec::new();
    let mut kept = None;
    let mut region_bytes = 0;
    for (i, &vcpus) in bench.vcpus.iter().enumerate() {
        let (name, policy) = (format!("watchdog-on-{vcpus}"), bench.watchdog_vcpu);
        let on = launched(&work, &on_bundle, &name, vcpus, policy, bench.accel)?;
        let name = format!("watchdog-off-{vcpus}");
        let off = launched(&work, &off_bundle, &name, vcpus, policy, bench.accel)?;
        let status = on.integrity()?;
        region_bytes = status["regions"]
            .as_array()
            .context("no regions")?
            .iter()
            .filter_map(|r| r["length"].as_u64())
            .sum();
        let mut result = measure_throughput(bench, vcpus, &on, &off)?;
        result.watchdog_vcpu = status["vcpu"].as_u64();
        throughput.push(result);
        drop(off);
        if i == 0 {
            kept = Some(on);
        }
    }
    let on = kept.context("no domain kept for the detection trials")?;
    on.resume()?;

    // No false positive: load, no tampering, zero violations.
    let soak = if bench.soak_seconds > 0 {
        let before = on.counter("checks")?;
        eprintln!(
            "vigil-bench: {} s of load, no tampering",
            bench.soak_seconds
        );
        let result = wrk::run(
            &on.url("/healthz"),
            &Load {
                threads: 2.min(bench.connections),
                connections: bench.connections,
                seconds: bench.soak_seconds,
            },
        )?;
        let status = on.integrity()?;
        interrupt::check()?;
        let soak = Soak {
            seconds: bench.soak_seconds,
            load: result,
            checks: status["checks"].as_u64().unwrap_or(0) - before,
            violations: status["violations"].as_u64().unwrap_or(u64::MAX),
        };
        if soak.violations != 0 {
            return Err(BenchError::FalsePositive {
                status: status.to_string(),
            }
            .into());
        }
        Some(soak)
    } else {
        None
    };

    // Detection latency.
    let bundle = &on_bundle;
    let offset = tamper::load_offset(&on.integrity()?)?;
    let targets = [
        ("code", tamper::cold_code(bundle)? + offset),
        ("rodata", tamper::cold_rodata(bundle)? + offset),
    ];
    let (mut detection_ms, mut detection_regions) = (Vec::new(), Vec::new());
    // The trials run under load, as the watchdog works in service: a check
    // competes with requests (and, with the idle host policy, runs only on
    // host CPU they leave). wrk ends by itself after a bound on the trials'
    // time, or when dropped here.
    let load = (bench.trials > 0)
        .then(|| {
            wrk::background(
                &on.url("/healthz"),
                &Load {
                    threads: 2.min(bench.connections),
                    connections: bench.connections,
                    seconds: u32::try_from(bench.trials)
                        .unwrap_or(u32::MAX)
                        .saturating_mul(5)
                        + 30,
                },
            )
        })
        .transpose()?;
    for trial in 0..bench.trials {
        interrupt::check()?;
        // A different phase of the interval each time (golden-ratio steps).
        let phase = (trial as f64 * 0.618_034).fract();
        interrupt::sleep(Duration::from_secs_f64(
            phase * f64::from(bench.interval_ms) / 1000.0,
        ))?;
        let (region, address) = targets[trial % 2];
        let before = on.counter("violations")?;
        let (_, written) = tamper::flip_byte(&on.qmp_socket(), address)?;
        let latency = loop {
            if on.counter("violations")? > before {
                break written.elapsed();
            }
            if written.elapsed() > Duration::from_secs(30) {
                return Err(BenchError::NotDetected {
                    trial,
                    problem: "no violation found in 30 s",
                }
                .into());
            }
            interrupt::check()?;
            thread::sleep(Duration::from_millis(5));
        };
        tamper::flip_byte(&on.qmp_socket(), address)?;
        let restored = Instant::now();
        while !on.last_check()?.2 {
            if restored.elapsed() > Duration::from_secs(30) {
                return Err(BenchError::NotDetected {
                    trial,
                    problem: "the restored byte was not seen in 30 s",
                }
                .into());
            }
            interrupt::check()?;
            thread::sleep(Duration::from_millis(20));
        }
        let ms = latency.as_secs_f64() * 1000.0;
        eprintln!(
            "vigil-bench: trial {}: {region} found after {ms:.0} ms",
            trial + 1
        );
        detection_ms.push(ms);
        detection_regions.push(region.to_owned());
    }
    let detection_under_load = match load {
        Some(load) => load.still_running()?,
        None => false,
    };
    drop(on);
    Ok(WatchdogReport {
        interval_ms: bench.interval_ms,
        region_bytes,
        throughput,
        soak,
        watchdog_vcpu_policy: bench.watchdog_vcpu,
        detection_vcpus,
        detection_under_load,
        detection_ms,
        detection_regions,
        load_average: (load_average_start, load_average()),
    })
}

/// Idle scans, then throughput on beside off (ABBA, the other side paused).
/// Leaves both sides paused.
fn measure_throughput(
    bench: &WatchdogBench,
    vcpus: u32,
    on: &Domain,
    off: &Domain,
) -> Result<Throughput> {
    // Time per scan, idle: one sample per check; and the idle guest's host CPU.
    off.pause()?;
    let cpu_before = host_cpu(on.qemu_pid());
    let idle_started = Instant::now();
    let mut scan_idle_ms = Vec::new();
    let mut seen = 0;
    // The first check comes within half a second; then one per interval.
    let until = Instant::now()
        + Duration::from_secs(2)
        + Duration::from_millis(u64::from(bench.interval_ms)) * (bench.idle_scans as u32 + 1);
    while scan_idle_ms.len() < bench.idle_scans && Instant::now() < until {
        let (number, ms, _) = on.last_check()?;
        if number > seen && number > 1 {
            scan_idle_ms.push(ms);
        }
        seen = seen.max(number);
        interrupt::sleep(Duration::from_millis(200))?;
    }
    let idle_host_cpu_percent =
        (host_cpu(on.qemu_pid()) - cpu_before) / idle_started.elapsed().as_secs_f64() * 100.0;
    eprintln!(
        "vigil-bench: {vcpus} vCPU: idle scan median {:.1} ms over {} checks; idle QEMU {:.0} % of a host core",
        median(&scan_idle_ms),
        scan_idle_ms.len(),
        idle_host_cpu_percent,
    );

    let load = Load {
        threads: 2.min(bench.connections),
        connections: bench.connections,
        seconds: bench.seconds,
    };
    on.pause()?;
    let (mut on_runs, mut off_runs, mut scan_loaded_ms) = (Vec::new(), Vec::new(), Vec::new());
    let mut on_windows = Vec::new();
    for round in 0..bench.rounds {
        let order: [bool; 2] = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for watchdog in order {
            let domain = if watchdog { on } else { off };
            interrupt::check()?;
            domain.resume()?;
            interrupt::sleep(Duration::from_secs(1))?;
            let before = watchdog.then(|| on.service_counters()).transpose()?;
            let result = wrk::run(&domain.url("/healthz"), &load)?;
            if let Some(before) = before {
                on_windows.push(before.until(&on.service_counters()?));
            }
            eprintln!(
                "vigil-bench: {vcpus} vCPU round {} watchdog {}: {:.0} req/s",
                round + 1,
                if watchdog { "on " } else { "off" },
                result.requests_per_second
            );
            if watchdog {
                scan_loaded_ms.push(on.last_check()?.1);
                on_runs.push(result);
            } else {
                off_runs.push(result);
            }
            domain.pause()?;
        }
    }
    let ratio = rate(&on_runs) / rate(&off_runs);
    Ok(Throughput {
        vcpus,
        watchdog_vcpu: None,
        on: on_runs,
        off: off_runs,
        ratio,
        scan_idle_ms,
        scan_loaded_ms,
        idle_host_cpu_percent,
        on_windows,
    })
}

/// Requests/s of each run.
fn per_second(runs: &[LoadResult]) -> Vec<f64> {
    runs.iter().map(|r| r.requests_per_second).collect()
}

/// Median requests/s of `runs`.
fn rate(runs: &[LoadResult]) -> f64 {
    median(&per_second(runs))
}

/// The in-guest measure over one vCPU count's loaded runs.
#[derive(Debug, Clone, Copy)]
pub struct InGuest {
    /// The runs' counters added up.
    pub total: ServiceCounters,
    /// The measure over all of them.
    pub pooled: DuringChecks,
    /// The implied loss per run, %: mean and 95 % CI.
    pub loss: (f64, f64, f64),
}

/// [`InGuest`] for `t`; `None` if no check ran under load.
pub fn in_guest(t: &Throughput) -> Option<InGuest> {
    let total = t
        .on_windows
        .iter()
        .fold(ServiceCounters::default(), |sum, w| sum.plus(w));
    let losses: Vec<f64> = t
        .on_windows
        .iter()
        .filter_map(DuringChecks::of)
        .map(|d| d.implied_loss * 100.0)
        .collect();
    Some(InGuest {
        pooled: DuringChecks::of(&total)?,
        total,
        loss: stats::mean_ci(&losses),
    })
}

/// What the watchdog costs at one interval, for the summary and the plot
/// (the first vCPU count measured: the soak's and the trials').
#[derive(Debug, Clone, Copy)]
pub struct Cost {
    /// The interval.
    pub interval_ms: u32,
    /// The guests' vCPUs.
    pub vcpus: u32,
    /// 1 − the paired on/off ratio of requests/s, %: (estimate, low, high).
    pub paired_loss: (f64, f64, f64),
    /// The in-guest implied loss per run, %: (mean, low, high).
    pub in_guest_loss: Option<(f64, f64, f64)>,
    /// The in-guest implied loss over all runs pooled, %.
    pub in_guest_pooled: Option<f64>,
}

/// [`Cost`] of `report`; `None` without throughput runs.
pub fn cost(report: &WatchdogReport) -> Option<Cost> {
    let t = report.throughput.first()?;
    let (ratio, low, high) = stats::paired_ratio(&per_second(&t.on), &per_second(&t.off));
    let guest = in_guest(t);
    Some(Cost {
        interval_ms: report.interval_ms,
        vcpus: t.vcpus,
        paired_loss: (
            (1.0 - ratio) * 100.0,
            (1.0 - high) * 100.0,
            (1.0 - low) * 100.0,
        ),
        in_guest_loss: guest.map(|g| g.loss),
        in_guest_pooled: guest.map(|g| g.pooled.implied_loss * 100.0),
    })
}

/// The in-guest measure: the service's response rate while checks hashed
/// beside its rate outside them, per vCPU count.
fn during_checks_section(report: &WatchdogReport) -> String {
    let mut out = String::from(
        "\n## The service's rate while a check runs (in the guest)\n\n\
         The comparison above is between two guests, and two launches of one \
         image differ by more than 1 %. This one is inside the \"on\" guest, over \
         the same loaded runs: `/metrics` before and after each run gives the \
         time checks spent hashing (`vigil_integrity_busy_seconds_total`), the \
         responses sent meanwhile (`vigil_integrity_responses_during_checks_total`) \
         and all responses (`vigil_http_requests_total`), over the guest's uptime. \
         If checks slow the service, its rate during checks falls below its rate \
         outside them; the throughput lost is the share of time checks run times \
         that fall. (It does not see a cost that outlasts a check; the on/off \
         comparison above bounds that.)\n\n\
         | vCPUs | time checks hash | responses during checks | rate during ÷ outside checks (pooled) | **implied loss** (pooled; mean of runs, 95 % CI) |\n\
         |---:|---:|---:|---:|---:|\n",
    );
    for t in &report.throughput {
        let Some(InGuest {
            total,
            pooled,
            loss: (mean, low, high),
        }) = in_guest(t)
        else {
            out += &format!("| {} | – | – | – | no check ran under load |\n", t.vcpus);
            continue;
        };
        out += &format!(
            "| {} | {:.2} % | {:.0} of {:.0} | {:.3} | **{:.2} %** ({mean:.2} %; {low:.2} … {high:.2} %) |\n",
            t.vcpus,
            pooled.busy_share * 100.0,
            total.responses_during_checks,
            total.responses,
            pooled.rate_ratio,
            pooled.implied_loss * 100.0,
        );
    }
    out += "\nA negative loss is the noise of a rate measured over short windows \
            (about a fiftieth of the time).\n";
    out
}

/// CPU seconds (user + system) process `pid` has used; NaN if unreadable.
fn host_cpu(pid: u32) -> f64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // After the command name's closing parenthesis: fields 3.. of proc(5);
    // utime and stime are fields 14 and 15, in clock ticks (100 per second
    // on Linux).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<f64>().ok());
    match (ticks(14), ticks(15)) {
        (Some(user), Some(system)) => (user + system) / 100.0,
        _ => f64::NAN,
    }
}

/// The Markdown report.
pub fn markdown(report: &WatchdogReport, command: &str, machine: &str) -> String {
    let list = |values: &[f64]| {
        values
            .iter()
            .map(|v| format!("{v:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = format!(
        "# Watchdog: cost and detection latency\n\n\
         Command: `{command}`\n\n{machine}\n\
         Load average: {} at the start, {} at the end.\n\n\
         The image's measured regions are {} bytes (code and read-only data), \
         hashed with SHA-256 every {} ms{}. Both sides are measured \
         launches of the same built image; \"off\" is sealed with a one-hour \
         interval (one check 0.5 s after start, then none). The side not being \
         measured is paused (QMP `stop`); rounds alternate ABBA. With more than \
         one vCPU the watchdog runs on the last one and the service on vCPU 0 \
         (vigil-dom0's default is 2 vCPUs); the host ran the watchdog's vCPU \
         thread at the `{}` policy (`vigil-dom0 launch --watchdog-vcpu`; idle: \
         Linux's SCHED_IDLE class, host CPU nothing else wants).\n\n\
         ## Throughput (wrk, /healthz)\n\n\
         | vCPUs | watchdog on vCPU | on: requests/s (median, σ) | off: requests/s (median, σ) | ratio of medians | **paired ratio on/off (95 % CI)** |\n\
         |---:|---:|---:|---:|---:|---:|\n",
        report.load_average.0,
        report.load_average.1,
        report.region_bytes,
        report.interval_ms,
        if report.interval_ms == INTERVAL_MS {
            " (the default)"
        } else {
            ""
        },
        report.watchdog_vcpu_policy.as_str(),
    );
    for t in &report.throughput {
        let (on, off) = (per_second(&t.on), per_second(&t.off));
        let (paired, low, high) = stats::paired_ratio(&on, &off);
        out += &format!(
            "| {} | {} | {:.0} ({:.0}) | {:.0} ({:.0}) | {:.3} | **{paired:.3}** ({:+.1} %; {low:.3}–{high:.3}) |\n",
            t.vcpus,
            t.watchdog_vcpu.map_or("?".into(), |v| v.to_string()),
            median(&on),
            stats::std_dev(&on),
            median(&off),
            stats::std_dev(&off),
            t.ratio,
            (paired - 1.0) * 100.0,
        );
    }
    out += "\nTarget: loss < 1 % at the default interval. The paired ratio is the \
            geometric mean of each round's on ÷ off (the two runs of a round are \
            adjacent in time, so they share the host's load of that moment), with \
            its 95 % confidence interval (Student's t on the logarithms); the loss \
            is shown below 1 % when the interval's low end is above 0.99. \
            All runs (requests/s) and each round's ratio:\n\n";
    for t in &report.throughput {
        let ratios: Vec<String> =
            t.on.iter()
                .zip(&t.off)
                .map(|(a, b)| format!("{:.3}", a.requests_per_second / b.requests_per_second))
                .collect();
        out += &format!(
            "- {} vCPU: on {}; off {}; on ÷ off {}\n",
            t.vcpus,
            list(&per_second(&t.on)),
            list(&per_second(&t.off)),
            ratios.join(", ")
        );
    }
    out += &during_checks_section(report);
    out += "\n## Time per full scan\n\n\
            | vCPUs | idle: median (min–max, checks) | MB/s | share of one vCPU | under load: median wall | idle QEMU, host CPU |\n\
            |---:|---:|---:|---:|---:|---:|\n";
    for t in &report.throughput {
        let scan = median(&t.scan_idle_ms);
        out += &format!(
            "| {} | {scan:.1} ms ({:.1}–{:.1}, {}) | {:.0} | {:.1} % | {:.1} ms | {:.0} % |\n",
            t.vcpus,
            stats::min(&t.scan_idle_ms),
            stats::max(&t.scan_idle_ms),
            t.scan_idle_ms.len(),
            report.region_bytes as f64 / 1e6 / (scan / 1000.0),
            scan / f64::from(report.interval_ms) * 100.0,
            median(&t.scan_loaded_ms),
            t.idle_host_cpu_percent,
        );
    }
    out += "\nThe share is the scan's part of the vCPU it runs on at this interval: with \
            one vCPU that is the service's; with two it is the watchdog's own, and the \
            service's vCPU pays nothing. Under load, the wall time of the check that \
            ended last in each loaded round (with one vCPU, requests preempt a check).\n\n";
    if let Some(soak) = &report.soak {
        out += &format!(
            "## No false positive\n\n{} vCPUs, {} s of load ({} requests, {:.0} req/s, {} errors), \
             no tampering: {} checks, **{} violations**.\n\n",
            report.detection_vcpus,
            soak.seconds,
            soak.load.requests,
            soak.load.requests_per_second,
            soak.load.errors,
            soak.checks,
            soak.violations
        );
    }
    if !report.detection_ms.is_empty() {
        let mut sorted = report.detection_ms.clone();
        sorted.sort_by(f64::total_cmp);
        let p95 = sorted[((sorted.len() as f64 * 0.95).ceil() as usize).saturating_sub(1)];
        let within = sorted
            .iter()
            .filter(|&&ms| ms <= 2.0 * f64::from(report.interval_ms))
            .count();
        out += &format!(
            "## Detection latency\n\n{} vCPUs, {} trials, alternately one byte of code and one of \
             read-only data flipped through QEMU's gdbstub at different phases of the \
             interval; time from gdb's write to the violation showing in `/v1/integrity` \
             (polled every 5 ms){}.\n\n\
             min {:.0} ms, median {:.0} ms, p95 {:.0} ms, max {:.0} ms; \
             **{within} of {} within two intervals** ({} ms).\n\n\
             All (ms): {}\n",
            report.detection_vcpus,
            sorted.len(),
            if report.detection_under_load {
                ", while wrk loaded the service"
            } else {
                ", the guest otherwise idle"
            },
            stats::min(&sorted),
            median(&sorted),
            p95,
            stats::max(&sorted),
            sorted.len(),
            2 * report.interval_ms,
            list(&report.detection_ms),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = "# TYPE vigil_http_requests_total counter\n\
        vigil_http_requests_total{route=\"healthz\",status=\"200\"} 900\n\
        vigil_http_requests_total{route=\"metrics\",status=\"200\"} 100\n\
        vigil_uptime_seconds 10.5\n\
        vigil_integrity_busy_seconds_total 0.25\n\
        vigil_integrity_responses_during_checks_total 20\n\
        vigil_integrity_checks_total 10\n";

    #[test]
    fn counters_from_metrics() {
        let counters = ServiceCounters::parse(METRICS).unwrap();
        assert_eq!(
            counters,
            ServiceCounters {
                uptime_s: 10.5,
                responses: 1000.0,
                responses_during_checks: 20.0,
                busy_s: 0.25,
            }
        );
        let missing = METRICS.replace("vigil_integrity_responses_during_checks_total 20\n", "");
        assert!(ServiceCounters::parse(&missing).is_err());
        assert!(ServiceCounters::parse("vigil_uptime_seconds x\n").is_err());
    }

    #[test]
    fn the_rate_during_checks_beside_the_rate_outside() {
        // 10 s, 0.2 s of it hashing; 100 responses/s outside, 50/s during.
        let window = ServiceCounters {
            uptime_s: 10.0,
            responses: 980.0 + 10.0,
            responses_during_checks: 10.0,
            busy_s: 0.2,
        };
        let during = DuringChecks::of(&window).unwrap();
        assert!((during.busy_share - 0.02).abs() < 1e-12);
        assert!((during.rate_ratio - 0.5).abs() < 1e-12);
        assert!((during.implied_loss - 0.01).abs() < 1e-12);
        let idle = ServiceCounters {
            busy_s: 0.0,
            ..window
        };
        assert!(DuringChecks::of(&idle).is_none());
    }
}
