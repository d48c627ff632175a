//! `vigil-bench compare`: built images side by side (say, main's beside a
//! branch's, for each NIC), each booted under the same QEMU settings, one
//! guest at a time, in interleaved rounds.
//!
//! Every round boots every image once, in the order given on even rounds
//! and the reverse on odd ones, so that a change in the host's load hits
//! all images alike. Each guest serves every load (connections × path)
//! `runs` times in a row: the spread of those successive runs is the
//! run-to-run noise of one guest.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use vigil_dom0::accel::{self, AccelChoice};
use vigil_dom0::image::{BootImage, Flavor};

use crate::http::{PATHS, boot, check_guest, put_bench_value};
use crate::stats::{load_average, max, median, min};
use crate::wrk::{self, Detailed, Load, SLOW_MS};

/// What to compare.
#[derive(Clone, Debug)]
pub struct CompareBench {
    /// `(label, image directory)`, in the order of the report.
    pub images: Vec<(String, PathBuf)>,
    /// Rounds: each boots every image once.
    pub rounds: usize,
    /// Successive runs of each load on one guest.
    pub runs: usize,
    /// The loads.
    pub loads: Vec<Load>,
    /// vCPUs of every guest.
    pub vcpus: u32,
}

/// Everything measured.
#[derive(Debug, Serialize, Deserialize)]
pub struct CompareReport {
    /// The accelerator every guest ran on.
    pub accel: String,
    /// vCPUs of every guest.
    pub vcpus: u32,
    /// Rounds and runs per load per guest.
    pub rounds: usize,
    /// Successive runs of each load on one guest.
    pub runs: usize,
    /// Per image, in the order given.
    pub images: Vec<ImageResult>,
}

/// One image's measurements.
#[derive(Debug, Serialize, Deserialize)]
pub struct ImageResult {
    /// Its label.
    pub label: String,
    /// Where it was read from.
    pub dir: PathBuf,
    /// Its NIC flavor (`hvm`, `virtio`, `microvm`).
    pub flavor: String,
    /// QEMU start to the first `/healthz` answer, seconds, one per round.
    pub boot_seconds: Vec<f64>,
    /// Every load run.
    pub runs: Vec<RunRecord>,
    /// Guests that stopped answering (round, what happened); the rest of
    /// their round's loads were not run.
    #[serde(default)]
    pub failures: Vec<(usize, String)>,
}

/// One wrk run against one guest.
#[derive(Debug, Serialize, Deserialize)]
pub struct RunRecord {
    /// Round (one guest per image per round).
    pub round: usize,
    /// Which of the successive runs of this load on the guest.
    pub run: usize,
    /// The path requested.
    pub path: String,
    /// Open connections.
    pub connections: u32,
    /// The host's 1-, 5- and 15-minute load averages just before the run.
    pub load_average: String,
    /// What wrk measured.
    pub wrk: Detailed,
}

fn flavor_name(flavor: Flavor) -> &'static str {
    match flavor {
        Flavor::Hvm => "hvm",
        Flavor::Virtio => "virtio",
        Flavor::Microvm => "microvm",
    }
}

