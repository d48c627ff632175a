//! `vigil-bench launch`: the measured launch (`vigil_dom0::launch`) beside
//! the same sealed image booted without measurement, in one run.
//!
//! The built image is sealed once into a temporary directory. Then rounds
//! alternate four ways of booting the bundle's files, the order rotating
//! every round so drift on the machine hits all of them:
//! - unmeasured: the launcher library directly (`QemuConfig::spawn`,
//!   `open_forwarding`, `wait_healthy`) on the bundle's own image and loader,
//!   with the manifest's kernel command line;
//! - the same, but QEMU started paused and resumed as `launch` does it
//!   (separates the cost of `-S` + `cont` from the cost of measurement);
//! - measured, new domain: `launch::launch` under a fresh name and state
//!   directory (the vTPM state is created from scratch), then
//!   `launch::stop` with purge;
//! - measured relaunch: `launch::launch` of one domain whose vTPM state is
//!   kept (`launch::stop` without purge between).
//!
//! Two metrics each: QEMU's start to the first `/healthz` answer (what
//! `wait_healthy` and `DomainRecord::boot_seconds` report), and the wall
//! time of the whole call, which for the measured launch includes the copy
//! and verification made before QEMU starts. Then the parts of the measured
//! launch are timed on their own, for a breakdown.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde::{Deserialize, Serialize};
use vigil_bench::error::BenchError;
use vigil_bench::interrupt;
use vigil_bench::stats::{load_average, max, median, min, std_dev};
use vigil_build::seal::{SealOptions, seal};
use vigil_core::v1::bundle::{
    self, BundleFiles, IMAGE_FILE, LOADER_FILE, MANIFEST_FILE, SIGNATURE_FILE,
};
use vigil_core::v1::config::ServiceConfig;
use vigil_core::v1::events::LaunchInputs;
use vigil_core::v1::manifest::Manifest;
use vigil_core::v1::refblock::Reaction;
use vigil_dom0::accel::{self, AccelChoice};
use vigil_dom0::image::{BootImage, Flavor};
use vigil_dom0::launch::{self, LaunchOptions, per_boot};
use vigil_dom0::qemu::{Accel, Forward, QemuConfig, SpawnOptions};
use vigil_dom0::swtpm::Swtpm;
use vigil_tpm::Tpm;

/// Guest RAM, MiB (`vigil-dom0 launch`'s default).
const MEMORY_MIB: u32 = 512;
/// How long one boot may take to answer.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// The relaunched domain's name.
const RELAUNCH_NAME: &str = "relaunch";

/// What to measure.
#[derive(Clone, Debug)]
pub struct LaunchBench {
    /// The directory `vigil-build build` wrote.
    pub image_dir: PathBuf,
    /// Measured rounds (each boots all four ways once).
    pub rounds: usize,
    /// The accelerator, for both sides.
    pub accel: AccelChoice,
    /// Where the temporary directory (key, bundle, domains) is made.
    pub work_dir: PathBuf,
}

/// One way of booting, measured `rounds` times.
#[derive(Debug, Serialize, Deserialize)]
pub struct Series {
    /// What was run.
    pub label: String,
    /// QEMU's start to the first `/healthz` answer, seconds, per round.
    pub boot_seconds: Vec<f64>,
    /// The whole call (spawn + forwarding + wait, or `launch::launch`),
    /// seconds, per round.
    pub wall_seconds: Vec<f64>,
    /// Stopping it afterwards (`Guest::stop` or `launch::stop`), seconds.
    pub stop_seconds: Vec<f64>,
}

/// Measured against unmeasured, for one metric.
#[derive(Debug, Serialize, Deserialize)]
pub struct Ratio {
    /// The measured series.
    pub measured: String,
    /// `boot` or `wall`.
    pub metric: String,
    /// Median measured / median unmeasured.
    pub ratio: f64,
    /// Median measured - median unmeasured, seconds.
    pub difference_seconds: f64,
    /// Median of the per-round differences (same round), seconds.
    pub paired_difference_seconds: f64,
}

