//! Command-line front end of `vigil-build`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vigil_build::error::{BuildError, exit};
use vigil_build::flavor::Flavor;
use vigil_build::pipeline::{self, BuildOptions};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  internal error
  2  bad command-line usage
  3  a prerequisite is missing (tool, toolchain, component, kernel source)
  4  a build step failed (cargo or an LLVM tool; its output is above)
  5  a built artifact is wrong, or the outputs could not be written";

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
    },
}

fn run(cli: Cli) -> Result<(), BuildError> {
    match cli.command {
        Command::Build {
            flavor,
            out,
            project_dir,
            quiet,
            json,
        } => {
            let project_dir = match project_dir {
                Some(dir) => dir,
                None => {
                    let cwd = std::env::current_dir()
                        .map_err(BuildError::io("reading", "the current directory"))?;
                    vigil_build::find_project_dir(&cwd)
                }
            };
            let options = BuildOptions {
                project_dir,
                flavor,
                out_dir: out,
                quiet,
            };
            let (info, _) = pipeline::build(&options)?;
            if json {
                let text =
                    serde_json::to_string_pretty(&info).map_err(|err| BuildError::BadArtifact {
                        path: "build.json".into(),
                        problem: err.to_string(),
                    })?;
                println!("{text}");
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(err) => {
            let mut message = format!("vigil-build: error: {err}");
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("{message}");
            err.exit_code()
        }
    }
}
