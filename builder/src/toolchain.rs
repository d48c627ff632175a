//! The pinned nightly toolchain the image needs, installed through rustup.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{BuildError, Result};

/// Components the image build needs: `rust-src` for `-Zbuild-std`, `llvm-tools`
/// for the kernel's build script and the archive post-processing.
pub const COMPONENTS: [&str; 2] = ["rust-src", "llvm-tools"];

/// Environment variables an outer cargo or rustup may have set that must not
/// leak into the image builds (they would pick another toolchain, another
/// target directory or other flags).
const SCRUBBED_ENV: &[&str] = &[
    "RUSTUP_TOOLCHAIN",
    "RUSTC",
    "RUSTDOC",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTFLAGS",
    "RUSTDOCFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO",
    "CARGO_MANIFEST_DIR",
];

/// The installed, pinned toolchain.
#[derive(Clone, Debug)]
pub struct Toolchain {
    /// Its rustup name, e.g. `nightly-2025-03-15`.
    pub name: String,
    /// `rustc -V` of it.
    pub rustc_version: String,
    /// Its sysroot.
    pub sysroot: PathBuf,
    /// Where its `llvm-tools` binaries are.
    pub llvm_bin: PathBuf,
}

/// Finds `program` on `PATH`.
pub fn require(program: &'static str, hint: &'static str) -> Result<PathBuf> {
    which::which(program).map_err(|_| BuildError::MissingTool {
        tool: program,
        hint,
    })
}

/// Reads the pinned channel from a `rust-toolchain.toml`.
pub fn pinned_channel(toolchain_file: &Path) -> Result<String> {
    #[derive(serde::Deserialize)]
    struct File {
        toolchain: Section,
    }
    #[derive(serde::Deserialize)]
    struct Section {
        channel: String,
    }
    let text = std::fs::read_to_string(toolchain_file)
        .map_err(BuildError::io("reading", toolchain_file))?;
    let file: File = toml::from_str(&text).map_err(|err| BuildError::BadArtifact {
        path: toolchain_file.to_owned(),
        problem: format!("not a valid rust-toolchain.toml: {err}"),
    })?;
    Ok(file.toolchain.channel)
}

fn output(step: &'static str, mut command: Command) -> Result<String> {
    let program = command.get_program().to_string_lossy().into_owned();
    let out = command
        .stderr(Stdio::inherit())
        .output()
        .map_err(|source| BuildError::Spawn {
            step,
            program,
            source,
        })?;
    if !out.status.success() {
        return Err(BuildError::StepFailed {
            step,
            command: crate::pipeline::display_command(&command),
            status: out.status.to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Toolchain {
    /// Makes sure `name` and [`COMPONENTS`] are installed (installing them
    /// through rustup when missing) and locates the sysroot and LLVM tools.
    /// Returns whether anything had to be installed.
    pub fn ensure(name: &str) -> Result<(Self, bool)> {
        require(
            "rustup",
            "install rustup (https://rustup.rs) and reopen the shell",
        )?;
        let installed = output("checking toolchains", {
            let mut c = Command::new("rustup");
            c.args(["toolchain", "list"]);
            c
        })?;
        let has_toolchain = installed.lines().any(|line| {
            line.split_whitespace()
                .next()
                .is_some_and(|t| t.starts_with(name))
        });
        let components = if has_toolchain {
            output("checking components", {
                let mut c = Command::new("rustup");
                c.args(["component", "list", "--installed", "--toolchain", name]);
                c
            })?
        } else {
            String::new()
        };
        let missing: Vec<&str> = COMPONENTS
            .into_iter()
            .filter(|component| {
                !components
                    .lines()
                    .any(|line| line == *component || line.starts_with(&format!("{component}-")))
            })
            .collect();

        let installing = !has_toolchain || !missing.is_empty();
        if installing {
            eprintln!(
                "      installing toolchain {name} with {} through rustup",
                COMPONENTS.join(", ")
            );
            let mut install = Command::new("rustup");
            install.args(["toolchain", "install", name, "--profile", "minimal"]);
            for component in COMPONENTS {
                install.args(["--component", component]);
            }
            let status = install.status().map_err(|source| BuildError::Spawn {
                step: "installing the toolchain",
                program: "rustup".into(),
                source,
            })?;
            if !status.success() {
                return Err(BuildError::ToolchainInstall {
                    toolchain: name.to_owned(),
                    components: COMPONENTS.join(", "),
                });
            }
        }

        let rustc = |args: &[&str]| {
            let mut c = Command::new("rustup");
            c.args(["run", name, "rustc"]).args(args);
            output("querying rustc", c)
        };
        let rustc_version = rustc(&["-V"])?.trim().to_owned();
        let sysroot = PathBuf::from(rustc(&["--print", "sysroot"])?.trim());
        let host = rustc(&["-vV"])?
            .lines()
            .find_map(|line| line.strip_prefix("host: "))
            .map(str::to_owned)
            .ok_or_else(|| BuildError::BadArtifact {
                path: sysroot.clone(),
                problem: "rustc -vV names no host triple".into(),
            })?;
        let llvm_bin = sysroot.join("lib/rustlib").join(host).join("bin");
        Ok((
            Self {
                name: name.to_owned(),
                rustc_version,
                sysroot,
                llvm_bin,
            },
            installing,
        ))
    }

    /// `cargo` of this toolchain, with a scrubbed environment.
    pub fn cargo(&self) -> Command {
        let mut command = Command::new("rustup");
        command.args(["run", &self.name, "cargo"]);
        for var in SCRUBBED_ENV {
            command.env_remove(var);
        }
        command
    }

    /// An LLVM tool of this toolchain (`llvm-objcopy`, `llvm-ar`, ...).
    pub fn llvm_tool(&self, name: &str) -> Result<PathBuf> {
        let path = self.llvm_bin.join(name);
        if path.is_file() {
            Ok(path)
        } else {
            Err(BuildError::BadArtifact {
                path,
                problem: format!(
                    "missing; reinstall the component with `rustup component add --toolchain {} llvm-tools`",
                    self.name
                ),
            })
        }
    }
}
