//! `vigil-bench http`: the unikernel beside the same service in a Linux
//! guest under the same QEMU ([`crate::linux`], [`crate::guest`]), and
//! optionally beside the service as a host process (for scale): boot time,
//! HTTP throughput and latency, disk and memory footprint.
//!
//! Everything is interleaved so that host noise hits every side alike:
//! - boots: rounds, each booting every guest once, alone (the others are
//!   stopped), in an order that rotates every round; round 0 is a warm-up
//!   and is not recorded;
//! - loads: every guest is booted once more (also timed), then paused
//!   (QMP `stop`: a paused guest takes no host CPU); each run resumes one
//!   guest, loads it with `wrk`, checks it still answers, and pauses it
//!   again. Per round, every (connections, request) pair is run against
//!   every guest, the order rotating; one short warm-up run per guest comes
//!   first and is not recorded.
//!
//! Ratios are paired by round (adjacent runs share the host's load of that
//! moment): the geometric mean of the per-round ratios with its 95 %
//! confidence interval ([`crate::stats::paired_ratio`]).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use vigil_core::v1::config::ServiceConfig;

use crate::error::BenchError;
use crate::guest::{self, RssPeak, Running, Settings, System, Target};
use crate::interrupt;
use crate::linux::Nic;
use crate::stats::{self, load_average, median};
use crate::wrk::{self, LATENCY_THRESHOLD_MS, Load, LoadResult, Method};

/// The value the KV loads read and write.
pub const BENCH_VALUE: &str = r#"{"benchmark":true,"items":[1,2,3]}"#;
/// The watchdog interval the unikernel sides are sealed with
/// (`vigil-build seal`'s default).
pub const WATCHDOG_INTERVAL_MS: u32 = 1000;
/// The key it is stored under.
const BENCH_PATH: &str = "/v1/kv/bench";

/// What a load run asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Request {
    /// `GET /healthz`.
    Healthz,
    /// `GET /v1/kv/bench` (a stored value).
    KvRead,
    /// `PUT /v1/kv/bench` (the same value again: 200 replaced).
    KvWrite,
}

impl Request {
    /// All three, in report order.
    pub const ALL: [Request; 3] = [Request::Healthz, Request::KvRead, Request::KvWrite];

    /// The path.
    pub fn path(self) -> &'static str {
        match self {
            Self::Healthz => "/healthz",
            Self::KvRead | Self::KvWrite => BENCH_PATH,
        }
    }

    /// The method and body wrk sends.
    pub fn method(self) -> Method {
        match self {
            Self::Healthz | Self::KvRead => Method::Get,
            Self::KvWrite => Method::Put(BENCH_VALUE),
        }
    }

    /// How reports name it.
    pub fn label(self) -> &'static str {
        match self {
            Self::Healthz => "GET /healthz",
            Self::KvRead => "KV read (GET)",
            Self::KvWrite => "KV write (PUT)",
        }
    }
}

/// What to measure.
#[derive(Clone, Debug)]
pub struct HttpBench {
    /// The guests.
    pub targets: Vec<Target>,
    /// How every guest runs.
    pub settings: Settings,
    /// Why that accelerator.
    pub accel_reason: String,
    /// The service's settings (every guest's command line carries them).
    pub service: ServiceConfig,
    /// Boot-only rounds after the warm-up round.
    pub boots: usize,
    /// Load rounds.
    pub rounds: usize,
    /// Connection counts.
    pub connections: Vec<u32>,
    /// Seconds per load run.
    pub seconds: u32,
    /// wrk threads (at most one per connection).
    pub threads: u32,
    /// What the loads ask for.
    pub requests: Vec<Request>,
    /// Back-to-back `/healthz` runs of each guest at each connection count,
    /// after the rounds (0: none): how much one guest's successive runs
    /// differ, which the interleaved rounds, minutes apart, do not say.
    pub successive: usize,
    /// The service built for the host, measured beside the guests for
    /// scale, if given.
    pub host_service: Option<PathBuf>,
    /// Where the temporary directory (consoles, sockets) goes.
    pub work_dir: PathBuf,
}

/// One side of the comparison.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TargetReport {
    /// `vigil/rtl8139`, `linux/virtio`, `host`.
    pub name: String,
    /// What runs the service.
    pub system: System,
    /// The NIC (none for the host process).
    pub nic: Option<Nic>,
    /// The kernel command line.
    pub cmdline: String,
    /// Files on disk (name, bytes).
    pub files: Vec<(String, u64)>,
    /// QEMU's start to the first `/healthz` answer, seconds, per boot.
    pub boot_seconds: Vec<f64>,
    /// QEMU's (or the process's) resident memory a second after boot, MiB.
    pub rss_after_boot_mib: Vec<f64>,
}

/// One load run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Run {
    /// Which side.
    pub target: String,
    /// Round, from 0.
    pub round: usize,
    /// What was asked.
    pub request: Request,
    /// wrk connections.
    pub connections: u32,
    /// What wrk saw.
    pub result: LoadResult,
    /// The largest resident memory of QEMU (or the process) during the
    /// run, MiB.
    pub rss_peak_mib: Option<f64>,
    /// /proc/loadavg before the run.
    pub load_average: String,
}

