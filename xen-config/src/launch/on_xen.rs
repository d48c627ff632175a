//! The Xen backend of a measured launch: an xl.cfg for the verified copy
//! (the per-boot initrd as its ramdisk), `xl create` once the vTPM has been
//! extended, and the guest's console watched until it comes up. This host
//! must be a Xen dom0 (docs/xen.md).
//!
//! "Create paused" writes the configuration only: the domain itself is
//! created by `xl create` at [`Boot::resume`], after the measurement, so
//! nothing of it exists in Xen while the vTPM is extended.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use vigil_core::v1::bundle::{IMAGE_FILE, LOADER_FILE};

use super::backend::{Boot, Up};
use super::verified::{Verified, trusted_keys, verified_copy};
use super::{LaunchOptions, open_domain, service_port};
use crate::console::{self, TAIL_LINES, last_lines};
use crate::domain::{DomainDir, Runtime, XenGuest};
use crate::error::{LaunchError, Result};
use crate::xen::{self, GuestKind, HvmDevices, XenConfig, XenError};

/// How often the Xen backend looks at a booting guest.
const XEN_POLL: Duration = Duration::from_millis(500);

/// A measured guest under Xen.
#[derive(Debug)]
pub struct XenBoot {
    config: XenConfig,
    cfg_path: PathBuf,
    console: PathBuf,
    guest: XenGuest,
    port: u16,
    boot_timeout: Duration,
    started: Option<Instant>,
    /// Whether `xl create` made the domain (and dropping this destroys it).
    created: bool,
}

impl XenBoot {
    /// The guest's configuration, checked before anything starts.
    pub fn prepare(
        options: &LaunchOptions,
        domain: &DomainDir,
        verified: &Verified<'_>,
        pvh: bool,
        bridge: &str,
    ) -> Result<Self> {
        let dir =
            fs::canonicalize(domain.path()).map_err(LaunchError::io("resolving", domain.path()))?;
        let config = config(
            options,
            &dir,
            IMAGE_FILE,
            &verified.manifest.kernel_cmdline,
            pvh,
            bridge,
        );
        // Every value is checked now, so a bad one starts nothing.
        xen::render(&config)?;
        Ok(Self {
            config,
            cfg_path: dir.join("xl.cfg"),
            console: dir.join("console.log"),
            guest: if pvh { XenGuest::Pvh } else { XenGuest::Hvm },
            port: service_port(&verified.manifest.kernel_cmdline),
            boot_timeout: options.boot_timeout,
            started: None,
            created: false,
        })
    }
}

impl Boot for XenBoot {
    fn create_paused(&mut self, initrd: &Path) -> Result<()> {
        let name = initrd.file_name().unwrap_or_default();
        self.config.ramdisk = self
            .config
            .ramdisk
            .parent()
            .map_or_else(|| initrd.to_path_buf(), |dir| dir.join(name));
        Ok(xen::write(&self.config, &self.cfg_path)?)
    }

    fn resume(&mut self, initrd: &Path) -> Result<()> {
        self.started = Some(Instant::now());
        let created = xen::create(&self.cfg_path);
        // xl has read the ramdisk into the domain (or failed): the key file goes.
        let _ = fs::remove_file(initrd);
        created?;
        self.created = true;
        Ok(())
    }

    fn wait_up(&mut self, cancel: &AtomicBool) -> Result<Up> {
        let started = self.started.unwrap_or_else(Instant::now);
        let (url, since) = wait_guest(
            &self.config.name,
            &self.console,
            self.guest == XenGuest::Pvh,
            self.port,
            self.boot_timeout,
            cancel,
        )?;
        Ok(Up {
            url,
            boot: since.duration_since(started),
        })
    }

    fn runtime(&self) -> Runtime {
        Runtime::Xen { guest: self.guest }
    }

    fn detach(mut self: Box<Self>) {
        self.created = false;
    }
}

impl Drop for XenBoot {
    fn drop(&mut self) {
        if self.created {
            xen::destroy(&self.config.name);
        }
    }
}