/// Runs the whole comparison.
pub fn run(bench: &CompareBench) -> Result<CompareReport> {
    if bench.images.is_empty() || bench.rounds == 0 || bench.runs == 0 {
        bail!("nothing to compare: give images, and at least one round and one run");
    }
    let images = bench
        .images
        .iter()
        .map(|(label, dir)| {
            BootImage::from_dir(dir)
                .with_context(|| format!("image `{label}` in {}", dir.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let dir = tempfile::tempdir()?;
    let (accel, reason) = accel::choose(AccelChoice::Auto, &images[0], dir.path());
    eprintln!("vigil-bench: accelerator {} ({reason})", accel.name());

    let mut results: Vec<ImageResult> = bench
        .images
        .iter()
        .zip(&images)
        .map(|((label, dir), image)| ImageResult {
            label: label.clone(),
            dir: dir.clone(),
            flavor: flavor_name(image.flavor).to_owned(),
            boot_seconds: Vec::new(),
            runs: Vec::new(),
            failures: Vec::new(),
        })
        .collect();

    for round in 0..bench.rounds {
        let mut order: Vec<usize> = (0..images.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for index in order {
            let result = &mut results[index];
            let (mut guest, port, elapsed) =
                boot(&images[index], accel, dir.path(), bench.vcpus)
                    .with_context(|| format!("booting `{}`", result.label))?;
            result.boot_seconds.push(elapsed.as_secs_f64());
            put_bench_value(port)?;
            'guest: for load in &bench.loads {
                for path in PATHS {
                    for run in 0..bench.runs {
                        let load_average = load_average();
                        let wrk =
                            wrk::run_detailed(&format!("http://127.0.0.1:{port}{path}"), load)?;
                        if let Err(error) = check_guest(&mut guest, port, &wrk.result) {
                            // A guest that falls over is a result too: keep
                            // measuring the others.
                            eprintln!(
                                "vigil-bench: round {} {}: {error:#}",
                                round + 1,
                                result.label
                            );
                            result
                                .failures
                                .push((round, format!("{path} c={}: {error:#}", load.connections)));
                            break 'guest;
                        }
                        eprintln!(
                            "vigil-bench: round {} {} {path} c={} run {}: {:.0} req/s, p50 {:.2} ms, p99 {:.1} ms, max {:.0} ms (load {load_average})",
                            round + 1,
                            result.label,
                            load.connections,
                            run + 1,
                            wrk.result.requests_per_second,
                            wrk.result.p50_ms,
                            wrk.result.p99_ms,
                            wrk.max_ms,
                        );
                        result.runs.push(RunRecord {
                            round,
                            run,
                            path: path.to_owned(),
                            connections: load.connections,
                            load_average,
                            wrk,
                        });
                    }
                }
            }
            // A guest that fell over may be gone already.
            let _ = guest.stop(std::time::Duration::from_secs(5));
        }
    }
    Ok(CompareReport {
        accel: accel.name().to_owned(),
        vcpus: bench.vcpus,
        rounds: bench.rounds,
        runs: bench.runs,
        images: results,
    })
}

/// One image's summary for one load.
#[derive(Debug, PartialEq)]
pub struct Summary {
    /// Median requests/s over all runs.
    pub rps: f64,
    /// Median of the runs' p50, p99, in ms.
    pub p50_ms: f64,
    /// Median of the runs' p99.
    pub p99_ms: f64,
    /// The slowest request of all runs, ms.
    pub max_ms: f64,
    /// Median share of requests slower than each of [`SLOW_MS`], per cent.
    pub slower_than: Vec<f64>,
    /// Per guest: (largest − smallest) / mean requests/s of its successive
    /// runs; median and largest over the guests (NaN with one run).
    pub spread: (f64, f64),
}

/// Summarises `image`'s runs of one load.
pub fn summarize(image: &ImageResult, path: &str, connections: u32) -> Option<Summary> {
    let runs: Vec<&RunRecord> = image
        .runs
        .iter()
        .filter(|r| r.path == path && r.connections == connections)
        .collect();
    if runs.is_empty() {
        return None;
    }
    let of = |f: &dyn Fn(&RunRecord) -> f64| runs.iter().map(|r| f(r)).collect::<Vec<f64>>();
    let slower_than = (0..SLOW_MS.len())
        .map(|i| median(&of(&|r| r.wrk.slower_than.get(i).map_or(f64::NAN, |s| s.1))))
        .collect();
    let mut spreads = Vec::new();
    let mut rounds: Vec<usize> = runs.iter().map(|r| r.round).collect();
    rounds.dedup();
    for round in rounds {
        let rps: Vec<f64> = runs
            .iter()
            .filter(|r| r.round == round)
            .map(|r| r.wrk.result.requests_per_second)
            .collect();
        if rps.len() > 1 {
            let mean = rps.iter().sum::<f64>() / rps.len() as f64;
            spreads.push((max(&rps) - min(&rps)) / mean);
        }
    }
    Some(Summary {
        rps: median(&of(&|r| r.wrk.result.requests_per_second)),
        p50_ms: median(&of(&|r| r.wrk.result.p50_ms)),
        p99_ms: median(&of(&|r| r.wrk.result.p99_ms)),
        max_ms: max(&of(&|r| r.wrk.max_ms)),
        slower_than,
        spread: if spreads.is_empty() {
            (f64::NAN, f64::NAN)
        } else {
            (median(&spreads), max(&spreads))
        },
    })
}

/// The loads `report` ran, in order: `(path, connections)`.
fn loads(report: &CompareReport) -> Vec<(String, u32)> {
    let mut seen: Vec<(String, u32)> = Vec::new();
    for image in &report.images {
        for r in &image.runs {
            let key = (r.path.clone(), r.connections);
            if !seen.contains(&key) {
                seen.push(key);
            }
        }
    }
    seen.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    seen
}

/// The report as Markdown.
pub fn markdown(report: &CompareReport, command: &str, machine: &str) -> String {
    let mut text = String::new();
    text.push_str("# Images side by side under QEMU\n\n");
    text.push_str(&format!("Command: `{command}`\n\n{machine}\n\n"));
    let all_loads: Vec<f64> = report
        .images
        .iter()
        .flat_map(|i| &i.runs)
        .filter_map(|r| r.load_average.split_whitespace().next()?.parse().ok())
        .collect();
    let seconds = report
        .images
        .iter()
        .flat_map(|i| &i.runs)
        .next()
        .map_or(0, |r| {
            r.wrk
                .result
                .command
                .split_whitespace()
                .find_map(|w| w.strip_prefix("-d")?.strip_suffix('s')?.parse().ok())
                .unwrap_or(0)
        });
    text.push_str(&format!(
        "Every guest: QEMU `pc`, {}, {} vCPUs, 512 MiB, user networking with a \
         loopback forward (listen backlog raised), default service settings. \
         {} rounds; each boots every image once (order reversed every other \
         round) and runs each load {} times in a row, {seconds} s each \
         (`wrk --latency`, keep-alive). Host 1-minute load average before the \
         runs: {:.2} to {:.2} (median {:.2}).\n\n",
        report.accel.to_uppercase(),
        report.vcpus,
        report.rounds,
        report.runs,
        min(&all_loads),
        max(&all_loads),
        median(&all_loads),
    ));

    text.push_str("## QEMU start to first `/healthz` answer\n\n");
    text.push_str("| image | NIC flavor | boots | median s | min s | max s |\n");
    text.push_str("|---|---|---:|---:|---:|---:|\n");
    for image in &report.images {
        let b = &image.boot_seconds;
        text.push_str(&format!(
            "| {} | {} | {} | {:.3} | {:.3} | {:.3} |\n",
            image.label,
            image.flavor,
            b.len(),
            median(b),
            min(b),
            max(b)
        ));
    }

    text.push_str("\n## Throughput and latency\n\n");
    text.push_str(
        "Medians over all runs of a load; \"vs first\" divides by the first image \
         of the same flavor; \"max\" is the slowest request of all runs; the \
         shares of slow requests come from wrk's latency histogram; \"spread\" \
         is, per guest, (largest − smallest) / mean of its successive runs' \
         requests/s, median and largest over the guests.\n\n",
    );
    let slow_heads: Vec<String> = SLOW_MS.iter().map(|ms| format!("> {ms} ms %")).collect();
    text.push_str(&format!(
        "| path | conns | image | req/s | vs first | p50 ms | p99 ms | max ms | {} | spread median / max |\n",
        slow_heads.join(" | ")
    ));
    text.push_str(&format!(
        "|---|---:|---|---:|---:|---:|---:|---:|{}---:|\n",
        "---:|".repeat(SLOW_MS.len())
    ));
    for (path, connections) in loads(report) {
        for image in &report.images {
            let Some(s) = summarize(image, &path, connections) else {
                continue;
            };
            let first = report
                .images
                .iter()
                .find(|i| i.flavor == image.flavor)
                .and_then(|i| summarize(i, &path, connections));
            let ratio = first.map_or(f64::NAN, |f| s.rps / f.rps);
            let slow: Vec<String> = s.slower_than.iter().map(|v| format!("{v:.1}")).collect();
            text.push_str(&format!(
                "| `{path}` | {connections} | {} | {:.0} | {ratio:.2} | {:.2} | {:.1} | {:.0} | {} | {:.1} % / {:.1} % |\n",
                image.label,
                s.rps,
                s.p50_ms,
                s.p99_ms,
                s.max_ms,
                slow.join(" | "),
                100.0 * s.spread.0,
                100.0 * s.spread.1,
            ));
        }
    }
    let errors: u64 = report
        .images
        .iter()
        .flat_map(|i| &i.runs)
        .map(|r| r.wrk.result.errors)
        .sum();
    text.push_str(&format!(
        "\nErrors reported by wrk (socket errors and non-2xx answers), all runs: {errors}.\n"
    ));
    let failures: Vec<String> = report
        .images
        .iter()
        .flat_map(|image| {
            image.failures.iter().map(move |(round, what)| {
                let first = what.lines().next().unwrap_or_default();
                let panic = what
                    .lines()
                    .find(|line| line.contains("PANIC") || line.contains("panicked"))
                    .map(|line| format!(" Console: `{}`", line.trim()))
                    .unwrap_or_default();
                format!("- {} (round {}): {first}{panic}", image.label, round + 1)
            })
        })
        .collect();
    if !failures.is_empty() {
        text.push_str(&format!(
            "\nGuests that stopped answering (the rest of that guest's loads was not run):\n{}\n",
            failures.join("\n")
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wrk::LoadResult;

    fn record(round: usize, run: usize, rps: f64, p99: f64) -> RunRecord {
        RunRecord {
            round,
            run,
            path: "/healthz".into(),
            connections: 4,
            load_average: "1.00 1.00 1.00".into(),
            wrk: Detailed {
                result: LoadResult {
                    command: "wrk -t2 -c4 -d10s".into(),
                    requests_per_second: rps,
                    p50_ms: 0.5,
                    p99_ms: p99,
                    requests: 1000,
                    errors: 0,
                },
                p75_ms: 1.0,
                p90_ms: 2.0,
                max_ms: p99 * 2.0,
                slower_than: vec![(5.0, 10.0), (20.0, 1.0), (100.0, 0.0)],
            },
        }
    }

    #[test]
    fn summaries_take_medians_and_per_guest_spread() {
        let image = ImageResult {
            label: "x".into(),
            dir: "d".into(),
            flavor: "hvm".into(),
            boot_seconds: vec![0.3],
            failures: Vec::new(),
            runs: vec![
                record(0, 0, 1000.0, 10.0),
                record(0, 1, 1100.0, 12.0),
                record(1, 0, 900.0, 30.0),
                record(1, 1, 900.0, 8.0),
            ],
        };
        let s = summarize(&image, "/healthz", 4).unwrap();
        assert_eq!(s.rps, 950.0);
        assert_eq!(s.p99_ms, 11.0);
        assert_eq!(s.max_ms, 60.0);
        assert_eq!(s.slower_than, vec![10.0, 1.0, 0.0]);
        // Round 0: 100 / 1050; round 1: 0.
        assert!((s.spread.1 - 100.0 / 1050.0).abs() < 1e-12);
        assert!((s.spread.0 - 50.0 / 1050.0).abs() < 1e-12);
        assert!(summarize(&image, "/healthz", 64).is_none());
    }

    #[test]
    fn the_report_compares_each_image_with_the_first_of_its_flavor() {
        let image = |label: &str, rps: f64| ImageResult {
            label: label.into(),
            dir: "d".into(),
            flavor: "hvm".into(),
            boot_seconds: vec![0.3, 0.4],
            runs: vec![record(0, 0, rps, 10.0)],
            failures: vec![(
                1,
                "/healthz c=64: QEMU exited\n[0][PANIC] panicked at x".into(),
            )],
        };
        let report = CompareReport {
            accel: "tcg".into(),
            vcpus: 2,
            rounds: 1,
            runs: 1,
            images: vec![image("main", 1000.0), image("branch", 1500.0)],
        };
        let text = markdown(&report, "vigil-bench compare", "Machine: test.");
        assert!(
            text.contains("| `/healthz` | 4 | branch | 1500 | 1.50 |"),
            "{text}"
        );
        assert!(text.contains("| main | hvm | 2 | 0.350 |"), "{text}");
        assert!(
            text.contains(
                "- main (round 2): /healthz c=64: QEMU exited Console: `[0][PANIC] panicked at x`"
            ),
            "{text}"
        );
    }
}
