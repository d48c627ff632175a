//! Command-line front end of `vigil-build`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vigil_build::error::{BuildError, exit};
use vigil_build::flavor::Flavor;
use vigil_build::keys::{self, KeyError};
use vigil_build::pipeline::{self, BuildOptions};
use vigil_build::seal::{self, SealError, SealOptions};
use vigil_core::v1::config::ServiceConfig;
use vigil_core::v1::refblock::{self, Reaction};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  internal error
  2  bad command-line usage
  3  a prerequisite is missing (tool, toolchain, component, kernel source)
  4  a build step failed (cargo or an LLVM tool; its output is above)
  5  a built artifact is wrong (missing, truncated, not a sealable Hermit image),
     or the outputs could not be written
  6  a key file is unusable: missing, corrupt, not ed25519, or (a private key)
     readable by other users
  7  the output exists already (nothing was written)
  8  verification failed (every failed check is printed, expected vs actual)";

/// Builds Vigil's Hermit unikernel image and its boot loader.
#[derive(Debug, Parser)]
#[command(version, about, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build the kernel, the service and the loader into target/vigil/<flavor>/.
    ///
    /// Installs the pinned nightly toolchain and its components through rustup
    /// when missing, gets hermit-kernel 0.11.0 from crates.io through cargo,
    /// and caches everything: a second build only redoes what changed.
    #[command(after_help = EXIT_CODES)]
    Build {
        /// Which image to make: hvm boots QEMU pc and Xen HVM (RTL8139 NIC),
        /// virtio boots QEMU pc with virtio-net, microvm boots QEMU microvm.
        #[arg(long, value_enum, default_value_t = Flavor::Hvm)]
        flavor: Flavor,
        /// Output directory [default: <project>/target/vigil/<flavor>].
        #[arg(long)]
        out: Option<PathBuf>,
        /// The Vigil checkout [default: the one containing the current directory].
        #[arg(long)]
        project_dir: Option<PathBuf>,
        /// Print only step lines, not cargo's output.
        #[arg(short, long)]
        quiet: bool,
        /// Print build.json to stdout when done.
        #[arg(long)]
        json: bool,
        /// Make a test image: the service tries to write to its own
        /// write-protected code after start (guest tests of the write
        /// protection). Never deploy it; output goes to
        /// target/vigil/<flavor>-test-hooks unless --out says otherwise.
        #[arg(long)]
        test_hooks: bool,
    },
    /// Make an ed25519 signing key pair: PKCS#8 PEM private key (mode 0600)
    /// and SPKI PEM public key, as OpenSSL reads and writes them.
    #[command(after_help = EXIT_CODES)]
    Keygen {
        /// The private key file to create.
        #[arg(long, default_value = "vigil-signing.pem")]
        private: PathBuf,
        /// The public key file to create.
        #[arg(long, default_value = "vigil-signing.pub.pem")]
        public: PathBuf,
        /// Print what was written as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Seal a built image into a signed bundle directory: the image with its
    /// reference block filled in, the loader, manifest.json and manifest.sig
    /// (the raw 64-byte ed25519 signature over the manifest's exact bytes).
    #[command(after_help = settings_help())]
    Seal {
        /// The ed25519 private key (PKCS#8 PEM, readable only by its owner).
        #[arg(long)]
        key: PathBuf,
        /// The bundle directory to create; it must not exist.
        #[arg(long)]
        out: PathBuf,
        /// The directory `vigil-build build` wrote [default:
        /// <project>/target/vigil/hvm].
        #[arg(long)]
        image_dir: Option<PathBuf>,
        /// The service's name in the manifest.
        #[arg(long, default_value = "vigil-service")]
        name: String,
        /// The service's version in the manifest [default: this Vigil's version].
        #[arg(long)]
        service_version: Option<String>,
        /// The security version: raise it with every security fix; dom0
        /// refuses bundles below its floor.
        #[arg(long, default_value_t = 1)]
        security_version: u64,
        /// How often the watchdog re-hashes the code, in milliseconds.
        #[arg(long, default_value_t = 1000,
              value_parser = clap::value_parser!(u32).range(i64::from(refblock::MIN_INTERVAL_MS)..=i64::from(refblock::MAX_INTERVAL_MS)))]
        watchdog_interval_ms: u32,
        /// What the watchdog does on a mismatch: log, degrade (503 until
        /// reboot) or halt.
        #[arg(long, default_value = "log", value_parser = parse_reaction)]
        reaction: Reaction,
        /// A service setting for the kernel command line (repeatable), e.g.
        /// --set max-connections=64; see the list below.
        #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_setting)]
        settings: Vec<(String, String)>,
        /// The Vigil checkout [default: the one containing the current directory].
        #[arg(long)]
        project_dir: Option<PathBuf>,
        /// Print the manifest as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Check a bundle: the signature with the given public key, every digest,
    /// the reference block, the PCR 9 prediction and the security version.
    #[command(after_help = EXIT_CODES)]
    Verify {
        /// The bundle directory.
        bundle: PathBuf,
        /// The trusted ed25519 public key (SPKI PEM).
        #[arg(long)]
        pubkey: PathBuf,
        /// Refuse a security version below this.
        #[arg(long, default_value_t = 0)]
        min_security_version: u64,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

fn settings_help() -> String {
    use vigil_core::v1::config::{LOG_SETTING, SETTINGS};
    let mut text =
        String::from("Service settings (--set NAME=VALUE), sealed into the kernel command line:\n");
    for setting in SETTINGS {
        text.push_str(&format!(
            "  {:<18} {} [default {}, {}..={}]\n",
            setting.name, setting.help, setting.default, setting.min, setting.max
        ));
    }
    text.push_str(&format!(
        "  {LOG_SETTING:<18} console logging: error, warn, info or debug [default info]\n\n{EXIT_CODES}"
    ));
    text
}

fn parse_reaction(text: &str) -> Result<Reaction, String> {
    Reaction::from_name(text).ok_or_else(|| format!("`{text}` is not one of log, degrade, halt"))
}

fn parse_setting(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("`{text}` is not NAME=VALUE"))
}

