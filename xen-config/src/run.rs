//! An unmeasured boot of a built image directory under QEMU: for tests and
//! the benchmarks' baseline. The `vigil-dom0` binary never uses it: every
//! launch there is measured ([`crate::launch`]).

use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;
use vigil_core::v1::config::ServiceConfig;

use crate::accel::{self, AccelChoice};
use crate::error::{LaunchError, Result};
use crate::image::BootImage;
use crate::qemu::{
    Accel, Forward, Guest, QEMU, QEMU_PACKAGE, QemuConfig, check_port_free, describe_exit,
    kernel_cmdline,
};

/// How long QEMU gets to quit before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// What to run and how.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The directory `vigil-build build` wrote.
    pub image_dir: PathBuf,
    /// KVM, TCG or probe.
    pub accel: AccelChoice,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Host port on 127.0.0.1 forwarded to the service.
    pub host_port: u16,
    /// Service settings (`name`, `value`), as `--set name=value`.
    pub settings: Vec<(String, String)>,
    /// How long the service may take to answer.
    pub boot_timeout: Duration,
}

/// A guest that answers, as reported to the user.
#[derive(Debug, Serialize)]
pub struct Ready {
    /// Where the service answers.
    pub url: String,
    /// QEMU's process id.
    pub pid: u32,
    /// `kvm` or `tcg`.
    pub accel: &'static str,
    /// Why that accelerator.
    pub accel_reason: String,
    /// From QEMU's start to the first `/healthz` answer.
    pub boot_seconds: f64,
    /// The guest's serial console log.
    pub console: PathBuf,
    /// Things that work, but not as well as they should.
    pub warnings: Vec<String>,
}

/// The service configuration from `--set` pairs, checked as the guest will check it.
pub fn service_config(settings: &[(String, String)]) -> Result<ServiceConfig> {
    let mut config = ServiceConfig::default();
    for (name, value) in settings {
        config
            .set(name, value)
            .map_err(|err| LaunchError::BadSetting(err.to_string()))?;
    }
    config
        .validate()
        .map_err(|err| LaunchError::BadSetting(err.to_string()))?;
    Ok(config)
}

/// A private (0700) directory for one run's console log and QMP socket.
pub fn private_run_dir() -> Result<tempfile::TempDir> {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(|d| PathBuf::from(d).join("vigil"))
        .unwrap_or_else(|| std::env::temp_dir().join(format!("vigil-{}", uid())));
    std::fs::create_dir_all(&base).map_err(LaunchError::io("creating", &base))?;
    make_private(&base)?;
    let dir = tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(&base)
        .map_err(LaunchError::io("creating a directory in", &base))?;
    make_private(dir.path())?;
    Ok(dir)
}

/// Restricts a directory to its owner (mode 0700).
fn make_private(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(LaunchError::io("restricting the permissions of", dir))
}

fn uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0)
}

/// Boots the image and waits for its service. Everything is checked before
/// QEMU starts; if anything fails after, the guest is stopped.
pub fn start(
    options: &RunOptions,
    run_dir: &std::path::Path,
    cancel: &AtomicBool,
) -> Result<(Guest, Ready)> {
    let image = BootImage::from_dir(&options.image_dir)?;
    let service = service_config(&options.settings)?;
    which::which(QEMU).map_err(|_| LaunchError::MissingProgram {
        program: QEMU,
        package: QEMU_PACKAGE,
    })?;
    check_port_free(options.host_port)?;
    let (accel, accel_reason) = accel::choose(options.accel, &image, run_dir);

    let config = QemuConfig {
        image,
        accel,
        memory_mib: options.memory_mib,
        cpus: options.cpus,
        cmdline: kernel_cmdline(&service),
        forward: Some(Forward {
            host_port: options.host_port,
            guest_port: service.port,
        }),
        console: run_dir.join("console.log"),
        qmp: run_dir.join("qmp.sock"),
    };
    let mut guest = config.spawn()?;
    let forwarding = guest.open_forwarding()?;
    let port = forwarding.port;
    let boot = guest.wait_healthy(port, options.boot_timeout, cancel)?;
    let ready = Ready {
        url: format!("http://127.0.0.1:{port}/"),
        pid: guest.pid(),
        accel: match accel {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        },
        accel_reason,
        boot_seconds: boot.as_secs_f64(),
        console: config.console,
        warnings: forwarding.backlog.err().into_iter().collect(),
    };
    Ok((guest, ready))
}

/// Keeps the guest running until `cancel` becomes true (then stops it and
/// returns its exit status) or until it stops on its own (an error).
pub fn supervise(mut guest: Guest, cancel: &AtomicBool) -> Result<ExitStatus> {
    loop {
        if cancel.load(Ordering::Relaxed) {
            return guest.stop(STOP_GRACE);
        }
        if let Some(status) = guest.try_exit() {
            return Err(LaunchError::GuestExited {
                status: describe_exit(status),
                console: guest.console_tail(20),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_before_boot() {
        let ok = service_config(&[("port".into(), "9000".into())]).unwrap();
        assert_eq!(ok.port, 9000);
        let err = service_config(&[("colour".into(), "red".into())]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid service setting: unknown setting `colour`"
        );
        let err = service_config(&[
            ("max-header-bytes".into(), "1024".into()),
            ("max-uri-bytes".into(), "4096".into()),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("must not exceed"), "{err}");
    }

    #[test]
    fn a_taken_port_is_named() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let err = check_port_free(port).unwrap_err();
        assert!(matches!(err, LaunchError::PortInUse { port: p } if p == port));
        drop(listener);
        check_port_free(port).unwrap();
    }

    #[test]
    fn run_dirs_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = private_run_dir().unwrap();
        let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