/// One part of the measured launch, timed on its own.
#[derive(Debug, Serialize, Deserialize)]
pub struct Part {
    /// What was timed.
    pub label: String,
    /// Where it sits in `launch::launch`.
    pub place: String,
    /// Seconds, per run.
    pub seconds: Vec<f64>,
}

/// Everything measured.
#[derive(Debug, Serialize, Deserialize)]
pub struct LaunchReport {
    /// The accelerator both sides ran on.
    pub accel: String,
    /// /proc/loadavg when the benchmark started.
    pub load_average_start: String,
    /// /proc/loadavg when it ended.
    pub load_average_end: String,
    /// The image sealed.
    pub image_dir: PathBuf,
    /// Bytes copied and verified per launch (manifest, signature, image, loader).
    pub bundle_bytes: u64,
    /// The unmeasured boots (plain, then paused and resumed), then the two
    /// measured ones.
    pub series: Vec<Series>,
    /// Measured / unmeasured, per series and metric.
    pub ratios: Vec<Ratio>,
    /// The parts of a measured launch, timed on their own.
    pub parts: Vec<Part>,
}

/// Domains launched and not yet stopped: stopped (and purged) on drop, so
/// an error half-way leaves no QEMU or swtpm behind.
struct Domains {
    state_root: PathBuf,
    running: Vec<String>,
}

impl Domains {
    fn launched(&mut self, name: &str) {
        self.running.push(name.to_owned());
    }

    fn stop(&mut self, name: &str, purge: bool) -> Result<f64> {
        let started = Instant::now();
        self.running.retain(|n| n != name);
        vigil_dom0::lifecycle::stop(&self.state_root, name, purge)
            .with_context(|| format!("stopping domain {name}"))?;
        Ok(started.elapsed().as_secs_f64())
    }
}

impl Drop for Domains {
    fn drop(&mut self) {
        for name in std::mem::take(&mut self.running) {
            if let Err(err) = vigil_dom0::lifecycle::stop(&self.state_root, &name, true) {
                eprintln!("vigil-bench: warning: stopping domain {name}: {err}");
            }
        }
    }
}

/// The bundle as the unmeasured side boots it: the same files, flavor and
/// command line, without copy, verification or vTPM.
struct Unmeasured {
    image: BootImage,
    cmdline: String,
    accel: Accel,
    dir: PathBuf,
}

impl Unmeasured {
    fn config(&self, run: usize) -> QemuConfig {
        QemuConfig {
            image: self.image.clone(),
            accel: self.accel,
            memory_mib: MEMORY_MIB,
            cpus: 1,
            cmdline: self.cmdline.clone(),
            forward: Some(Forward {
                host_port: 0,
                guest_port: launch::service_port(&self.cmdline),
            }),
            console: self.dir.join(format!("console-{run}.log")),
            qmp: self.dir.join("qmp.sock"),
        }
    }

    /// Boots once; returns (QEMU start → answer, whole call, stop) seconds.
    /// `paused`: the way `launch` starts QEMU (`-S`, stderr to a file, its
    /// own process group), resumed as soon as the forwarding is open.
    fn boot(&self, run: usize, paused: bool) -> Result<(f64, f64, f64)> {
        let config = self.config(run);
        let started = Instant::now();
        let mut guest = if paused {
            config.spawn_with(&SpawnOptions {
                paused: true,
                stderr_log: Some(self.dir.join("qemu.log")),
            })?
        } else {
            config.spawn()?
        };
        let forwarding = guest.open_forwarding()?;
        if paused {
            guest.resume()?;
        }
        let boot = guest.wait_healthy(forwarding.port, BOOT_TIMEOUT, interrupt::flag())?;
        let wall = started.elapsed().as_secs_f64();
        let stopping = Instant::now();
        guest.stop(Duration::from_secs(5))?;
        let stop = stopping.elapsed().as_secs_f64();
        let _ = fs::remove_file(&config.console);
        Ok((boot.as_secs_f64(), wall, stop))
    }
}