/// One guest's back-to-back runs at one connection count.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Successive {
    /// Which side.
    pub target: String,
    /// wrk connections.
    pub connections: u32,
    /// Requests per second of each run, in order.
    pub requests_per_second: Vec<f64>,
    /// /proc/loadavg before the first run.
    pub load_average: String,
}

impl Successive {
    /// (max − min) ÷ median of the runs' rates.
    pub fn spread(&self) -> f64 {
        let v = &self.requests_per_second;
        (stats::max(v) - stats::min(v)) / median(v)
    }

    /// The runs' rates in order, whole requests/s, comma-separated.
    pub fn rates_text(&self) -> String {
        let rates: Vec<String> = self
            .requests_per_second
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect();
        rates.join(", ")
    }
}

/// Everything measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HttpReport {
    /// `kvm` or `tcg`, for every guest.
    pub accel: String,
    /// Why.
    pub accel_reason: String,
    /// vCPUs of every guest.
    pub cpus: u32,
    /// RAM of every guest, MiB.
    pub memory_mib: u32,
    /// The watchdog vCPU's host policy (unikernel only).
    pub watchdog_vcpu: String,
    /// The service settings, as on the command line after `--`.
    pub service_settings: String,
    /// Seconds per load run.
    pub seconds: u32,
    /// wrk threads.
    pub threads: u32,
    /// The latency threshold of [`LoadResult::over_threshold`].
    pub latency_threshold_ms: f64,
    /// /proc/loadavg at the start and at the end.
    pub load_average: (String, String),
    /// The sides.
    pub targets: Vec<TargetReport>,
    /// Every recorded load run.
    pub runs: Vec<Run>,
    /// Back-to-back runs of each guest (`--successive`).
    #[serde(default)]
    pub successive: Vec<Successive>,
    /// Guests that failed under load.
    #[serde(default)]
    pub failures: Vec<GuestFailure>,
    /// Things that worked, but not as well as they should.
    pub warnings: Vec<String>,
}

/// The unikernel sides: each built image directory sealed into `dir` (with
/// a throwaway key, the default watchdog interval and reaction, and
/// `service`'s settings), so that it runs as `vigil-dom0 launch` would run
/// it: the watchdog checking every second. The guest comparison boots the
/// sealed files unmeasured (the launch benchmark shows what measuring adds).
pub fn vigil_targets(
    image_dirs: &[PathBuf],
    dir: &Path,
    service: &ServiceConfig,
) -> Result<Vec<Target>> {
    use vigil_core::v1::bundle::{IMAGE_FILE, LOADER_FILE};
    let key = dir.join("signing.pem");
    vigil_build::keys::generate(&key, &dir.join("signing.pub.pem"))?;
    let mut targets: Vec<Target> = Vec::new();
    for (index, image_dir) in image_dirs.iter().enumerate() {
        crate::require_image(image_dir)?;
        let built = vigil_dom0::image::BootImage::from_dir(image_dir)?;
        let Some(nic) = Nic::of_flavor(built.flavor) else {
            return Err(BenchError::BadFile {
                path: image_dir.clone(),
                problem: "a microvm image: the comparison needs the hvm or virtio flavor".into(),
            }
            .into());
        };
        let out = dir.join(format!("bundle-{index}-{}", nic.name()));
        vigil_build::seal::seal(&vigil_build::seal::SealOptions {
            image_dir: image_dir.clone(),
            key: key.clone(),
            out: out.clone(),
            service_name: "vigil-service".into(),
            service_version: env!("CARGO_PKG_VERSION").into(),
            security_version: 1,
            interval_ms: WATCHDOG_INTERVAL_MS,
            reaction: vigil_core::v1::refblock::Reaction::Log,
            service: *service,
        })
        .with_context(|| format!("sealing {}", image_dir.display()))?;
        let boot = vigil_dom0::image::BootImage {
            loader: out.join(LOADER_FILE),
            image: out.join(IMAGE_FILE),
            flavor: built.flavor,
        };
        targets.push(Target::vigil(boot, nic, service)?);
    }
    // Two images with one NIC (e.g. before and after a kernel change) are
    // told apart by their directories.
    for index in 0..targets.len() {
        let nic = targets[index].nic;
        if targets.iter().filter(|t| t.nic == nic).count() > 1 {
            targets[index].name = format!("vigil/{} ({})", nic.name(), image_dirs[index].display());
        }
    }
    Ok(targets)
}

/// How [`prepare_sides`] prepares the comparison.
#[derive(Clone, Debug)]
pub struct SidesOptions {
    /// Built image directories (`hvm`, `virtio`).
    pub image_dirs: Vec<PathBuf>,
    /// Whether to add the Linux guest for each image's NIC.
    pub linux: bool,
    /// The Linux baseline's cache directory.
    pub linux_cache: PathBuf,
    /// The Vigil checkout (the Linux guest's service is built from it).
    pub project_dir: PathBuf,
    /// The accelerator (`auto` probes KVM with the first image).
    pub accel: vigil_dom0::accel::AccelChoice,
    /// vCPUs of every guest.
    pub cpus: u32,
    /// RAM of every guest, MiB.
    pub memory_mib: u32,
    /// How the host schedules the unikernel's watchdog vCPU.
    pub watchdog_vcpu: vigil_dom0::sched::WatchdogVcpu,
    /// Where the sealed bundles' temporary directory goes.
    pub work_dir: PathBuf,
    /// The service settings of every side.
    pub service: ServiceConfig,
}

