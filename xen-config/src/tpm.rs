//! A domain's vTPM: one `swtpm` process per domain, and the few TPM 2.0
//! commands a launch needs, spoken over swtpm's Unix socket.
//!
//! Hand-written rather than `tss-esapi`: that crate needs the C `libtss2`
//! and a long build, while a launch needs three commands (`PCR_Extend`,
//! `PCR_Read`, `GetRandom` for a liveness check) whose wire format is a
//! few dozen bytes each (TPM 2.0 Library, Part 3). Independent tools check
//! this code in the tests: `tpm2_pcrread` and `tpm2_eventlog` (tpm2-tools).
//!
//! swtpm runs with `--flags not-need-init,startup-clear`, so every start is a
//! fresh `TPM2_Startup(CLEAR)`: all PCRs start at zero, while the state
//! directory (endorsement seeds, persistent keys) is kept across launches.
//! Its sockets are `tpm.sock` (commands) and `tpm.sock.ctrl` (control), the
//! names tpm2-tss's swtpm TCTI expects: `tpm2_pcrread -T swtpm:path=<dir>/tpm.sock`.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vigil_core::v1::events::Sha256Digest;

/// The swtpm program.
pub const SWTPM: &str = "swtpm";
/// The Debian package that provides it.
pub const SWTPM_PACKAGE: &str = "swtpm";