fn measured(
    options: &LaunchOptions,
    domains: &mut Domains,
    purge: bool,
) -> Result<(f64, f64, f64)> {
    let started = Instant::now();
    let record = launch::launch(options, interrupt::flag())
        .with_context(|| format!("launching domain {}", options.name))?;
    let wall = started.elapsed().as_secs_f64();
    domains.launched(&options.name);
    let stop = domains.stop(&options.name, purge)?;
    Ok((record.boot_seconds, wall, stop))
}

/// Runs the whole benchmark.
pub fn run(bench: &LaunchBench) -> Result<LaunchReport> {
    if bench.rounds == 0 {
        return Err(BenchError::BadOption {
            option: "--rounds",
            problem: "must be at least 1",
        }
        .into());
    }
    let load_average_start = load_average();
    vigil_bench::require_image(&bench.image_dir)?;
    fs::create_dir_all(&bench.work_dir)
        .with_context(|| format!("creating {}", bench.work_dir.display()))?;
    let dir = tempfile::Builder::new()
        .prefix("vigil-bench-launch-")
        .tempdir_in(&bench.work_dir)
        .with_context(|| format!("creating a directory in {}", bench.work_dir.display()))?;
    let work = dir.path().canonicalize()?;

    // The bundle, sealed once.
    let key = work.join("signing.pem");
    let trust = work.join("signing.pub.pem");
    vigil_build::keys::generate(&key, &trust)?;
    let bundle_dir = work.join("bundle");
    seal(&SealOptions {
        image_dir: bench.image_dir.clone(),
        key,
        out: bundle_dir.clone(),
        service_name: "vigil-service".into(),
        service_version: env!("CARGO_PKG_VERSION").into(),
        security_version: 1,
        interval_ms: 1000,
        reaction: Reaction::Log,
        service: ServiceConfig::default(),
    })?;
    let manifest_bytes = fs::read(bundle_dir.join(MANIFEST_FILE))?;
    let manifest = Manifest::parse(&manifest_bytes)?;
    let flavor: Flavor = serde_json::from_value(serde_json::Value::String(
        manifest.provenance.flavor.clone(),
    ))
    .with_context(|| format!("unknown flavor {:?}", manifest.provenance.flavor))?;
    let image = BootImage {
        loader: bundle_dir.join(LOADER_FILE),
        image: bundle_dir.join(IMAGE_FILE),
        flavor,
    };
    let unmeasured_dir = work.join("unmeasured");
    fs::create_dir_all(&unmeasured_dir)?;
    let (accel, reason) = accel::choose(bench.accel, &image, &unmeasured_dir);
    eprintln!("vigil-bench: accelerator {} ({reason})", accel.name());
    let unmeasured = Unmeasured {
        image,
        cmdline: manifest.kernel_cmdline.clone(),
        // Both sides on the same accelerator, whatever `auto` chose.
        accel,
        dir: unmeasured_dir,
    };
    let measured_accel = match accel {
        Accel::Kvm => AccelChoice::Kvm,
        Accel::Tcg => AccelChoice::Tcg,
    };

    let state_root = work.join("state");
    let mut domains = Domains {
        state_root: state_root.clone(),
        running: Vec::new(),
    };
    let options = |name: String| LaunchOptions {
        bundle: bundle_dir.clone(),
        trust: trust.clone(),
        min_version: 0,
        name,
        state_root: state_root.clone(),
        host_port: 0,
        accel: measured_accel,
        memory_mib: MEMORY_MIB,
        cpus: 1,
        watchdog_vcpu: vigil_dom0::sched::WatchdogVcpu::default(),
        boot_timeout: BOOT_TIMEOUT,
        backend: vigil_dom0::launch::Backend::Qemu,
        ak_algorithm: vigil_tpm::AkAlgorithm::RsaSsaSha256,
    };

    let mut series = [
        Series {
            label: "unmeasured: launcher library on the bundle's files".into(),
            boot_seconds: Vec::new(),
            wall_seconds: Vec::new(),
            stop_seconds: Vec::new(),
        },
        Series {
            label: "unmeasured, QEMU started paused (-S) and resumed, as launch does".into(),
            boot_seconds: Vec::new(),
            wall_seconds: Vec::new(),
            stop_seconds: Vec::new(),
        },
        Series {
            label: "measured launch, new domain (vTPM state created)".into(),
            boot_seconds: Vec::new(),
            wall_seconds: Vec::new(),
            stop_seconds: Vec::new(),
        },
        Series {
            label: "measured relaunch (vTPM state kept)".into(),
            boot_seconds: Vec::new(),
            wall_seconds: Vec::new(),
            stop_seconds: Vec::new(),
        },
    ];
    // Round 0 is a warm-up of each (page cache, first QEMU start; it also
    // creates the relaunched domain's vTPM state); it is not recorded.
    for round in 0..=bench.rounds {
        for step in 0..series.len() {
            interrupt::check()?;
            let which = (round + step) % series.len();
            let (boot, wall, stop) = match which {
                0 => unmeasured.boot(round, false)?,
                1 => unmeasured.boot(round, true)?,
                2 => measured(&options(format!("new-{round:02}")), &mut domains, true)?,
                _ => measured(&options(RELAUNCH_NAME.into()), &mut domains, false)?,
            };
            if round == 0 {
                eprintln!(
                    "vigil-bench: warm-up, {}: {:.3} s to the first answer, {:.3} s in all",
                    series[which].label, boot, wall
                );
                continue;
            }
            eprintln!(
                "vigil-bench: round {round}, {}: {:.3} s to the first answer, {:.3} s in all",
                series[which].label, boot, wall
            );
            series[which].boot_seconds.push(boot);
            series[which].wall_seconds.push(wall);
            series[which].stop_seconds.push(stop);
        }
    }
    // Every domain is stopped; the relaunched one's vTPM state goes with
    // the temporary directory.
    drop(domains);

    let mut ratios = Vec::new();
    for measured in &series[1..] {
        for metric in ["boot", "wall"] {
            let (base, ours) = if metric == "boot" {
                (&series[0].boot_seconds, &measured.boot_seconds)
            } else {
                (&series[0].wall_seconds, &measured.wall_seconds)
            };
            let paired: Vec<f64> = ours.iter().zip(base).map(|(m, u)| m - u).collect();
            ratios.push(Ratio {
                measured: measured.label.clone(),
                metric: metric.into(),
                ratio: median(ours) / median(base),
                difference_seconds: median(ours) - median(base),
                paired_difference_seconds: median(&paired),
            });
        }
    }

    let parts = time_parts(bench, &bundle_dir, &trust, &work, &unmeasured)?;
    let bundle_bytes = [MANIFEST_FILE, SIGNATURE_FILE, IMAGE_FILE, LOADER_FILE]
        .iter()
        .map(|f| fs::metadata(bundle_dir.join(f)).map(|m| m.len()))
        .sum::<std::io::Result<u64>>()?;
    Ok(LaunchReport {
        accel: accel.name().into(),
        load_average_start,
        load_average_end: load_average(),
        image_dir: bench.image_dir.clone(),
        bundle_bytes,
        series: series.into(),
        ratios,
        parts,
    })
}

