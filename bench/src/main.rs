//! Command-line front end of `vigil-bench`.

mod launch;
mod seal;
mod watchdog;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use vigil_bench::compare::{self, CompareBench};
use vigil_bench::http::{self, HttpBench};
use vigil_bench::wrk::Load;
use vigil_dom0::accel::AccelChoice;

use crate::launch::LaunchBench;
use crate::seal::SealBench;
use crate::watchdog::WatchdogBench;

/// Measures Vigil's costs side by side and writes reports.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Boot-to-first-answer time and HTTP requests/s and latency of the
    /// unikernel under QEMU, beside the same service as a host process.
    Http {
        /// The directory `vigil-build build` wrote.
        #[arg(long, default_value = "target/vigil/hvm")]
        image_dir: PathBuf,
        /// Boots to time.
        #[arg(long, default_value_t = 5)]
        boots: usize,
        /// Seconds per load run.
        #[arg(long, default_value_t = 10)]
        seconds: u32,
        /// Connection counts to load with (repeatable).
        #[arg(long = "connections", default_values_t = [4, 64])]
        connections: Vec<u32>,
        /// wrk threads.
        #[arg(long, default_value_t = 2)]
        threads: u32,
        /// The service built for the host (`cargo build --release -p
        /// vigil-service` in unikernel/); measured beside the unikernel.
        #[arg(long, default_value = "unikernel/target/release/vigil-service")]
        host_service: PathBuf,
        /// Do not measure the host process.
        #[arg(long)]
        no_host: bool,
        /// Where the report goes (a .md file; the numbers go beside it as .json).
        #[arg(long, default_value = "bench/results/http.md")]
        out: PathBuf,
    },
    /// Built images side by side (say, main's beside a branch's, for each
    /// NIC): boot-to-first-answer, requests/s, latency percentiles, the
    /// slowest request, the share of slow requests and the run-to-run spread
    /// of one guest, each guest booted alone under the same QEMU settings,
    /// in interleaved rounds.
    Compare {
        /// An image to compare, as LABEL=DIR (a directory `vigil-build
        /// build` wrote); repeat for each. Each is also compared with the
        /// first image of the same NIC flavor.
        #[arg(long = "image", value_parser = parse_image, required = true)]
        images: Vec<(String, PathBuf)>,
        /// Rounds; each boots every image once.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Successive runs of each load on one guest (their spread is the
        /// run-to-run noise).
        #[arg(long, default_value_t = 2)]
        runs: usize,
        /// Seconds per load run.
        #[arg(long, default_value_t = 10)]
        seconds: u32,
        /// Connection counts to load with (repeatable).
        #[arg(long = "connections", default_values_t = [4, 64])]
        connections: Vec<u32>,
        /// wrk threads.
        #[arg(long, default_value_t = 2)]
        threads: u32,
        /// vCPUs per guest (vigil-dom0's default is 2).
        #[arg(long, default_value_t = vigil_dom0::launch::DEFAULT_VCPUS)]
        vcpus: u32,
        /// Where the report goes (a .md file; the numbers go beside it as .json).
        #[arg(long, default_value = "bench/results/compare.md")]
        out: PathBuf,
    },
    /// Sealing and SHA-256 throughput beside `openssl dgst -sha256` on the
    /// same image, and on a large file (needs the apt package `openssl`).
    Seal {
        /// The directory `vigil-build build` wrote.
        #[arg(long, default_value = "target/vigil/hvm")]
        image_dir: PathBuf,
        /// Runs of each side per comparison on the image.
        #[arg(long, default_value_t = 21)]
        runs: usize,
        /// Size of the large file in MiB (0 skips it).
        #[arg(long, default_value_t = 1024)]
        large_mib: u64,
        /// Runs of each side on the large file.
        #[arg(long, default_value_t = 5)]
        large_runs: usize,
        /// Where the temporary directory (key, bundles, large file) is made;
        /// it is removed at the end.
        #[arg(long, default_value = "target")]
        work_dir: PathBuf,
        /// Where the report goes (a .md file; the numbers go beside it as .json).
        #[arg(long, default_value = "bench/results/seal.md")]
        out: PathBuf,
    },
    /// The measured launch (`vigil-dom0 launch`: copy, verify, vTPM,
    /// extends) beside the same sealed image booted without measurement:
    /// time to the first `/healthz` answer, for a new domain and a relaunch.
    Launch {
        /// The directory `vigil-build build` wrote (sealed once, into a
        /// temporary directory).
        #[arg(long, default_value = "target/vigil/hvm")]
        image_dir: PathBuf,
        /// Rounds; each boots the bundle unmeasured, as a new measured
        /// domain and as a relaunch, after one warm-up round.
        #[arg(long, default_value_t = 11)]
        rounds: usize,
        /// The accelerator, for both sides (`auto` probes KVM, as
        /// `vigil-dom0` does).
        #[arg(long, value_enum, default_value_t = AccelChoice::Tcg)]
        accel: AccelChoice,
        /// Where the temporary directory (key, bundle, domains' state) is
        /// made; it is removed at the end.
        #[arg(long, default_value = "target")]
        work_dir: PathBuf,
        /// Where the report goes (a .md file; the numbers go beside it as .json).
        #[arg(long, default_value = "bench/results/launch.md")]
        out: PathBuf,
    },
    /// The in-image watchdog: HTTP throughput with it at the default
    /// interval beside it disabled (same image, both measured launches), time
    /// per full scan, a no-false-positive run under load, and detection
    /// latency over tampering trials (gdb through QEMU's gdbstub; needs the
    /// apt package `gdb`).
    Watchdog {
        /// The directory `vigil-build build` wrote.
        #[arg(long, default_value = "target/vigil/hvm")]
        image_dir: PathBuf,
        /// Throughput rounds (each measures both sides).
        #[arg(long, default_value_t = 6)]
        rounds: usize,
        /// Seconds per wrk run.
        #[arg(long, default_value_t = 10)]
        seconds: u32,
        /// wrk connections.
        #[arg(long, default_value_t = 4)]
        connections: u32,
        /// Tampering trials (at least 20 for the report).
        #[arg(long, default_value_t = 20)]
        trials: usize,
        /// Seconds of load without tampering that must end with zero
        /// violations (0 skips it).
        #[arg(long, default_value_t = 600)]
        soak_seconds: u32,
        /// vCPU counts to compare throughput with (comma-separated); the
        /// soak and the detection trials use the first.
        #[arg(long, value_delimiter = ',', default_values_t = [vigil_dom0::launch::DEFAULT_VCPUS, 1])]
        vcpus: Vec<u32>,
        /// How the host schedules the watchdog's vCPU on both sides (as
        /// `vigil-dom0 launch --watchdog-vcpu`).
        #[arg(long, value_enum, default_value_t = vigil_dom0::sched::WatchdogVcpu::Idle)]
        watchdog_vcpu: vigil_dom0::sched::WatchdogVcpu,
        /// Where the temporary directory (key, bundles, domains' state) is
        /// made; it is removed at the end.
        #[arg(long, default_value = "target")]
        work_dir: PathBuf,
        /// Where the report goes (a .md file; the numbers go beside it as .json).
        #[arg(long, default_value = "bench/results/watchdog.md")]
        out: PathBuf,
        /// Measure nothing: write the Markdown report again from the JSON an
        /// earlier run wrote (after a change to the report's text).
        #[arg(long, value_name = "JSON")]
        render: Option<PathBuf>,
    },
}

