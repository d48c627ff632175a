//! Command-line front end of `vigil-dom0`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::{Parser, Subcommand};
use vigil_core::v1::config::{LOG_SETTING, SETTINGS};
use vigil_dom0::accel::AccelChoice;
use vigil_dom0::error::{LaunchError, exit};
use vigil_dom0::qemu::describe_exit;
use vigil_dom0::run::{self, RunOptions};

const EXIT_CODES: &str = "\
Exit codes:
  0    the guest was stopped on request
  1    internal error
  2    bad command-line usage
  3    a prerequisite is missing (QEMU, or the built image)
  4    bad input (an invalid --set, a malformed image directory)
  5    a host resource is unavailable (port taken, directory not writable)
  6    the guest did not come up (QEMU failed, or no /healthz answer in time)
  7    the guest stopped on its own after it had come up
  130  interrupted while the guest was booting (it was stopped)";

/// Vigil's VM-host tool: boots Vigil's Hermit images under QEMU.
#[derive(Debug, Parser)]
#[command(version, about, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Boot a built image, forward a loopback port to its service, wait until
    /// /healthz answers, print the URL, and keep it running until Ctrl-C or
    /// SIGTERM, then shut it down.
    #[command(after_help = settings_help())]
    Run {
        /// The directory `vigil-build build` wrote [default: target/vigil/hvm
        /// of the checkout containing the current directory].
        #[arg(long)]
        image_dir: Option<PathBuf>,
        /// Host port on 127.0.0.1 forwarded to the service.
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Accelerator: auto uses KVM only if a probe boot of the image works
        /// on this host (probed once, then cached), otherwise TCG.
        #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
        accel: AccelChoice,
        /// Guest RAM in MiB.
        #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(64..=65536))]
        memory: u32,
        /// Virtual CPUs.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
        cpus: u32,
        /// A service setting, passed on the guest's kernel command line
        /// (repeatable), e.g. --set max-connections=64. See the list below.
        #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_setting)]
        settings: Vec<(String, String)>,
        /// Seconds to wait for the first /healthz answer.
        #[arg(long, default_value_t = 60)]
        boot_timeout: u64,
        /// Print the ready report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

fn settings_help() -> String {
    let mut text = String::from("Service settings (--set NAME=VALUE):\n");
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

fn parse_setting(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("`{text}` is not NAME=VALUE"))
}

/// `target/vigil/hvm` of the nearest checkout at or above `start`.
fn default_image_dir(start: &Path) -> PathBuf {
    let relative = Path::new("target").join("vigil").join("hvm");
    start
        .ancestors()
        .map(|dir| dir.join(&relative))
        .find(|dir| dir.is_dir())
        .unwrap_or_else(|| start.join(relative))
}

fn run(cli: Cli) -> Result<(), LaunchError> {
    let Command::Run {
        image_dir,
        port,
        accel,
        memory,
        cpus,
        settings,
        boot_timeout,
        json,
    } = cli.command;

    let cancel = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&cancel)).map_err(LaunchError::io(
            "installing a handler for",
            "SIGINT/SIGTERM",
        ))?;
    }
    let image_dir = match image_dir {
        Some(dir) => dir,
        None => {
            let cwd = std::env::current_dir()
                .map_err(LaunchError::io("reading", "the current directory"))?;
            default_image_dir(&cwd)
        }
    };
    let options = RunOptions {
        image_dir,
        accel,
        memory_mib: memory,
        cpus,
        host_port: port,
        settings,
        boot_timeout: Duration::from_secs(boot_timeout),
    };
    let run_dir = run::private_run_dir()?;
    eprintln!("vigil-dom0: booting {}", options.image_dir.display());
    let (guest, ready) = run::start(&options, run_dir.path(), &cancel)?;
    eprintln!(
        "vigil-dom0: guest up ({}: {}), first answer {:.2} s after QEMU started; console: {}",
        ready.accel,
        ready.accel_reason,
        ready.boot_seconds,
        ready.console.display()
    );
    for warning in &ready.warnings {
        eprintln!("vigil-dom0: warning: {warning}");
    }
    if json {
        let text =
            serde_json::to_string(&ready).map_err(|err| LaunchError::Qmp(err.to_string()))?;
        println!("{text}");
    } else {
        println!("{}", ready.url);
    }
    eprintln!("vigil-dom0: serving at {} (Ctrl-C to stop)", ready.url);
    let status = run::supervise(guest, &cancel)?;
    eprintln!("vigil-dom0: guest stopped ({})", describe_exit(status));
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(err) => {
            let mut message = format!("vigil-dom0: error: {err}");
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
