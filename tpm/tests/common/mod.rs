//! A real swtpm for the tests, started the way dom0 starts it, provisioned
//! the way dom0 provisions it, and checked with tpm2-tools and openssl.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use vigil_tpm::Tpm;

/// A vTPM state directory (temporary), provisioned with an EK and its
/// certificate by `swtpm_setup`, exactly as the report tells dom0 to.
pub struct VtpmDir {
    dir: tempfile::TempDir,
}

impl VtpmDir {
    /// `swtpm_setup --tpm2 --tpmstate DIR --create-ek-cert --pcr-banks sha256`.
    pub fn provisioned() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let output = Command::new("swtpm_setup")
            .arg("--tpm2")
            .arg("--tpmstate")
            .arg(&state)
            .arg("--create-ek-cert")
            .args(["--pcr-banks", "sha256"])
            .arg("--logfile")
            .arg(dir.path().join("swtpm_setup.log"))
            .stdin(Stdio::null())
            .output()
            .expect("swtpm_setup runs (apt package swtpm-tools)");
        let log = std::fs::read_to_string(dir.path().join("swtpm_setup.log")).unwrap_or_default();
        assert!(
            output.status.success(),
            "swtpm_setup failed: {}{}",
            String::from_utf8_lossy(&output.stderr),
            log
        );
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("tpm.sock")
    }

    /// Starts swtpm on this state.
    pub fn start(&self) -> Swtpm {
        Swtpm::start(self)
    }
}

/// A running swtpm, stopped (SIGKILL, by its pid) when dropped, also when
/// the test fails.
pub struct Swtpm {
    child: Option<Child>,
    socket: PathBuf,
}

impl Swtpm {
    /// The command line of `xen-config/src/tpm.rs` (`Vtpm::start`).
    fn start(dir: &VtpmDir) -> Self {
        let socket = dir.socket();
        let control = dir.path().join("tpm.sock.ctrl");
        for stale in [&socket, &control] {
            let _ = std::fs::remove_file(stale);
        }
        let child = Command::new("swtpm")
            .arg("socket")
            .arg("--tpm2")
            .arg("--tpmstate")
            .arg(format!("dir={}", dir.path().join("state").display()))
            .arg("--server")
            .arg(format!("type=unixio,path={}", socket.display()))
            .arg("--ctrl")
            .arg(format!("type=unixio,path={}", control.display()))
            .args(["--flags", "not-need-init,startup-clear"])
            .args(["--locality", "reject-locality-4"])
            .arg("--log")
            .arg(format!(
                "file={},level=1",
                dir.path().join("swtpm.log").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("swtpm runs (apt package swtpm)");
        let swtpm = Self {
            child: Some(child),
            socket,
        };
        let started = Instant::now();
        loop {
            if swtpm.socket.exists() && Tpm::connect(&swtpm.socket).get_random(8).is_ok() {
                return swtpm;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "swtpm did not answer within 10 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn tpm(&self) -> Tpm {
        Tpm::connect(&self.socket)
    }

    /// SIGTERM, as a host shutting down would send, and wait for the exit.
    pub fn terminate(mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = rustix::process::Pid::from_child(&child);
            rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs a tpm2-tools program against the swtpm at `socket`, asserts that it
/// succeeded, then flushes transient objects (no resource manager).
pub fn tpm2(socket: &Path, program: &str, args: &[&str]) -> Output {
    let output = tpm2_unchecked(socket, program, args);
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// [`tpm2`] without the success check.
pub fn tpm2_unchecked(socket: &Path, program: &str, args: &[&str]) -> Output {
    let tcti = format!("swtpm:path={}", socket.display());
    let output = Command::new(program)
        .arg("-T")
        .arg(&tcti)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("{program} runs (apt package tpm2-tools): {err}"));
    let flush = Command::new("tpm2_flushcontext")
        .arg("-T")
        .arg(&tcti)
        .arg("-t")
        .output()
        .expect("tpm2_flushcontext runs");
    assert!(flush.status.success(), "tpm2_flushcontext -t failed");
    output
}

/// Runs a program that needs no TPM, asserting success.
pub fn run(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("{program} runs: {err}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The tpm2-tools "serialized" PCR file (what `tpm2_quote -o` writes), for
/// SHA-256 `values` in ascending PCR order: an in-memory little-endian dump
/// of `TPML_PCR_SELECTION` (u32 count, 16 × 8-byte `TPMS_PCR_SELECTION`),
/// a u32 count of `TPML_DIGEST`s, and each `TPML_DIGEST` (u32 count,
/// 8 × {u16 size, 64-byte buffer}).
pub fn pcr_file(values: &[(u8, [u8; 32])]) -> Vec<u8> {
    let mut select = [0u8; 3];
    for (pcr, _) in values {
        select[usize::from(pcr / 8)] |= 1 << (pcr % 8);
    }
    let mut file = Vec::new();
    file.extend_from_slice(&1u32.to_le_bytes());
    for i in 0..16 {
        let mut entry = [0u8; 8];
        if i == 0 {
            entry[..2].copy_from_slice(&0x000bu16.to_le_bytes());
            entry[2] = 3;
            entry[3..6].copy_from_slice(&select);
        }
        file.extend_from_slice(&entry);
    }
    let chunks: Vec<_> = values.chunks(8).collect();
    file.extend_from_slice(&(chunks.len() as u32).to_le_bytes());
    for chunk in chunks {
        file.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
        for i in 0..8 {
            let mut digest = [0u8; 66];
            if let Some((_, value)) = chunk.get(i) {
                digest[..2].copy_from_slice(&32u16.to_le_bytes());
                digest[2..34].copy_from_slice(value);
            }
            file.extend_from_slice(&digest);
        }
    }
    file
}

/// A transport that records every exchange of the transport it wraps, in
/// the fixture format of `tests/data/README.md`.
pub struct Recorder<T> {
    pub inner: T,
    pub log: String,
    pub exchanges: usize,
}

impl<T> Recorder<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            log: String::new(),
            exchanges: 0,
        }
    }
}

impl<T: vigil_tpm::Transport> vigil_tpm::Transport for Recorder<T> {
    fn transact(&mut self, command: &[u8]) -> std::io::Result<Vec<u8>> {
        let response = self.inner.transact(command)?;
        self.log
            .push_str(&format!("> {}\n< {}\n", hex(command), hex(&response)));
        self.exchanges += 1;
        Ok(response)
    }

    fn endpoint(&self) -> String {
        self.inner.endpoint()
    }
}
