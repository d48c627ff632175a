//! What can go wrong on the VM host, and the exit code each failure maps to.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::xen::XenError;

/// Exit codes of `vigil-dom0`, documented in its `--help` and the README.
pub mod exit {
    /// Success (the guest was stopped on request).
    pub const OK: u8 = 0;
    /// An unexpected internal failure.
    pub const INTERNAL: u8 = 1;
    /// Bad command-line usage (clap's own code).
    pub const USAGE: u8 = 2;
    /// A prerequisite is missing: QEMU, or a built image.
    pub const MISSING: u8 = 3;
    /// Bad input: an invalid service setting, a malformed image directory.
    pub const BAD_INPUT: u8 = 4;
    /// A host resource is unavailable: the port is taken, a directory is not writable.
    pub const HOST: u8 = 5;
    /// The guest did not come up: QEMU failed, or the service never answered.
    pub const BOOT_FAILED: u8 = 6;
    /// The guest stopped on its own after it had come up.
    pub const GUEST_EXITED: u8 = 7;
    /// The bundle was refused: signature, digest, trusted key or security
    /// version (nothing was started).
    pub const REFUSED: u8 = 8;
    /// The domain is already running, or there is no such domain.
    pub const DOMAIN: u8 = 9;
    /// `wait --timeout` ran out while the guest still runs.
    pub const STILL_RUNNING: u8 = 10;
    /// Interrupted (Ctrl-C or SIGTERM): before the guest was up (it was
    /// stopped), or while waiting for it (it runs on).
    pub const INTERRUPTED: u8 = 130;
}

/// A failed launch or a failed guest.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// QEMU (or another program) is not installed.
    #[error("`{program}` was not found on PATH: install the Debian package `{package}`")]
    MissingProgram {
        /// The program.
        program: &'static str,
        /// The package that provides it.
        package: &'static str,
    },
    /// The image directory lacks a file.
    #[error("{path} does not exist: build the image first with `vigil-build build`")]
    MissingImage {
        /// The missing file.
        path: PathBuf,
    },
    /// `build.json` is unreadable or says something unexpected.
    #[error("{path}: {problem}")]
    BadImageDir {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A `--set name=value` that the service would refuse.
    #[error("invalid service setting: {0}")]
    BadSetting(String),
    /// The host port for the guest's service is already taken.
    #[error("port {port} on 127.0.0.1 is already in use; pick another with --port")]
    PortInUse {
        /// The port.
        port: u16,
    },
    /// Reading or writing a file or directory failed.
    #[error("{action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A domain name that is not allowed.
    #[error(
        "domain name {name:?} is not allowed: use 1 to 32 of a-z, 0-9 and '-', not starting with '-'"
    )]
    BadDomainName {
        /// The name.
        name: String,
    },
    /// The trusted keys cannot be used.
    #[error("trusted key {path}: {problem}")]
    BadTrust {
        /// The key file or directory.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The domain is running already.
    #[error(
        "domain {name} is already running (QEMU pid {pid}); stop it first with `vigil-dom0 stop {name}`"
    )]
    DomainRunning {
        /// The domain.
        name: String,
        /// Its QEMU.
        pid: u32,
    },
    /// No such domain.
    #[error("there is no domain {name} (see `vigil-dom0 list`)")]
    UnknownDomain {
        /// The domain.
        name: String,
    },
    /// A bundle file cannot be read.
    #[error("cannot read the bundle file {path}")]
    BundleUnreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The bundle failed verification.
    #[error("refusing to launch {bundle}: {failures}")]
    BundleRejected {
        /// The bundle.
        bundle: PathBuf,
        /// The failed checks, expected vs found.
        failures: String,
    },
    /// PCR 9 after the extends is not what the manifest predicts.
    #[error("PCR 9 is {actual} after the launch extends, the manifest predicts {expected}")]
    Pcr9Mismatch {
        /// The manifest's prediction.
        expected: String,
        /// The vTPM's value.
        actual: String,
    },
    /// The domain's swtpm could not be started or provisioned.
    #[error(transparent)]
    Swtpm(#[from] crate::swtpm::SwtpmError),
    /// A command to the domain's vTPM failed.
    #[error("the domain's vTPM")]
    Tpm(#[from] vigil_tpm::TpmError),
    /// The Xen backend failed.
    #[error(transparent)]
    Xen(#[from] XenError),
    /// QEMU could not be started.
    #[error("could not start {program}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// QEMU exited before the service answered.
    #[error("QEMU exited ({status}) before the service answered{}", console_tail(.console))]
    QemuExited {
        /// How QEMU ended.
        status: String,
        /// The last lines of the guest's console.
        console: String,
    },
    /// The service did not answer in time.
    #[error(
        "the service did not answer /healthz within {seconds} s{}{}",
        console_tail(.console),
        network_state(.network)
    )]
    BootTimeout {
        /// The time limit.
        seconds: u64,
        /// The last lines of the guest's console.
        console: String,
        /// QEMU's view of the guest's forwarded connections (`info usernet`).
        network: String,
    },
    /// The QEMU monitor (QMP) failed.
    #[error("QMP: {0}")]
    Qmp(String),
    /// The watchdog's vCPU thread could not be put in the host's idle
    /// scheduling class (`--watchdog-vcpu idle`).
    #[error(
        "could not put the watchdog's vCPU (QEMU thread {thread}) in the host's idle \
         scheduling class: {problem}; `--watchdog-vcpu normal` leaves it alone"
    )]
    HostScheduling {
        /// The QEMU thread.
        thread: u32,
        /// What `chrt` said, and the policy found afterwards.
        problem: String,
    },
    /// A signal arrived before the guest was up; the guest was stopped.
    #[error("interrupted while the guest was booting; it was stopped")]
    Interrupted,
    /// `wait` was interrupted; the guest runs on.
    #[error("interrupted while waiting for domain {name}; it still runs")]
    WaitInterrupted {
        /// The domain.
        name: String,
    },
    /// `wait --timeout` ran out; the guest runs on.
    #[error("domain {name} still runs after {seconds} s")]
    WaitTimeout {
        /// The domain.
        name: String,
        /// The time limit.
        seconds: u64,
    },
    /// The guest stopped on its own after it had come up.
    #[error("the guest stopped on its own ({status}){}", console_tail(.console))]
    GuestExited {
        /// How QEMU ended.
        status: String,
        /// The last lines of the guest's console.
        console: String,
    },
}

