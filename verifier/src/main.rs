//! `vigil-verify`: the relying party's command line. Thin glue over the
//! `vigil_verify` library.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result};
use clap::{Args, Parser, Subcommand};
use p256::pkcs8::DecodePrivateKey as _;
use rand_core::OsRng;
use vigil_core::v1::bundle;
use vigil_core::v1::evidence::Evidence;
use vigil_core::v1::report::Nonce;
use vigil_verify::agent::{AgentError, DEFAULT_AGENT, HttpAgent};
use vigil_verify::appraise::{Appraisal, Policy, Request, Status, appraise};
use vigil_verify::check::{self, CheckError, Event, Observation, Watcher};
use vigil_verify::ear::{Ear, render_text};
use vigil_verify::enroll::{self, EnrollError, Store, StoreError, Trust, TrustBasis};
use vigil_verify::tpm::TpmPublic;

const EXIT_CODES: &str = "\
Exit codes:
  0  affirming (check, appraise, watch's last round); done (enroll)
  1  not affirming: warning or contraindicated (the failing claims are listed)
  2  command line error
  3  configuration: a key, CA or state file cannot be read or is invalid
  4  the domain is not enrolled with this agent (run `vigil-verify enroll`)
  5  the agent did not answer, or answered an error (unknown domain, not running)
  6  the agent's answer is malformed (not evidence, not an identity)
  7  enrollment refused: EK certificate, AK attributes or credential activation";

/// Remote attestation of Vigil domains: enrolls a domain's attestation key,
/// challenges it with fresh nonces, and answers with an IETF RATS EAR.
#[derive(Debug, Parser)]
#[command(version, after_help = EXIT_CODES)]
struct Cli {
    /// The attestation agent (`vigil-dom0 serve`).
    #[arg(long, env = "VIGIL_AGENT", default_value = DEFAULT_AGENT, global = true)]
    agent: String,
    /// Where enrollments are kept [default: $XDG_STATE_HOME/vigil-verify or
    /// ~/.local/state/vigil-verify].
    #[arg(long, env = "VIGIL_VERIFY_STATE_DIR", global = true)]
    state_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Trusts a domain's AK: EK certificate against a CA, then
    /// MakeCredential/ActivateCredential through the agent.
    Enroll {
        /// The domain.
        domain: String,
        /// A PEM file of CA certificates the EK certificate must chain to
        /// (repeatable; e.g. /var/lib/swtpm-localca/issuercert.pem).
        #[arg(
            long = "ek-ca",
            value_name = "PEM",
            required_unless_present = "pin_on_first_contact"
        )]
        ek_ca: Vec<PathBuf>,
        /// Trust whatever EK the agent presents now, without a CA (logged
        /// loudly; the credential check still runs).
        #[arg(long, conflicts_with = "ek_ca")]
        pin_on_first_contact: bool,
    },
    /// Challenges a domain once and prints the verdict.
    Check {
        /// The domain.
        domain: String,
        #[command(flatten)]
        policy: PolicyArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Re-attests every interval; reports each change of status once.
    Watch {
        /// The domain.
        domain: String,
        /// Seconds between rounds.
        #[arg(long, default_value_t = 10)]
        interval: u64,
        /// A shell command run on each change (env VIGIL_DOMAIN,
        /// VIGIL_STATUS, VIGIL_PREVIOUS_STATUS; the EAR JSON on stdin).
        #[arg(long, value_name = "CMD")]
        on_change: Option<String>,
        /// A URL to POST {"domain","status","previous","ear"} to on each change.
        #[arg(long, value_name = "URL")]
        webhook: Option<String>,
        /// Stop after this many rounds (0: never).
        #[arg(long, default_value_t = 0)]
        rounds: u64,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Appraises saved evidence against an AK, offline (no agent, no state).
    Appraise {
        /// The evidence JSON.
        #[arg(long)]
        evidence: PathBuf,
        /// The AK's TPM2B_PUBLIC (what `tpm2_readpublic -o` writes).
        #[arg(long)]
        ak: PathBuf,
        /// The domain that was asked.
        #[arg(long)]
        domain: String,
        /// The nonce that was sent (hex).
        #[arg(long)]
        nonce: String,
        #[command(flatten)]
        policy: PolicyArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
}

#[derive(Debug, Args)]
struct PolicyArgs {
    /// An ed25519 public key (PEM) manifests may be signed with (repeatable).
    #[arg(long = "manifest-key", value_name = "PEM", required = true)]
    manifest_keys: Vec<PathBuf>,
    /// The lowest security version accepted.
    #[arg(long, default_value_t = 0)]
    min_security_version: u64,
}

#[derive(Debug, Args)]
struct OutputArgs {
    /// Print the EAR as JSON.
    #[arg(long)]
    json: bool,
    /// Print the EAR as a JWT signed with ES256 by this P-256 private key
    /// (PKCS#8 PEM: `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`).
    #[arg(long, value_name = "PEM")]
    jwt_key: Option<PathBuf>,
    /// List every claim, not only the failing ones.
    #[arg(long, short)]
    verbose: bool,
}

/// An error with its exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct Config {
    message: String,
}

fn config(message: impl Into<String>) -> anyhow::Error {
    Config {
        message: message.into(),
    }
    .into()
}

fn agent_code(error: &AgentError) -> u8 {
    match error {
        AgentError::Unreachable { .. } | AgentError::Status { .. } => 5,
        AgentError::Body { .. } | AgentError::Evidence { .. } => 6,
    }
}

fn exit_code(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if let Some(err) = cause.downcast_ref::<CheckError>() {
            return match err {
                CheckError::NotEnrolled { .. } => 4,
                CheckError::Store(_) | CheckError::EnrolledAk { .. } => 3,
                CheckError::Agent(err) => agent_code(err),
            };
        }
        if let Some(err) = cause.downcast_ref::<AgentError>() {
            return agent_code(err);
        }
        if let Some(err) = cause.downcast_ref::<EnrollError>() {
            return match err {
                EnrollError::Agent(err) => agent_code(err),
                _ => 7,
            };
        }
        if cause.downcast_ref::<StoreError>().is_some() || cause.downcast_ref::<Config>().is_some()
        {
            return 3;
        }
    }
    3
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("vigil-verify: {err:#}");
            ExitCode::from(exit_code(&err))
        }
    }
}