const TPM_ST_NO_SESSIONS: u16 = 0x8001;
const TPM_ST_SESSIONS: u16 = 0x8002;
const TPM_CC_PCR_EXTEND: u32 = 0x0000_0182;
const TPM_CC_PCR_READ: u32 = 0x0000_017e;
const TPM_CC_GET_RANDOM: u32 = 0x0000_017b;
const TPM_RS_PW: u32 = 0x4000_0009;
const TPM_ALG_SHA256: u16 = 0x000b;
/// How long one command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long swtpm may take to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A failed vTPM operation.
#[derive(Debug, thiserror::Error)]
pub enum TpmError {
    /// swtpm is not installed.
    #[error("`{SWTPM}` was not found on PATH: install the Debian package `{SWTPM_PACKAGE}`")]
    Missing,
    /// swtpm could not be started, or did not come up.
    #[error("swtpm did not start for {dir}: {reason}")]
    Start {
        /// The domain's TPM directory.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
    /// The socket failed while talking to the TPM.
    #[error("talking to the vTPM at {socket} failed")]
    Io {
        /// The command socket.
        socket: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TPM answered a command with an error code.
    #[error("the vTPM refused {command}: response code {code:#x}")]
    Refused {
        /// The command.
        command: &'static str,
        /// `TPM_RC`.
        code: u32,
    },
    /// The TPM's answer was not what the command returns.
    #[error("the vTPM's answer to {command} is malformed")]
    Malformed {
        /// The command.
        command: &'static str,
    },
}

/// A running swtpm for one domain. Dropping it stops swtpm.
#[derive(Debug)]
pub struct Vtpm {
    child: Option<Child>,
    socket: PathBuf,
}

/// Where a domain's vTPM lives: `<dir>/state` (kept), `<dir>/tpm.sock` and
/// `<dir>/tpm.sock.ctrl` (0700 directory).
pub fn socket_path(dir: &Path) -> PathBuf {
    dir.join("tpm.sock")
}

impl Vtpm {
    /// Starts swtpm for the domain whose TPM directory is `dir` (created
    /// 0700 if missing), and waits until it answers.
    pub fn start(dir: &Path) -> Result<Self, TpmError> {
        let program = which::which(SWTPM).map_err(|_| TpmError::Missing)?;
        let fail = |reason: String| TpmError::Start {
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
        let mut vtpm = Self {
            child: Some(child),
            socket,
        };
        let started = Instant::now();
        loop {
            if let Some(child) = vtpm.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
                    vtpm.child = None;
                    return Err(fail(format!(
                        "swtpm exited with {status}: {}",
                        stderr.trim()
                    )));
                }
            }
            if vtpm.socket.exists() && vtpm.get_random().is_ok() {
                return Ok(vtpm);
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(fail(format!(
                    "no answer on {} within {} s",
                    vtpm.socket.display(),
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
    /// lifecycle then owns it, by its pid).
    pub fn detach(mut self) -> u32 {
        self.child.take().map_or(0, crate::qemu::reap_when_done)
    }

    /// Stops swtpm (SIGTERM; it saves its state), and waits for it.
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                }
            }
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(2) {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `TPM2_PCR_Extend` of the SHA-256 bank of `pcr` with `digest`.
    pub fn extend(&self, pcr: u8, digest: &Sha256Digest) -> Result<(), TpmError> {
        extend(&self.socket, pcr, digest)
    }

    /// `TPM2_PCR_Read` of the SHA-256 bank of `pcr`.
    pub fn read_pcr(&self, pcr: u8) -> Result<Sha256Digest, TpmError> {
        read_pcr(&self.socket, pcr)
    }

    fn get_random(&self) -> Result<(), TpmError> {
        let mut params = Vec::new();
        params.extend_from_slice(&8u16.to_be_bytes());
        transact(
            &self.socket,
            "GetRandom",
            TPM_ST_NO_SESSIONS,
            TPM_CC_GET_RANDOM,
            &params,
        )
        .map(|_| ())
    }
}

impl Drop for Vtpm {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Sends one command on a fresh connection and returns the response's
/// parameter area (after the 10-byte header).
fn transact(
    socket: &Path,
    command: &'static str,
    tag: u16,
    code: u32,
    body: &[u8],
) -> Result<Vec<u8>, TpmError> {
    let io = |source| TpmError::Io {
        socket: socket.into(),
        source,
    };
    let mut request = Vec::with_capacity(10 + body.len());
    request.extend_from_slice(&tag.to_be_bytes());
    request.extend_from_slice(&((10 + body.len()) as u32).to_be_bytes());
    request.extend_from_slice(&code.to_be_bytes());
    request.extend_from_slice(body);
    let mut stream = UnixStream::connect(socket).map_err(io)?;
    stream.set_read_timeout(Some(COMMAND_TIMEOUT)).map_err(io)?;
    stream
        .set_write_timeout(Some(COMMAND_TIMEOUT))
        .map_err(io)?;
    stream.write_all(&request).map_err(io)?;
    let mut head = [0u8; 10];
    stream.read_exact(&mut head).map_err(io)?;
    let size = u32::from_be_bytes([head[2], head[3], head[4], head[5]]) as usize;
    let rc = u32::from_be_bytes([head[6], head[7], head[8], head[9]]);
    if !(10..=4096).contains(&size) {
        return Err(TpmError::Malformed { command });
    }
    let mut rest = vec![0u8; size - 10];
    stream.read_exact(&mut rest).map_err(io)?;
    if rc != 0 {
        return Err(TpmError::Refused { command, code: rc });
    }
    Ok(rest)
}

/// `TPM2_PCR_Extend` (SHA-256 bank), with an empty password session.
pub fn extend(socket: &Path, pcr: u8, digest: &Sha256Digest) -> Result<(), TpmError> {
    let mut body = Vec::with_capacity(4 + 4 + 9 + 4 + 2 + 32);
    body.extend_from_slice(&u32::from(pcr).to_be_bytes());
    // Authorization area: one password session with an empty password.
    body.extend_from_slice(&9u32.to_be_bytes());
    body.extend_from_slice(&TPM_RS_PW.to_be_bytes());
    body.extend_from_slice(&0u16.to_be_bytes()); // nonce
    body.push(0); // session attributes
    body.extend_from_slice(&0u16.to_be_bytes()); // password
    // TPML_DIGEST_VALUES with one SHA-256 digest.
    body.extend_from_slice(&1u32.to_be_bytes());
    body.extend_from_slice(&TPM_ALG_SHA256.to_be_bytes());
    body.extend_from_slice(digest);
    transact(
        socket,
        "PCR_Extend",
        TPM_ST_SESSIONS,
        TPM_CC_PCR_EXTEND,
        &body,
    )
    .map(|_| ())
}

/// `TPM2_PCR_Read` of one PCR's SHA-256 bank.
pub fn read_pcr(socket: &Path, pcr: u8) -> Result<Sha256Digest, TpmError> {
    let malformed = TpmError::Malformed {
        command: "PCR_Read",
    };
    if pcr >= 24 {
        return Err(malformed);
    }
    let mut select = [0u8; 3];
    select[usize::from(pcr / 8)] = 1 << (pcr % 8);
    let mut body = Vec::new();
    body.extend_from_slice(&1u32.to_be_bytes());
    body.extend_from_slice(&TPM_ALG_SHA256.to_be_bytes());
    body.push(3);
    body.extend_from_slice(&select);
    let response = transact(
        socket,
        "PCR_Read",
        TPM_ST_NO_SESSIONS,
        TPM_CC_PCR_READ,
        &body,
    )?;
    // pcrUpdateCounter (4), TPML_PCR_SELECTION (4 + 2 + 1 + 3), TPML_DIGEST
    // count (4), TPM2B size (2), digest (32).
    let expected_selection = [0, 0, 0, 1, 0, 0x0b, 3, select[0], select[1], select[2]];
    if response.len() != 4 + 10 + 4 + 2 + 32
        || response[4..14] != expected_selection
        || response[14..18] != 1u32.to_be_bytes()
        || response[18..20] != 32u16.to_be_bytes()
    {
        return Err(malformed);
    }
    let mut digest = [0u8; 32];
    digest.copy_from_slice(&response[20..52]);
    Ok(digest)
}
