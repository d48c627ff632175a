//! Command-line front end of `vigil-dom0`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::{Parser, Subcommand};
use vigil_dom0::accel::AccelChoice;
use vigil_dom0::error::{LaunchError, exit};
use vigil_dom0::launch::{self, LaunchOptions};
use vigil_dom0::lifecycle;
use vigil_dom0::sched::WatchdogVcpu;

const EXIT_CODES: &str = "\
Exit codes:
  0    success
  1    internal error
  2    bad command-line usage
  3    a prerequisite is missing (QEMU, swtpm, xl; the package is named)
  4    bad input (a domain name, a trusted key file, a malformed bundle)
  5    a host resource is unavailable (port taken, directory not writable,
       the watchdog vCPU's scheduling class refused)
  6    the guest did not come up (QEMU failed, or no /healthz answer in time)
  7    the guest stopped on its own after it had come up
  8    the bundle was refused (signature, digest, trusted key, security
       version, PCR 9): nothing was started
  9    the domain is already running, or there is no such domain, or
       (attest) it is not running
  10   wait --timeout: the guest still runs
  130  interrupted: while the guest was booting (it was stopped), or
       while waiting for it (it runs on)

Every launch is measured: the bundle is verified, its launch events are
extended into the domain's vTPM, and only then does the guest boot.
Remote verifiers challenge a domain through `vigil-dom0 serve` (or read
`vigil-dom0 attest`) and check the evidence with `vigil-verify`.";

/// Vigil's VM-host tool: measured launch of sealed Hermit bundles under QEMU
/// (or Xen), each domain with its own vTPM.
#[derive(Debug, Parser)]
#[command(version, about, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measured launch of a sealed bundle: copy and verify it, extend the
    /// launch events into the domain's own vTPM (swtpm), boot it, and leave
    /// it running (detached). Prints the domain record.
    #[command(after_help = EXIT_CODES)]
    Launch {
        /// The sealed bundle directory (`vigil-build seal`).
        bundle: PathBuf,
        /// The trusted public key (SPKI PEM), or a directory of *.pem keys.
        #[arg(long)]
        trust: PathBuf,
        /// Refuse bundles with a lower security version.
        #[arg(long, default_value_t = 0)]
        min_version: u64,
        /// The domain's name.
        #[arg(long, default_value = "vigil")]
        name: String,
        /// Where domains keep their state (one 0700 directory each).
        #[arg(long, env = "VIGIL_STATE_DIR")]
        state_dir: Option<PathBuf>,
        /// Host port on 127.0.0.1 forwarded to the service (0: any free one).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Accelerator: auto uses KVM only if a probe boot of the image works
        /// on this host (probed once, then cached), otherwise TCG.
        #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
        accel: AccelChoice,
        /// Guest RAM in MiB.
        #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(64..=65536))]
        memory: u32,
        /// Guest vCPUs. The watchdog runs on the last one, the service on
        /// vCPU 0; with 1 the watchdog's checks share the service's vCPU.
        #[arg(long, env = "VIGIL_VCPUS", default_value_t = launch::DEFAULT_VCPUS, value_parser = clap::value_parser!(u32).range(1..=64))]
        vcpus: u32,
        /// How the host schedules the watchdog's vCPU (the last one; QEMU
        /// only, with 2 or more vCPUs): idle puts its thread in Linux's
        /// SCHED_IDLE class, so checks use only host CPU nothing else wants
        /// and do not slow requests (docs/watchdog.md); on a host with no
        /// idle CPU they wait.
        /// normal lets checks compete for the host's CPU like any thread.
        #[arg(long, value_enum, default_value_t = WatchdogVcpu::Idle)]
        watchdog_vcpu: WatchdogVcpu,
        /// Seconds to wait for the first /healthz answer.
        #[arg(long, default_value_t = 60)]
        boot_timeout: u64,
        /// qemu boots the guest here; xen writes an xl.cfg for the verified
        /// copy (HVM with an RTL8139 on --bridge, or PVH without NIC with
        /// --pvh) and runs `xl create` (this host must be a Xen dom0; see
        /// docs/xen.md).
        #[arg(long, value_enum, default_value_t = BackendArg::Qemu)]
        backend: BackendArg,
        /// With --backend xen: the dom0 bridge for the guest's NIC.
        #[arg(long, default_value = "xenbr0")]
        bridge: String,
        /// Verify the bundle and print the guest configuration; start nothing.
        #[arg(long)]
        dry_run: bool,
        /// With --backend xen: a PVH guest (no device model, no NIC).
        #[arg(long)]
        pvh: bool,
        /// The attestation key made in the domain's vTPM on its first
        /// launch (kept with the vTPM state; ignored once one exists): rsa
        /// is RSA-2048 with RSASSA-SHA256 (what Keylime accepts), ecc is
        /// ECC P-256 with ECDSA-SHA256.
        #[arg(long, value_enum, default_value_t = AkArg::Rsa)]
        attestation_key: AkArg,
    },
    /// Stop a launched domain: its guest, then its swtpm. The vTPM state
    /// (its keys) is kept unless --purge.
    #[command(after_help = EXIT_CODES)]
    Stop {
        /// The domain's name.
        name: String,
        /// Also delete the domain's vTPM state and directory.
        #[arg(long)]
        purge: bool,
        /// Where domains keep their state.
        #[arg(long, env = "VIGIL_STATE_DIR")]
        state_dir: Option<PathBuf>,
    },
    /// The launched domains: name, state, URL (JSON with --json).
    #[command(after_help = EXIT_CODES)]
    List {
        /// Where domains keep their state.
        #[arg(long, env = "VIGIL_STATE_DIR")]
        state_dir: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One domain: running or exited, its launch record, PCRs, and the tail
    /// of its console (a guest that halted leaves its reason there). JSON.
    #[command(after_help = EXIT_CODES)]
    Status {
        /// The domain's name.
        name: String,
        /// Where domains keep their state.
        #[arg(long, env = "VIGIL_STATE_DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Wait until a domain's guest stops (on its own, halted by the
    /// watchdog, or stopped), then print its state with the reason (JSON,
    /// as `status`) and exit 0. The guest is never touched: Ctrl-C or
    /// --timeout leave it running.
    #[command(after_help = EXIT_CODES)]
    Wait {
        /// The domain's name.
        name: String,
        /// Give up after this many seconds (exit 10).
        #[arg(long)]
        timeout: Option<u64>,
        /// Where domains keep their state.
        #[arg(long, env = "VIGIL_STATE_DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Evidence for a remote verifier, as JSON: a TPM quote of PCR 9, 12
    /// and 15 by the domain's attestation key with NONCE as qualifying
    /// data, the PCR values (tpm2-tools' file format), the AK's public area,
    /// the EK certificate, the event log, the manifest and its signature,
    /// and the guest's runtime report for the same nonce
    /// (docs/attestation.md). `vigil-verify` checks it.
    #[command(after_help = EXIT_CODES)]
    Attest {
        /// The domain's name.
        name: String,
        /// The verifier's challenge: 16 to 32 bytes in hexadecimal.
        #[arg(long)]
        nonce: String,
        /// Where domains keep their state.
        #[arg(long, env = "VIGIL_STATE_DIR")]
        state_dir: Option<PathBuf>,
    },
    /// The attestation agent: answers verifiers over HTTP for every domain
    /// under the state directory (GET /v1/domains,
    /// /v1/domains/NAME/evidence?nonce=HEX, /v1/domains/NAME/identity,
    /// POST /v1/domains/NAME/activate; docs/attestation.md). Runs until
    /// Ctrl-C or SIGTERM.
    #[command(after_help = EXIT_CODES)]
    Serve {
        /// Address to listen on. The default is loopback only; open it
        /// wider only towards your verifiers.
        #[arg(long, default_value = vigil_dom0::agent::DEFAULT_LISTEN)]
        listen: std::net::SocketAddr,
        /// Where domains keep their state.
        #[arg(long, env = "VIGIL_STATE_DIR")]
        state_dir: Option<PathBuf>,
    },
    /// A domain's launch event log as JSON (the binary TCG log is
    /// <state-dir>/<name>/eventlog.bin, for tpm2_eventlog).
    #[command(after_help = EXIT_CODES)]
    Eventlog {
        /// The domain's name.
        name: String,
        /// Where domains keep their state.
        #[arg(long, env = "VIGIL_STATE_DIR")]
        state_dir: Option<PathBuf>,
    },
}

/// The attestation key's algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum AkArg {
    /// RSA-2048, RSASSA-PKCS1-v1_5 with SHA-256.
    Rsa,
    /// ECC NIST P-256, ECDSA with SHA-256.
    Ecc,
}

/// Where a launched guest runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum BackendArg {
    /// QEMU on this host.
    Qemu,
    /// Xen (xl.cfg).
    Xen,
}

/// The default state directory: $XDG_STATE_HOME/vigil, else ~/.local/state/vigil.
fn state_dir(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| {
        std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".local/state")))
            .unwrap_or_else(|| PathBuf::from("/var/lib"))
            .join("vigil")
    })
}

