//! The QEMU backend of a measured launch: QEMU started paused (`-S`) from
//! the verified loader and the per-boot initrd, the service forwarded to a
//! loopback port, the watchdog's vCPU thread placed in the host's idle
//! class, then `cont` and the first `/healthz` answer.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::backend::{Boot, Up};
use super::verified::Verified;
use super::{LaunchOptions, service_port};
use crate::accel;
use crate::domain::{DomainDir, Runtime};
use crate::error::{LaunchError, Result};
use crate::image::{BootImage, Flavor};
use crate::qemu::{Forward, Guest, QEMU, QEMU_PACKAGE, QemuConfig, SpawnOptions, check_port_free};
use crate::sched::{self, WatchdogVcpu};

/// How long QEMU may take to open its monitor.
const MONITOR_TIMEOUT: Duration = Duration::from_secs(10);

/// A measured guest under QEMU.
#[derive(Debug)]
pub struct QemuBoot {
    config: QemuConfig,
    qemu_log: std::path::PathBuf,
    watchdog_policy: WatchdogVcpu,
    boot_timeout: Duration,
    guest: Option<Guest>,
    port: u16,
    watchdog_vcpu: WatchdogVcpu,
}

/// Fails, naming its package, if QEMU is not installed.
pub fn require_qemu() -> Result<()> {
    which::which(QEMU).map_err(|_| LaunchError::MissingProgram {
        program: QEMU,
        package: QEMU_PACKAGE,
    })?;
    Ok(())
}

impl QemuBoot {
    /// The host's part before anything starts or the report key exists: the
    /// forwarded port must be free, and the accelerator is chosen (a KVM
    /// probe, when there is no cached answer, boots the verified image
    /// itself, never a file that carries the key).
    pub fn prepare(
        options: &LaunchOptions,
        domain: &DomainDir,
        verified: &Verified<'_>,
    ) -> Result<Self> {
        check_port_free(options.host_port)?;
        if options.cpus >= 2 && options.watchdog_vcpu == WatchdogVcpu::Idle {
            sched::require_chrt()?;
        }
        let manifest = &verified.manifest;
        // A test image's flavor carries a suffix (`hvm+test-hooks`, from
        // `vigil-build build --test-hooks`); it boots like its base flavor.
        let base = manifest.provenance.flavor.split('+').next().unwrap_or("");
        let flavor: Flavor = serde_json::from_value(serde_json::Value::String(base.to_owned()))
            .map_err(|_| LaunchError::BadImageDir {
                path: verified.dir.join(vigil_core::v1::bundle::MANIFEST_FILE),
                problem: format!("unknown flavor {:?}", manifest.provenance.flavor),
            })?;
        let image = BootImage {
            loader: verified.loader_file(),
            image: verified.image_file(),
            flavor,
        };
        let (accel, _reason) = accel::choose(options.accel, &image, domain.path());
        Ok(Self {
            config: QemuConfig {
                image,
                accel,
                memory_mib: options.memory_mib,
                cpus: options.cpus,
                cmdline: manifest.kernel_cmdline.clone(),
                forward: Some(Forward {
                    host_port: options.host_port,
                    guest_port: service_port(&manifest.kernel_cmdline),
                }),
                console: domain.console(),
                qmp: domain.qmp(),
            },
            qemu_log: domain.qemu_log(),
            watchdog_policy: options.watchdog_vcpu,
            boot_timeout: options.boot_timeout,
            guest: None,
            port: 0,
            watchdog_vcpu: WatchdogVcpu::Normal,
        })
    }

    fn guest(&mut self) -> Result<&mut Guest> {
        self.guest
            .as_mut()
            .ok_or_else(|| LaunchError::Qmp("QEMU has not been started".into()))
    }
}

impl Boot for QemuBoot {
    fn create_paused(&mut self, initrd: &Path) -> Result<()> {
        self.config.image.image = initrd.to_path_buf();
        let guest = self.config.spawn_with(&SpawnOptions {
            paused: true,
            stderr_log: Some(self.qemu_log.clone()),
        })?;
        let guest = self.guest.insert(guest);
        // QEMU reads -kernel and -initrd while it sets the machine up,
        // before its monitor answers: once QMP is up, the key file has
        // served its purpose.
        let monitor = guest.monitor(MONITOR_TIMEOUT);
        let _ = std::fs::remove_file(initrd);
        // The vCPU threads exist before the guest runs its first instruction.
        self.watchdog_vcpu =
            sched::place_watchdog(&mut monitor?, self.config.cpus, self.watchdog_policy)?;
        Ok(())
    }

    fn resume(&mut self, initrd: &Path) -> Result<()> {
        let _ = std::fs::remove_file(initrd);
        let guest = self.guest()?;
        let forwarding = guest.open_forwarding()?;
        guest.resume()?;
        self.port = forwarding.port;
        Ok(())
    }

    fn wait_up(&mut self, cancel: &AtomicBool) -> Result<Up> {
        let (port, timeout) = (self.port, self.boot_timeout);
        let boot = self.guest()?.wait_healthy(port, timeout, cancel)?;
        Ok(Up {
            url: format!("http://127.0.0.1:{port}/"),
            boot,
        })
    }

    fn runtime(&self) -> Runtime {
        Runtime::Qemu {
            qemu_pid: self.guest.as_ref().map_or(0, Guest::pid),
            accel: self.config.accel,
            watchdog_vcpu: self.watchdog_vcpu,
        }
    }

    fn detach(mut self: Box<Self>) {
        if let Some(guest) = self.guest.take() {
            guest.detach();
        }
    }
}