/// `launch --backend xen --dry-run`: verifies the bundle like a launch, then
/// returns the xl.cfg that would boot the verified copy, and starts nothing.
pub fn dry_run(options: &LaunchOptions, pvh: bool, bridge: &str) -> Result<String> {
    let domain = DomainDir::new(&options.state_root, &options.name)?;
    let keys = trusted_keys(&options.trust)?;
    open_domain(options, &domain)?;
    // A dry run verifies a copy of its own and leaves nothing behind, and
    // never touches what an earlier launch of this domain left (its record,
    // event log, verified copy). The configuration names the paths a launch
    // would use.
    let fresh = !domain.has_vtpm();
    let resolved =
        fs::canonicalize(domain.path()).map_err(LaunchError::io("resolving", domain.path()))?;
    let scratch = tempfile::Builder::new()
        .prefix(".dry-run-")
        .tempdir_in(domain.path())
        .map_err(LaunchError::io("creating a directory in", domain.path()))?;
    let cmdline = verified_copy(&options.bundle, &keys, options.min_version, scratch.path())
        .map(|verified| verified.manifest.kernel_cmdline);
    drop(scratch);
    if fresh {
        let _ = fs::remove_dir_all(domain.path());
    }
    let config = config(options, &resolved, IMAGE_FILE, &cmdline?, pvh, bridge);
    Ok(xen::render(&config)?)
}

/// The xl.cfg values for a domain whose verified copy is in
/// `<domain_dir>/boot` (`ramdisk`: the file name there).
fn config(
    options: &LaunchOptions,
    domain_dir: &Path,
    ramdisk: &str,
    cmdline: &str,
    pvh: bool,
    bridge: &str,
) -> XenConfig {
    XenConfig {
        name: options.name.clone(),
        kernel: domain_dir.join("boot").join(LOADER_FILE),
        ramdisk: domain_dir.join("boot").join(ramdisk),
        cmdline: cmdline.to_owned(),
        memory_mib: options.memory_mib,
        vcpus: options.cpus,
        kind: if pvh {
            GuestKind::Pvh
        } else {
            GuestKind::Hvm(HvmDevices {
                bridge: bridge.into(),
                mac: None,
                serial_log: domain_dir.join("console.log"),
            })
        },
    }
}

/// Waits for a Xen guest to come up, until `timeout`:
/// - HVM: its console (COM1, in `console`) says the service listens and
///   which address DHCP gave it, and `GET /healthz` there answers 200;
/// - PVH: its console (Xen's debug console, from `xl dmesg`, copied to
///   `console`) says the service listens. A PVH guest has no network.
///
/// Returns the service's URL (empty for PVH) and when the sign of life was
/// seen. Fails as soon as the domain is gone or its console shows a panic
/// or a loader error.
fn wait_guest(
    name: &str,
    console: &Path,
    pvh: bool,
    port: u16,
    timeout: Duration,
    cancel: &AtomicBool,
) -> Result<(String, Instant)> {
    let started = Instant::now();
    let domid = xen::domid(name);
    let read_console = || -> String {
        if pvh {
            let text = domid
                .map(|domid| console::debug_console_lines(&xen::dmesg(), domid))
                .unwrap_or_default();
            let _ = fs::write(console, &text);
            text
        } else {
            String::from_utf8_lossy(&fs::read(console).unwrap_or_default()).into_owned()
        }
    };
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(LaunchError::Interrupted);
        }
        let text = read_console();
        let signs = console::console_signs(&text);
        if let Some(failure) = signs.failure {
            return Err(XenError::GuestFailed {
                name: name.into(),
                failure,
                console: last_lines(&text, TAIL_LINES),
            }
            .into());
        }
        if signs.listening {
            if pvh {
                return Ok((String::new(), Instant::now()));
            }
            if let Some(address) = signs.address {
                let addr = std::net::SocketAddr::from((address, port));
                if let Some(at) = crate::health::probe_at(addr, Duration::from_secs(2)) {
                    return Ok((format!("http://{address}:{port}/"), at));
                }
            }
        }
        if !xen::exists(name) {
            return Err(XenError::GuestStopped {
                name: name.into(),
                console: last_lines(&read_console(), TAIL_LINES),
            }
            .into());
        }
        if started.elapsed() > timeout {
            let waiting_for = match (signs.listening, signs.address) {
                (false, _) if pvh && text.is_empty() => "nothing on its console (a PVH guest \
                    writes to Xen's debug console, which `xl dmesg` shows only when Xen runs \
                    with guest_loglvl=all)"
                    .to_owned(),
                (false, _) => format!("no \"{}\" on its console", vigil_core::v1::console::READY),
                (true, None) => "no address from DHCP on its console (is there a DHCP \
                    server on the bridge?)"
                    .to_owned(),
                (true, Some(address)) => {
                    format!("no answer to GET http://{address}:{port}/healthz from this host")
                }
            };
            return Err(XenError::BootTimeout {
                name: name.into(),
                seconds: timeout.as_secs(),
                waiting_for,
                console: last_lines(&text, TAIL_LINES),
            }
            .into());
        }
        std::thread::sleep(XEN_POLL);
    }
}
