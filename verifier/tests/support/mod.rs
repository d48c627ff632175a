//! Real TPM evidence for the tests: a swtpm provisioned with an EK
//! certificate from a local CA of the test's own, tpm2-tools for the TPM
//! side (EK, AK, extends, quotes, ActivateCredential), the launch events of
//! `vigil-core` extended for real, a manifest sealed by a test key and a
//! runtime report signed by a test per-boot key.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ed25519_dalek::Signer as _;
use vigil_core::v1::eventlog::{self, Record};
use vigil_core::v1::events::{LaunchInputs, predict_pcr9, sha256};
use vigil_core::v1::evidence::{Base64, Evidence, FORMAT, HexNonce, Quote};
use vigil_core::v1::manifest::{
    Artifact, Digest, ExcludedRegion, Manifest, MeasuredRegion, Provenance, ReferenceBlock, SCHEMA,
    Service, Watchdog,
};
use vigil_core::v1::refblock::{Reaction, RegionName};
use vigil_core::v1::report::{Nonce, RegionDigest, Report, ReportKey, Verdict};
use vigil_core::v2::events::LaunchEvents;
use vigil_verify::credential::Credential;
use vigil_verify::tpm::hex;

/// The AK's persistent handle (the contract's).
pub const AK_HANDLE: &str = "0x81010002";
/// A second AK in the same TPM ("another domain's AK").
pub const OTHER_AK_HANDLE: &str = "0x81010003";