/// A failure of any command, with its exit code.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error("{0}")]
    Usage(String),
    #[error("verification failed")]
    Verification,
    #[error("writing to standard output")]
    Stdout(#[source] std::io::Error),
}

fn stdout_error(err: std::io::Error) -> Failure {
    Failure::Stdout(err)
}

impl Failure {
    fn exit_code(&self) -> ExitCode {
        let key_code = |err: &KeyError| match err {
            KeyError::Exists { .. } => exit::EXISTS,
            _ => exit::BAD_KEY,
        };
        match self {
            Self::Build(err) => err.exit_code(),
            Self::Key(err) => ExitCode::from(key_code(err)),
            Self::Seal(err) => ExitCode::from(match err {
                SealError::Key(err) => key_code(err),
                SealError::OutputExists { .. } => exit::EXISTS,
                SealError::BadSetting(_) => exit::USAGE,
                SealError::Read { .. }
                | SealError::BadImage { .. }
                | SealError::BadBuildInfo { .. }
                | SealError::Write { .. } => exit::BAD_OUTPUT,
            }),
            Self::Usage(_) => ExitCode::from(exit::USAGE),
            Self::Verification => ExitCode::from(exit::VERIFY_FAILED),
            Self::Stdout(_) => ExitCode::from(exit::INTERNAL),
        }
    }
}

fn project_dir(given: Option<PathBuf>) -> Result<PathBuf, Failure> {
    match given {
        Some(dir) => Ok(dir),
        None => {
            let cwd = std::env::current_dir()
                .map_err(BuildError::io("reading", "the current directory"))?;
            Ok(vigil_build::find_project_dir(&cwd))
        }
    }
}

fn to_json(value: &impl serde::Serialize) -> String {
    // These types serialize to JSON without failing (string keys only).
    serde_json::to_string_pretty(value).unwrap_or_default()
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Build {
            flavor,
            out,
            project_dir: dir,
            quiet,
            json,
            test_hooks,
        } => {
            let options = BuildOptions {
                project_dir: project_dir(dir)?,
                flavor,
                out_dir: out,
                quiet,
                test_hooks,
            };
            let (info, _) = pipeline::build(&options)?;
            if json {
                vigil_cli::println(to_json(&info)).map_err(stdout_error)?;
            }
            Ok(())
        }
        Command::Keygen {
            private,
            public,
            json,
        } => {
            let made = keys::generate(&private, &public)?;
            if json {
                vigil_cli::println(to_json(&made)).map_err(stdout_error)?;
            } else {
                eprintln!(
                    "wrote {} (private, mode 0600) and {} (public); key {}",
                    made.private_key.display(),
                    made.public_key.display(),
                    made.fingerprint
                );
            }
            Ok(())
        }
        Command::Seal {
            key,
            out,
            image_dir,
            name,
            service_version,
            security_version,
            watchdog_interval_ms,
            reaction,
            settings,
            project_dir: dir,
            json,
        } => {
            let image_dir = match image_dir {
                Some(dir) => dir,
                None => project_dir(dir)?
                    .join("target/vigil")
                    .join(Flavor::Hvm.name()),
            };
            let mut service = ServiceConfig::default();
            for (setting, value) in &settings {
                service
                    .set(setting, value)
                    .map_err(|err| Failure::Usage(format!("--set {setting}={value}: {err}")))?;
            }
            let sealing = seal::seal(&SealOptions {
                image_dir,
                key,
                out,
                service_name: name,
                service_version: service_version
                    .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned()),
                security_version,
                interval_ms: watchdog_interval_ms,
                reaction,
                service,
            })?;
            if json {
                vigil_cli::println(to_json(&sealing.manifest)).map_err(stdout_error)?;
            }
            let manifest = &sealing.manifest;
            eprintln!(
                "sealed {}: image sha256 {}, {} measured regions, PCR 9 {}, signed by key {}",
                sealing.bundle.display(),
                manifest.image.sha256,
                manifest.regions.len(),
                manifest.pcr9,
                sealing.key_fingerprint
            );
            Ok(())
        }
        Command::Verify {
            bundle,
            pubkey,
            min_security_version,
            json,
        } => {
            let key = keys::read_public_key(&pubkey)?;
            let report = vigil_build::verify::verify_dir(&bundle, &key, min_security_version);
            if json {
                vigil_cli::println(to_json(&report)).map_err(stdout_error)?;
            } else {
                vigil_cli::print(report.human()).map_err(stdout_error)?;
            }
            if report.passed {
                Ok(())
            } else {
                Err(Failure::Verification)
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(err) => {
            eprintln!("vigil-build: error: {}", vigil_cli::error_chain(&err));
            err.exit_code()
        }
    }
}
