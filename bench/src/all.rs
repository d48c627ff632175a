//! `vigil-bench all`: every comparison in one run, one report.
//!
//! It runs the existing benchmarks one after the other, each interleaving
//! its own sides (so that host noise hits both sides of every ratio alike):
//! 1. the unikernel beside the same service in a Linux guest under the same
//!    QEMU, for both NICs ([`vigil_bench::http`]);
//! 2. sealing's SHA-256 beside `openssl dgst -sha256` ([`crate::seal`]);
//! 3. the measured launch beside an unmeasured boot ([`crate::launch`]);
//! 4. the watchdog on beside off, at several intervals, with detection
//!    trials at each ([`crate::watchdog`]).
//!
//! Then it writes the raw results (`report.json`), the Markdown summary
//! (`report.md`) and SVG plots (`plots/`), all at once and only if every
//! part succeeded. The machine and the load average before and after each
//! part go into the report. `--quick` runs every part briefly (a smoke run).

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use vigil_bench::error::BenchError;
use vigil_bench::http::{self, HttpBench, HttpReport, Latency, Request, SidesOptions};
use vigil_bench::linux::BaselineInfo;
use vigil_bench::stats::{self, load_average, median};
use vigil_bench::{Machine, interrupt};
use vigil_core::v1::config::ServiceConfig;
use vigil_dom0::accel::AccelChoice;
use vigil_dom0::qemu::Accel;
use vigil_dom0::sched::WatchdogVcpu;

use crate::attest::{self, AttestBench, AttestReport};
use crate::launch::{self, LaunchBench, LaunchReport};
use crate::plot;
use crate::seal::{self, SealBench, SealReport};
use crate::watchdog::{self, WatchdogBench, WatchdogReport};

/// Guest RAM, MiB (vigil-dom0's default).
const MEMORY_MIB: u32 = 512;

/// The programs a full run needs, with the Debian package of each: checked
/// before anything starts, so that a missing one costs seconds, not the
/// half hour before the part that needs it.
const TOOLS: [(&str, &str); 12] = [
    (vigil_dom0::qemu::QEMU, vigil_dom0::qemu::QEMU_PACKAGE),
    ("wrk", "wrk"),
    ("openssl", "openssl"),
    ("swtpm", "swtpm"),
    ("curl", "curl"),
    ("gdb", "gdb"),
    ("chrt", "util-linux"),
    ("apt-get", "apt"),
    ("apt-cache", "apt"),
    ("dpkg-deb", "dpkg"),
    ("tar", "tar"),
    ("rustup", "rustup"),
];

/// Quick or full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Every part, briefly: a smoke run (CI).
    Quick,
    /// The numbers the project quotes.
    Full,
}

/// How much of each part a mode runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    /// Boot-only rounds of the guest comparison.
    pub boots: usize,
    /// Load rounds of the guest comparison.
    pub rounds: usize,
    /// Seconds per load run.
    pub seconds: u32,
    /// Connection counts.
    pub connections: Vec<u32>,
    /// Sealing: runs on the image, size of the large file (MiB), runs on it.
    pub seal: (usize, u64, usize),
    /// Launch rounds.
    pub launch_rounds: usize,
    /// Watchdog intervals, ms.
    pub intervals: Vec<u32>,
    /// Watchdog on/off rounds, seconds per run, detection trials per interval.
    pub watchdog: (usize, u32, usize),
    /// Challenge → verdict rounds of each side.
    #[serde(default)]
    pub attest_rounds: usize,
    /// Back-to-back runs of each guest after the guest comparison's rounds.
    #[serde(default)]
    pub successive: usize,
}

impl Plan {
    /// The plan of `mode`.
    pub fn of(mode: Mode) -> Self {
        match mode {
            Mode::Quick => Self {
                boots: 1,
                rounds: 1,
                seconds: 3,
                connections: vec![4, 64],
                seal: (3, 64, 2),
                launch_rounds: 2,
                intervals: vec![250, 1000],
                watchdog: (1, 3, 2),
                attest_rounds: 10,
                successive: 2,
            },
            Mode::Full => Self {
                boots: 10,
                rounds: 3,
                seconds: 10,
                connections: vec![4, 64],
                seal: (21, 1024, 5),
                launch_rounds: 11,
                intervals: vec![100, 1000, 10_000],
                watchdog: (6, 10, 10),
                attest_rounds: 200,
                successive: 3,
            },
        }
    }
}

