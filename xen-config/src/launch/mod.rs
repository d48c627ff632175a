//! The measured launch: verify → extend into the domain's vTPM → boot.
//!
//! 1. Copy the bundle into the domain's private directory (0700) and verify
//!    that copy ([`verified`]): signature by a trusted key, every digest,
//!    the reference block, the security version floor. Only these bytes boot.
//! 2. The backend's host checks (QEMU: the port is free, the accelerator),
//!    before anything starts; then the per-boot report key ([`per_boot`]).
//! 3. The domain's swtpm starts (its vTPM provisioned on the first launch:
//!    EK certificate, attestation key), and the backend creates the guest
//!    without running it ([`backend::Boot`]: QEMU `-S`; Xen writes its
//!    xl.cfg).
//! 4. The launch event list is extended into PCR 9, 12 and 15 with an event
//!    log ([`measure`]); PCR 9 must be the manifest's prediction.
//! 5. The guest runs, the launch waits for its service, records the domain
//!    on disk ([`crate::domain`]) and leaves guest and swtpm running.
//!
//! Any failure stops what was started and removes what was created, except
//! the vTPM's persistent state. There is no way to skip step 1.

pub mod backend;
pub mod measure;
pub mod on_qemu;
pub mod on_xen;
pub mod per_boot;
pub mod verified;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vigil_core::v1::bundle;
use vigil_core::v1::events::sha256;
use vigil_core::v1::manifest::Digest;
use vigil_tpm::{AkAlgorithm, Tpm};

pub use verified::trusted_keys;

use self::backend::Boot;
use crate::accel::AccelChoice;
use crate::domain::{DomainDir, DomainRecord, RECORD_SCHEMA, private_dir};
use crate::error::{LaunchError, Result};
use crate::lifecycle;
use crate::sched::WatchdogVcpu;
use crate::swtpm::Swtpm;

/// A guest's vCPUs unless told otherwise: two, so that the watchdog checks
/// on a vCPU of its own and takes no CPU time from the service on vCPU 0
/// (docs/watchdog.md has the measured cost of one vCPU and of two).
pub const DEFAULT_VCPUS: u32 = 2;

/// What to launch, and how.
#[derive(Clone, Debug)]
pub struct LaunchOptions {
    /// The sealed bundle directory.
    pub bundle: PathBuf,
    /// A trusted public key (SPKI PEM), or a directory of them (`*.pem`).
    pub trust: PathBuf,
    /// The lowest security version accepted.
    pub min_version: u64,
    /// The domain's name.
    pub name: String,
    /// Where domains live: `<state_root>/<name>/`.
    pub state_root: PathBuf,
    /// The loopback port forwarded to the service (0: any free one).
    pub host_port: u16,
    /// KVM, TCG, or probe.
    pub accel: AccelChoice,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// Virtual CPUs ([`DEFAULT_VCPUS`] unless told otherwise).
    pub cpus: u32,
    /// How long to wait for the first `/healthz` answer.
    pub boot_timeout: Duration,
    /// Where the guest runs.
    pub backend: Backend,
    /// How the host schedules the watchdog's vCPU (QEMU only).
    pub watchdog_vcpu: WatchdogVcpu,
    /// The attestation key's algorithm, if the domain's vTPM has none yet
    /// (an existing key is kept, whatever this says).
    pub ak_algorithm: AkAlgorithm,
}

/// Where a measured domain runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// QEMU on this host, with the service forwarded to a loopback port.
    Qemu,
    /// Xen, through `xl create` of a generated xl.cfg (this host must be a
    /// Xen dom0): HVM with an RTL8139 on `bridge`, or PVH without NIC.
    Xen {
        /// A PVH guest instead of HVM.
        pvh: bool,
        /// The dom0 bridge of an HVM guest's NIC.
        bridge: String,
    },
}

/// Makes the domain's private directory (and the state root), and refuses a
/// domain that is running; stops what a guest that stopped on its own left
/// behind.
pub(crate) fn open_domain(options: &LaunchOptions, domain: &DomainDir) -> Result<()> {
    private_dir(&options.state_root)?;
    private_dir(domain.path())?;
    lifecycle::clear_stopped(domain)
}

/// Launches a sealed bundle as a measured domain.
pub fn launch(options: &LaunchOptions, cancel: &AtomicBool) -> Result<DomainRecord> {
    let domain = DomainDir::new(&options.state_root, &options.name)?;
    let keys = trusted_keys(&options.trust)?;
    open_domain(options, &domain)?;
    domain.clean_runtime();
    // A domain launched for the first time has no vTPM state yet: if the
    // launch fails, nothing of it stays behind.
    let fresh = !domain.has_vtpm();
    let result = launch_in(options, &keys, &domain, cancel);
    if result.is_err() {
        domain.clean_runtime();
        if fresh {
            let _ = std::fs::remove_dir_all(domain.path());
        }
    }
    result
}

