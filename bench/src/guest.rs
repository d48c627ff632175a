//! The guests the HTTP comparison boots: the unikernel and the Linux
//! baseline ([`crate::linux`]), each with the same QEMU configuration
//! (`vigil_dom0::qemu::QemuConfig`: machine, accelerator, vCPUs, memory,
//! NIC, loopback forwarding with the raised listen backlog), booted and
//! waited for by the same code.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use vigil_core::v1::config::ServiceConfig;
use vigil_core::v1::console::READY as READY_LINE;
use vigil_dom0::error::LaunchError;
use vigil_dom0::image::BootImage;
use vigil_dom0::qemu::{ANSWER_TIMEOUT, Accel, Forward, Guest, QemuConfig, describe_exit};
use vigil_dom0::sched::{self, WatchdogVcpu};

use crate::interrupt;
use crate::linux::Nic;

/// What runs the service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum System {
    /// The Hermit unikernel (Vigil's image and loader).
    Vigil,
    /// Debian's kernel with the service as PID 1's only job.
    Linux,
    /// The service as a process on the host (for scale, not a guest).
    HostProcess,
}

impl System {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Vigil => "Vigil unikernel",
            Self::Linux => "Linux guest",
            Self::HostProcess => "host process",
        }
    }
}

/// A guest to boot.
#[derive(Clone, Debug)]
pub struct Target {
    /// Its name in reports, e.g. `vigil/rtl8139`.
    pub name: String,
    /// What runs the service.
    pub system: System,
    /// The NIC.
    pub nic: Nic,
    /// QEMU's `-kernel` (the loader, or Linux) and `-initrd` (the image,
    /// or the initramfs); the flavor decides machine and NIC.
    pub boot: BootImage,
    /// The whole kernel command line.
    pub cmdline: String,
    /// Its files on disk (name, bytes): what a host stores to run it.
    pub files: Vec<(String, u64)>,
}

impl Target {
    /// The unikernel of a built (or sealed) image directory; `nic` from its
    /// flavor.
    pub fn vigil(boot: BootImage, nic: Nic, service: &ServiceConfig) -> Result<Self> {
        let files = vec![
            ("vigil-image".to_owned(), file_size(&boot.image)?),
            ("vigil-loader".to_owned(), file_size(&boot.loader)?),
        ];
        Ok(Self {
            name: format!("vigil/{}", nic.name()),
            system: System::Vigil,
            nic,
            cmdline: vigil_dom0::qemu::kernel_cmdline(service),
            boot,
            files,
        })
    }

    /// The Linux baseline with `nic`.
    pub fn linux(
        baseline: &crate::linux::BaselineInfo,
        nic: Nic,
        service: &ServiceConfig,
    ) -> Result<Self> {
        Ok(Self {
            name: format!("linux/{}", nic.name()),
            system: System::Linux,
            nic,
            boot: BootImage {
                loader: baseline.kernel.clone(),
                image: baseline.initramfs.clone(),
                flavor: nic.flavor(),
            },
            cmdline: crate::linux::kernel_cmdline(nic, service),
            files: vec![
                ("vmlinuz".to_owned(), file_size(&baseline.kernel)?),
                ("initramfs.cpio".to_owned(), file_size(&baseline.initramfs)?),
            ],
        })
    }
}

fn file_size(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len())
}

/// How every guest is run: the same for all.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// KVM or TCG.
    pub accel: Accel,
    /// vCPUs.
    pub cpus: u32,
    /// RAM, MiB.
    pub memory_mib: u32,
    /// The host policy of the unikernel's watchdog vCPU (as `vigil-dom0
    /// launch` sets it; Linux guests run no watchdog).
    pub watchdog_vcpu: WatchdogVcpu,
    /// How long a boot may take to answer.
    pub boot_timeout: Duration,
}

/// A booted guest; stopped (QEMU killed) when dropped.
#[derive(Debug)]
pub struct Running {
    guest: Guest,
    /// The loopback port that reaches the service.
    pub port: u16,
    /// QEMU's start to the first `/healthz` answer.
    pub boot: Duration,
    /// A warning, if QEMU's listen backlog could not be raised.
    pub backlog_warning: Option<String>,
}

/// Boots `target` with its console and QMP socket in `dir`, and waits for
/// the service to answer.
pub fn boot(
    target: &Target,
    settings: &Settings,
    service_port: u16,
    dir: &Path,
) -> Result<Running> {
    interrupt::check()?;
    let config = QemuConfig {
        image: target.boot.clone(),
        accel: settings.accel,
        memory_mib: settings.memory_mib,
        cpus: settings.cpus,
        cmdline: target.cmdline.clone(),
        forward: Some(Forward {
            host_port: 0,
            guest_port: service_port,
        }),
        console: dir.join("console.log"),
        qmp: dir.join("qmp.sock"),
    };
    let started = Instant::now();
    let mut guest = config.spawn()?;
    let forwarding = guest.open_forwarding()?;
    if target.system == System::Vigil && settings.cpus >= 2 {
        let mut qmp = guest.monitor(Duration::from_secs(10))?;
        sched::place_watchdog(&mut qmp, settings.cpus, settings.watchdog_vcpu)?;
    }
    let boot = wait_answer(
        &mut guest,
        forwarding.port,
        started,
        settings.boot_timeout,
        interrupt::flag(),
    )
    .with_context(|| format!("booting {}", target.name))?;
    Ok(Running {
        guest,
        port: forwarding.port,
        boot,
        backlog_warning: forwarding.backlog.err(),
    })
}

