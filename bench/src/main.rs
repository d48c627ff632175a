//! Command-line front end of `vigil-bench`.

mod all;
mod attest;
mod launch;
mod plot;
mod seal;
mod watchdog;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use vigil_bench::error::{BenchError, EXIT_CODES, exit, exit_code};
use vigil_bench::http::{self, HttpBench, Request, SidesOptions};
use vigil_bench::interrupt;
use vigil_core::v1::config::ServiceConfig;
use vigil_dom0::accel::AccelChoice;
use vigil_dom0::sched::WatchdogVcpu;

use crate::launch::LaunchBench;
use crate::seal::SealBench;
use crate::watchdog::WatchdogBench;

/// Measures Vigil's costs side by side and writes reports.
#[derive(Debug, Parser)]
#[command(version, about, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every comparison in one run, each interleaved: the unikernel beside
    /// the same service in a Linux guest (boot, requests/s, latency,
    /// footprint; RTL8139 and virtio-net), sealing beside openssl, measured
    /// beside unmeasured launch, the watchdog on beside off at several
    /// intervals with detection trials. Writes report.json (raw),
    /// report.md and plots/*.svg, only if every part succeeded.
    #[command(after_help = EXIT_CODES)]
    All {
        /// A smoke run of every part (a few minutes on 2 cores), written to
        /// target/vigil/bench-quick unless --out-dir says otherwise.
        #[arg(long)]
        quick: bool,
        /// The `hvm` image (RTL8139): `vigil-build build`.
        #[arg(long, default_value = "target/vigil/hvm")]
        hvm: PathBuf,
        /// The `virtio` image: `vigil-build build --flavor virtio`.
        #[arg(long, default_value = "target/vigil/virtio")]
        virtio: PathBuf,
        /// Where the Linux baseline is downloaded, built and cached.
        #[arg(long, default_value = vigil_bench::linux::CACHE_DIR)]
        linux_cache: PathBuf,
        /// The accelerator of every guest (auto probes KVM with the image).
        #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
        accel: AccelChoice,
        /// Where temporary directories (bundles, domains, consoles) are made.
        #[arg(long, default_value = "target")]
        work_dir: PathBuf,
        /// Where report.md, report.json and plots/ go [default: bench/results,
        /// or target/vigil/bench-quick with --quick].
        #[arg(long)]
        out_dir: Option<PathBuf>,
        /// Measure nothing: write report.md and the plots again from the
        /// report.json an earlier run wrote.
        #[arg(long, value_name = "JSON")]
        render: Option<PathBuf>,
    },
    /// The unikernel beside the same service in a Linux guest under the same
    /// QEMU (--linux): boot time, requests/s and latency at each connection
    /// count for /healthz, a KV read and a KV write, disk and memory
    /// footprint; interleaved rounds. Optionally beside the service as a
    /// host process, for scale (--host-service).
    #[command(after_help = EXIT_CODES)]
    Http {
        /// Directories `vigil-build build` wrote, one per NIC (repeatable:
        /// target/vigil/hvm is RTL8139, target/vigil/virtio virtio-net).
        #[arg(long = "image-dir", default_values = ["target/vigil/hvm"])]
        image_dirs: Vec<PathBuf>,
        /// Boot the Linux baseline guest with each image's NIC too (Debian's
        /// kernel and busybox-static through `apt-get download`, cached).
        #[arg(long)]
        linux: bool,
        /// Where the Linux baseline is downloaded, built and cached.
        #[arg(long, default_value = vigil_bench::linux::CACHE_DIR)]
        linux_cache: PathBuf,
        /// Boot-only rounds (after a warm-up round), each booting every guest.
        #[arg(long, default_value_t = 5)]
        boots: usize,
        /// Load rounds.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Seconds per load run.
        #[arg(long, default_value_t = 10)]
        seconds: u32,
        /// Connection counts to load with (repeatable).
        #[arg(long = "connections", default_values_t = [4, 64])]
        connections: Vec<u32>,
        /// What the loads ask for (repeatable).
        #[arg(long = "request", value_enum, default_values_t = Request::ALL)]
        requests: Vec<Request>,
        /// wrk threads.
        #[arg(long, default_value_t = 2)]
        threads: u32,
        /// After the rounds, this many back-to-back `/healthz` runs of each
        /// guest at each connection count: their spread, (max − min) ÷ median,
        /// is how steady one guest is (0: none).
        #[arg(long, default_value_t = 0)]
        successive: usize,
        /// vCPUs of every guest (vigil-dom0's default).
        #[arg(long, default_value_t = vigil_dom0::launch::DEFAULT_VCPUS)]
        vcpus: u32,
        /// The accelerator of every guest (auto probes KVM with the image).
        #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
        accel: AccelChoice,
        /// The service built for the host (`cargo build --release -p
        /// vigil-service` in unikernel/): measured beside the guests, for scale.
        #[arg(long)]
        host_service: Option<PathBuf>,
        /// Where temporary directories (bundles, consoles) are made.
        #[arg(long, default_value = "target")]
        work_dir: PathBuf,
        /// Where the report goes (a .md file; the numbers go beside it as .json).
        #[arg(long, default_value = "bench/results/http.md")]
        out: PathBuf,
    },
    /// Prepare the Linux baseline guest (download Debian's kernel and
    /// busybox-static with apt-get download, build the service for musl,
    /// write the initramfs) and print what was made, as JSON.
    #[command(after_help = EXIT_CODES)]
    LinuxBaseline {
        /// Where it is downloaded, built and cached.
        #[arg(long, default_value = vigil_bench::linux::CACHE_DIR)]
        cache: PathBuf,
    },
    /// Remote attestation, challenge → verdict: `vigil-verify`'s check
    /// against the agent (a fresh nonce, the evidence, every claim, the EAR)
    /// beside the tpm2-tools flow (`tpm2_quote` + `tpm2_checkquote -e` +
    /// `tpm2_eventlog`) on the same vTPM, interleaved (needs the apt package
    /// `tpm2-tools`).
    #[command(after_help = EXIT_CODES)]
    Attest {
        /// The directory `vigil-build build` wrote.
        #[arg(long, default_value = "target/vigil/hvm")]
        image_dir: PathBuf,
        /// Measured rounds of each side.
        #[arg(long, default_value_t = 200)]
        rounds: usize,
        /// Where the temporary directory (key, bundle, the domain's state)
        /// is made; it is removed at the end.
        #[arg(long, default_value = "target")]
        work_dir: PathBuf,
        /// Where the report goes (a .md file; the numbers go beside it as .json).
        #[arg(long, default_value = "bench/results/attest.md")]
        out: PathBuf,
    },
    /// Sealing and SHA-256 throughput beside `openssl dgst -sha256` on the
    /// same image, and on a large file (needs the apt package `openssl`).
    #[command(after_help = EXIT_CODES)]
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
    #[command(after_help = EXIT_CODES)]
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
    #[command(after_help = EXIT_CODES)]
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
        /// The interval the measured side is sealed with (ms; the default is
        /// vigil-build seal's).
        #[arg(long, default_value_t = watchdog::INTERVAL_MS,
              value_parser = clap::value_parser!(u32).range(10..=3_600_000))]
        interval_ms: u32,
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