/// A running swtpm, killed (by its pid) when dropped.
pub struct Swtpm {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

fn run(command: &mut Command) -> Output {
    let output = command.output().unwrap_or_else(|err| {
        panic!("{command:?}: {err} (install swtpm, swtpm-tools, tpm2-tools)")
    });
    assert!(
        output.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    output
}

impl Swtpm {
    /// Provisions a vTPM (EK + EK certificate from a fresh local CA) in a
    /// temporary directory and starts swtpm on a Unix socket there.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        std::fs::create_dir(path.join("ca")).unwrap();
        std::fs::create_dir(path.join("state")).unwrap();
        let ca = path.join("ca");
        std::fs::write(
            path.join("localca.conf"),
            format!(
                "statedir = {ca}\nsigningkey = {ca}/signkey.pem\nissuercert = {ca}/issuercert.pem\ncertserial = {ca}/certserial\n",
                ca = ca.display()
            ),
        )
        .unwrap();
        std::fs::write(
            path.join("localca.options"),
            "--platform-manufacturer Vigil --platform-version 1 --platform-model test\n",
        )
        .unwrap();
        std::fs::write(
            path.join("setup.conf"),
            format!(
                "create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = {p}/localca.conf\ncreate_certs_tool_options = {p}/localca.options\nactive_pcr_banks = sha256\n",
                p = path.display()
            ),
        )
        .unwrap();
        run(Command::new("swtpm_setup")
            .args([
                "--tpm2",
                "--create-ek-cert",
                "--overwrite",
                "--pcr-banks",
                "sha256",
            ])
            .arg("--tpmstate")
            .arg(path.join("state"))
            .arg("--config")
            .arg(path.join("setup.conf")));
        // The flags of xen-config/src/tpm.rs.
        let socket = path.join("tpm.sock");
        let child = Command::new("swtpm")
            .arg("socket")
            .arg("--tpm2")
            .arg("--tpmstate")
            .arg(format!("dir={}", path.join("state").display()))
            .arg("--server")
            .arg(format!("type=unixio,path={}", socket.display()))
            .arg("--ctrl")
            .arg(format!(
                "type=unixio,path={}",
                path.join("tpm.sock.ctrl").display()
            ))
            .args(["--flags", "not-need-init,startup-clear"])
            .args(["--locality", "reject-locality-4"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("swtpm starts");
        let swtpm = Self {
            dir,
            child: Some(child),
        };
        let started = Instant::now();
        while !socket.exists() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "swtpm did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        swtpm
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn tcti(&self) -> String {
        format!("swtpm:path={}", self.path("tpm.sock").display())
    }

    /// Runs a tpm2-tools command, then flushes transient objects (there is
    /// no resource manager).
    pub fn tool(&self, name: &str, args: &[&str]) -> Output {
        let output = run(Command::new(name)
            .args(args)
            .arg("-T")
            .arg(self.tcti())
            .current_dir(self.dir.path()));
        self.flush();
        output
    }

    /// Runs a tpm2-tools command that does not talk to the TPM.
    pub fn offline(&self, name: &str, args: &[&str]) -> Output {
        run(Command::new(name).args(args).current_dir(self.dir.path()))
    }

    pub fn flush(&self) {
        for kind in ["-t", "-s"] {
            run(Command::new("tpm2_flushcontext")
                .arg(kind)
                .arg("-T")
                .arg(self.tcti())
                .current_dir(self.dir.path()));
        }
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
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

/// The TPM side of a domain: its vTPM with an EK, the EK certificate and a
/// persistent AK.
pub struct Domain {
    pub tpm: Swtpm,
    pub ek_public: Vec<u8>,
    pub ek_certificate: Vec<u8>,
    pub ak_public: Vec<u8>,
    pub ak_name: Vec<u8>,
}

impl Domain {
    pub fn new() -> Self {
        let tpm = Swtpm::start();
        tpm.tool(
            "tpm2_createek",
            &["-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub"],
        );
        let ak_public = make_ak(&tpm, AK_HANDLE, "ak");
        tpm.tool("tpm2_nvread", &["0x01c00002", "-o", "ek.der"]);
        Self {
            ek_public: tpm.read("ek.pub"),
            ek_certificate: tpm.read("ek.der"),
            ak_name: tpm.read("ak.name"),
            ak_public,
            tpm,
        }
    }

    /// A second AK under the same EK (as another domain's would be).
    pub fn other_ak(&self) -> Vec<u8> {
        make_ak(&self.tpm, OTHER_AK_HANDLE, "ak2")
    }

    pub fn extend(&self, pcr: u8, digest: &[u8; 32]) {
        self.tpm.tool(
            "tpm2_pcrextend",
            &[&format!("{pcr}:sha256={}", hex(digest))],
        );
    }

    /// Extends the launch's events, as dom0 does.
    pub fn launch(&self, launch: &Launch) {
        for (pcr, digest) in launch.digests() {
            self.extend(pcr, &digest);
        }
    }

    /// `tpm2_quote` with an AK over the launch PCRs: message, signature, PCR
    /// file (also left in the TPM directory as quote.{msg,sig,pcrs}).
    pub fn quote(&self, handle: &str, nonce: &Nonce) -> Quote {
        self.tpm.tool(
            "tpm2_quote",
            &[
                "-c",
                handle,
                "-l",
                "sha256:9,12,15",
                "-q",
                &hex(nonce.as_bytes()),
                "-m",
                "quote.msg",
                "-s",
                "quote.sig",
                "-o",
                "quote.pcrs",
                "-g",
                "sha256",
            ],
        );
        Quote {
            message: Base64(self.tpm.read("quote.msg")),
            signature: Base64(self.tpm.read("quote.sig")),
            pcrs: Base64(self.tpm.read("quote.pcrs")),
        }
    }

    /// Whether `tpm2_checkquote` accepts quote files written in the TPM
    /// directory under `prefix`.{msg,sig,pcrs}.
    pub fn checkquote(&self, quote: &Quote, nonce: &Nonce) -> Output {
        std::fs::write(self.tpm.path("check.msg"), &quote.message.0).unwrap();
        std::fs::write(self.tpm.path("check.sig"), &quote.signature.0).unwrap();
        std::fs::write(self.tpm.path("check.pcrs"), &quote.pcrs.0).unwrap();
        self.tpm.tool(
            "tpm2_readpublic",
            &["-c", AK_HANDLE, "-f", "pem", "-o", "ak.pem"],
        );
        Command::new("tpm2_checkquote")
            .args([
                "-u",
                "ak.pem",
                "-m",
                "check.msg",
                "-s",
                "check.sig",
                "-f",
                "check.pcrs",
                "-g",
                "sha256",
                "-q",
            ])
            .arg(hex(nonce.as_bytes()))
            .current_dir(self.tpm.dir.path())
            .output()
            .unwrap()
    }
}

fn make_ak(tpm: &Swtpm, handle: &str, name: &str) -> Vec<u8> {
    tpm.tool(
        "tpm2_createak",
        &[
            "-C",
            "ek.ctx",
            "-c",
            &format!("{name}.ctx"),
            "-G",
            "rsa",
            "-g",
            "sha256",
            "-s",
            "rsassa",
            "-n",
            &format!("{name}.name"),
        ],
    );
    tpm.tool(
        "tpm2_evictcontrol",
        &["-C", "o", "-c", &format!("{name}.ctx"), handle],
    );
    tpm.tool(
        "tpm2_readpublic",
        &[
            "-c",
            handle,
            "-o",
            &format!("{name}.pub"),
            "-n",
            &format!("{name}.name"),
        ],
    );
    tpm.read(&format!("{name}.pub"))
}

/// A sealed bundle's manifest, its signature, and one boot of it.
pub struct Launch {
    pub manifest_key: ed25519_dalek::SigningKey,
    pub manifest: Manifest,
    pub manifest_bytes: Vec<u8>,
    pub manifest_signature: Vec<u8>,
    pub report_key: ReportKey,
    pub loader_sha256: [u8; 32],
    pub image_sha256: [u8; 32],
}

pub fn manifest(security_version: u64) -> Manifest {
    let loader = sha256(b"test loader");
    let image = sha256(b"test image");
    Manifest {
        schema: SCHEMA.into(),
        service: Service {
            name: "vigil-service".into(),
            version: "0.1.0".into(),
            security_version,
        },
        image: Artifact {
            file: "vigil-image".into(),
            bytes: 4_000_000,
            sha256: Digest(image),
        },
        loader: Artifact {
            file: "vigil-loader".into(),
            bytes: 100_000,
            sha256: Digest(loader),
        },
        kernel_cmdline: "-- --port=8080".into(),
        regions: vec![
            MeasuredRegion {
                name: "rodata".into(),
                sections: vec![".rodata".into()],
                vaddr: 0,
                file_offset: 0,
                bytes: 0x2a76c,
                sha256: Digest(sha256(b"rodata")),
                relocated_at: None,
            },
            MeasuredRegion {
                name: "code".into(),
                sections: vec![".text".into()],
                vaddr: 0x2b770,
                file_offset: 0x2a770,
                bytes: 0xdd73f,
                sha256: Digest(sha256(b"code")),
                relocated_at: None,
            },
        ],
        excluded: vec![ExcludedRegion {
            name: "data".into(),
            vaddr: 0x109eb0,
            bytes: 0x13150,
            reason: "writable".into(),
        }],
        reference_block: ReferenceBlock {
            section: ".vigil_ref".into(),
            vaddr: 0x11d690,
            file_offset: 0x11a690,
            bytes: 1024,
        },
        watchdog: Watchdog {
            interval_ms: 1000,
            reaction: Reaction::Log,
        },
        pcr9: Digest(predict_pcr9(&loader, &image)),
        provenance: Provenance {
            flavor: "virtio".into(),
            toolchain: "nightly-2025-03-15".into(),
            rustc: "rustc 1.87.0-nightly".into(),
            kernel: "hermit-kernel 0.11.0".into(),
            kernel_features: vec!["pci".into()],
            source_revision: "test".into(),
            source_date_epoch: 0,
        },
    }
}

impl Launch {
    /// A launch of a manifest with `security_version`, signed by the key
    /// from `seed`, with the per-boot key from `boot_seed`.
    pub fn new(seed: u8, security_version: u64, boot_seed: u8) -> Self {
        let manifest_key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        let manifest = manifest(security_version);
        let manifest_bytes = manifest.emit();
        let manifest_signature = manifest_key.sign(&manifest_bytes).to_bytes().to_vec();
        Self {
            loader_sha256: manifest.loader.sha256.0,
            image_sha256: manifest.image.sha256.0,
            manifest_key,
            manifest,
            manifest_bytes,
            manifest_signature,
            report_key: ReportKey::from_seed(&[boot_seed; 32]),
        }
    }

    pub fn manifest_public_key(&self) -> ed25519_dalek::VerifyingKey {
        self.manifest_key.verifying_key()
    }

    fn inputs<'a>(&'a self, report_key: &'a [u8; 32]) -> LaunchInputs<'a> {
        LaunchInputs {
            loader_sha256: self.loader_sha256,
            image_sha256: self.image_sha256,
            manifest: &self.manifest_bytes,
            cmdline: &self.manifest.kernel_cmdline,
            report_key,
        }
    }

    pub fn digests(&self) -> Vec<(u8, [u8; 32])> {
        let key = self.report_key.public_key();
        self.inputs(&key)
            .events()
            .iter()
            .map(|e| (e.spec.pcr, e.digest))
            .collect()
    }

    /// The launch's event log, list v2 (or v1).
    pub fn event_log(&self, v2: bool) -> Vec<u8> {
        let key = self.report_key.public_key();
        let inputs = self.inputs(&key);
        let v2_events = LaunchEvents::new(inputs);
        let events = if v2 {
            v2_events.events()
        } else {
            inputs.events()
        };
        let records: Vec<Record<'_>> = events
            .iter()
            .map(|e| Record {
                pcr: u32::from(e.spec.pcr),
                event_type: e.spec.event_type,
                sha256: e.digest,
                data: e.data,
            })
            .collect();
        eventlog::encode(&records)
    }

    /// The guest's answer to `/v1/attestation/report?nonce=`: a report
    /// signed by `key` (this boot's unless another is given).
    pub fn runtime_report(&self, spec: &ReportSpec, key: Option<&ReportKey>) -> serde_json::Value {
        let key = key.unwrap_or(&self.report_key);
        let regions: Vec<RegionDigest> = self
            .manifest
            .regions
            .iter()
            .map(|r| RegionDigest {
                name: RegionName::new(&r.name).unwrap(),
                sha256: if spec.verdict == Verdict::Violated && r.name == "code" {
                    sha256(b"patched code")
                } else {
                    r.sha256.0
                },
            })
            .collect();
        let report = Report::new(
            spec.nonce,
            key.boot_id(),
            spec.uptime_ms,
            spec.uptime_ms / 1000,
            spec.last_check_ms,
            (spec.verdict == Verdict::Violated).then_some(spec.last_check_ms),
            spec.verdict,
            &regions,
        )
        .unwrap();
        let bytes = report.encode()[..report.encoded_len()].to_vec();
        serde_json::json!({
            "format": "vigil.report.v1",
            "verdict": spec.verdict.as_str(),
            "nonce": hex(spec.nonce.as_bytes()),
            "boot_id": hex(&key.boot_id()),
            "uptime_ms": spec.uptime_ms,
            "checks": spec.uptime_ms / 1000,
            "last_check_ms": spec.last_check_ms,
            "first_violation_ms": null,
            "regions": [],
            "report": hex(&bytes),
            "signature": hex(&key.sign(&bytes)),
            "public_key": hex(&key.public_key()),
        })
    }

    /// Evidence as the agent would assemble it.
    pub fn evidence(
        &self,
        domain: &str,
        nonce: &Nonce,
        quote: Quote,
        ak_public: &[u8],
        event_log: Vec<u8>,
        runtime_report: Option<serde_json::Value>,
    ) -> Evidence {
        Evidence {
            format: FORMAT.into(),
            domain: domain.into(),
            nonce: HexNonce(*nonce),
            quote,
            ak_public: Base64(ak_public.to_vec()),
            ek_certificate: Base64(Vec::new()),
            event_log: Base64(event_log),
            manifest: Base64(self.manifest_bytes.clone()),
            manifest_signature: Base64(self.manifest_signature.clone()),
            runtime_report_error: runtime_report
                .is_none()
                .then(|| "guest unreachable".to_string()),
            runtime_report,
        }
    }
}

/// What a runtime report says.
#[derive(Clone, Copy, Debug)]
pub struct ReportSpec {
    pub nonce: Nonce,
    pub verdict: Verdict,
    pub uptime_ms: u64,
    pub last_check_ms: u64,
}

impl ReportSpec {
    pub fn intact(nonce: Nonce) -> Self {
        Self {
            nonce,
            verdict: Verdict::Intact,
            uptime_ms: 12_300,
            last_check_ms: 12_000,
        }
    }
}

pub fn nonce(byte: u8) -> Nonce {
    Nonce::new(&[byte; 32]).unwrap()
}

pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// `tpm2_activatecredential` with the AK and the EK (PolicySecret session).
pub fn activate(domain: &Domain, credential: &Credential) -> Vec<u8> {
    let tpm = &domain.tpm;
    write(tpm.dir.path(), "cred.in", &credential.tpm2_tools_file());
    // The session must survive between tools: no flush until the end.
    let tcti = format!("swtpm:path={}", tpm.path("tpm.sock").display());
    let run = |args: &[&str]| {
        let output = Command::new(args[0])
            .args(&args[1..])
            .args(["-T", &tcti])
            .current_dir(tpm.dir.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    run(&[
        "tpm2_startauthsession",
        "--policy-session",
        "-S",
        "session.ctx",
    ]);
    run(&["tpm2_policysecret", "-S", "session.ctx", "-c", "e"]);
    run(&[
        "tpm2_activatecredential",
        "-c",
        AK_HANDLE,
        "-C",
        "ek.ctx",
        "-i",
        "cred.in",
        "-o",
        "cred.out",
        "-P",
        "session:session.ctx",
    ]);
    run(&["tpm2_flushcontext", "session.ctx"]);
    tpm.flush();
    tpm.read("cred.out")
}