fn console_tail(console: &str) -> String {
    if console.trim().is_empty() {
        String::new()
    } else {
        format!("; last console lines:\n{console}")
    }
}

fn network_state(network: &str) -> String {
    if network.trim().is_empty() {
        String::new()
    } else {
        format!("\nQEMU's user network (info usernet):\n{network}")
    }
}

impl LaunchError {
    /// The documented exit code for this failure.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Self::MissingProgram { .. } | Self::MissingImage { .. } => exit::MISSING,
            Self::BadImageDir { .. } | Self::BadSetting(_) => exit::BAD_INPUT,
            Self::PortInUse { .. } | Self::Io { .. } | Self::HostScheduling { .. } => exit::HOST,
            Self::Spawn { .. }
            | Self::QemuExited { .. }
            | Self::BootTimeout { .. }
            | Self::Qmp(_) => exit::BOOT_FAILED,
            Self::GuestExited { .. } => exit::GUEST_EXITED,
            Self::Swtpm(crate::swtpm::SwtpmError::Missing { .. }) => exit::MISSING,
            Self::Swtpm(_) | Self::Tpm(_) => exit::HOST,
            Self::Xen(err) => xen_exit_code(err),
            Self::BadDomainName { .. } | Self::BadTrust { .. } => exit::BAD_INPUT,
            Self::BundleUnreadable { .. }
            | Self::BundleRejected { .. }
            | Self::Pcr9Mismatch { .. } => exit::REFUSED,
            Self::DomainRunning { .. } | Self::UnknownDomain { .. } => exit::DOMAIN,
            Self::Interrupted | Self::WaitInterrupted { .. } => exit::INTERRUPTED,
            Self::WaitTimeout { .. } => exit::STILL_RUNNING,
        })
    }

    /// Wraps an I/O error with what was being done to which path.
    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}

/// The exit code for a failure of the Xen backend.
fn xen_exit_code(err: &XenError) -> u8 {
    match err {
        XenError::BadName { .. }
        | XenError::BadPath { .. }
        | XenError::BadCmdline { .. }
        | XenError::OutOfRange { .. }
        | XenError::BadBridge { .. }
        | XenError::BadMac { .. } => exit::BAD_INPUT,
        XenError::Template { .. } => exit::INTERNAL,
        XenError::MissingXl { .. } | XenError::NotXenHost { .. } => exit::MISSING,
        XenError::CreateFailed { .. }
        | XenError::GuestStopped { .. }
        | XenError::GuestFailed { .. }
        | XenError::BootTimeout { .. } => exit::BOOT_FAILED,
        XenError::Io { .. } => exit::HOST,
    }
}

/// Shorthand for results in this crate.
pub type Result<T, E = LaunchError> = std::result::Result<T, E>;