/// What to run, and where.
#[derive(Clone, Debug)]
pub struct AllBench {
    /// Quick or full.
    pub mode: Mode,
    /// The `hvm` image (RTL8139).
    pub hvm: PathBuf,
    /// The `virtio` image.
    pub virtio: PathBuf,
    /// The Linux baseline's cache.
    pub linux_cache: PathBuf,
    /// The Vigil checkout.
    pub project_dir: PathBuf,
    /// Where temporary directories go.
    pub work_dir: PathBuf,
    /// The accelerator (`auto` probes KVM with the image).
    pub accel: AccelChoice,
}

/// One part of the run: how long it took and the host's load around it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Part {
    /// What it measured.
    pub name: String,
    /// Wall time, seconds.
    pub seconds: f64,
    /// /proc/loadavg before.
    pub load_before: String,
    /// /proc/loadavg after.
    pub load_after: String,
}

/// Everything one run measured.
#[derive(Debug, Serialize, Deserialize)]
pub struct AllReport {
    /// Quick or full.
    pub mode: Mode,
    /// What the mode ran.
    pub plan: Plan,
    /// When it started, seconds since the Unix epoch.
    pub started_unix: u64,
    /// How long it took, seconds.
    pub seconds: f64,
    /// The machine.
    pub machine: Machine,
    /// /proc/loadavg at the start and at the end.
    pub load_average: (String, String),
    /// The parts, in order.
    pub parts: Vec<Part>,
    /// The Linux guest's ingredients.
    pub linux: Option<BaselineInfo>,
    /// 1. The guest comparison.
    pub http: HttpReport,
    /// 2. Sealing.
    pub seal: SealReport,
    /// 3. Launch.
    pub launch: LaunchReport,
    /// 4. The watchdog, one report per interval.
    pub watchdog: Vec<WatchdogReport>,
    /// 5. Challenge → verdict (absent from runs made before it existed).
    #[serde(default)]
    pub attest: Option<AttestReport>,
}

/// Fails with the first missing program, named with its package.
fn preflight() -> Result<()> {
    for (program, package) in TOOLS {
        if which::which(program).is_err() {
            return Err(BenchError::MissingTool { program, package }.into());
        }
    }
    Ok(())
}

/// Runs `body` as part `name` of `parts` (`index` of `count`), with
/// progress lines and the load around it.
fn part<T>(
    parts: &mut Vec<Part>,
    count: usize,
    name: &str,
    body: impl FnOnce() -> Result<T>,
) -> Result<T> {
    interrupt::check()?;
    let load_before = load_average();
    eprintln!(
        "\nvigil-bench: ==> [{}/{count}] {name} (load average {load_before})",
        parts.len() + 1
    );
    let started = Instant::now();
    let value = body().with_context(|| name.to_owned())?;
    let part = Part {
        name: name.to_owned(),
        seconds: started.elapsed().as_secs_f64(),
        load_before,
        load_after: load_average(),
    };
    eprintln!(
        "vigil-bench: <== {name}: {:.0} s (load average {})",
        part.seconds, part.load_after
    );
    parts.push(part);
    Ok(value)
}