/// Guest RAM, MiB (`vigil-dom0 launch`'s default).
const MEMORY_MIB: u32 = 512;

/// The Vigil checkout containing the current directory.
fn project_dir() -> Result<PathBuf> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    Ok(vigil_build::find_project_dir(&cwd))
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
    vigil_cli::print(&markdown).context("writing the report to stdout")?;
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
        Command::All {
            quick,
            hvm,
            virtio,
            linux_cache,
            accel,
            work_dir,
            out_dir,
            render,
        } => {
            let mode = if quick {
                all::Mode::Quick
            } else {
                all::Mode::Full
            };
            if let Some(json) = render {
                let (command, report) = all::read(&json)?;
                let out_dir = out_dir.unwrap_or_else(|| {
                    json.parent()
                        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
                });
                return all::publish(&report, &command, &out_dir);
            }
            let out_dir = out_dir.unwrap_or_else(|| all::default_out_dir(mode));
            let report = all::run(&all::AllBench {
                mode,
                hvm,
                virtio,
                linux_cache,
                project_dir: project_dir()?,
                work_dir,
                accel,
            })?;
            all::publish(&report, &command_line, &out_dir)?;
            http::failures_error(&report.http)
        }
        Command::Http {
            image_dirs,
            linux,
            linux_cache,
            boots,
            rounds,
            seconds,
            connections,
            requests,
            threads,
            successive,
            vcpus,
            accel,
            host_service,
            work_dir,
            out,
        } => {
            if let Some(binary) = &host_service {
                if !binary.is_file() {
                    return Err(BenchError::MissingInput {
                        path: binary.clone(),
                        remedy: "build it with `cargo build --release -p vigil-service` in \
                                 unikernel/",
                    }
                    .into());
                }
            }
            let service = ServiceConfig::default();
            let sides = http::prepare_sides(&SidesOptions {
                image_dirs,
                linux,
                linux_cache,
                project_dir: project_dir()?,
                accel,
                cpus: vcpus,
                memory_mib: MEMORY_MIB,
                watchdog_vcpu: WatchdogVcpu::Idle,
                work_dir: work_dir.clone(),
                service,
            })?;
            let bench = HttpBench {
                targets: sides.targets.clone(),
                settings: sides.settings,
                accel_reason: sides.accel_reason.clone(),
                service,
                boots,
                rounds,
                connections,
                seconds,
                threads,
                requests,
                successive,
                host_service,
                work_dir,
            };
            let machine = vigil_bench::machine_description();
            let report = http::run(&bench)?;
            publish(&out, &command_line, &machine, &report, http::markdown)?;
            http::failures_error(&report)
        }
        Command::LinuxBaseline { cache } => {
            let info = vigil_bench::linux::prepare(&vigil_bench::linux::Prepare {
                project_dir: project_dir()?,
                cache_dir: cache,
            })?;
            vigil_cli::print(&(serde_json::to_string_pretty(&info)? + "\n"))?;
            Ok(())
        }
        Command::Attest {
            image_dir,
            rounds,
            work_dir,
            out,
        } => {
            let bench = attest::AttestBench {
                image_dir,
                rounds,
                work_dir,
            };
            let machine = vigil_bench::machine_description();
            publish(
                &out,
                &command_line,
                &machine,
                &attest::run(&bench)?,
                attest::markdown,
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
            interval_ms,
            work_dir,
            out,
            render,
        } => {
            if let Some(json) = render {
                let bytes = std::fs::read(&json).map_err(|err| BenchError::BadFile {
                    path: json.clone(),
                    problem: format!("cannot be read: {err}"),
                })?;
                let not_a_report = |err: serde_json::Error| BenchError::BadFile {
                    path: json.clone(),
                    problem: format!("not a watchdog report (vigil-bench watchdog's JSON): {err}"),
                };
                let saved: serde_json::Value =
                    serde_json::from_slice(&bytes).map_err(not_a_report)?;
                let text = |key: &str| saved[key].as_str().unwrap_or_default().to_owned();
                let report: watchdog::WatchdogReport =
                    serde_json::from_value(saved["report"].clone()).map_err(not_a_report)?;
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
                interval_ms,
                idle_scans: 10,
                accel: AccelChoice::Tcg,
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
    let cli = Cli::parse();
    let result = interrupt::catch()
        .context("installing a handler for SIGINT and SIGTERM")
        .and_then(|()| run(cli));
    match result {
        Ok(()) => ExitCode::from(exit::OK),
        Err(err) => {
            let code = exit_code(&err);
            if code == exit::INTERRUPTED {
                eprintln!("vigil-bench: {}", BenchError::Interrupted);
            } else {
                eprintln!("vigil-bench: error: {err:#}");
            }
            ExitCode::from(code)
        }
    }
}