/// Waits for the first `/healthz` answer, one probe at a time, and returns
/// the time since `started`.
///
/// No probe is sent before the console shows that the service listens
/// ([`READY_LINE`], which the service prints under Hermit and under Linux
/// alike): QEMU's user network accepts a connection at once and keeps
/// trying to reach a guest that is still booting, and probes abandoned
/// during a Linux boot (seconds under TCG) were later delivered into the
/// guest during the load (it hit `max-connections`, wrk saw 1.3 s stalls).
/// After that line, one probe at a time, each allowed [`ANSWER_TIMEOUT`].
/// A QEMU that exits, a timeout, or `cancel` ends the wait with the
/// launcher's error (with the console's tail).
pub fn wait_answer(
    guest: &mut Guest,
    port: u16,
    started: Instant,
    timeout: Duration,
    cancel: &AtomicBool,
) -> Result<Duration, LaunchError> {
    let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    let mut listening = false;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(LaunchError::Interrupted);
        }
        if let Some(status) = guest.try_exit() {
            return Err(LaunchError::QemuExited {
                status: describe_exit(status),
                console: guest.console_tail(20),
            });
        }
        if started.elapsed() > timeout {
            return Err(LaunchError::BootTimeout {
                seconds: timeout.as_secs(),
                console: guest.console_tail(20),
                network: guest.network_state(),
            });
        }
        if !listening {
            listening = std::fs::read(guest.console_path()).is_ok_and(|text| {
                let marker = READY_LINE.as_bytes();
                text.windows(marker.len()).any(|w| w == marker)
            });
            if !listening {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
        }
        if let Some(at) = vigil_dom0::health::probe_at(addr, ANSWER_TIMEOUT) {
            return Ok(at.duration_since(started));
        }
    }
}

impl Running {
    /// QEMU's pid.
    pub fn pid(&self) -> u32 {
        self.guest.pid()
    }

    /// Stops the vCPUs (QMP `stop`): a paused guest takes no host CPU.
    pub fn pause(&mut self) -> Result<()> {
        let mut qmp = self.guest.monitor(Duration::from_secs(10))?;
        qmp.execute("stop")?;
        Ok(())
    }

    /// Starts them again.
    pub fn resume(&mut self) -> Result<()> {
        self.guest.resume()?;
        Ok(())
    }

    /// Whether QEMU still runs and the service answers `/healthz`; if not,
    /// what was seen, with the console's tail.
    pub fn check(&mut self) -> std::result::Result<(), String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        if let Some(status) = self.guest.try_exit() {
            return Err(format!(
                "QEMU exited ({}).\nConsole tail:\n{}",
                describe_exit(status),
                self.guest.console_tail(15)
            ));
        }
        if !vigil_dom0::health::probe(addr, Duration::from_secs(5)) {
            return Err(format!(
                "/healthz does not answer.\nConsole tail:\n{}\nQEMU's user network:\n{}",
                self.guest.console_tail(15),
                self.guest.network_state()
            ));
        }
        Ok(())
    }

    /// The last lines of the console.
    pub fn console_tail(&self, lines: usize) -> String {
        self.guest.console_tail(lines)
    }

    /// Stops QEMU (`quit`, then a kill).
    pub fn stop(self) -> Result<()> {
        self.guest.stop(Duration::from_secs(5))?;
        Ok(())
    }
}

/// Resident memory of process `pid`, MiB (`VmRSS`); NaN if unreadable.
pub fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                let kib: f64 = line
                    .strip_prefix("VmRSS:")?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse()
                    .ok()?;
                Some(kib / 1024.0)
            })
        })
        .unwrap_or(f64::NAN)
}

/// Samples [`rss_mib`] of a process every 100 ms on a thread of its own
/// until [`RssPeak::finish`], which returns the largest sample.
#[derive(Debug)]
pub struct RssPeak {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<f64>,
}

impl RssPeak {
    /// Starts sampling `pid`.
    pub fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut peak = f64::NAN;
            loop {
                // `max` ignores a NaN on either side.
                peak = peak.max(rss_mib(pid));
                if flag.load(Ordering::Relaxed) {
                    return peak;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Self { stop, thread }
    }

    /// Stops sampling; the peak, MiB.
    pub fn finish(self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(f64::NAN)
    }
}

/// A private directory per guest under `root`.
pub fn guest_dir(root: &Path, name: &str) -> Result<PathBuf> {
    let dir = root.join(name.replace('/', "-"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_resident_size() {
        let rss = rss_mib(std::process::id());
        assert!(rss > 0.1 && rss < 100_000.0, "{rss}");
        assert!(rss_mib(u32::MAX).is_nan());
        let peak = RssPeak::start(std::process::id()).finish();
        assert!(peak > 0.1, "{peak}");
    }
}