/// Runs everything.
pub fn run(bench: &AllBench) -> Result<AllReport> {
    preflight()?;
    for dir in [&bench.hvm, &bench.virtio] {
        vigil_bench::require_image(dir)?;
    }
    let plan = Plan::of(bench.mode);
    let started = Instant::now();
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let load_start = load_average();
    let machine = Machine::probe();
    eprintln!("vigil-bench: {}", machine.describe());
    let count = 4 + plan.intervals.len();
    let mut parts = Vec::new();
    let service = ServiceConfig::default();

    let (http_report, linux) = part(
        &mut parts,
        count,
        "the unikernel beside the Linux guest (RTL8139 and virtio-net)",
        || {
            let sides = http::prepare_sides(&SidesOptions {
                image_dirs: vec![bench.hvm.clone(), bench.virtio.clone()],
                linux: true,
                linux_cache: bench.linux_cache.clone(),
                project_dir: bench.project_dir.clone(),
                accel: bench.accel,
                cpus: vigil_dom0::launch::DEFAULT_VCPUS,
                memory_mib: MEMORY_MIB,
                watchdog_vcpu: WatchdogVcpu::Idle,
                work_dir: bench.work_dir.clone(),
                service,
            })?;
            let report = http::run(&HttpBench {
                targets: sides.targets.clone(),
                settings: sides.settings,
                accel_reason: sides.accel_reason.clone(),
                service,
                boots: plan.boots,
                rounds: plan.rounds,
                connections: plan.connections.clone(),
                seconds: plan.seconds,
                threads: 2,
                requests: Request::ALL.to_vec(),
                successive: plan.successive,
                host_service: None,
                work_dir: bench.work_dir.clone(),
            })?;
            Ok((report, sides.linux.clone()))
        },
    )?;
    // The other parts use the accelerator the guest comparison found.
    let accel = if http_report.accel == Accel::Kvm.name() {
        AccelChoice::Kvm
    } else {
        AccelChoice::Tcg
    };

    let seal_report = part(&mut parts, count, "sealing beside openssl dgst", || {
        seal::run(&SealBench {
            image_dir: bench.hvm.clone(),
            runs: plan.seal.0,
            large_mib: plan.seal.1,
            large_runs: plan.seal.2,
            work_dir: bench.work_dir.clone(),
        })
    })?;
    let launch_report = part(
        &mut parts,
        count,
        "measured launch beside unmeasured boot",
        || {
            launch::run(&LaunchBench {
                image_dir: bench.hvm.clone(),
                rounds: plan.launch_rounds,
                accel,
                work_dir: bench.work_dir.clone(),
            })
        },
    )?;
    let mut watchdog_reports = Vec::new();
    for &interval_ms in &plan.intervals {
        let name = format!("watchdog every {interval_ms} ms beside off");
        watchdog_reports.push(part(&mut parts, count, &name, || {
            watchdog::run(&WatchdogBench {
                image_dir: bench.hvm.clone(),
                rounds: plan.watchdog.0,
                seconds: plan.watchdog.1,
                connections: 4,
                trials: plan.watchdog.2,
                soak_seconds: 0,
                work_dir: bench.work_dir.clone(),
                vcpus: vec![vigil_dom0::launch::DEFAULT_VCPUS],
                watchdog_vcpu: WatchdogVcpu::Idle,
                interval_ms,
                idle_scans: if bench.mode == Mode::Quick { 3 } else { 10 },
                accel,
            })
        })?);
    }
    let attest_report = part(
        &mut parts,
        count,
        "challenge → verdict beside the tpm2-tools flow",
        || {
            attest::run(&AttestBench {
                image_dir: bench.hvm.clone(),
                rounds: plan.attest_rounds,
                work_dir: bench.work_dir.clone(),
            })
        },
    )?;
    Ok(AllReport {
        mode: bench.mode,
        plan,
        started_unix,
        seconds: started.elapsed().as_secs_f64(),
        machine,
        load_average: (load_start, load_average()),
        parts,
        linux,
        http: http_report,
        seal: seal_report,
        launch: launch_report,
        watchdog: watchdog_reports,
        attest: Some(attest_report),
    })
}

/// The plots: file name, title, and the SVG.
pub fn plots(report: &AllReport) -> Result<Vec<(&'static str, &'static str, String)>> {
    Ok(vec![
        (
            "boot.svg",
            "Boot time, every boot",
            plot::boot(&report.http)?,
        ),
        (
            "throughput.svg",
            "Requests/s, median and min–max of the rounds",
            plot::throughput(&report.http)?,
        ),
        (
            "latency-cdf.svg",
            "Latency distributions",
            plot::latency_cdf(&report.http)?,
        ),
        (
            "footprint.svg",
            "Disk and memory footprint",
            plot::footprint(&report.http)?,
        ),
        (
            "watchdog.svg",
            "The watchdog's cost and detection latency against its interval",
            plot::watchdog(&report.watchdog)?,
        ),
    ])
}

/// Writes `report.json`, `report.md` and `plots/*.svg` into `out_dir`, and
/// prints the Markdown.
pub fn publish(report: &AllReport, command: &str, out_dir: &Path) -> Result<()> {
    let plots = plots(report)?;
    let markdown = markdown(report, command, &plots);
    let plot_dir = out_dir.join("plots");
    std::fs::create_dir_all(&plot_dir)
        .with_context(|| format!("creating {}", plot_dir.display()))?;
    for (file, _, svg) in &plots {
        let path = plot_dir.join(file);
        std::fs::write(&path, svg).with_context(|| format!("writing {}", path.display()))?;
    }
    let json = serde_json::json!({ "command": command, "report": report });
    let json_path = out_dir.join("report.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    let md_path = out_dir.join("report.md");
    std::fs::write(&md_path, &markdown)
        .with_context(|| format!("writing {}", md_path.display()))?;
    vigil_cli::print(&markdown).context("writing the report to stdout")?;
    eprintln!(
        "vigil-bench: wrote {}, {} and {} plots in {}",
        md_path.display(),
        json_path.display(),
        plots.len(),
        plot_dir.display()
    );
    Ok(())
}

/// Reads a `report.json` back (for `--render`).
pub fn read(path: &Path) -> Result<(String, AllReport)> {
    let bad = |problem: String| BenchError::BadFile {
        path: path.to_owned(),
        problem,
    };
    let bytes = std::fs::read(path).map_err(|err| bad(format!("cannot be read: {err}")))?;
    let saved: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|err| bad(format!("not JSON: {err}")))?;
    let command = saved["command"].as_str().unwrap_or_default().to_owned();
    let report = serde_json::from_value(saved["report"].clone())
        .map_err(|err| bad(format!("not a `vigil-bench all` report: {err}")))?;
    Ok((command, report))
}

