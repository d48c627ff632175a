//! `vigil-bench http`: boot-to-first-answer and HTTP throughput of the
//! unikernel under QEMU, beside the same service as a host process.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use vigil_core::v1::config::ServiceConfig;
use vigil_dom0::accel::{self, AccelChoice};
use vigil_dom0::image::BootImage;
use vigil_dom0::qemu::{Accel, Forward, Guest, QemuConfig, kernel_cmdline};

use crate::stats::median;
use crate::wrk::{self, Load, LoadResult};

/// What to measure.
#[derive(Clone, Debug)]
pub struct HttpBench {
    /// The built image.
    pub image_dir: PathBuf,
    /// How many boots to time.
    pub boots: usize,
    /// Load runs.
    pub loads: Vec<Load>,
    /// The same service built for the host, if it is to be measured too.
    pub host_service: Option<PathBuf>,
}

/// One load, against both.
#[derive(Debug, Serialize)]
pub struct Comparison {
    /// Path requested.
    pub path: &'static str,
    /// Load parameters.
    pub load: Load,
    /// The unikernel under QEMU.
    pub unikernel: LoadResult,
    /// The host process, if measured.
    pub host: Option<LoadResult>,
}

/// Everything measured.
#[derive(Debug, Serialize)]
pub struct HttpReport {
    /// Accelerator the guest ran on.
    pub accel: &'static str,
    /// Boot to first `/healthz` answer, seconds, one per boot.
    pub boot_seconds: Vec<f64>,
    /// Load results.
    pub loads: Vec<Comparison>,
}

/// The paths each load is run against: a health check and a stored value.
pub(crate) const PATHS: [&str; 2] = ["/healthz", "/v1/kv/bench"];
const BENCH_VALUE: &[u8] = br#"{"benchmark":true,"items":[1,2,3]}"#;

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Boots `image` with `cpus` vCPUs and the default service settings,
/// forwarding a port QEMU picks (with the listen backlog raised); returns
/// the guest, that port and the time from QEMU's start to the first answer.
pub(crate) fn boot(
    image: &BootImage,
    accel: Accel,
    dir: &Path,
    cpus: u32,
) -> Result<(Guest, u16, Duration)> {
    let service = ServiceConfig::default();
    let config = QemuConfig {
        image: image.clone(),
        accel,
        memory_mib: 512,
        cpus,
        cmdline: kernel_cmdline(&service),
        forward: Some(Forward {
            host_port: 0,
            guest_port: service.port,
        }),
        console: dir.join("console.log"),
        qmp: dir.join("qmp.sock"),
    };
    let mut guest = config.spawn()?;
    let forwarding = guest.open_forwarding()?;
    if let Err(warning) = &forwarding.backlog {
        eprintln!("vigil-bench: warning: {warning}");
    }
    let port = forwarding.port;
    let boot = guest.wait_healthy(port, Duration::from_secs(120), &AtomicBool::new(false))?;
    Ok((guest, port, boot))
}

/// Stores the value the `/v1/kv/bench` loads read.
pub(crate) fn put_bench_value(port: u16) -> Result<()> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut request = format!(
        "PUT /v1/kv/bench HTTP/1.1\r\nHost: bench\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        BENCH_VALUE.len()
    )
    .into_bytes();
    request.extend_from_slice(BENCH_VALUE);
    stream.write_all(&request)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    if !answer.starts_with("HTTP/1.1 201") && !answer.starts_with("HTTP/1.1 200") {
        bail!("storing the benchmark value failed: {answer}");
    }
    Ok(())
}

fn wait_port(port: u16, timeout: Duration) -> Result<()> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if vigil_dom0::health::probe(
            std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_millis(200),
        ) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("the host service did not answer on port {port}")
}

/// The host build of the service, started on a loopback port; killed on drop.
struct HostService(Child);

