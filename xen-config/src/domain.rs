//! A domain on disk: its private directory, the files in it, and its record
//! (`domain.json`), which says what was launched and how it runs.
//!
//! ```text
//! <state root>/<name>/          0700
//!   domain.json                 the record (while launched)
//!   eventlog.bin                the launch's TCG event log
//!   console.log                 the guest's serial console
//!   boot/                       the verified private copy of the bundle
//!   tpm/                        the vTPM: state/ (kept), tpm.sock, tpm.sock.ctrl,
//!                               ek-cert.der (a copy of the EK certificate)
//!   qmp.sock, qemu.log          QEMU's monitor and stderr (QEMU backend)
//!   xl.cfg                      the domain's configuration (Xen backend)
//! ```

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vigil_core::v1::manifest::Digest;

use crate::error::{LaunchError, Result};
use crate::qemu::Accel;
use crate::sched::WatchdogVcpu;

/// The record's file.
pub const DOMAIN_FILE: &str = "domain.json";
/// The event log, crypto-agile binary.
pub const EVENTLOG_FILE: &str = "eventlog.bin";
/// The schema of the records this version writes.
pub const RECORD_SCHEMA: &str = "vigil.domain.v2";

/// Checks a domain name: 1 to 32 of `a-z 0-9 -`, not starting with `-`.
pub fn check_name(name: &str) -> Result<()> {
    if crate::name::is_valid(name) {
        Ok(())
    } else {
        Err(LaunchError::BadDomainName { name: name.into() })
    }
}

/// Creates `path` (and its parents) as a directory only its owner can use.
pub fn private_dir(path: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(LaunchError::io("creating", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
        .map_err(LaunchError::io("securing", path))
}

/// A domain's directory and the paths of its files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainDir {
    name: String,
    path: PathBuf,
}

impl DomainDir {
    /// The directory of domain `name` under `state_root` (the name is
    /// checked; nothing is created).
    pub fn new(state_root: &Path, name: &str) -> Result<Self> {
        check_name(name)?;
        Ok(Self {
            name: name.into(),
            path: state_root.join(name),
        })
    }

    /// The domain's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The record.
    pub fn record_file(&self) -> PathBuf {
        self.path.join(DOMAIN_FILE)
    }

    /// The binary event log.
    pub fn eventlog(&self) -> PathBuf {
        self.path.join(EVENTLOG_FILE)
    }

    /// The guest's console.
    pub fn console(&self) -> PathBuf {
        self.path.join("console.log")
    }

    /// The verified private copy of the bundle.
    pub fn boot(&self) -> PathBuf {
        self.path.join("boot")
    }

    /// The vTPM's directory.
    pub fn tpm(&self) -> PathBuf {
        self.path.join("tpm")
    }

    /// QEMU's monitor socket.
    pub fn qmp(&self) -> PathBuf {
        self.path.join("qmp.sock")
    }

    /// QEMU's stderr.
    pub fn qemu_log(&self) -> PathBuf {
        self.path.join("qemu.log")
    }

    /// The Xen domain's configuration.
    pub fn xl_cfg(&self) -> PathBuf {
        self.path.join("xl.cfg")
    }

    /// The EK certificate (DER), as the vTPM's NV memory holds it; written
    /// by the launch, read by the agent.
    pub fn ek_certificate(&self) -> PathBuf {
        self.tpm().join("ek-cert.der")
    }

    /// Whether the domain has vTPM state (it was launched before).
    pub fn has_vtpm(&self) -> bool {
        self.tpm().exists()
    }

    /// Removes everything a launch creates except the vTPM's state.
    pub fn clean_runtime(&self) {
        for file in [
            self.record_file(),
            self.eventlog(),
            self.qmp(),
            self.qemu_log(),
            self.xl_cfg(),
        ] {
            let _ = fs::remove_file(file);
        }
        let _ = fs::remove_dir_all(self.boot());
    }

    /// Reads the record; [`LaunchError::UnknownDomain`] if there is none.
    pub fn read_record(&self) -> Result<DomainRecord> {
        let path = self.record_file();
        let text = fs::read(&path).map_err(|_| LaunchError::UnknownDomain {
            name: self.name.clone(),
        })?;
        DomainRecord::from_json(&text).map_err(|problem| LaunchError::BadImageDir {
            path,
            problem: format!("not a domain record: {problem}"),
        })
    }

    /// Writes the record atomically (a staged file renamed over it).
    pub fn write_record(&self, record: &DomainRecord) -> Result<()> {
        let path = self.record_file();
        let text = serde_json::to_vec_pretty(record).unwrap_or_default();
        let staged = self.path.join(".domain.json.new");
        fs::write(&staged, text)
            .and_then(|()| fs::rename(&staged, &path))
            .map_err(LaunchError::io("writing", &path))
    }
}

/// How a domain's guest runs: what differs between the backends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase")]
pub enum Runtime {
    /// A QEMU process on this host.
    Qemu {
        /// QEMU's pid.
        qemu_pid: u32,
        /// The accelerator.
        accel: Accel,
        /// How the host schedules the watchdog's vCPU thread.
        watchdog_vcpu: WatchdogVcpu,
    },
    /// A Xen domain (created with `xl create`; found by its name).
    Xen {
        /// HVM or PVH.
        guest: XenGuest,
    },
}

/// The kind of a Xen guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XenGuest {
    /// HVM: device model, RTL8139, serial console.
    Hvm,
    /// PVH: no device model, no network.
    Pvh,
}