/// One line of the summary.
#[derive(Debug)]
struct Row {
    what: String,
    vigil: String,
    baseline: String,
    ratio: String,
    target: String,
    /// `None`: no target, or not measured.
    met: Option<bool>,
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "**not met**",
        None => "–",
    }
}

/// The unikernel beside the Linux guest, per NIC.
fn guest_rows(report: &HttpReport) -> Vec<Row> {
    let mut rows = Vec::new();
    for (nic, vigil, linux) in http::pairs(report) {
        let (v, l) = (median(&vigil.boot_seconds), median(&linux.boot_seconds));
        rows.push(Row {
            what: format!("boot to first answer, {}", nic.name()),
            vigil: format!("{v:.2} s"),
            baseline: format!("{l:.2} s"),
            ratio: format!(
                "{:.1}× sooner (paired {}×)",
                l / v,
                http::ratio_text(&linux.boot_seconds, &vigil.boot_seconds)
            ),
            target: "≥ 20× sooner".into(),
            met: Some(l / v >= 20.0),
        });
        for (label, pick) in [
            ("QEMU RSS after boot", 0usize),
            ("QEMU RSS under load (peak)", 1usize),
        ] {
            let rss = |t: &http::TargetReport| {
                if pick == 0 {
                    median(&t.rss_after_boot_mib)
                } else {
                    stats::max(&http::rss_peaks(report, &t.name))
                }
            };
            let (v, l) = (rss(vigil), rss(linux));
            rows.push(Row {
                what: format!("{label}, {}", nic.name()),
                vigil: format!("{v:.0} MiB"),
                baseline: format!("{l:.0} MiB"),
                ratio: format!("{:.2}", v / l),
                target: "less".into(),
                met: Some(v < l),
            });
        }
        let disk = |t: &http::TargetReport| t.files.iter().map(|(_, b)| *b as f64).sum::<f64>();
        rows.push(Row {
            what: format!("on disk (kernel + initrd), {}", nic.name()),
            vigil: format!("{:.1} MB", disk(vigil) / 1e6),
            baseline: format!("{:.1} MB", disk(linux) / 1e6),
            ratio: format!("{:.2}", disk(vigil) / disk(linux)),
            target: "–".into(),
            met: None,
        });
        for (connections, request) in http::loads(report) {
            let vr = http::runs_of(report, &vigil.name, request, connections);
            let lr = http::runs_of(report, &linux.name, request, connections);
            let (va, la) = (http::rates(&vr), http::rates(&lr));
            let (ratio, _, _) = stats::paired_ratio(&va, &la);
            let (vl, ll) = (Latency::of(&vr), Latency::of(&lr));
            rows.push(Row {
                what: format!(
                    "req/s and p99, {} c={connections}, {}",
                    request.label(),
                    nic.name()
                ),
                vigil: format!("{:.0} /s, p99 {:.1} ms", median(&va), vl.p99_ms),
                baseline: format!("{:.0} /s, p99 {:.1} ms", median(&la), ll.p99_ms),
                ratio: http::ratio_text(&va, &la),
                target: "≥ 1.5×, lower p99".into(),
                met: Some(ratio >= 1.5 && vl.p99_ms < ll.p99_ms),
            });
        }
    }
    rows
}

/// What a failure's console says: the kernel's panic line and its message
/// if there is one, else the first line.
fn panic_of(what: &str) -> String {
    let what = http::strip_ansi(what);
    let lines: Vec<&str> = what.lines().collect();
    match lines
        .iter()
        .position(|l| l.contains("PANIC") || l.contains("panicked"))
    {
        Some(i) => lines[i..(i + 2).min(lines.len())]
            .iter()
            .map(|l| l.trim())
            .collect::<Vec<_>>()
            .join(" "),
        None => lines.first().map_or(String::new(), |l| l.trim().to_owned()),
    }
}