/// `LABEL=DIR` of `compare --image`.
fn parse_image(text: &str) -> std::result::Result<(String, PathBuf), String> {
    match text.split_once('=') {
        Some((label, dir)) if !label.is_empty() && !dir.is_empty() => {
            Ok((label.to_owned(), PathBuf::from(dir)))
        }
        _ => Err(format!("expected LABEL=DIR, got `{text}`")),
    }
}

/// Writes the Markdown report (`markdown` of the report, the command and
/// the machine) and, beside it, the JSON numbers; prints the Markdown.
fn publish<R: serde::Serialize>(
    out: &Path,
    command_line: &str,
    machine: &str,
    report: &R,
    markdown: fn(&R, &str, &str) -> String,
) -> Result<()> {
    let markdown = markdown(report, command_line, machine);
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(out, &markdown).with_context(|| format!("writing {}", out.display()))?;
    let json = serde_json::json!({ "command": command_line, "machine": machine, "report": report });
    let json_path = out.with_extension("json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    print!("{markdown}");
    eprintln!(
        "vigil-bench: wrote {} and {}",
        out.display(),
        json_path.display()
    );
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    let command_line = std::env::args().collect::<Vec<_>>().join(" ");
    match cli.command {
        Command::Http {
            image_dir,
            boots,
            seconds,
            connections,
            threads,
            host_service,
            no_host,
            out,
        } => {
            let host_service = (!no_host).then_some(host_service);
            if let Some(binary) = &host_service {
                anyhow::ensure!(
                    binary.is_file(),
                    "{} does not exist: build it with `cargo build --release -p vigil-service` \
                     in unikernel/, or pass --no-host",
                    binary.display()
                );
            }
            let bench = HttpBench {
                image_dir,
                boots,
                loads: connections
                    .into_iter()
                    .map(|connections| Load {
                        threads: threads.min(connections),
                        connections,
                        seconds,
                    })
                    .collect(),
                host_service,
            };
            let machine = vigil_bench::machine_description();
            publish(
                &out,
                &command_line,
                &machine,
                &http::run(&bench)?,
                http::markdown,
            )
        }
        Command::Compare {
            images,
            rounds,
            runs,
            seconds,
            connections,
            threads,
            vcpus,
            out,
        } => {
            let bench = CompareBench {
                images,
                rounds,
                runs,
                loads: connections
                    .into_iter()
                    .map(|connections| Load {
                        threads: threads.min(connections),
                        connections,
                        seconds,
                    })
                    .collect(),
                vcpus,
            };
            let machine = vigil_bench::machine_description();
            publish(
                &out,
                &command_line,
                &machine,
                &compare::run(&bench)?,
                compare::markdown,
            )
        }
        Command::Seal {
            image_dir,
            runs,
            large_mib,
            large_runs,
            work_dir,
            out,
        } => {
            let bench = SealBench {
                image_dir,
                runs,
                large_mib,
                large_runs,
                work_dir,
            };
            let machine = vigil_bench::machine_description();
            publish(
                &out,
                &command_line,
                &machine,
                &seal::run(&bench)?,
                seal::markdown,
            )
        }
        Command::Launch {
            image_dir,
            rounds,
            accel,
            work_dir,
            out,
        } => {
            let bench = LaunchBench {
                image_dir,
                rounds,
                accel,
                work_dir,
            };
            let machine = vigil_bench::machine_description();
            publish(
                &out,
                &command_line,
                &machine,
                &launch::run(&bench)?,
                launch::markdown,
            )
        }
        Command::Watchdog {
            image_dir,
            rounds,
            seconds,
            connections,
            trials,
            soak_seconds,
            vcpus,
            watchdog_vcpu,
            work_dir,
            out,
            render,
        } => {
            if let Some(json) = render {
                let saved: serde_json::Value = serde_json::from_slice(
                    &std::fs::read(&json).with_context(|| format!("reading {}", json.display()))?,
                )?;
                let text = |key: &str| saved[key].as_str().unwrap_or_default().to_owned();
                let report: watchdog::WatchdogReport =
                    serde_json::from_value(saved["report"].clone())
                        .with_context(|| format!("{} is not a watchdog report", json.display()))?;
                let (command, machine) = (text("command"), text("machine"));
                return publish(&out, &command, &machine, &report, watchdog::markdown);
            }
            let bench = WatchdogBench {
                image_dir,
                rounds,
                seconds,
                connections,
                trials,
                soak_seconds,
                work_dir,
                vcpus,
                watchdog_vcpu,
            };
            let machine = vigil_bench::machine_description();
            publish(
                &out,
                &command_line,
                &machine,
                &watchdog::run(&bench)?,
                watchdog::markdown,
            )
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("vigil-bench: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
