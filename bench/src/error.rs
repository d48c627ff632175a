//! What can make a benchmark fail, and the exit code each failure maps to.
//!
//! The benchmarks are `anyhow` code (most failures only need their context
//! for a person to read); the failures a caller may act on are typed here,
//! and [`exit_code`] finds the first typed cause in an error's chain,
//! including `vigil-dom0`'s [`LaunchError`]s from the guests it boots.

use std::path::PathBuf;

use vigil_dom0::error::LaunchError;

/// Exit codes of `vigil-bench`, documented in its `--help` ([`EXIT_CODES`]).
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// An unexpected internal failure.
    pub const INTERNAL: u8 = 1;
    /// Bad command-line usage (clap's own code).
    pub const USAGE: u8 = 2;
    /// A prerequisite is missing: a tool, a built image, the host build of
    /// the service.
    pub const MISSING: u8 = 3;
    /// Bad input: an option out of range, a file that is not what it should be.
    pub const BAD_INPUT: u8 = 4;
    /// A host resource is unavailable: a port, a directory, the vTPM, the
    /// watchdog vCPU's scheduling class.
    pub const HOST: u8 = 5;
    /// A guest did not come up.
    pub const BOOT_FAILED: u8 = 6;
    /// A measurement failed: a guest stopped answering, the load generator
    /// failed, the watchdog saw a change nobody made or missed one.
    pub const MEASUREMENT: u8 = 7;
    /// Interrupted (Ctrl-C or SIGTERM); everything started was stopped.
    pub const INTERRUPTED: u8 = 130;
}

/// The exit codes, for `--help`.
pub const EXIT_CODES: &str = "\
Exit codes:
  0    success
  1    internal error
  2    bad command-line usage
  3    a prerequisite is missing: a tool (its Debian package is named), the
       built image, the host build of the service, a Rust target
  4    bad input: an option out of range, a report file that is not one
  5    a host resource is unavailable (a port, a directory not writable,
       the vTPM, the watchdog vCPU's scheduling class)
  6    a guest did not come up (QEMU failed, or no /healthz answer in time;
       its console tail is printed)
  7    a measurement failed: a guest stopped answering under load, wrk
       failed, the watchdog reported a change nobody made or missed one
  130  interrupted (Ctrl-C or SIGTERM): every guest and vTPM the run had
       started was stopped and its temporary directories removed

Nothing is written to the report files unless the whole run succeeds.";

/// A failure of a benchmark that its caller may act on.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A program the benchmark runs is not installed.
    #[error(
        "`{program}` was not found on PATH: install the Debian package `{package}` \
         (scripts/install-deps does)"
    )]
    MissingTool {
        /// The program.
        program: &'static str,
        /// The Debian package that provides it.
        package: &'static str,
    },
    /// The Rust toolchain lacks a target the benchmark builds for.
    #[error(
        "toolchain {toolchain} has no {target} standard library: \
         `rustup target add {target} --toolchain {toolchain}` (scripts/install-deps does)"
    )]
    MissingRustTarget {
        /// The target.
        target: &'static str,
        /// The toolchain.
        toolchain: String,
    },
    /// An input file the benchmark needs does not exist.
    #[error("{path} does not exist: {remedy}")]
    MissingInput {
        /// The file.
        path: PathBuf,
        /// How to make it.
        remedy: &'static str,
    },
    /// An option's value cannot be used.
    #[error("{option}: {problem}")]
    BadOption {
        /// The option.
        option: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A file given as input is not what it should be.
    #[error("{path}: {problem}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// `wrk` failed or printed something unexpected.
    #[error("`{command}` failed: {problem}")]
    Load {
        /// The wrk command line.
        command: String,
        /// What went wrong.
        problem: String,
    },
    /// A guest stopped answering (or stopped) while it was measured.
    #[error("{what}")]
    GuestFailed {
        /// What was seen, with the guest's console tail.
        what: String,
    },
    /// The watchdog reported a violation nobody caused.
    #[error("false positive: the watchdog reported a violation without tampering: {status}")]
    FalsePositive {
        /// `/v1/integrity` at that moment.
        status: String,
    },
    /// A change the watchdog should have found was not reported in time.
    #[error("trial {trial}: {problem}")]
    NotDetected {
        /// The trial (from 0).
        trial: usize,
        /// What was not seen.
        problem: &'static str,
    },
    /// Ctrl-C or SIGTERM.
    #[error(
        "interrupted; the benchmark's guests and vTPMs were stopped and its temporary \
         directories removed"
    )]
    Interrupted,
}