/// The comparison's sides, ready to boot.
#[derive(Debug)]
pub struct Sides {
    /// The guests: per NIC the unikernel, then the Linux guest.
    pub targets: Vec<Target>,
    /// How they run.
    pub settings: Settings,
    /// Why that accelerator.
    pub accel_reason: String,
    /// The Linux baseline, if any.
    pub linux: Option<crate::linux::BaselineInfo>,
    /// The sealed bundles (removed when dropped).
    _sealed: tempfile::TempDir,
}

/// Seals the images, prepares the Linux baseline, picks the accelerator.
pub fn prepare_sides(options: &SidesOptions) -> Result<Sides> {
    std::fs::create_dir_all(&options.work_dir)
        .with_context(|| format!("creating {}", options.work_dir.display()))?;
    let sealed = tempfile::Builder::new()
        .prefix("vigil-bench-sealed-")
        .tempdir_in(&options.work_dir)
        .with_context(|| format!("creating a directory in {}", options.work_dir.display()))?;
    let vigil = vigil_targets(&options.image_dirs, sealed.path(), &options.service)?;
    let linux = if options.linux {
        Some(crate::linux::prepare(&crate::linux::Prepare {
            project_dir: options.project_dir.clone(),
            cache_dir: options.linux_cache.clone(),
        })?)
    } else {
        None
    };
    let mut targets = Vec::new();
    for target in vigil {
        let nic = target.nic;
        targets.push(target);
        // One Linux guest per NIC, however many images have it.
        if let Some(baseline) = &linux {
            if !targets
                .iter()
                .any(|t| t.system == System::Linux && t.nic == nic)
            {
                targets.push(Target::linux(baseline, nic, &options.service)?);
            }
        }
    }
    let first = targets.first().context("no image to compare")?;
    let (accel, accel_reason) =
        vigil_dom0::accel::choose(options.accel, &first.boot, sealed.path());
    eprintln!("vigil-bench: accelerator {} ({accel_reason})", accel.name());
    Ok(Sides {
        targets,
        settings: Settings {
            accel,
            cpus: options.cpus,
            memory_mib: options.memory_mib,
            watchdog_vcpu: options.watchdog_vcpu,
            boot_timeout: Duration::from_secs(180),
        },
        accel_reason,
        linux,
        _sealed: sealed,
    })
}

/// The order of `n` sides in step `k`: rotated by `k`.
fn rotation(n: usize, k: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |i| (i + k) % n.max(1))
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Stores the value the KV loads read.
fn put_bench_value(port: u16) -> Result<()> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut request = format!(
        "PUT {BENCH_PATH} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        BENCH_VALUE.len()
    )
    .into_bytes();
    request.extend_from_slice(BENCH_VALUE.as_bytes());
    stream.write_all(&request)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    if !answer.starts_with("HTTP/1.1 201") && !answer.starts_with("HTTP/1.1 200") {
        bail!("storing the benchmark value failed: {answer}");
    }
    Ok(())
}

/// The host build of the service, started on a loopback port; killed on drop.
#[derive(Debug)]
struct HostService {
    child: Child,
    port: u16,
}