impl Runtime {
    /// `qemu` or `xen`.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Qemu { .. } => "qemu",
            Self::Xen { .. } => "xen",
        }
    }

    /// How the guest's CPUs run, for people: `kvm`, `tcg`, `xen-hvm`, `xen-pvh`.
    pub fn accel_name(&self) -> &'static str {
        match self {
            Self::Qemu { accel, .. } => accel.name(),
            Self::Xen {
                guest: XenGuest::Hvm,
            } => "xen-hvm",
            Self::Xen {
                guest: XenGuest::Pvh,
            } => "xen-pvh",
        }
    }
}

/// A launched domain, as recorded in `<domain>/domain.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DomainRecord {
    /// [`RECORD_SCHEMA`].
    pub schema: String,
    /// The domain's name.
    pub name: String,
    /// How the guest runs (`"backend"` names the variant).
    #[serde(flatten)]
    pub runtime: Runtime,
    /// swtpm's pid.
    pub swtpm_pid: u32,
    /// The service's URL as seen from this host; empty for a guest without
    /// network (Xen PVH).
    pub url: String,
    /// The guest's virtual CPUs.
    pub vcpus: u32,
    /// The bundle launched (as given).
    pub bundle: PathBuf,
    /// The service and its version.
    pub service: String,
    /// The security version.
    pub security_version: u64,
    /// SHA-256 of the manifest's bytes.
    pub manifest_sha256: Digest,
    /// The fingerprint of the key that signed it.
    pub signed_by: String,
    /// The per-boot report key (public, raw, hex): PCR 15.
    pub report_key: Digest,
    /// PCR 9, 12 and 15 after the launch.
    pub pcrs: Vec<(u8, Digest)>,
    /// Seconds from the guest's start to its first sign of service.
    pub boot_seconds: f64,
    /// When the launch finished (Unix seconds).
    pub launched_at: u64,
    /// The vTPM's command socket (`tpm2_pcrread -T swtpm:path=...`).
    pub tpm_socket: PathBuf,
}

impl DomainRecord {
    /// Parses a record of this version, or one written before records had
    /// a schema (so that domains launched by an older `vigil-dom0` can still
    /// be listed and stopped).
    pub fn from_json(text: &[u8]) -> std::result::Result<Self, String> {
        let value: serde_json::Value =
            serde_json::from_slice(text).map_err(|err| err.to_string())?;
        match value.get("schema").and_then(serde_json::Value::as_str) {
            Some(RECORD_SCHEMA) => serde_json::from_value(value).map_err(|err| err.to_string()),
            Some(other) => Err(format!(
                "schema {other:?}; this vigil-dom0 reads {RECORD_SCHEMA}"
            )),
            None => serde_json::from_value::<RecordV1>(value)
                .map(Self::from)
                .map_err(|err| err.to_string()),
        }
    }
}

/// A record as written before the schema field (v1): the backend a string,
/// QEMU's pid 0 for Xen, and later fields missing in older files.
#[derive(Deserialize)]
struct RecordV1 {
    name: String,
    #[serde(default)]
    backend: Option<String>,
    qemu_pid: u32,
    swtpm_pid: u32,
    url: String,
    accel: String,
    #[serde(default)]
    vcpus: Option<u32>,
    #[serde(default = "WatchdogVcpu::unrecorded")]
    watchdog_vcpu: WatchdogVcpu,
    bundle: PathBuf,
    service: String,
    security_version: u64,
    manifest_sha256: Digest,
    signed_by: String,
    report_key: Digest,
    pcrs: Vec<(u8, Digest)>,
    boot_seconds: f64,
    launched_at: u64,
    tpm_socket: PathBuf,
}