impl BenchError {
    /// The documented exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::MissingTool { .. }
            | Self::MissingRustTarget { .. }
            | Self::MissingInput { .. } => exit::MISSING,
            Self::BadOption { .. } | Self::BadFile { .. } => exit::BAD_INPUT,
            Self::Load { .. }
            | Self::GuestFailed { .. }
            | Self::FalsePositive { .. }
            | Self::NotDetected { .. } => exit::MEASUREMENT,
            Self::Interrupted => exit::INTERRUPTED,
        }
    }
}

/// The exit code of a failure of `vigil-dom0`'s launcher, as the benchmark
/// documents it.
fn launch_exit_code(err: &LaunchError) -> u8 {
    use vigil_dom0::swtpm::SwtpmError;
    match err {
        LaunchError::MissingProgram { .. }
        | LaunchError::MissingImage { .. }
        | LaunchError::Swtpm(SwtpmError::Missing { .. }) => exit::MISSING,
        LaunchError::BadImageDir { .. } | LaunchError::BadSetting(_) => exit::BAD_INPUT,
        LaunchError::PortInUse { .. }
        | LaunchError::Io { .. }
        | LaunchError::HostScheduling { .. }
        | LaunchError::Swtpm(_)
        | LaunchError::Tpm(_) => exit::HOST,
        LaunchError::Spawn { .. }
        | LaunchError::QemuExited { .. }
        | LaunchError::BootTimeout { .. }
        | LaunchError::Qmp(_) => exit::BOOT_FAILED,
        LaunchError::GuestExited { .. } => exit::MEASUREMENT,
        LaunchError::Interrupted => exit::INTERRUPTED,
        // The benchmark seals its own bundles with its own key and names its
        // own domains: any other launch failure is the benchmark's bug.
        _ => exit::INTERNAL,
    }
}

/// The exit code for `err`: that of the first cause in its chain that is a
/// typed failure, [`exit::INTERNAL`] if none is. A run that was interrupted
/// exits with [`exit::INTERRUPTED`] whatever the error it ended with (a
/// guest that shared the terminal's Ctrl-C may have died first).
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if crate::interrupt::interrupted() {
        return exit::INTERRUPTED;
    }
    err.chain()
        .find_map(|cause| {
            cause
                .downcast_ref::<BenchError>()
                .map(BenchError::exit_code)
                .or_else(|| cause.downcast_ref::<LaunchError>().map(launch_exit_code))
        })
        .unwrap_or(exit::INTERNAL)
}

/// A spawn failure of `program` as an error: [`BenchError::MissingTool`] if
/// it is not installed, otherwise the I/O error with what was being run.
pub fn spawn_error(
    program: &'static str,
    package: &'static str,
    err: std::io::Error,
) -> anyhow::Error {
    if err.kind() == std::io::ErrorKind::NotFound {
        BenchError::MissingTool { program, package }.into()
    } else {
        anyhow::Error::new(err).context(format!("running `{program}`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_typed_cause_decides() {
        let err = anyhow::Error::new(BenchError::MissingTool {
            program: "wrk",
            package: "wrk",
        })
        .context("loading the guest");
        assert_eq!(exit_code(&err), exit::MISSING);
        assert!(format!("{err:#}").contains("install the Debian package `wrk`"));

        let err = anyhow::Error::new(LaunchError::BootTimeout {
            seconds: 60,
            console: String::new(),
            network: String::new(),
        })
        .context("booting the Linux guest");
        assert_eq!(exit_code(&err), exit::BOOT_FAILED);

        let err = anyhow::Error::new(LaunchError::Interrupted).context("launching");
        assert_eq!(exit_code(&err), exit::INTERRUPTED);

        assert_eq!(exit_code(&anyhow::anyhow!("something odd")), exit::INTERNAL);
    }

    #[test]
    fn a_missing_program_names_its_package() {
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        let err = spawn_error("openssl", "openssl", missing);
        assert_eq!(exit_code(&err), exit::MISSING);
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert_eq!(
            exit_code(&spawn_error("openssl", "openssl", denied)),
            exit::INTERNAL
        );
    }

    #[test]
    fn every_code_is_documented() {
        for code in [
            exit::OK,
            exit::INTERNAL,
            exit::USAGE,
            exit::MISSING,
            exit::BAD_INPUT,
            exit::HOST,
            exit::BOOT_FAILED,
            exit::MEASUREMENT,
            exit::INTERRUPTED,
        ] {
            assert!(
                EXIT_CODES.contains(&format!("\n  {code:<4} ")),
                "exit code {code} is not in EXIT_CODES"
            );
        }
    }
}