impl Drop for HostService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_host_service(binary: &Path, service: &ServiceConfig) -> Result<HostService> {
    let port = free_port()?;
    let mut settings = *service;
    settings
        .set("port", &port.to_string())
        .map_err(|err| anyhow::anyhow!("{err}"))?;
    let cmdline = vigil_dom0::qemu::kernel_cmdline(&settings);
    let child = Command::new(binary)
        .args(cmdline.split_whitespace().skip(1))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let host = HostService { child, port };
    let started = Instant::now();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    while !vigil_dom0::health::probe(addr, Duration::from_millis(200)) {
        interrupt::check()?;
        if started.elapsed() > Duration::from_secs(10) {
            bail!("the host service did not answer on port {port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(host)
}

/// A side under load: a guest (paused between its runs) or the host process.
#[derive(Debug)]
enum Subject {
    Guest(Running),
    Host(HostService),
}

impl Subject {
    fn port(&self) -> u16 {
        match self {
            Self::Guest(guest) => guest.port,
            Self::Host(host) => host.port,
        }
    }

    fn pid(&self) -> u32 {
        match self {
            Self::Guest(guest) => guest.pid(),
            Self::Host(host) => host.child.id(),
        }
    }

    fn pause(&mut self) -> Result<()> {
        match self {
            Self::Guest(guest) => guest.pause(),
            Self::Host(_) => Ok(()),
        }
    }

    fn resume(&mut self) -> Result<()> {
        match self {
            Self::Guest(guest) => guest.resume(),
            Self::Host(_) => Ok(()),
        }
    }

    /// After a run: the side must have served requests and still answer;
    /// if not, what was seen (with the guest's console tail).
    fn check(&mut self, result: &LoadResult) -> std::result::Result<(), String> {
        let problem = match self {
            Self::Guest(guest) => guest.check().err(),
            Self::Host(host) => {
                let addr = std::net::SocketAddr::from(([127, 0, 0, 1], host.port));
                (!vigil_dom0::health::probe(addr, Duration::from_secs(5)))
                    .then(|| "/healthz does not answer".to_owned())
            }
        };
        if result.requests > 0 && problem.is_none() {
            return Ok(());
        }
        Err(format!(
            "`{}` served {} requests ({} errors); {}",
            result.command,
            result.requests,
            result.errors,
            problem.unwrap_or_else(|| "it answers /healthz".into())
        ))
    }
}

/// A guest that stopped answering (or stopped) during a load run. The run
/// is not recorded; the guest is booted again for the next one, until it
/// has failed [`MAX_FAILURES`] times.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GuestFailure {
    /// Which side.
    pub target: String,
    /// Round, from 0.
    pub round: usize,
    /// What was asked.
    pub request: Request,
    /// wrk connections.
    pub connections: u32,
    /// What was seen, with the console's tail.
    pub what: String,
}

/// Failures after which a side's remaining runs are skipped.
pub const MAX_FAILURES: usize = 3;

/// Runs the whole benchmark.
pub fn run(bench: &HttpBench) -> Result<HttpReport> {
    for (option, bad) in [
        ("--rounds", bench.rounds == 0),
        ("--connections", bench.connections.is_empty()),
        ("--requests", bench.requests.is_empty()),
    ] {
        if bad {
            return Err(BenchError::BadOption {
                option,
                problem: "must not be zero or empty",
            }
            .into());
        }
    }
    let load_average_start = load_average();
    std::fs::create_dir_all(&bench.work_dir)
        .with_context(|| format!("creating {}", bench.work_dir.display()))?;
    let dir = tempfile::Builder::new()
        .prefix("vigil-bench-http-")
        .tempdir_in(&bench.work_dir)
        .with_context(|| format!("creating a directory in {}", bench.work_dir.display()))?;
    let work = dir.path().canonicalize()?;
    let port = bench.service.port;
    let mut warnings = Vec::new();
    let mut reports: Vec<TargetReport> = bench
        .targets
        .iter()
        .map(|t| TargetReport {
            name: t.name.clone(),
            system: t.system,
            nic: Some(t.nic),
            cmdline: t.cmdline.clone(),
            files: t.files.clone(),
            boot_seconds: Vec::new(),
            rss_after_boot_mib: Vec::new(),
        })
        .collect();
    let mut boot_number = 0;
    let mut boot = |i: usize| -> Result<Running> {
        boot_number += 1;
        let dir = guest::guest_dir(&work, &format!("{}-{boot_number}", bench.targets[i].name))?;
        let running = guest::boot(&bench.targets[i], &bench.settings, port, &dir)?;
        if let Some(warning) = &running.backlog_warning {
            warnings.push(warning.clone());
        }
        Ok(running)
    };

    // 1. Boots, one guest at a time.
    let n = bench.targets.len();
    for round in 0..=bench.boots {
        for i in rotation(n, round) {
            let running = boot(i)?;
            let seconds = running.boot.as_secs_f64();
            eprintln!(
                "vigil-bench: boot {}{}: {} answered after {seconds:.3} s",
                round,
                if round == 0 { " (warm-up)" } else { "" },
                bench.targets[i].name
            );
            if round > 0 {
                reports[i].boot_seconds.push(seconds);
            }
            running.stop()?;
        }
    }

    // 2. Loads: every side up, all paused but the one loaded.
    let mut subjects = Vec::new();
    for (i, report) in reports.iter_mut().enumerate() {
        let mut running = boot(i)?;
        report.boot_seconds.push(running.boot.as_secs_f64());
        put_bench_value(running.port)?;
        interrupt::sleep(Duration::from_secs(1))?;
        let rss = guest::rss_mib(running.pid());
        // NaN (unreadable) would not survive JSON.
        if rss.is_finite() {
            report.rss_after_boot_mib.push(rss);
        }
        eprintln!(
            "vigil-bench: {} up for the loads after {:.3} s, QEMU RSS {rss:.0} MiB",
            report.name,
            running.boot.as_secs_f64(),
        );
        running.pause()?;
        subjects.push(Subject::Guest(running));
    }
    if let Some(binary) = &bench.host_service {
        let host = start_host_service(binary, &bench.service)?;
        put_bench_value(host.port)?;
        reports.push(TargetReport {
            name: "host".into(),
            system: System::HostProcess,
            nic: None,
            cmdline: String::new(),
            files: vec![(
                "vigil-service".into(),
                std::fs::metadata(binary).map_or(0, |m| m.len()),
            )],
            boot_seconds: Vec::new(),
            rss_after_boot_mib: Some(guest::rss_mib(host.child.id()))
                .filter(|rss| rss.is_finite())
                .into_iter()
                .collect(),
        });
        subjects.push(Subject::Host(host));
    }
    let load = |connections: u32, seconds: u32| Load {
        threads: bench.threads.min(connections).max(1),
        connections,
        seconds,
    };
    let url = |subject: &Subject, request: Request| {
        format!("http://127.0.0.1:{}{}", subject.port(), request.path())
    };
    for (i, subject) in subjects.iter_mut().enumerate() {
        subject.resume()?;
        let warm = wrk::run(
            &url(subject, Request::Healthz),
            &load(*bench.connections.iter().max().unwrap_or(&4), 2),
        )?;
        if let Err(what) = subject.check(&warm) {
            return Err(BenchError::GuestFailed {
                what: format!("{} failed its warm-up run: {what}", reports[i].name),
            }
            .into());
        }
        subject.pause()?;
    }
    let mut runs = Vec::new();
    let mut failures: Vec<GuestFailure> = Vec::new();
    let total = bench.rounds * bench.connections.len() * bench.requests.len() * subjects.len();
    for round in 0..bench.rounds {
        for (c, &connections) in bench.connections.iter().enumerate() {
            for (r, &request) in bench.requests.iter().enumerate() {
                let step = round * bench.connections.len() * bench.requests.len()
                    + c * bench.requests.len()
                    + r;
                for i in rotation(subjects.len(), step) {
                    interrupt::check()?;
                    let name = reports[i].name.clone();
                    let failed = failures.iter().filter(|f: &&GuestFailure| f.target == name);
                    if failed.count() >= MAX_FAILURES {
                        continue;
                    }
                    let load_average = load_average();
                    let subject = &mut subjects[i];
                    subject.resume()?;
                    let peak = RssPeak::start(subject.pid());
                    let result = wrk::run_request(
                        &url(subject, request),
                        &load(connections, bench.seconds),
                        request.method(),
                    );
                    let rss = peak.finish();
                    let result = result?;
                    if let Err(what) = subject.check(&result) {
                        eprintln!("vigil-bench: {name} failed under load: {what}");
                        failures.push(GuestFailure {
                            target: name.clone(),
                            round,
                            request,
                            connections,
                            what,
                        });
                        let Subject::Guest(_) = subject else {
                            return Err(BenchError::GuestFailed {
                                what: format!("the host process failed under load ({name})"),
                            }
                            .into());
                        };
                        // A fresh guest for the next runs (its boot is not recorded).
                        let mut running = boot(i)?;
                        put_bench_value(running.port)?;
                        running.pause()?;
                        if let Subject::Guest(old) =
                            std::mem::replace(subject, Subject::Guest(running))
                        {
                            let _ = old.stop();
                        }
                        continue;
                    }
                    subject.pause()?;
                    eprintln!(
                        "vigil-bench: [{}/{total}] round {} {} {} c={connections}: {:.0} req/s, \
                         p50 {:.2} ms, p99 {:.1} ms, max {:.0} ms, {:.2} % over {LATENCY_THRESHOLD_MS} ms \
                         (load {load_average})",
                        runs.len() + 1,
                        round + 1,
                        reports[i].name,
                        request.label(),
                        result.requests_per_second,
                        result.p50_ms,
                        result.p99_ms,
                        result.max_ms.unwrap_or(f64::NAN),
                        result.over_threshold.unwrap_or(f64::NAN) * 100.0,
                    );
                    runs.push(Run {
                        target: reports[i].name.clone(),
                        round,
                        request,
                        connections,
                        result,
                        rss_peak_mib: rss.is_finite().then_some(rss),
                        load_average,
                    });
                }
            }
        }
    }
    let mut successive = Vec::new();
    if bench.successive > 0 {
        for (i, subject) in subjects.iter_mut().enumerate() {
            let name = &reports[i].name;
            if failures.iter().any(|f| &f.target == name) {
                continue;
            }
            subject.resume()?;
            for &connections in &bench.connections {
                let mut series = Successive {
                    target: name.clone(),
                    connections,
                    requests_per_second: Vec::new(),
                    load_average: load_average(),
                };
                for _ in 0..bench.successive {
                    interrupt::check()?;
                    let result = wrk::run(
                        &url(subject, Request::Healthz),
                        &load(connections, bench.seconds),
                    )?;
                    if let Err(what) = subject.check(&result) {
                        return Err(BenchError::GuestFailed {
                            what: format!("{name} failed in its successive runs: {what}"),
                        }
                        .into());
                    }
                    series.requests_per_second.push(result.requests_per_second);
                }
                eprintln!(
                    "vigil-bench: {name} c={connections}, {} back-to-back runs: {} req/s, \
                     spread {:.1} %",
                    bench.successive,
                    series.rates_text(),
                    series.spread() * 100.0
                );
                successive.push(series);
            }
            subject.pause()?;
        }
    }
    for subject in subjects {
        if let Subject::Guest(running) = subject {
            running.stop()?;
        }
    }
    warnings.sort();
    warnings.dedup();
    Ok(HttpReport {
        accel: bench.settings.accel.name().into(),
        accel_reason: bench.accel_reason.clone(),
        cpus: bench.settings.cpus,
        memory_mib: bench.settings.memory_mib,
        watchdog_vcpu: bench.settings.watchdog_vcpu.as_str().into(),
        service_settings: vigil_dom0::qemu::kernel_cmdline(&bench.service)
            .trim_start_matches("--")
            .trim()
            .to_owned(),
        seconds: bench.seconds,
        threads: bench.threads,
        latency_threshold_ms: LATENCY_THRESHOLD_MS,
        load_average: (load_average_start, load_average()),
        targets: reports,
        runs,
        successive,
        failures,
        warnings,
    })
}

/// `text` without ANSI escape sequences (Hermit colours its log lines).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters, then one final byte in @..~.
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// An error for a finished report whose guests failed under load (exit 7),
/// once the report is written.
pub fn failures_error(report: &HttpReport) -> Result<()> {
    match report.failures.first() {
        None => Ok(()),
        Some(first) => Err(BenchError::GuestFailed {
            what: format!(
                "{} load run(s) failed (the report lists them), first {}: {}",
                report.failures.len(),
                first.target,
                first.what.lines().next().unwrap_or_default()
            ),
        }
        .into()),
    }
}

/// The runs of one side for one load, in round order.
pub fn runs_of<'a>(
    report: &'a HttpReport,
    target: &str,
    request: Request,
    connections: u32,
) -> Vec<&'a Run> {
    let mut runs: Vec<&Run> = report
        .runs
        .iter()
        .filter(|r| r.target == target && r.request == request && r.connections == connections)
        .collect();
    runs.sort_by_key(|r| r.round);
    runs
}

