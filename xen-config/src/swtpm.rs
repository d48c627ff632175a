//! A domain's vTPM *process*: one `swtpm` per domain, started before the
//! launch extends its PCRs, left running for the domain's lifetime, and
//! stopped in order (`TPM2_Shutdown`, then SIGTERM). What is said to the TPM
//! is `vigil-tpm`'s job.
//!
//! A domain's first start provisions its vTPM with `swtpm_setup`: an
//! endorsement key whose certificate swtpm's local CA signs
//! (`/etc/swtpm-localca.conf`; the CA lives in `/var/lib/swtpm-localca`),
//! so that a verifier can tell the attestation key lives in this vTPM.
//!
//! swtpm runs with `--flags not-need-init,startup-clear`, so every start is a
//! fresh `TPM2_Startup(CLEAR)`: all PCRs start at zero, while the state
//! directory (endorsement seeds, persistent keys) is kept across launches.
//! Its sockets are `tpm.sock` (commands) and `tpm.sock.ctrl` (control), the
//! names tpm2-tss's swtpm TCTI expects: `tpm2_pcrread -T swtpm:path=<dir>/tpm.sock`.
//! They live in the domain's 0700 directory: a TCP port on loopback would be
//! reachable by every local user.
//!
//! Stopping swtpm without `TPM2_Shutdown` makes the TPM's clock lose its
//! "safe" flag on the next start, and quotes then carry `safe = 0`, which
//! verifiers reject; so every stop sends `TPM2_Shutdown(CLEAR)` first.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vigil_tpm::{ShutdownType, Tpm};

use crate::process;

