//! What can go wrong while building, and the exit code each failure maps to.

use std::path::PathBuf;
use std::process::ExitCode;

/// Exit codes of `vigil-build`, documented in its `--help` and the README.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// An unexpected internal failure.
    pub const INTERNAL: u8 = 1;
    /// Bad command-line usage (clap's own code).
    pub const USAGE: u8 = 2;
    /// A prerequisite is missing: a tool, a toolchain, a component, a source tree.
    pub const MISSING: u8 = 3;
    /// A build step (cargo, an LLVM tool) failed.
    pub const BUILD_FAILED: u8 = 4;
    /// A built artifact is not what it must be, or the outputs could not be written.
    pub const BAD_OUTPUT: u8 = 5;
    /// A key file is unusable (missing, corrupt, not ed25519, exposed).
    pub const BAD_KEY: u8 = 6;
    /// An output exists already; nothing was written.
    pub const EXISTS: u8 = 7;
    /// A bundle failed verification.
    pub const VERIFY_FAILED: u8 = 8;
}

/// A failed build, with the context needed to act on it.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A program the build needs is not on `PATH`.
    #[error("`{tool}` was not found on PATH: {hint}")]
    MissingTool {
        /// The program.
        tool: &'static str,
        /// How to get it.
        hint: &'static str,
    },
    /// rustup could not install the pinned toolchain or one of its components.
    #[error("could not install toolchain {toolchain} (components: {components}) with rustup")]
    ToolchainInstall {
        /// The pinned toolchain.
        toolchain: String,
        /// The components asked for.
        components: String,
    },
    /// The project checkout does not look like Vigil's.
    #[error("{path} is not a Vigil checkout (no unikernel/Cargo.toml); pass --project-dir")]
    NotAProject {
        /// Where we looked.
        path: PathBuf,
    },
    /// `cargo metadata` did not lead to the kernel source.
    #[error("could not locate the hermit-kernel {version} source through cargo: {reason}")]
    KernelSource {
        /// The pinned kernel version.
        version: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// A step's command exited unsuccessfully.
    #[error("{step} failed: `{command}` exited with {status}")]
    StepFailed {
        /// The build step.
        step: &'static str,
        /// The command line, for copy-and-paste.
        command: String,
        /// How it ended.
        status: String,
    },
    /// A command could not be started at all.
    #[error("{step}: could not run `{program}`")]
    Spawn {
        /// The build step.
        step: &'static str,
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A built file is missing or malformed.
    #[error("{path}: {problem}")]
    BadArtifact {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// Reading or writing a file failed.
    #[error("{action} {path}")]
    Io {
        /// What was being done ("reading", "writing", ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

impl BuildError {
    /// The documented exit code for this failure.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Self::MissingTool { .. }
            | Self::ToolchainInstall { .. }
            | Self::NotAProject { .. }
            | Self::KernelSource { .. } => exit::MISSING,
            Self::StepFailed { .. } | Self::Spawn { .. } => exit::BUILD_FAILED,
            Self::BadArtifact { .. } | Self::Io { .. } => exit::BAD_OUTPUT,
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

/// Shorthand for results in this crate.
pub type Result<T, E = BuildError> = std::result::Result<T, E>;