/// The launch event list's inputs, with a fixed report key.
fn launch_inputs<'a>(manifest: &'a Manifest, manifest_bytes: &'a [u8]) -> LaunchInputs<'a> {
    const REPORT_KEY: [u8; 32] = [7; 32];
    LaunchInputs {
        loader_sha256: manifest.loader.sha256.0,
        image_sha256: manifest.image.sha256.0,
        manifest: manifest_bytes,
        cmdline: &manifest.kernel_cmdline,
        report_key: &REPORT_KEY,
    }
}

fn time(seconds: &mut Vec<f64>, f: impl FnOnce() -> Result<()>) -> Result<()> {
    let started = Instant::now();
    f()?;
    seconds.push(started.elapsed().as_secs_f64());
    Ok(())
}

/// The parts of `launch::launch`, each timed on its own, `rounds` times,
/// the way `launch` does them.
fn time_parts(
    bench: &LaunchBench,
    bundle_dir: &Path,
    trust: &Path,
    work: &Path,
    unmeasured: &Unmeasured,
) -> Result<Vec<Part>> {
    let mut copy = Vec::new();
    let mut keys_read = Vec::new();
    let mut verify = Vec::new();
    let mut initrd = Vec::new();
    let mut qemu_alone = Vec::new();
    let mut qemu_then_tpm = Vec::new();
    let mut qemu_with_tpm = Vec::new();
    let mut tpm_fresh = Vec::new();
    let mut tpm_kept = Vec::new();
    let mut extends = Vec::new();
    let mut tpm_stop = Vec::new();
    let parts_dir = work.join("parts");
    let kept_tpm = parts_dir.join("kept-tpm");
    // Its state, created once.
    Swtpm::start(&kept_tpm)?.stop();
    for run in 0..bench.rounds {
        interrupt::check()?;
        let run_dir = parts_dir.join(format!("run-{run:02}"));
        fs::create_dir_all(&run_dir)?;

        // 1. The private copy: read the four files, write them; the keys;
        // the verification; the per-boot initrd (image + key trailer).
        let mut files = Vec::new();
        time(&mut copy, || {
            let boot = run_dir.join("boot");
            fs::create_dir_all(&boot)?;
            for name in [MANIFEST_FILE, SIGNATURE_FILE, IMAGE_FILE, LOADER_FILE] {
                let bytes = fs::read(bundle_dir.join(name))?;
                fs::write(boot.join(name), &bytes)?;
                files.push(bytes);
            }
            Ok(())
        })?;
        let mut keys = Vec::new();
        time(&mut keys_read, || {
            keys = launch::trusted_keys(trust)?;
            Ok(())
        })?;
        let mut manifest = None;
        time(&mut verify, || {
            let verdict = bundle::verify(
                &BundleFiles {
                    manifest: &files[0],
                    signature: &files[1],
                    image: &files[2],
                    loader: &files[3],
                },
                &keys[0],
                0,
            );
            ensure!(verdict.passed(), "the bundle does not verify");
            manifest = verdict.manifest;
            Ok(())
        })?;
        let manifest = manifest.context("no manifest")?;
        time(&mut initrd, || {
            // The launcher's own function: image, a fresh entropy seed and
            // a (fixed, for the benchmark) report key.
            per_boot::write_initrd(
                &run_dir.join(per_boot::INITRD_FILE),
                &files[2],
                Some(&[7; 32]),
            )?;
            Ok(())
        })?;

        // 2. QEMU started paused until it can be resumed (monitor up,
        // forwarding open): alone, then with the vTPM work after its
        // monitor answers (as `launch` does), then with the vTPM work
        // started at once, overlapping QEMU's start-up.
        for (order, seconds) in [
            (None, &mut qemu_alone),
            (Some(true), &mut qemu_then_tpm),
            (Some(false), &mut qemu_with_tpm),
        ] {
            let config = unmeasured.config(1000 + run);
            let tpm_dir = run_dir.join(format!("tpm-{order:?}"));
            let mut started = None;
            time(seconds, || {
                let mut guest = config.spawn_with(&SpawnOptions {
                    paused: true,
                    stderr_log: Some(run_dir.join("qemu.log")),
                })?;
                let mut vtpm = None;
                if let Some(after_monitor) = order {
                    if after_monitor {
                        drop(guest.monitor(Duration::from_secs(10))?);
                    }
                    let tpm = Swtpm::start(&tpm_dir)?;
                    extend_all(&tpm, &manifest, &files[0])?;
                    vtpm = Some(tpm);
                }
                guest.open_forwarding()?;
                started = Some((guest, vtpm));
                Ok(())
            })?;
            if let Some((guest, vtpm)) = started {
                guest.stop(Duration::from_secs(5))?;
                if let Some(vtpm) = vtpm {
                    vtpm.stop();
                }
            }
        }

        // 3. swtpm, on a fresh state directory and on a kept one, then the
        // five extends and three PCR reads.
        let mut vtpm = None;
        time(&mut tpm_fresh, || {
            vtpm = Some(Swtpm::start(&run_dir.join("tpm"))?);
            Ok(())
        })?;
        drop(vtpm);
        let mut vtpm = None;
        time(&mut tpm_kept, || {
            vtpm = Some(Swtpm::start(&kept_tpm)?);
            Ok(())
        })?;
        let vtpm = vtpm.context("no vTPM")?;
        time(&mut extends, || extend_all(&vtpm, &manifest, &files[0]))?;
        time(&mut tpm_stop, || {
            vtpm.stop();
            Ok(())
        })?;
        fs::remove_dir_all(&run_dir)?;
    }
    Ok(vec![
        Part {
            label: "copy: read the 4 bundle files, write the private copy".into(),
            place: "before QEMU starts".into(),
            seconds: copy,
        },
        Part {
            label: "read the trusted key(s)".into(),
            place: "before QEMU starts".into(),
            seconds: keys_read,
        },
        Part {
            label: "`bundle::verify` on the bytes in memory".into(),
            place: "before QEMU starts".into(),
            seconds: verify,
        },
        Part {
            label: "write the per-boot initrd (image + key and entropy trailer)".into(),
            place: "before QEMU starts".into(),
            seconds: initrd,
        },
        Part {
            label: "QEMU started paused → monitor up, forwarding open".into(),
            place: "boot time before `cont`, without vTPM".into(),
            seconds: qemu_alone,
        },
        Part {
            label: "the same, with swtpm (fresh) + extends once the monitor answers".into(),
            place: "boot time before `cont`, vTPM work serialized after the monitor (before 2026-11-23)".into(),
            seconds: qemu_then_tpm,
        },
        Part {
            label: "the same, with swtpm (fresh) + extends started at QEMU's spawn".into(),
            place: "boot time before `cont`, vTPM work overlapped, as `launch` does it".into(),
            seconds: qemu_with_tpm,
        },
        Part {
            label: "`Swtpm::start`, fresh state directory".into(),
            place: "after QEMU's start, new domain".into(),
            seconds: tpm_fresh,
        },
        Part {
            label: "`Swtpm::start`, kept state directory".into(),
            place: "after QEMU's start, relaunch".into(),
            seconds: tpm_kept,
        },
        Part {
            label: "5 extends + 3 PCR reads".into(),
            place: "after QEMU's start".into(),
            seconds: extends,
        },
        Part {
            label: "`Swtpm::stop`".into(),
            place: "not in launch (`stop` does it)".into(),
            seconds: tpm_stop,
        },
    ])
}