/// The peak QEMU RSS (MiB) of each of `target`'s recorded load runs.
pub fn rss_peaks(report: &HttpReport, target: &str) -> Vec<f64> {
    report
        .runs
        .iter()
        .filter(|r| r.target == target)
        .filter_map(|r| r.rss_peak_mib)
        .collect()
}

/// Requests/s per round.
pub fn rates(runs: &[&Run]) -> Vec<f64> {
    runs.iter().map(|r| r.result.requests_per_second).collect()
}

/// The (unikernel, Linux) pairs of the report, per NIC.
pub fn pairs(report: &HttpReport) -> Vec<(Nic, &TargetReport, &TargetReport)> {
    Nic::ALL
        .iter()
        .filter_map(|&nic| {
            let find = |system| {
                report
                    .targets
                    .iter()
                    .find(|t| t.system == system && t.nic == Some(nic))
            };
            Some((nic, find(System::Vigil)?, find(System::Linux)?))
        })
        .collect()
}

/// The loads run, in order: (connections, request).
pub fn loads(report: &HttpReport) -> Vec<(u32, Request)> {
    let mut loads: Vec<(u32, Request)> = Vec::new();
    for run in &report.runs {
        if !loads.contains(&(run.connections, run.request)) {
            loads.push((run.connections, run.request));
        }
    }
    loads.sort_by_key(|(c, r)| (*c, Request::ALL.iter().position(|x| x == r)));
    loads
}