/// The guest comparison in a few plain sentences: the ranges of the
/// throughput ratios and of the tails, per connection count.
fn narrative(report: &HttpReport) -> String {
    let mut text = String::new();
    let loads = http::loads(report);
    let mut connections: Vec<u32> = loads.iter().map(|(c, _)| *c).collect();
    connections.dedup();
    for c in connections {
        let (mut ratios, mut vigil_p99, mut linux_p99, mut vigil_over, mut linux_over) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (_, vigil, linux) in http::pairs(report) {
            for &(_, request) in loads.iter().filter(|(lc, _)| *lc == c) {
                let vr = http::runs_of(report, &vigil.name, request, c);
                let lr = http::runs_of(report, &linux.name, request, c);
                ratios.push(stats::paired_ratio(&http::rates(&vr), &http::rates(&lr)).0);
                let (vl, ll) = (Latency::of(&vr), Latency::of(&lr));
                vigil_p99.push(vl.p99_ms);
                linux_p99.push(ll.p99_ms);
                vigil_over.push(vl.over_threshold * 100.0);
                linux_over.push(ll.over_threshold * 100.0);
            }
        }
        if ratios.is_empty() {
            continue;
        }
        text += &format!(
            "- **At {c} connections the unikernel serves {:.2}–{:.2}× the Linux guest's \
             requests/s** (both NICs, all three requests; the target is ≥ 1.5×). Its p99 is \
             {:.0}–{:.0} ms against {:.0}–{:.0} ms, and {:.1}–{:.1} % of its requests take \
             over {} ms against {:.1}–{:.1} %.\n",
            stats::min(&ratios),
            stats::max(&ratios),
            stats::min(&vigil_p99),
            stats::max(&vigil_p99),
            stats::min(&linux_p99),
            stats::max(&linux_p99),
            stats::min(&vigil_over),
            stats::max(&vigil_over),
            report.latency_threshold_ms,
            stats::min(&linux_over),
            stats::max(&linux_over),
        );
    }
    if !text.is_empty() {
        text += "- Throughput and latency are the network path's (issue 16): this \
                 benchmark measures whatever image is built.\n\nEvery row that misses \
                 its target:\n\n";
    }
    text
}

/// Sealing, launch, watchdog.
fn vigil_rows(report: &AllReport) -> Vec<Row> {
    let mut rows = Vec::new();
    let seal = report
        .seal
        .large
        .as_ref()
        .or(report.seal.image_comparisons.first());
    if let Some(c) = seal {
        rows.push(Row {
            what: format!("sealing's SHA-256, {:.0} MB", c.bytes as f64 / 1e6),
            vigil: format!("{:.0} MB/s", c.ours_mb_per_s),
            baseline: format!("openssl {:.0} MB/s", c.openssl_mb_per_s),
            ratio: format!("{:.2}", c.ratio),
            target: "≥ 0.9".into(),
            met: Some(c.ratio >= 0.9),
        });
    }
    for r in report
        .launch
        .ratios
        .iter()
        .filter(|r| r.measured.starts_with("measured"))
    {
        rows.push(Row {
            what: format!(
                "{}, {}",
                r.measured,
                if r.metric == "boot" {
                    "boot"
                } else {
                    "whole call"
                }
            ),
            vigil: format!("{:+.1} ms", r.difference_seconds * 1e3),
            baseline: "unmeasured boot".into(),
            ratio: format!("{:.3}", r.ratio),
            target: "< 1.05".into(),
            met: Some(r.ratio < 1.05),
        });
    }
    for w in &report.watchdog {
        if let Some(cost) = watchdog::cost(w) {
            let (in_guest, met) = match cost.in_guest_loss {
                Some(loss) => (
                    format!("in guest {}", with_ci(loss, 2, " %")),
                    // Without an interval (one run) there is nothing to judge.
                    loss.2.is_finite().then_some(loss.2 < 1.0),
                ),
                None => ("in guest: no check under load".into(), None),
            };
            rows.push(Row {
                what: format!(
                    "watchdog every {} ms: throughput loss, {} vCPUs",
                    w.interval_ms, cost.vcpus
                ),
                vigil: in_guest,
                baseline: "watchdog off".into(),
                ratio: format!("on/off {}", with_ci(cost.paired_loss, 1, " %")),
                target: if w.interval_ms == watchdog::INTERVAL_MS {
                    "< 1 % (CI)".into()
                } else {
                    "–".into()
                },
                met: if w.interval_ms == watchdog::INTERVAL_MS {
                    met
                } else {
                    None
                },
            });
        }
        if !w.detection_ms.is_empty() {
            let bound = 2.0 * f64::from(w.interval_ms);
            let within = w.detection_ms.iter().filter(|&&ms| ms <= bound).count();
            rows.push(Row {
                what: format!("watchdog every {} ms: detection", w.interval_ms),
                vigil: format!(
                    "median {:.0} ms, max {:.0} ms",
                    median(&w.detection_ms),
                    stats::max(&w.detection_ms)
                ),
                baseline: "–".into(),
                ratio: format!("{within} of {} within 2 intervals", w.detection_ms.len()),
                target: format!("≤ {bound:.0} ms"),
                met: Some(within == w.detection_ms.len()),
            });
        }
    }
    match &report.attest {
        Some(a) => {
            let (vigil, cli) = (median(&a.vigil.ms), median(&a.cli.ms));
            rows.push(Row {
                what: "challenge → verdict with swtpm (median)".into(),
                vigil: format!("{vigil:.1} ms"),
                baseline: format!("tpm2-tools CLI flow {cli:.1} ms"),
                ratio: format!("{:.1}× faster", cli / vigil),
                target: "< 50 ms, ≥ 3× faster".into(),
                met: Some(vigil < 50.0 && cli / vigil >= 3.0),
            });
        }
        None => rows.push(Row {
            what: "challenge → verdict with swtpm".into(),
            vigil: "not measured".into(),
            baseline: "tpm2-tools CLI flow".into(),
            ratio: "–".into(),
            target: "< 50 ms median".into(),
            met: None,
        }),
    }
    rows
}