impl From<RecordV1> for DomainRecord {
    fn from(old: RecordV1) -> Self {
        let runtime = match old.backend.as_deref() {
            Some("xen") => Runtime::Xen {
                guest: if old.accel == "xen-pvh" {
                    XenGuest::Pvh
                } else {
                    XenGuest::Hvm
                },
            },
            _ => Runtime::Qemu {
                qemu_pid: old.qemu_pid,
                accel: if old.accel == "kvm" {
                    Accel::Kvm
                } else {
                    Accel::Tcg
                },
                watchdog_vcpu: old.watchdog_vcpu,
            },
        };
        Self {
            schema: RECORD_SCHEMA.into(),
            name: old.name,
            runtime,
            swtpm_pid: old.swtpm_pid,
            url: old.url,
            vcpus: old.vcpus.unwrap_or(1),
            bundle: old.bundle,
            service: old.service,
            security_version: old.security_version,
            manifest_sha256: old.manifest_sha256,
            signed_by: old.signed_by,
            report_key: old.report_key,
            pcrs: old.pcrs,
            boot_seconds: old.boot_seconds,
            launched_at: old.launched_at,
            tpm_socket: old.tpm_socket,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(runtime: Runtime) -> DomainRecord {
        DomainRecord {
            schema: RECORD_SCHEMA.into(),
            name: "t".into(),
            runtime,
            swtpm_pid: 2,
            url: "http://127.0.0.1:8080/".into(),
            vcpus: 2,
            bundle: "/b".into(),
            service: "vigil-service 1".into(),
            security_version: 1,
            manifest_sha256: Digest([1; 32]),
            signed_by: "ab".into(),
            report_key: Digest([2; 32]),
            pcrs: vec![(9, Digest([3; 32]))],
            boot_seconds: 0.5,
            launched_at: 7,
            tpm_socket: "/s/t/tpm/tpm.sock".into(),
        }
    }

    #[test]
    fn records_round_trip_with_the_backend_named_at_the_top() {
        for runtime in [
            Runtime::Qemu {
                qemu_pid: 1,
                accel: Accel::Tcg,
                watchdog_vcpu: WatchdogVcpu::Idle,
            },
            Runtime::Xen {
                guest: XenGuest::Pvh,
            },
        ] {
            let record = record(runtime);
            let json = serde_json::to_vec(&record).unwrap();
            let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
            assert_eq!(value["backend"], record.runtime.backend());
            assert_eq!(DomainRecord::from_json(&json).unwrap(), record);
        }
    }

    #[test]
    fn records_without_a_schema_still_read() {
        let old = r#"{"name":"t","backend":"xen","qemu_pid":0,"swtpm_pid":2,"url":"",
            "accel":"xen-pvh","bundle":"/b","service":"s 1","security_version":1,
            "manifest_sha256":"0101010101010101010101010101010101010101010101010101010101010101",
            "signed_by":"ab",
            "report_key":"0202020202020202020202020202020202020202020202020202020202020202",
            "pcrs":[],"boot_seconds":0.5,"launched_at":7,"tpm_socket":"/s"}"#;
        let record = DomainRecord::from_json(old.as_bytes()).unwrap();
        assert_eq!(
            record.runtime,
            Runtime::Xen {
                guest: XenGuest::Pvh
            }
        );
        assert_eq!(record.vcpus, 1);
        let qemu = old
            .replace(r#""backend":"xen","qemu_pid":0"#, r#""qemu_pid":9"#)
            .replace("xen-pvh", "kvm");
        let record = DomainRecord::from_json(qemu.as_bytes()).unwrap();
        assert_eq!(
            record.runtime,
            Runtime::Qemu {
                qemu_pid: 9,
                accel: Accel::Kvm,
                watchdog_vcpu: WatchdogVcpu::Normal
            }
        );
        assert!(DomainRecord::from_json(br#"{"schema":"vigil.domain.v9"}"#).is_err());
    }

    #[test]
    fn names_are_checked() {
        for good in ["a", "web-1", "x".repeat(32).as_str()] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "A", "a_b", "a/b", "..", &"x".repeat(33)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