/// A load's latency summary over its runs: median p50 and p99, largest
/// maximum, and the share over the threshold pooled over all requests.
#[derive(Clone, Copy, Debug)]
pub struct Latency {
    /// Median of the runs' p50, ms.
    pub p50_ms: f64,
    /// Median of the runs' p99, ms.
    pub p99_ms: f64,
    /// The largest maximum, ms.
    pub max_ms: f64,
    /// Requests over the threshold ÷ all requests.
    pub over_threshold: f64,
}

impl Latency {
    /// Over `runs`.
    pub fn of(runs: &[&Run]) -> Self {
        let p50: Vec<f64> = runs.iter().map(|r| r.result.p50_ms).collect();
        let p99: Vec<f64> = runs.iter().map(|r| r.result.p99_ms).collect();
        let max = runs
            .iter()
            .filter_map(|r| r.result.max_ms)
            .fold(f64::NAN, f64::max);
        let (over, all) = runs.iter().fold((0.0, 0.0), |(over, all), r| {
            let n = r.result.requests as f64;
            (
                over + r.result.over_threshold.unwrap_or(f64::NAN) * n,
                all + n,
            )
        });
        Self {
            p50_ms: median(&p50),
            p99_ms: median(&p99),
            max_ms: max,
            over_threshold: over / all,
        }
    }
}

fn spread(values: &[f64], digits: usize) -> String {
    if values.is_empty() {
        return "–".into();
    }
    format!(
        "{:.digits$} ({:.digits$}–{:.digits$})",
        median(values),
        stats::min(values),
        stats::max(values)
    )
}

/// A paired ratio as text: `0.49 (0.41–0.58)`, or just the one value.
pub fn ratio_text(a: &[f64], b: &[f64]) -> String {
    let (mean, low, high) = stats::paired_ratio(a, b);
    if low.is_finite() {
        format!("{mean:.2} ({low:.2}–{high:.2})")
    } else {
        format!("{mean:.2}")
    }
}