fn state_dir(cli: &Cli) -> PathBuf {
    if let Some(dir) = &cli.state_dir {
        return dir.clone();
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("vigil-verify");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".local/state/vigil-verify")
}

fn read_text(path: &Path, what: &str) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|err| config(format!("reading {what} {}: {err}", path.display())))
}

fn load_policy(args: &PolicyArgs) -> Result<Policy> {
    let mut keys = Vec::new();
    for path in &args.manifest_keys {
        let text = read_text(path, "manifest key")?;
        let key = bundle::public_key_from_pem(&text)
            .map_err(|err| config(format!("manifest key {}: {err}", path.display())))?;
        keys.push(key);
    }
    Ok(Policy {
        manifest_keys: keys,
        min_security_version: args.min_security_version,
    })
}

/// Prints, treating a closed pipe as done (`vigil_cli`).
fn emit(text: &str) -> Result<()> {
    Ok(vigil_cli::print(text)?)
}

fn print_result(appraisal: &Appraisal, ear: &Ear, output: &OutputArgs) -> Result<ExitCode> {
    if let Some(path) = &output.jwt_key {
        let text = read_text(path, "EAR signing key")?;
        let key = p256::ecdsa::SigningKey::from_pkcs8_pem(&text).map_err(|err| {
            config(format!(
                "EAR signing key {}: not a P-256 PKCS#8 private key: {err}",
                path.display()
            ))
        })?;
        emit(&format!("{}\n", ear.sign(&key)))?;
    } else if output.json {
        emit(&format!("{}\n", serde_json::to_string_pretty(ear)?))?;
    } else {
        emit(&render_text(appraisal, output.verbose))?;
    }
    Ok(if appraisal.status == Status::Affirming {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    let store = Store::new(state_dir(&cli));
    let agent = HttpAgent::new(&cli.agent);
    match &cli.command {
        Commands::Enroll {
            domain,
            ek_ca,
            pin_on_first_contact,
        } => {
            enroll::check_domain_name(domain)?;
            let trust = if *pin_on_first_contact {
                eprintln!(
                    "vigil-verify: WARNING: pinning {domain}'s EK on first contact, WITHOUT checking \
                     its certificate against a CA: whoever answers at {} now is trusted as its TPM",
                    cli.agent
                );
                Trust::PinOnFirstContact
            } else {
                let mut anchors = Vec::new();
                for path in ek_ca {
                    let text = read_text(path, "EK CA file")?;
                    anchors.extend(
                        vigil_verify::ekcert::anchors_from_pem(&text).map_err(|err| {
                            config(format!("EK CA file {}: {err}", path.display()))
                        })?,
                    );
                }
                Trust::Ca(anchors)
            };
            let enrollment = enroll::enroll(&agent, domain, &trust, SystemTime::now(), &mut OsRng)?;
            let path = store.save(&enrollment)?;
            let basis = match enrollment.trust {
                TrustBasis::EkCa => "EK certificate verified against the CA",
                TrustBasis::Pinned => "EK PINNED on first contact (no CA)",
            };
            emit(&format!(
                "enrolled {domain} at {}: AK {} ({basis}; credential activated); state {}\n",
                cli.agent,
                enrollment.ak_name,
                path.display()
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Commands::Check {
            domain,
            policy,
            output,
        } => {
            enroll::check_domain_name(domain)?;
            let policy = load_policy(policy)?;
            let outcome = check::check(
                &agent,
                &store,
                domain,
                &policy,
                SystemTime::now(),
                &mut OsRng,
            )?;
            print_result(&outcome.appraisal, &outcome.ear, output)
        }
        Commands::Appraise {
            evidence,
            ak,
            domain,
            nonce,
            policy,
            output,
        } => {
            let policy = load_policy(policy)?;
            let nonce = Nonce::from_hex(nonce).map_err(|err| config(format!("--nonce: {err}")))?;
            let ak_bytes = std::fs::read(ak)
                .map_err(|err| config(format!("reading AK {}: {err}", ak.display())))?;
            let ak = TpmPublic::parse(&ak_bytes)
                .map_err(|err| config(format!("AK {}: {err}", ak.display())))?;
            let bytes = std::fs::read(evidence)
                .map_err(|err| config(format!("reading evidence {}: {err}", evidence.display())))?;
            let evidence =
                Evidence::parse(&bytes).map_err(|err| config(format!("evidence: {err}")))?;
            let appraisal = appraise(
                &evidence,
                &Request {
                    domain,
                    nonce: &nonce,
                    ak: &ak,
                    previous: None,
                },
                &policy,
            );
            let ear = Ear::new(
                &appraisal,
                nonce.as_bytes(),
                check::unix_now(SystemTime::now()),
            );
            print_result(&appraisal, &ear, output)
        }
        Commands::Watch {
            domain,
            interval,
            on_change,
            webhook,
            rounds,
            policy,
        } => {
            enroll::check_domain_name(domain)?;
            let policy = load_policy(policy)?;
            watch(
                &agent,
                &store,
                domain,
                &policy,
                Duration::from_secs((*interval).max(1)),
                *rounds,
                on_change.as_deref(),
                webhook.as_deref(),
            )
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn watch(
    agent: &HttpAgent,
    store: &Store,
    domain: &str,
    policy: &Policy,
    interval: Duration,
    rounds: u64,
    on_change: Option<&str>,
    webhook: Option<&str>,
) -> Result<ExitCode> {
    let mut watcher = Watcher::default();
    let mut round = 0u64;
    loop {
        let started = Instant::now();
        let last_status;
        let (observation, ear) =
            match check::check(agent, store, domain, policy, SystemTime::now(), &mut OsRng) {
                Ok(outcome) => {
                    last_status = outcome.appraisal.status;
                    let failing: Vec<&str> = outcome.appraisal.failures().map(|c| c.name).collect();
                    emit(&format!(
                        "{}: {}{}\n",
                        domain,
                        outcome.appraisal.status,
                        if failing.is_empty() {
                            String::new()
                        } else {
                            format!(" (failing: {})", failing.join(", "))
                        }
                    ))?;
                    (
                        Observation::Status {
                            status: outcome.appraisal.status.as_str().into(),
                            reset_count: outcome.appraisal.clock.map(|c| c.reset_count),
                        },
                        Some(outcome.ear),
                    )
                }
                Err(CheckError::Agent(err)) => {
                    last_status = Status::None;
                    emit(&format!("{domain}: agent unreachable: {err}\n"))?;
                    (Observation::AgentDown(err.to_string()), None)
                }
                Err(err) => return Err(err.into()),
            };
        for event in watcher.observe(observation) {
            match event {
                Event::AgentBack => emit(&format!("{domain}: the agent answers again\n"))?,
                Event::Relaunched { from, to } => emit(&format!(
                    "{domain}: the domain's TPM was reset (reset count {from} -> {to}): relaunched\n"
                ))?,
                Event::Changed { from, to } => {
                    emit(&format!(
                        "{domain}: status changed: {} -> {to}\n",
                        from.as_deref().unwrap_or("(start)")
                    ))?;
                    notify(
                        domain,
                        from.as_deref(),
                        &to,
                        ear.as_ref(),
                        on_change,
                        webhook,
                    );
                }
            }
        }
        round += 1;
        if rounds != 0 && round >= rounds {
            return Ok(if last_status == Status::Affirming {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        std::thread::sleep(interval.saturating_sub(started.elapsed()));
    }
}

/// How long a notification command may run.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(30);

fn notify(
    domain: &str,
    from: Option<&str>,
    to: &str,
    ear: Option<&Ear>,
    on_change: Option<&str>,
    webhook: Option<&str>,
) {
    let ear_json = ear.map_or(serde_json::Value::Null, |e| {
        serde_json::to_value(e).unwrap_or_default()
    });
    if let Some(command) = on_change
        && let Err(err) = run_command(command, domain, from, to, &ear_json)
    {
        eprintln!("vigil-verify: --on-change command failed: {err:#}");
    }
    if let Some(url) = webhook {
        let body =
            serde_json::json!({"domain": domain, "status": to, "previous": from, "ear": ear_json});
        let result = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            .build()
            .post(url)
            .set("Content-Type", "application/json")
            .send_string(&body.to_string());
        if let Err(err) = result {
            eprintln!("vigil-verify: webhook {url} failed: {err}");
        }
    }
}

fn run_command(
    command: &str,
    domain: &str,
    from: Option<&str>,
    to: &str,
    ear: &serde_json::Value,
) -> Result<()> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("VIGIL_DOMAIN", domain)
        .env("VIGIL_STATUS", to)
        .env("VIGIL_PREVIOUS_STATUS", from.unwrap_or(""))
        .stdin(Stdio::piped())
        .spawn()
        .context("starting sh")?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its input is fine.
        let _ = stdin.write_all(ear.to_string().as_bytes());
    }
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            anyhow::ensure!(status.success(), "{command:?} exited with {status}");
            return Ok(());
        }
        if started.elapsed() > NOTIFY_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("{command:?} ran over {} s", NOTIFY_TIMEOUT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