/// `value unit (low … high)`, or without the interval where it is unknown.
fn with_ci((value, low, high): (f64, f64, f64), digits: usize, unit: &str) -> String {
    if low.is_finite() && high.is_finite() {
        format!("{value:.digits$}{unit} ({low:.digits$} … {high:.digits$})")
    } else {
        format!("{value:.digits$}{unit}")
    }
}

fn table(rows: &[Row]) -> String {
    let mut text = String::from(
        "| comparison | Vigil | baseline | ratio | target | verdict |\n|---|---:|---:|---:|---|---|\n",
    );
    for r in rows {
        text += &format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.what,
            r.vigil,
            r.baseline,
            r.ratio,
            r.target,
            verdict(r.met)
        );
    }
    text
}

/// A benchmark's own Markdown, to sit inside this report: its title,
/// command and machine lines dropped (this report has them), its headings
/// moved `shift` levels down.
pub fn embed(markdown: &str, shift: usize) -> String {
    let mut out = String::new();
    let mut lines = markdown.lines().peekable();
    while let Some(line) = lines.next() {
        if line.starts_with("# ") || line.starts_with("Command: `") || line.starts_with("Machine: ")
        {
            if lines.peek().is_some_and(|next| next.is_empty()) {
                lines.next();
            }
            continue;
        }
        if line.starts_with('#') {
            out += &"#".repeat(shift);
        }
        out += line;
        out.push('\n');
    }
    // The dropped lines leave runs of blank lines.
    while out.contains("\n\n\n") {
        out = out.replace("\n\n\n", "\n\n");
    }
    out.trim_start_matches('\n').to_owned()
}

fn time_of(unix: u64) -> String {
    // Days since the epoch to a civil date (Howard Hinnant's algorithm).
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60
    )
}