/// The report as Markdown (headings from level `depth`).
pub fn markdown_section(report: &HttpReport, depth: usize) -> String {
    let h = "#".repeat(depth);
    let mut text = String::new();
    text += &format!(
        "Every guest: QEMU `pc`, {}, {} vCPUs, {} MiB, the service's settings `{}`, \
         forwarded from 127.0.0.1 with QEMU's listen backlog raised as vigil-dom0 does. \
         The unikernel's watchdog vCPU in the host's `{}` class. \
         Load average {} at the start, {} at the end.\n\n",
        report.accel.to_uppercase(),
        report.cpus,
        report.memory_mib,
        report.service_settings,
        report.watchdog_vcpu,
        report.load_average.0,
        report.load_average.1,
    );
    for warning in &report.warnings {
        text += &format!("Warning: {warning}\n\n");
    }

    text += &format!("{h} Boot: QEMU start to the first `/healthz` answer\n\n");
    text += "| guest | boots | seconds, median (min–max) |\n|---|---:|---:|\n";
    for t in report.targets.iter().filter(|t| !t.boot_seconds.is_empty()) {
        text += &format!(
            "| {} | {} | {} |\n",
            t.name,
            t.boot_seconds.len(),
            spread(&t.boot_seconds, 3)
        );
    }
    for (nic, vigil, linux) in pairs(report) {
        text += &format!(
            "\n{}: the unikernel answers {:.1}× sooner than the Linux guest (ratio of \
             medians; paired by boot round: {}×).",
            nic.name(),
            median(&linux.boot_seconds) / median(&vigil.boot_seconds),
            ratio_text(&linux.boot_seconds, &vigil.boot_seconds),
        );
    }
    text += "\n\nThe boots of one round run one after the other, so a round's two \
             boots share the host's load; the paired ratio is the geometric mean of \
             the rounds' ratios, with its 95 % CI.\n\n";

    text += &format!(
        "{h} Throughput (wrk, keep-alive, {} s per run)\n\n",
        report.seconds
    );
    text += "Requests/s, median over rounds (min–max); the ratio is the geometric mean \
             of each round's ratio (95 % CI when there are several rounds).\n\n";
    // Further images with a NIC already seen (before and after a change):
    // each beside the first.
    let mut first_of_nic: Vec<&TargetReport> = Vec::new();
    let mut beside: Vec<(&TargetReport, &TargetReport)> = Vec::new();
    for t in report.targets.iter().filter(|t| t.system == System::Vigil) {
        match first_of_nic.iter().find(|f| f.nic == t.nic) {
            Some(first) => beside.push((t, first)),
            None => first_of_nic.push(t),
        }
    }
    let pairs = pairs(report);
    // Every guest's own rates, unless the Linux table below has them all.
    if pairs.is_empty() || !beside.is_empty() {
        text += "| guest | request | conns | req/s |\n|---|---|---:|---:|\n";
        for t in &report.targets {
            for (connections, request) in loads(report) {
                let v = rates(&runs_of(report, &t.name, request, connections));
                if !v.is_empty() {
                    text += &format!(
                        "| {} | {} | {connections} | {} |\n",
                        t.name,
                        request.label(),
                        spread(&v, 0)
                    );
                }
            }
        }
    }
    if !beside.is_empty() {
        text += "\n| image | beside | request | conns | **÷** |\n|---|---|---|---:|---:|\n";
        for (t, first) in beside {
            for (connections, request) in loads(report) {
                let v = rates(&runs_of(report, &t.name, request, connections));
                let f = rates(&runs_of(report, &first.name, request, connections));
                text += &format!(
                    "| {} | {} | {} | {connections} | **{}** |\n",
                    t.name,
                    first.name,
                    request.label(),
                    ratio_text(&v, &f)
                );
            }
        }
    }
    if !pairs.is_empty() {
        text += "\nAbove 1 the unikernel serves more than the Linux guest.\n\n\
                 | NIC | request | conns | unikernel req/s | Linux req/s | **unikernel ÷ Linux** |\n\
                 |---|---|---:|---:|---:|---:|\n";
    }
    for (nic, vigil, linux) in pairs {
        for (connections, request) in loads(report) {
            let v = rates(&runs_of(report, &vigil.name, request, connections));
            let l = rates(&runs_of(report, &linux.name, request, connections));
            text += &format!(
                "| {} | {} | {connections} | {} | {} | **{}** |\n",
                nic.name(),
                request.label(),
                spread(&v, 0),
                spread(&l, 0),
                ratio_text(&v, &l)
            );
        }
    }

    if !report.successive.is_empty() {
        text += &format!(
            "\n{h} Successive runs\n\nEach guest alone, `GET /healthz`, {} s runs one right after \
             the other (after the rounds above); the spread is (max − min) ÷ median. Issue 16's \
             target for the unikernel: within 5 %.\n\n\
             | guest | conns | req/s, in order | spread |\n|---|---:|---|---:|\n",
            report.seconds
        );
        for s in &report.successive {
            text += &format!(
                "| {} | {} | {} | {:.1} % |\n",
                s.target,
                s.connections,
                s.rates_text(),
                s.spread() * 100.0
            );
        }
    }

    text += &format!(
        "\n{h} Latency\n\nms: median over rounds of each run's p50 and p99; the largest \
         maximum; the share of all requests slower than {} ms (wrk 4.1 folds a few \
         long stalls into a p99 near the maximum, so the share says how many there were).\n\n",
        report.latency_threshold_ms
    );
    text += "| guest | request | conns | p50 | p99 | max | > threshold |\n\
             |---|---|---:|---:|---:|---:|---:|\n";
    for t in &report.targets {
        for (connections, request) in loads(report) {
            let runs = runs_of(report, &t.name, request, connections);
            if runs.is_empty() {
                continue;
            }
            let l = Latency::of(&runs);
            text += &format!(
                "| {} | {} | {connections} | {:.2} | {:.1} | {:.0} | {:.2} % |\n",
                t.name,
                request.label(),
                l.p50_ms,
                l.p99_ms,
                l.max_ms,
                l.over_threshold * 100.0
            );
        }
    }

    text += &format!("\n{h} Footprint\n\n");
    text += "| guest | on disk | QEMU RSS after boot, MiB | QEMU RSS under load, MiB (median of runs' peaks; max) |\n\
             |---|---|---:|---:|\n";
    for t in &report.targets {
        let files: Vec<String> = t
            .files
            .iter()
            .map(|(name, bytes)| format!("{name} {:.2} MB", *bytes as f64 / 1e6))
            .collect();
        let total: u64 = t.files.iter().map(|(_, b)| b).sum();
        let peaks = rss_peaks(report, &t.name);
        text += &format!(
            "| {} | {:.2} MB ({}) | {:.0} | {:.0}; {:.0} |\n",
            t.name,
            total as f64 / 1e6,
            files.join(" + "),
            median(&t.rss_after_boot_mib),
            median(&peaks),
            stats::max(&peaks),
        );
    }
    if !report.failures.is_empty() {
        text += &format!("\n{h} Guests that failed under load\n\n");
        text += &format!(
            "A failed run is not recorded; the guest is booted again for the next run, \
             and after {MAX_FAILURES} failures its remaining runs are skipped.\n\n"
        );
        for f in &report.failures {
            let what = strip_ansi(&f.what);
            let mut lines = what.lines();
            let first = lines.next().unwrap_or_default();
            let rest: Vec<&str> = lines.collect();
            let tail = &rest[rest.len().saturating_sub(12)..];
            text += &format!(
                "- **{}**, round {}, {} at {} connections: {first}\n\n  ```\n{}\n  ```\n",
                f.target,
                f.round + 1,
                f.request.label(),
                f.connections,
                tail.iter()
                    .map(|l| format!("  {l}"))
                    .collect::<Vec<_>>()
                    .join("\n"),
            );
        }
    }
    let errors: u64 = report.runs.iter().map(|r| r.result.errors).sum();
    text += &format!(
        "\nErrors reported by wrk (socket errors and non-2xx answers), all runs: {errors}.\n"
    );
    text
}