/// Writes `text` to standard output; a closed pipe ends it quietly.
fn out(text: impl std::fmt::Display) -> Result<(), Failure> {
    vigil_cli::print(text)
        .map_err(LaunchError::io("writing", "standard output"))
        .map_err(Failure::from)
}

/// Writes `value` as pretty JSON and a newline to standard output.
fn out_json(value: &impl serde::Serialize) -> Result<(), Failure> {
    // Records, statuses and event logs serialize without failing.
    out(format_args!(
        "{}\n",
        serde_json::to_string_pretty(value).unwrap_or_default()
    ))
}

/// Every way a command can fail, each with its exit code.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error(transparent)]
    Attest(#[from] vigil_dom0::attest::AttestError),
    #[error(transparent)]
    Agent(#[from] vigil_dom0::agent::AgentError),
    #[error("{0}")]
    BadNonce(String),
}

impl Failure {
    fn exit_code(&self) -> ExitCode {
        use vigil_dom0::attest::AttestError;
        match self {
            Self::Launch(err) | Self::Attest(AttestError::Domain(err)) => err.exit_code(),
            Self::Attest(AttestError::NotRunning { .. } | AttestError::NoAttestationKey { .. }) => {
                ExitCode::from(exit::DOMAIN)
            }
            Self::Attest(_) | Self::Agent(_) => ExitCode::from(exit::HOST),
            Self::BadNonce(_) => ExitCode::from(exit::BAD_INPUT),
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    let cancel = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&cancel)).map_err(LaunchError::io(
            "installing a handler for",
            "SIGINT/SIGTERM",
        ))?;
    }
    match cli.command {
        Command::Launch {
            bundle,
            trust,
            min_version,
            name,
            state_dir: dir,
            port,
            accel,
            memory,
            vcpus,
            watchdog_vcpu,
            boot_timeout,
            backend,
            bridge,
            dry_run,
            pvh,
            attestation_key,
        } => {
            let options = LaunchOptions {
                bundle,
                trust,
                min_version,
                name,
                state_root: state_dir(dir),
                host_port: port,
                accel,
                memory_mib: memory,
                cpus: vcpus,
                watchdog_vcpu,
                ak_algorithm: match attestation_key {
                    AkArg::Rsa => vigil_tpm::AkAlgorithm::RsaSsaSha256,
                    AkArg::Ecc => vigil_tpm::AkAlgorithm::EcdsaP256Sha256,
                },
                boot_timeout: Duration::from_secs(boot_timeout),
                backend: match backend {
                    BackendArg::Qemu => launch::Backend::Qemu,
                    BackendArg::Xen => launch::Backend::Xen { pvh, bridge },
                },
            };
            if dry_run {
                if backend != BackendArg::Xen {
                    return Err(LaunchError::BadSetting(
                        "--dry-run applies to --backend xen".into(),
                    )
                    .into());
                }
                return out(launch::xen_dry_run(&options)?);
            }
            let record = launch::launch(&options, &cancel)?;
            let pcr9 = record
                .pcrs
                .first()
                .map(|(_, value)| value.to_string())
                .unwrap_or_default();
            eprintln!(
                "vigil-dom0: domain {} up ({}{}{}, {:.2} s to first sign of service); PCR 9 {pcr9}",
                record.name,
                record.runtime.accel_name(),
                if record.url.is_empty() { "" } else { ", " },
                record.url,
                record.boot_seconds,
            );
            out_json(&record)
        }
        Command::Stop {
            name,
            purge,
            state_dir: dir,
        } => {
            let record = lifecycle::stop(&state_dir(dir), &name, purge)?;
            eprintln!(
                "vigil-dom0: domain {} stopped{}",
                record.name,
                if purge { " and purged" } else { "" }
            );
            Ok(())
        }
        Command::List {
            state_dir: dir,
            json,
        } => {
            let domains = lifecycle::list(&state_dir(dir))?;
            if json {
                return out_json(&domains);
            }
            let mut table = String::new();
            for domain in &domains {
                table.push_str(&format!(
                    "{:<16} {:<8} {}  {}\n",
                    domain.record.name,
                    domain.state.as_str(),
                    domain.record.url,
                    domain.record.service
                ));
            }
            out(table)
        }
        Command::Status {
            name,
            state_dir: dir,
        } => out_json(&lifecycle::status(&state_dir(dir), &name)?),
        Command::Wait {
            name,
            timeout,
            state_dir: dir,
        } => {
            let status = lifecycle::wait(
                &state_dir(dir),
                &name,
                timeout.map(Duration::from_secs),
                &cancel,
            )?;
            eprintln!(
                "vigil-dom0: domain {name} {}: {}",
                status.state.as_str(),
                status.exit_reason.as_deref().unwrap_or_default()
            );
            out_json(&status)
        }
        Command::Attest {
            name,
            nonce,
            state_dir: dir,
        } => {
            let nonce = vigil_dom0::agent::parse_nonce_query(&format!("nonce={nonce}"))
                .map_err(Failure::BadNonce)?;
            let domain = vigil_dom0::domain::DomainDir::new(&state_dir(dir), &name)?;
            let evidence = vigil_dom0::attest::evidence(
                &domain,
                &nonce,
                &vigil_dom0::attest::GuestClient::default(),
            )?;
            out(format_args!(
                "{}\n",
                String::from_utf8_lossy(&evidence.emit())
            ))?;
            Ok(())
        }
        Command::Serve {
            listen,
            state_dir: dir,
        } => {
            let listener = vigil_dom0::agent::Listener::bind(listen, state_dir(dir))?;
            eprintln!(
                "vigil-dom0: attestation agent on http://{}/ (Ctrl-C stops it)",
                listener
                    .local_addr()
                    .map_or_else(|| listen.to_string(), |a| a.to_string())
            );
            listener.serve(&cancel);
            eprintln!("vigil-dom0: attestation agent stopped");
            Ok(())
        }
        Command::Eventlog {
            name,
            state_dir: dir,
        } => {
            let domain = vigil_dom0::domain::DomainDir::new(&state_dir(dir), &name)?;
            out_json(&lifecycle::eventlog(&domain)?)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(err) => {
            eprintln!("vigil-dom0: error: {}", vigil_cli::error_chain(&err));
            err.exit_code()
        }
    }
}