/// The whole report.
pub fn markdown(
    report: &AllReport,
    command: &str,
    plots: &[(&'static str, &'static str, String)],
) -> String {
    let http = &report.http;
    let mut text = String::from("# Vigil's costs, measured side by side\n\n");
    text += &format!(
        "Command: `{command}`: {}, started {}, {:.0} min.\n\n{}\n\n\
         Accelerator: **{}** for every guest ({}). Load average {} at the start, {} at \
         the end.\n\n",
        match report.mode {
            Mode::Quick => "quick mode (a smoke run: not numbers to quote)",
            Mode::Full => "full mode",
        },
        time_of(report.started_unix),
        report.seconds / 60.0,
        report.machine.describe(),
        http.accel.to_uppercase(),
        http.accel_reason,
        report.load_average.0,
        report.load_average.1,
    );
    text += "**The host was shared.** This machine has two cores, and other \
             work (other engineers' builds and guests) ran on it during the run. \
             Every part below is interleaved, so both sides of each ratio saw the \
             same load, and the load average is recorded with each part and each \
             load run (in report.json); absolute numbers move with it, ratios much \
             less.\n\n\
             | part | minutes | load average before | after |\n|---|---:|---|---|\n";
    for p in &report.parts {
        text += &format!(
            "| {} | {:.1} | {} | {} |\n",
            p.name,
            p.seconds / 60.0,
            p.load_before,
            p.load_after
        );
    }

    let guest = guest_rows(http);
    let vigil = vigil_rows(report);
    text += "\n## Summary\n\n### The unikernel beside the same service in a Linux guest\n\n";
    text += &format!(
        "Same QEMU machine (`pc`), {} vCPUs, {} MiB, NIC, forwarding and service \
         settings on both sides. Ratios are unikernel ÷ Linux; requests/s ratios are \
         paired by round (95 % CI in parentheses when there are several rounds).\n\n",
        http.cpus, http.memory_mib
    );
    text += &table(&guest);
    text += "\n### Vigil's own costs\n\n";
    text += &table(&vigil);
    text += "\nThe watchdog's loss is judged by the in-guest measure (the service's \
             rate while checks hash beside its rate outside them, in the same guest and \
             runs), which isolates the watchdog; the on/off ratio compares two guests, \
             and two launches of one image differ by more than the effect (see \
             docs/watchdog.md). Without an interval (one round) there is no verdict.\n";

    text += "\n## Where Vigil loses\n\n";
    for f in &http.failures {
        text += &format!(
            "- **{} failed under load** (round {}, {} at {} connections): {}\n",
            f.target,
            f.round + 1,
            f.request.label(),
            f.connections,
            panic_of(&f.what)
        );
    }
    text += &narrative(http);
    let losses: Vec<&Row> = guest
        .iter()
        .chain(&vigil)
        .filter(|r| r.met == Some(false))
        .collect();
    if losses.is_empty() {
        text += "Nowhere in this run: every target was met.\n";
    } else {
        for r in &losses {
            text += &format!(
                "- {}: Vigil {}, baseline {} ({}); the target is {}.\n",
                r.what, r.vigil, r.baseline, r.ratio, r.target
            );
        }
    }
    text += "\nNot measured here: challenge → verdict (the remote verifier, \
             `vigil-verify`, has not landed; this report will take it when it does), \
             and the Linux guest with IMA measuring, the research's measurement-overhead \
             comparator.\n";

    text += "\n## Plots\n\n";
    for (file, title, _) in plots {
        text += &format!("### {title}\n\n![{title}](plots/{file})\n\n");
    }

    text += "## 1. The unikernel beside the Linux guest\n\n";
    if let Some(linux) = &report.linux {
        text += &format!(
            "The Linux guest: Debian's `{}` {} (vmlinuz {:.1} MB) and `busybox-static` {} \
             from Debian's archive (`apt-get download`, cached), and the same service code \
             built with Rust {} for `x86_64-unknown-linux-musl` (static, {:.1} MB) as \
             PID 1's only job in an uncompressed initramfs ({:.1} MB; bench/src/linux.rs); \
             `/init` loads the NIC's modules, sets 10.0.2.15/24 via 10.0.2.2 and starts the \
             service with `VIGIL_SERVICE_ADDRESS=0.0.0.0`. The unikernel is the built image \
             sealed with the default watchdog (every {} ms), booted unmeasured from the same \
             bundle files; both are waited for by the same code (the console's listening \
             line, then one `/healthz` probe at a time).\n\n",
            linux.kernel_package,
            linux.kernel_version,
            linux.kernel_bytes as f64 / 1e6,
            linux.busybox_version,
            linux.toolchain,
            linux.service_bytes as f64 / 1e6,
            linux.initramfs_bytes as f64 / 1e6,
            http::WATCHDOG_INTERVAL_MS,
        );
    }
    text += &embed(&http::markdown(http, "", ""), 1);
    text += "\n## 2. Sealing beside `openssl dgst -sha256`\n\n";
    text += &embed(&seal::markdown(&report.seal, "", ""), 1);
    text += "\n## 3. Measured launch beside an unmeasured boot\n\n";
    text += &embed(&launch::markdown(&report.launch, "", ""), 1);
    text += "\n## 4. The watchdog at several intervals\n\n";
    text += "| interval | on ÷ off requests/s (paired, 95 % CI) | in-guest implied loss (pooled; mean per run, 95 % CI) | scan, idle | detection: median, max | within two intervals | load average |\n\
             |---:|---:|---:|---:|---:|---:|---|\n";
    for w in &report.watchdog {
        let cost = watchdog::cost(w);
        let t = w.throughput.first();
        text += &format!(
            "| {} ms | {} | {} | {} | {} | {} of {} | {} → {} |\n",
            w.interval_ms,
            cost.map_or("–".into(), |c| {
                let (loss, low, high) = c.paired_loss;
                let ratio = |loss: f64| 1.0 - loss / 100.0;
                with_ci((ratio(loss), ratio(high), ratio(low)), 3, "")
            }),
            cost.and_then(|c| Some((c.in_guest_pooled?, c.in_guest_loss?)))
                .map_or("–".into(), |(pooled, loss)| format!(
                    "{pooled:.2} %; per run {}",
                    with_ci(loss, 2, " %")
                )),
            t.map_or("–".into(), |t| format!(
                "{:.1} ms",
                median(&t.scan_idle_ms)
            )),
            if w.detection_ms.is_empty() {
                "–".into()
            } else {
                format!(
                    "{:.0} ms, {:.0} ms",
                    median(&w.detection_ms),
                    stats::max(&w.detection_ms)
                )
            },
            w.detection_ms
                .iter()
                .filter(|&&ms| ms <= 2.0 * f64::from(w.interval_ms))
                .count(),
            w.detection_ms.len(),
            w.load_average.0,
            w.load_average.1,
        );
    }
    text += "\nEach interval is its own run of the watchdog benchmark: the image \
             sealed with that interval beside the same image sealed with a one-hour \
             one (\"off\"), both measured launches with 2 vCPUs, the side not measured \
             paused, rounds alternating ABBA; then tampering trials under load. The \
             full text of the default interval's run follows.\n\n";
    if let Some(default) = report
        .watchdog
        .iter()
        .find(|w| w.interval_ms == watchdog::INTERVAL_MS)
        .or(report.watchdog.first())
    {
        text += &embed(&watchdog::markdown(default, "", ""), 2);
    }
    if let Some(attest) = &report.attest {
        text += "\n## 5. Challenge → verdict beside the tpm2-tools flow\n\n";
        text += &embed(&attest::markdown(attest, "", ""), 1);
    }
    text += "\n## How this was measured, and what it does not say\n\n";
    text += "- Each part interleaves its own sides: the guests are booted in a rotating \
               order, and each load run resumes one paused guest, loads it and pauses it \
               again, rotating the order every step; warm-up boots and runs are not \
               recorded. The parts themselves run one after the other.\n\
             - Under TCG every guest instruction is translated: absolute numbers are far \
               below what KVM gives, and the balance between the unikernel's and Linux's \
               costs may differ under KVM (where they would mostly be I/O paths).\n\
             - wrk 4.1 runs on the same two cores as the guests; its own CPU use is part \
               of every number. Its p99 folds a few long stalls into a value near the \
               maximum, so the maximum and the share of requests over the threshold are \
               shown beside it.\n\
             - The Linux guest runs Debian's stock kernel with `quiet`; a kernel trimmed \
               for the job would boot faster and take less memory. The unikernel runs \
               Vigil's image as deployed (watchdog on), booted unmeasured (no private \
               copy, verification or vTPM): part 3 gives what the measured launch adds.\n";
    text
}