impl Drop for HostService {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_host_service(binary: &Path) -> Result<(HostService, u16)> {
    let port = free_port()?;
    let child = Command::new(binary)
        .arg(format!("--port={port}"))
        .arg("--log=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let service = HostService(child);
    wait_port(port, Duration::from_secs(10))?;
    Ok((service, port))
}

/// Runs the whole benchmark.
pub fn run(bench: &HttpBench) -> Result<HttpReport> {
    let image = BootImage::from_dir(&bench.image_dir)?;
    let dir = tempfile::tempdir()?;
    let (accel, reason) = accel::choose(AccelChoice::Auto, &image, dir.path());
    eprintln!("vigil-bench: accelerator {} ({reason})", accel.name());

    let mut boot_seconds = Vec::new();
    for i in 0..bench.boots {
        let (guest, _, elapsed) = boot(&image, accel, dir.path(), 1)?;
        guest.stop(Duration::from_secs(5))?;
        eprintln!(
            "vigil-bench: boot {}: first answer after {:.3} s",
            i + 1,
            elapsed.as_secs_f64()
        );
        boot_seconds.push(elapsed.as_secs_f64());
    }

    let (mut guest, port, _) = boot(&image, accel, dir.path(), 1)?;
    put_bench_value(port)?;
    let host = match &bench.host_service {
        Some(binary) => {
            let (service, port) = start_host_service(binary)?;
            put_bench_value(port)?;
            Some((service, port))
        }
        None => None,
    };

    let mut loads = Vec::new();
    for load in &bench.loads {
        for path in PATHS {
            let unikernel = wrk::run(&format!("http://127.0.0.1:{port}{path}"), load)?;
            check_guest(&mut guest, port, &unikernel)?;
            eprintln!(
                "vigil-bench: unikernel {path} c={}: {:.0} req/s, p99 {:.1} ms",
                load.connections, unikernel.requests_per_second, unikernel.p99_ms
            );
            let host = match &host {
                Some((_, host_port)) => {
                    let result = wrk::run(&format!("http://127.0.0.1:{host_port}{path}"), load)?;
                    eprintln!(
                        "vigil-bench: host process {path} c={}: {:.0} req/s, p99 {:.2} ms",
                        load.connections, result.requests_per_second, result.p99_ms
                    );
                    Some(result)
                }
                None => None,
            };
            loads.push(Comparison {
                path,
                load: load.clone(),
                unikernel,
                host,
            });
        }
    }
    guest.stop(Duration::from_secs(5))?;
    drop(host);

    Ok(HttpReport {
        accel: accel.name(),
        boot_seconds,
        loads,
    })
}

/// A load run against the guest must have been served, and the guest must
/// still be up: a benchmark that records zeros would be worse than none.
pub(crate) fn check_guest(guest: &mut Guest, port: u16, result: &LoadResult) -> Result<()> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let exited = guest.try_exit();
    let healthy = exited.is_none() && vigil_dom0::health::probe(addr, Duration::from_secs(5));
    if result.requests > 0 && healthy {
        return Ok(());
    }
    bail!(
        "`{}` served {} requests ({} errors); QEMU {}; /healthz {}.\nConsole tail:\n{}\nQEMU's user network:\n{}",
        result.command,
        result.requests,
        result.errors,
        exited.map_or_else(
            || "running".to_owned(),
            |status| format!("exited ({status})")
        ),
        if healthy {
            "answers"
        } else {
            "does not answer"
        },
        guest.console_tail(15),
        guest.network_state()
    )
}

/// The report as Markdown.
pub fn markdown(report: &HttpReport, command: &str, machine: &str) -> String {
    let mut text = String::new();
    text.push_str("# HTTP benchmark: the Hermit unikernel under QEMU\n\n");
    text.push_str(&format!("Command: `{command}`\n\n{machine}\n\n"));
    let boots = &report.boot_seconds;
    if !boots.is_empty() {
        let min = boots.iter().copied().fold(f64::INFINITY, f64::min);
        let max = boots.iter().copied().fold(0.0, f64::max);
        text.push_str(&format!(
            "## QEMU start to first `/healthz` answer ({})\n\n{} boots: median {:.3} s, min {:.3} s, max {:.3} s\n\n",
            report.accel.to_uppercase(),
            boots.len(),
            median(boots),
            min,
            max
        ));
    }
    text.push_str("## Throughput and latency (wrk, keep-alive)\n\n");
    text.push_str("| path | connections | unikernel req/s | unikernel p50 / p99 ms | host process req/s | host p50 / p99 ms | unikernel / host req/s |\n");
    text.push_str("|---|---:|---:|---:|---:|---:|---:|\n");
    for c in &report.loads {
        let (host_rps, host_lat, ratio) = match &c.host {
            Some(h) => (
                format!("{:.0}", h.requests_per_second),
                format!("{:.2} / {:.2}", h.p50_ms, h.p99_ms),
                format!(
                    "{:.4}",
                    c.unikernel.requests_per_second / h.requests_per_second
                ),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        text.push_str(&format!(
            "| `{}` | {} | {:.0} | {:.1} / {:.1} | {host_rps} | {host_lat} | {ratio} |\n",
            c.path,
            c.load.connections,
            c.unikernel.requests_per_second,
            c.unikernel.p50_ms,
            c.unikernel.p99_ms
        ));
    }
    let errors: u64 = report
        .loads
        .iter()
        .map(|c| c.unikernel.errors + c.host.as_ref().map_or(0, |h| h.errors))
        .sum();
    text.push_str(&format!(
        "\nErrors reported by wrk (socket errors and non-2xx answers), all runs: {errors}.\n\n\
         Each load ran {} s with {} wrk threads. The host process is the same service \
         built for Linux, on the host, for scale: the fair baseline for the unikernel \
         is a Linux guest under the same QEMU, which this benchmark does not run yet.\n",
        report.loads.first().map_or(0, |c| c.load.seconds),
        report.loads.first().map_or(0, |c| c.load.threads),
    ));
    text
}