/// `launch --backend xen --dry-run`: the xl.cfg a launch would boot, after
/// the same verification; starts nothing.
pub fn xen_dry_run(options: &LaunchOptions) -> Result<String> {
    let Backend::Xen { pvh, bridge } = &options.backend else {
        return Err(LaunchError::BadSetting(
            "a dry run renders a Xen configuration: use the Xen backend".into(),
        ));
    };
    on_xen::dry_run(options, *pvh, bridge)
}

fn launch_in(
    options: &LaunchOptions,
    keys: &[ed25519_dalek::VerifyingKey],
    domain: &DomainDir,
    cancel: &AtomicBool,
) -> Result<DomainRecord> {
    // 1. The private copy, and its verification.
    let verified =
        verified::verified_copy(&options.bundle, keys, options.min_version, &domain.boot())?;
    per_boot::require_entropy_slot(&verified.image, &options.bundle)?;

    // 2. The host's checks, then the per-boot key.
    if options.backend == Backend::Qemu {
        on_qemu::require_qemu()?;
    }
    crate::swtpm::require(&domain.tpm())?;
    let mut boot: Box<dyn Boot> = match &options.backend {
        Backend::Qemu => Box::new(on_qemu::QemuBoot::prepare(options, domain, &verified)?),
        Backend::Xen { pvh, bridge } => Box::new(on_xen::XenBoot::prepare(
            options, domain, &verified, *pvh, bridge,
        )?),
    };
    let (initrd, report_public) = per_boot::report_key(&verified)?;

    // 3. The vTPM (provisioned on the domain's first launch, which takes
    // seconds: before the guest exists, so that its boot time does not
    // count it), then the guest, not running yet.
    let swtpm = Swtpm::start(&domain.tpm())?;
    prepare_vtpm(&swtpm, options.ak_algorithm, &domain.ek_certificate())?;
    boot.create_paused(&initrd)?;

    // 4. The measurement.
    let measured = measure::measure(
        swtpm.socket(),
        &verified.manifest,
        &verified.manifest_bytes,
        &report_public,
        &domain.eventlog(),
    );

    // 5. Run, wait, record.
    let up = measured.and_then(|pcrs| {
        boot.resume(&initrd)?;
        let up = boot.wait_up(cancel)?;
        Ok((pcrs, up))
    });
    let recorded = up.and_then(|(pcrs, up)| {
        let manifest = &verified.manifest;
        let record = DomainRecord {
            schema: RECORD_SCHEMA.into(),
            name: options.name.clone(),
            runtime: boot.runtime(),
            swtpm_pid: swtpm.pid().unwrap_or(0),
            url: up.url,
            vcpus: options.cpus,
            bundle: options.bundle.clone(),
            service: format!("{} {}", manifest.service.name, manifest.service.version),
            security_version: manifest.service.security_version,
            manifest_sha256: Digest(sha256(&verified.manifest_bytes)),
            signed_by: bundle::key_fingerprint(verified.key),
            report_key: Digest(report_public),
            pcrs,
            boot_seconds: up.boot.as_secs_f64(),
            launched_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            tpm_socket: swtpm.socket().to_path_buf(),
        };
        domain.write_record(&record)?;
        Ok(record)
    });
    match recorded {
        Ok(record) => {
            boot.detach();
            swtpm.detach();
            Ok(record)
        }
        Err(err) => {
            // The guest goes first, then its vTPM (in order).
            drop(boot);
            swtpm.stop();
            Err(err)
        }
    }
}

/// A started vTPM made ready for attestation: its clock "safe" again if an
/// earlier swtpm was stopped without `TPM2_Shutdown` (quotes with an unsafe
/// clock are rejected by verifiers), its attestation key created on the
/// first launch (kept with the vTPM state afterwards), and a copy of its EK
/// certificate at `ek_certificate` for the agent.
fn prepare_vtpm(swtpm: &Swtpm, ak_algorithm: AkAlgorithm, ek_certificate: &Path) -> Result<()> {
    let mut tpm = Tpm::connect(swtpm.socket());
    let clock = tpm.read_clock()?;
    if !clock.clock_info.safe {
        tpm.restore_clock_safe()?;
    }
    tpm.ensure_attestation_key(ak_algorithm)?;
    let certificate = tpm.read_ek_certificate()?;
    std::fs::write(ek_certificate, certificate).map_err(LaunchError::io("writing", ek_certificate))
}

/// The service port on a sealed kernel command line (its `--port=`, else
/// the default).
pub fn service_port(cmdline: &str) -> u16 {
    cmdline
        .split_whitespace()
        .find_map(|word| word.strip_prefix("--port="))
        .and_then(|port| port.parse().ok())
        .unwrap_or(vigil_core::v1::config::ServiceConfig::default().port)
}