/// The swtpm program.
pub const SWTPM: &str = "swtpm";
/// The Debian package that provides it.
pub const SWTPM_PACKAGE: &str = "swtpm";
/// The program that provisions a new vTPM's state (EK and its certificate).
pub const SWTPM_SETUP: &str = "swtpm_setup";
/// The Debian package that provides it.
pub const SWTPM_SETUP_PACKAGE: &str = "swtpm-tools";
/// The file swtpm keeps a TPM 2.0's state in: a state directory without it
/// has never been provisioned.
const STATE_FILE: &str = "tpm2-00.permall";
/// How long swtpm may take to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long swtpm gets to save its state and exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Why a domain's swtpm could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SwtpmError {
    /// swtpm (or swtpm_setup) is not installed.
    #[error("`{program}` was not found on PATH: install the Debian package `{package}`")]
    Missing {
        /// The program.
        program: &'static str,
        /// Its package.
        package: &'static str,
    },
    /// `swtpm_setup` could not provision a new vTPM.
    #[error(
        "provisioning the vTPM in {dir} with swtpm_setup failed ({status}): {output}; \
         swtpm's local CA signs the EK certificate, which needs write access to \
         /var/lib/swtpm-localca (run vigil-dom0 as root)"
    )]
    Provision {
        /// The state directory.
        dir: PathBuf,
        /// How swtpm_setup ended.
        status: String,
        /// What it said.
        output: String,
    },
    /// swtpm could not be started, or did not come up.
    #[error("swtpm did not start for {dir}: {reason}")]
    Start {
        /// The domain's TPM directory.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Where a domain's vTPM lives: `<dir>/state` (kept), `<dir>/tpm.sock` and
/// `<dir>/tpm.sock.ctrl` (0700 directory).
pub fn socket_path(dir: &Path) -> PathBuf {
    dir.join("tpm.sock")
}

/// Checks that the programs a start of the vTPM in `dir` needs are
/// installed (swtpm; swtpm_setup for a vTPM not provisioned yet), so that a
/// launch can say so before it starts anything.
pub fn require(dir: &Path) -> Result<(), SwtpmError> {
    which::which(SWTPM).map_err(|_| SwtpmError::Missing {
        program: SWTPM,
        package: SWTPM_PACKAGE,
    })?;
    if !dir.join("state").join(STATE_FILE).exists() {
        which::which(SWTPM_SETUP).map_err(|_| SwtpmError::Missing {
            program: SWTPM_SETUP,
            package: SWTPM_SETUP_PACKAGE,
        })?;
    }
    Ok(())
}

/// A running swtpm for one domain. Dropping it stops swtpm in order.
#[derive(Debug)]
pub struct Swtpm {
    child: Option<Child>,
    socket: PathBuf,
}

impl Swtpm {
    /// Starts swtpm for the domain whose TPM directory is `dir` (created
    /// 0700 if missing), and waits until it answers.
    pub fn start(dir: &Path) -> Result<Self, SwtpmError> {
        let program = which::which(SWTPM).map_err(|_| SwtpmError::Missing {
            program: SWTPM,
            package: SWTPM_PACKAGE,
        })?;
        let fail = |reason: String| SwtpmError::Start {
            dir: dir.into(),
            reason,
        };
        let state = dir.join("state");
        fs::create_dir_all(&state)
            .map_err(|err| fail(format!("creating {}: {err}", state.display())))?;
        for d in [dir, state.as_path()] {
            fs::set_permissions(d, fs::Permissions::from_mode(0o700))
                .map_err(|err| fail(format!("securing {}: {err}", d.display())))?;
        }
        if !state.join(STATE_FILE).exists() {
            provision(&state)?;
        }
        let socket = socket_path(dir);
        let control = dir.join("tpm.sock.ctrl");
        for stale in [&socket, &control] {
            let _ = fs::remove_file(stale);
        }
        let stderr_path = dir.join("swtpm.stderr");
        let stderr = fs::File::create(&stderr_path)
            .map_err(|err| fail(format!("creating {}: {err}", stderr_path.display())))?;
        let child = Command::new(program)
            .arg("socket")
            .arg("--tpm2")
            .arg("--tpmstate")
            .arg(format!("dir={}", state.display()))
            .arg("--server")
            .arg(format!("type=unixio,path={}", socket.display()))
            .arg("--ctrl")
            .arg(format!("type=unixio,path={}", control.display()))
            .args(["--flags", "not-need-init,startup-clear"])
            .args(["--locality", "reject-locality-4"])
            .arg("--log")
            .arg(format!("file={},level=1", dir.join("swtpm.log").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            // Its own process group: Ctrl-C on the launching terminal does
            // not reach a vTPM meant to outlive the launcher.
            .process_group(0)
            .spawn()
            .map_err(|err| fail(format!("spawning swtpm: {err}")))?;
        let mut swtpm = Self {
            child: Some(child),
            socket,
        };
        let started = Instant::now();
        loop {
            if let Some(child) = swtpm.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
                    swtpm.child = None;
                    return Err(fail(format!(
                        "swtpm exited with {status}: {}",
                        stderr.trim()
                    )));
                }
            }
            if swtpm.socket.exists() && Tpm::connect(&swtpm.socket).get_random(8).is_ok() {
                return Ok(swtpm);
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(fail(format!(
                    "no answer on {} within {} s",
                    swtpm.socket.display(),
                    START_TIMEOUT.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// swtpm's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The command socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Leaves swtpm running after this value is dropped (the domain's
    /// lifecycle then owns it, by its pid: [`stop_detached`]).
    pub fn detach(mut self) -> u32 {
        self.child.take().map_or(0, process::reap_when_done)
    }

    /// Stops swtpm in order: `TPM2_Shutdown`, then SIGTERM (it saves its
    /// state), and waits for it.
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Tpm::connect(&self.socket).shutdown(ShutdownType::Clear);
            process::terminate_child(&mut child, STOP_GRACE);
        }
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Stops a detached swtpm (pid `pid`, serving `socket`) in order, if it
/// still runs: `TPM2_Shutdown`, then SIGTERM, then SIGKILL if it lingers.
pub fn stop_detached(pid: u32, socket: &Path) {
    let Some(dir) = socket.parent() else {
        return;
    };
    if process::alive(pid, dir) {
        let _ = Tpm::connect(socket).shutdown(ShutdownType::Clear);
        process::terminate(pid, dir, process::TERM_GRACE);
    }
}

/// Provisions a new vTPM's state directory `state` (which exists):
/// `swtpm_setup` creates the endorsement keys and stores their certificates,
/// signed by swtpm's local CA, in the TPM's NV memory (the RSA EK's at
/// `vigil_tpm::EK_CERT_NV_INDEX`).
fn provision(state: &Path) -> Result<(), SwtpmError> {
    let program = which::which(SWTPM_SETUP).map_err(|_| SwtpmError::Missing {
        program: SWTPM_SETUP,
        package: SWTPM_SETUP_PACKAGE,
    })?;
    let output = Command::new(program)
        .args(["--tpm2", "--tpmstate"])
        .arg(state)
        .args(["--create-ek-cert", "--pcr-banks", "sha256"])
        .stdin(Stdio::null())
        .output()
        .map_err(|err| SwtpmError::Start {
            dir: state.into(),
            reason: format!("running {SWTPM_SETUP}: {err}"),
        })?;
    if output.status.success() {
        return Ok(());
    }
    // Leave no half-provisioned state behind: the next start tries again.
    if let Ok(entries) = fs::read_dir(state) {
        for entry in entries.flatten() {
            let _ = fs::remove_file(entry.path());
        }
    }
    let text = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    Err(SwtpmError::Provision {
        dir: state.into(),
        status: output.status.to_string(),
        output: crate::console::last_lines(text.trim(), 5),
    })
}