/// The standalone report of `vigil-bench http`.
pub fn markdown(report: &HttpReport, command: &str, machine: &str) -> String {
    format!(
        "# HTTP benchmark: the unikernel beside a Linux guest under the same QEMU\n\n\
         Command: `{command}`\n\n{machine}\n\n{}",
        markdown_section(report, 2)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotations_visit_every_side_once() {
        for k in 0..5 {
            let mut order: Vec<usize> = rotation(4, k).collect();
            assert_eq!(order[0], k % 4);
            order.sort();
            assert_eq!(order, [0, 1, 2, 3]);
        }
    }

    #[test]
    fn consoles_lose_their_colours() {
        assert_eq!(
            strip_ansi("[0][\u{1b}[32mINFO\u{1b}[0m] DHCP config acquired!"),
            "[0][INFO] DHCP config acquired!"
        );
        assert_eq!(strip_ansi("plain"), "plain");
    }

    #[test]
    fn requests_map_to_wrk() {
        assert_eq!(Request::Healthz.method(), Method::Get);
        assert_eq!(Request::KvWrite.method(), Method::Put(BENCH_VALUE));
        assert_eq!(Request::KvRead.path(), "/v1/kv/bench");
    }

    fn run(target: &str, round: usize, rps: f64, requests: u64, over: f64) -> Run {
        Run {
            target: target.into(),
            round,
            request: Request::Healthz,
            connections: 4,
            result: LoadResult {
                command: "wrk".into(),
                requests_per_second: rps,
                p50_ms: rps / 1000.0,
                p99_ms: 10.0,
                requests,
                errors: 0,
                max_ms: Some(rps),
                over_threshold: Some(over),
                percentiles: Vec::new(),
            },
            rss_peak_mib: Some(100.0),
            load_average: "0 0 0".into(),
        }
    }

    #[test]
    fn latency_pools_the_share_over_requests() {
        let a = run("a", 0, 1000.0, 100, 0.10);
        let b = run("a", 1, 3000.0, 300, 0.0);
        let l = Latency::of(&[&a, &b]);
        assert!((l.over_threshold - 10.0 / 400.0).abs() < 1e-12);
        assert_eq!(l.max_ms, 3000.0);
        assert_eq!(l.p50_ms, 2.0);
    }
}