/// The output directory of a mode: the committed results for a full run,
/// a scratch directory for a quick one.
pub fn default_out_dir(mode: Mode) -> PathBuf {
    match mode {
        Mode::Quick => PathBuf::from("target/vigil/bench-quick"),
        Mode::Full => PathBuf::from("bench/results"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_reports_lose_their_title_and_go_down_a_level() {
        let doc = "# Title\n\nCommand: `x`\n\nMachine: y.\n\nText.\n\n## Part\n\nMore.\n";
        assert_eq!(embed(doc, 1), "Text.\n\n### Part\n\nMore.\n");
        // As the benchmarks print themselves with no command and machine.
        let doc = "# Title\n\nCommand: ``\n\n\n\nText.\n";
        assert_eq!(embed(doc, 1), "Text.\n");
    }

    #[test]
    fn a_panic_is_quoted_with_its_message() {
        let what = "`wrk` served 5 requests; QEMU exited.\nConsole tail:\n\
                    [0][PANIC] panicked at src/drivers/net/virtio/mod.rs:302:14:\n\
                    called `Result::unwrap()` on an `Err` value: Virtqs memory pool is exhausted!\n\
                    Number of interrupts";
        assert_eq!(
            panic_of(what),
            "[0][PANIC] panicked at src/drivers/net/virtio/mod.rs:302:14: called \
             `Result::unwrap()` on an `Err` value: Virtqs memory pool is exhausted!"
        );
        assert_eq!(panic_of("no answer\nmore"), "no answer");
    }

    #[test]
    fn dates() {
        assert_eq!(time_of(0), "1970-01-01 00:00 UTC");
        assert_eq!(time_of(1_795_404_071), "2026-11-23 03:21 UTC");
        assert_eq!(time_of(951_782_400), "2000-02-29 00:00 UTC");
    }

    #[test]
    fn plans_scale() {
        let (quick, full) = (Plan::of(Mode::Quick), Plan::of(Mode::Full));
        assert!(quick.boots < full.boots && quick.seconds < full.seconds);
        assert!(full.intervals.contains(&watchdog::INTERVAL_MS));
        assert!(quick.intervals.contains(&watchdog::INTERVAL_MS));
    }
}