/// The launch event list extended into `vtpm`, then PCR 9, 12 and 15 read.
fn extend_all(vtpm: &Swtpm, manifest: &Manifest, manifest_bytes: &[u8]) -> Result<()> {
    let mut tpm = Tpm::connect(vtpm.socket());
    for event in launch_inputs(manifest, manifest_bytes).events() {
        tpm.extend(event.spec.pcr, &event.digest)?;
    }
    for pcr in [9u8, 12, 15] {
        tpm.read_pcr(pcr)?;
    }
    Ok(())
}

fn ms(seconds: f64) -> String {
    format!("{:.1}", seconds * 1e3)
}

fn spread(values: &[f64]) -> String {
    format!(
        "{} ({}–{})",
        ms(median(values)),
        ms(min(values)),
        ms(max(values))
    )
}

fn part_median(report: &LaunchReport, prefix: &str) -> f64 {
    report
        .parts
        .iter()
        .find(|p| p.label.starts_with(prefix))
        .map_or(f64::NAN, |p| median(&p.seconds))
}

/// The report as Markdown.
pub fn markdown(report: &LaunchReport, command: &str, machine: &str) -> String {
    let mut text = String::new();
    text.push_str("# Launch benchmark: measured launch beside an unmeasured boot\n\n");
    text.push_str(&format!("Command: `{command}`\n\n{machine}\n\n"));
    let rounds = report.series.first().map_or(0, |s| s.boot_seconds.len());
    text.push_str(&format!(
        "Accelerator: {}. Load average at the start: {}; at the end: {}. \
         {rounds} rounds after one warm-up round; each round boots the same sealed \
         bundle ({} bytes) all four ways, the order rotating every round.\n\n",
        report.accel.to_uppercase(),
        report.load_average_start,
        report.load_average_end,
        report.bundle_bytes
    ));
    text.push_str(
        "- **unmeasured**: `QemuConfig::spawn` + `open_forwarding` + `wait_healthy` \
         on the bundle's own `vigil-image` and `vigil-loader`, with the manifest's \
         kernel command line; no copy, no verification, no vTPM. This is the baseline.\n\
         - **unmeasured, paused**: the same, but QEMU started paused (`-S`, stderr to \
         a file) and resumed (`cont`) once the forwarding is open, as `launch` does: \
         separates the cost of that sequence from the cost of measurement.\n\
         - **measured, new domain**: `launch::launch` under a fresh name and state \
         directory (swtpm state created from scratch), then `launch::stop` with purge.\n\
         - **measured relaunch**: `launch::launch` of one domain whose vTPM state is \
         kept (`launch::stop` without purge between).\n\n\
         *Boot* is QEMU's start to the first `/healthz` answer (`wait_healthy`, \
         `DomainRecord::boot_seconds`). *Whole call* is from the call to its return: \
         for the measured launch it includes the copy, the verification and the \
         per-boot initrd before QEMU starts, and, for both, `wait_healthy` letting its other probes finish after \
         the first answer. Times are ms, median (min–max); ratios are of medians, \
         measured / unmeasured (target: overhead < 5 %, ratio < 1.05); the paired \
         difference is the median of the per-round differences. *Call − boot* (median \
         per run) is the part of the call outside QEMU's start → first answer: before \
         QEMU starts (for `launch`: directories, copy, keys, verify, per-boot initrd) and after the \
         answer (the probes finishing; for `launch`: the domain record).\n\n",
    );
    text.push_str("| | boot ms | ratio | Δ (paired Δ) ms | whole call ms | ratio | Δ (paired Δ) ms | call − boot ms | stop ms |\n");
    text.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for s in &report.series {
        let cells = |metric: &str| {
            report
                .ratios
                .iter()
                .find(|r| r.measured == s.label && r.metric == metric)
                .map_or(("1.000".to_owned(), "–".to_owned()), |r| {
                    (
                        format!("**{:.3}**", r.ratio),
                        format!(
                            "{:+.1} ({:+.1})",
                            r.difference_seconds * 1e3,
                            r.paired_difference_seconds * 1e3
                        ),
                    )
                })
        };
        let outside: Vec<f64> = s
            .wall_seconds
            .iter()
            .zip(&s.boot_seconds)
            .map(|(wall, boot)| wall - boot)
            .collect();
        let (boot_ratio, boot_delta) = cells("boot");
        let (wall_ratio, wall_delta) = cells("wall");
        text.push_str(&format!(
            "| {} | {} | {boot_ratio} | {boot_delta} | {} | {wall_ratio} | {wall_delta} | {} | {} |\n",
            s.label,
            spread(&s.boot_seconds),
            spread(&s.wall_seconds),
            ms(median(&outside)),
            ms(median(&s.stop_seconds)),
        ));
    }

    text.push_str("\n## Target: overhead < 5 %\n\n");
    if let Some(base) = report.series.first() {
        let n = base.boot_seconds.len() as f64;
        let noise = |values: &[f64]| {
            // The standard error of a difference of two medians of `n`
            // normal samples: √2 · 1.2533 · σ / √n.
            std::f64::consts::SQRT_2 * 1.2533 * std_dev(values) / n.sqrt()
        };
        text.push_str(&format!(
            "Noise: the baseline's boots spread {}–{} ms (σ {} ms). With {} rounds, \
             a difference of two medians is known to about ±{} ms ({:.1} % of the \
             baseline) for the boot and ±{} ms ({:.1} %) for the whole call (one \
             standard error, from the baseline's σ): differences smaller than that \
             are not resolved by this run, whatever their sign.\n\n",
            ms(min(&base.boot_seconds)),
            ms(max(&base.boot_seconds)),
            ms(std_dev(&base.boot_seconds)),
            base.boot_seconds.len(),
            ms(noise(&base.boot_seconds)),
            noise(&base.boot_seconds) / median(&base.boot_seconds) * 100.0,
            ms(noise(&base.wall_seconds)),
            noise(&base.wall_seconds) / median(&base.wall_seconds) * 100.0,
        ));
    }
    for r in report
        .ratios
        .iter()
        .filter(|r| r.measured.starts_with("measured"))
    {
        let overhead = (r.ratio - 1.0) * 100.0;
        let verdict = if overhead < 5.0 {
            "met".to_owned()
        } else {
            format!("**not met**, by {:.1} points", overhead - 5.0)
        };
        text.push_str(&format!(
            "- {}, {}: {overhead:+.1} % ({:+.1} ms): {verdict}.\n",
            r.measured,
            if r.metric == "boot" {
                "boot"
            } else {
                "whole call"
            },
            r.difference_seconds * 1e3
        ));
    }

    text.push_str("\n## Where the measured launch's time goes\n\n");
    text.push_str(&format!(
        "Each part timed on its own, {} runs, the way `launch::launch` does it \
         (the same files, the same calls), outside the launches above.\n\n",
        report.parts.first().map_or(0, |p| p.seconds.len())
    ));
    text.push_str("| part | where | ms, median (min–max) |\n|---|---|---:|\n");
    for p in &report.parts {
        text.push_str(&format!(
            "| {} | {} | {} |\n",
            p.label,
            p.place,
            spread(&p.seconds)
        ));
    }
    let serial = part_median(report, "copy")
        + part_median(report, "read the trusted")
        + part_median(report, "`bundle::verify`")
        + part_median(report, "write the per-boot");
    let alone = part_median(report, "QEMU started paused");
    let after = part_median(report, "the same, with swtpm (fresh) + extends once");
    let overlapped = part_median(report, "the same, with swtpm (fresh) + extends started");
    let tpm_work = part_median(report, "`Swtpm::start`, fresh") + part_median(report, "5 extends");
    text.push_str(&format!(
        "\nBefore QEMU starts, copy + keys + verify + per-boot initrd take {} ms \
         in series: that is in the whole call only, not in the boot time. After \
         QEMU's start, the vTPM work (swtpm start + extends + PCR reads) takes {} ms \
         timed alone. QEMU's paused start takes {} ms until it can be resumed; with \
         the vTPM work after its monitor answers (the old order), {} ms \
         ({:+.1} ms of boot time); with the vTPM work started at QEMU's spawn, \
         overlapping its start-up as `launch` does, {} ms ({:+.1} ms).\n",
        ms(serial),
        ms(tpm_work),
        ms(alone),
        ms(after),
        (after - alone) * 1e3,
        ms(overlapped),
        (overlapped - alone) * 1e3,
    ));
    if let [plain, paused, ..] = report.series.as_slice() {
        for measured in &report.series[2..] {
            text.push_str(&format!(
                "\n{}: boot {:+.1} ms and whole call {:+.1} ms beside the paused \
                 unmeasured boot (medians), which isolates copy, verify and vTPM \
                 from the `-S` + `cont` sequence (itself {:+.1} ms boot, {:+.1} ms \
                 whole call beside the plain boot).\n",
                measured.label,
                (median(&measured.boot_seconds) - median(&paused.boot_seconds)) * 1e3,
                (median(&measured.wall_seconds) - median(&paused.wall_seconds)) * 1e3,
                (median(&paused.boot_seconds) - median(&plain.boot_seconds)) * 1e3,
                (median(&paused.wall_seconds) - median(&plain.wall_seconds)) * 1e3,
            ));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_comes_from_the_command_line() {
        assert_eq!(
            vigil_dom0::launch::service_port("-- --port=9090 --log=warn"),
            9090
        );
        assert_eq!(
            vigil_dom0::launch::service_port("--"),
            ServiceConfig::default().port
        );
    }
}
