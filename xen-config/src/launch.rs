//! The measured launch: verify → extend into the domain's vTPM → boot.
//!
//! 1. Copy the bundle into the domain's private directory (0700) and verify
//!    that copy: signature by a trusted key, every digest, the reference
//!    block, the security version floor. QEMU boots exactly these bytes.
//! 2. Start QEMU paused (`-S`), so its start-up overlaps the rest.
//! 3. Start the domain's swtpm (fresh `Startup(CLEAR)`, state kept), and
//!    extend the launch event list (`vigil_core::v1::events`) into PCR 9, 12
//!    and 15, one event-log record per extend; check PCR 9 against the
//!    manifest's prediction.
//! 4. Resume QEMU, wait for `/healthz`, record the domain on disk, and leave
//!    QEMU and swtpm running (detached).
//!
//! Any failure stops what was started and removes what was created, except
//! the vTPM's persistent state. There is no way to skip step 1.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use vigil_core::v1::bundle::{
    self, BundleFiles, IMAGE_FILE, LOADER_FILE, MANIFEST_FILE, SIGNATURE_FILE,
};
use vigil_core::v1::eventlog::{self, Record};
use vigil_core::v1::events::{LaunchInputs, sha256};
use vigil_core::v1::manifest::{Digest, Manifest};

use crate::accel::{self, AccelChoice};
use crate::error::{LaunchError, Result};
use crate::image::BootImage;
use crate::qemu::{Accel, Forward, QemuConfig, SpawnOptions};
use crate::sched::{self, WatchdogVcpu};
use crate::tpm::Vtpm;

/// The file that records a launched domain.
pub const DOMAIN_FILE: &str = "domain.json";
/// The event log, crypto-agile binary.
pub const EVENTLOG_FILE: &str = "eventlog.bin";

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

/// A launched domain, as recorded in `<domain>/domain.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DomainRecord {
    /// The domain's name.
    pub name: String,
    /// `qemu` or `xen`.
    #[serde(default = "qemu_backend")]
    pub backend: String,
    /// QEMU's pid.
    pub qemu_pid: u32,
    /// swtpm's pid.
    pub swtpm_pid: u32,
    /// The service's URL on the host.
    pub url: String,
    /// The accelerator used.
    pub accel: String,
    /// The guest's virtual CPUs.
    #[serde(default = "one")]
    pub vcpus: u32,
    /// How the host schedules the watchdog's vCPU thread ([`crate::sched`]).
    #[serde(default = "WatchdogVcpu::unrecorded")]
    pub watchdog_vcpu: WatchdogVcpu,
    /// The bundle launched (as given).
    pub bundle: PathBuf,
    /// The service and its security version.
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
    /// Seconds from QEMU's start to the first `/healthz` answer.
    pub boot_seconds: f64,
    /// When the launch finished (Unix seconds).
    pub launched_at: u64,
    /// The vTPM's command socket (`tpm2_pcrread -T swtpm:path=...`).
    pub tpm_socket: PathBuf,
}

fn one() -> u32 {
    1
}

fn qemu_backend() -> String {
    "qemu".into()
}

/// Checks a domain name: 1 to 32 of `a-z 0-9 -`, not starting with `-`.
pub fn check_name(name: &str) -> Result<()> {
    let ok = (1..=32).contains(&name.len())
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(LaunchError::BadDomainName { name: name.into() })
    }
}

/// The trusted keys: one SPKI PEM file, or every `*.pem` in a directory.
pub fn trusted_keys(trust: &Path) -> Result<Vec<VerifyingKey>> {
    let files: Vec<PathBuf> = if trust.is_dir() {
        let mut files: Vec<PathBuf> = fs::read_dir(trust)
            .map_err(LaunchError::io("reading", trust))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "pem"))
            .collect();
        files.sort();
        files
    } else {
        vec![trust.to_path_buf()]
    };
    let mut keys = Vec::new();
    for file in &files {
        let text = fs::read_to_string(file).map_err(LaunchError::io("reading", file))?;
        let key = bundle::public_key_from_pem(&text).map_err(|err| LaunchError::BadTrust {
            path: file.clone(),
            problem: err.to_string(),
        })?;
        keys.push(key);
    }
    if keys.is_empty() {
        return Err(LaunchError::BadTrust {
            path: trust.into(),
            problem: "no *.pem public keys in this directory".into(),
        });
    }
    Ok(keys)
}

fn private_dir(path: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(LaunchError::io("creating", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
        .map_err(LaunchError::io("securing", path))
}

/// Whether `pid` is alive and its command line mentions `marker`.
pub fn process_alive(pid: u32, marker: &Path) -> bool {
    fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        let marker = marker.as_os_str().as_encoded_bytes();
        !marker.is_empty() && cmdline.windows(marker.len()).any(|w| w == marker)
    })
}

/// Reads a domain's record.
pub fn read_record(domain_dir: &Path) -> Result<DomainRecord> {
    let path = domain_dir.join(DOMAIN_FILE);
    let text = fs::read(&path).map_err(LaunchError::io("reading", &path))?;
    serde_json::from_slice(&text).map_err(|err| LaunchError::BadImageDir {
        path,
        problem: format!("not a domain record: {err}"),
    })
}

/// Removes everything a launch creates except the vTPM's state.
fn clean_runtime(domain_dir: &Path) {
    for file in [DOMAIN_FILE, EVENTLOG_FILE, "qmp.sock", "qemu.log", "xl.cfg"] {
        let _ = fs::remove_file(domain_dir.join(file));
    }
    let _ = fs::remove_dir_all(domain_dir.join("boot"));
}

/// Checks the name and trusted keys, and makes the domain's private
/// directory; refuses a domain that is running.
fn prepare_domain(options: &LaunchOptions) -> Result<(Vec<VerifyingKey>, PathBuf)> {
    check_name(&options.name)?;
    let keys = trusted_keys(&options.trust)?;
    private_dir(&options.state_root)?;
    let domain_dir = options.state_root.join(&options.name);
    private_dir(&domain_dir)?;
    if let Ok(record) = read_record(&domain_dir) {
        if process_alive(record.qemu_pid, &domain_dir)
            || (record.backend == "xen" && xen_domain_exists(&record.name))
        {
            return Err(LaunchError::DomainRunning {
                name: options.name.clone(),
                pid: record.qemu_pid,
            });
        }
        // The guest stopped on its own (a watchdog halt, a crash): its swtpm
        // still runs and holds the vTPM state's lock. Stop it (SIGTERM: it
        // saves its state) so that the new launch can start a fresh one and
        // none is orphaned.
        if process_alive(record.swtpm_pid, &domain_dir) {
            wait_gone(record.swtpm_pid, &domain_dir);
        }
    }
    Ok((keys, domain_dir))
}

/// Launches a sealed bundle as a measured domain.
pub fn launch(options: &LaunchOptions, cancel: &AtomicBool) -> Result<DomainRecord> {
    let (keys, domain_dir) = prepare_domain(options)?;
    clean_runtime(&domain_dir);
    // A domain launched for the first time has no vTPM state yet: if the
    // launch fails, nothing of it stays behind.
    let fresh = !domain_dir.join("tpm").exists();
    let result = launch_in(options, &keys, &domain_dir, cancel);
    if result.is_err() {
        clean_runtime(&domain_dir);
        if fresh {
            let _ = fs::remove_dir_all(&domain_dir);
        }
    }
    result
}

/// A bundle copied into a private directory and verified there.
struct Verified<'k> {
    manifest: Manifest,
    manifest_bytes: Vec<u8>,
    image: Vec<u8>,
    key: &'k VerifyingKey,
}

/// Step 1: copies the bundle's files into `boot_dir` and verifies the bytes
/// that were written there (and that will be booted).
fn verified_copy<'k>(
    options: &LaunchOptions,
    keys: &'k [VerifyingKey],
    boot_dir: &Path,
) -> Result<Verified<'k>> {
    private_dir(boot_dir)?;
    let mut files = Vec::new();
    for name in [MANIFEST_FILE, SIGNATURE_FILE, IMAGE_FILE, LOADER_FILE] {
        let from = options.bundle.join(name);
        let bytes = fs::read(&from).map_err(|source| LaunchError::BundleUnreadable {
            path: from.clone(),
            source,
        })?;
        let to = boot_dir.join(name);
        fs::write(&to, &bytes).map_err(LaunchError::io("writing", &to))?;
        files.push(bytes);
    }
    let [manifest_bytes, signature, image, loader] =
        <[Vec<u8>; 4]>::try_from(files).map_err(|_| LaunchError::Interrupted)?;
    let bundle_files = BundleFiles {
        manifest: &manifest_bytes,
        signature: &signature,
        image: &image,
        loader: &loader,
    };
    let mut refusal = None;
    for key in keys {
        let verdict = bundle::verify(&bundle_files, key, options.min_version);
        if verdict.passed() {
            let manifest = verdict.manifest.ok_or(LaunchError::Interrupted)?;
            return Ok(Verified {
                manifest,
                manifest_bytes,
                image,
                key,
            });
        }
        if refusal.is_none() {
            refusal = Some(verdict);
        }
    }
    let failures = refusal
        .map(|v| {
            v.failures()
                .map(|c| format!("{}: expected {}, found {}", c.name, c.expected, c.actual))
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default();
    Err(LaunchError::BundleRejected {
        bundle: options.bundle.clone(),
        failures,
    })
}

/// `launch --backend xen --dry-run`: verifies the bundle like a launch, then
/// returns the xl.cfg that would boot the verified copy, and starts nothing.
pub fn xen_dry_run(options: &LaunchOptions) -> Result<String> {
    let Backend::Xen { pvh, bridge } = &options.backend else {
        return Err(LaunchError::BadSetting(
            "a dry run renders a Xen configuration: use the Xen backend".into(),
        ));
    };
    let (keys, domain_dir) = prepare_domain(options)?;
    // A dry run verifies a copy of its own and leaves nothing behind, and
    // never touches what an earlier launch of this domain left (its record,
    // event log, verified copy). The configuration names the paths a launch
    // would use.
    let fresh = !domain_dir.join("tpm").exists();
    let resolved =
        fs::canonicalize(&domain_dir).map_err(LaunchError::io("resolving", &domain_dir))?;
    let scratch = tempfile::Builder::new()
        .prefix(".dry-run-")
        .tempdir_in(&domain_dir)
        .map_err(LaunchError::io("creating a directory in", &domain_dir))?;
    let verified = verified_copy(options, &keys, scratch.path());
    drop(scratch);
    if fresh {
        let _ = fs::remove_dir_all(&domain_dir);
    }
    let verified = verified?;
    let config = xen_config(
        options,
        &resolved,
        IMAGE_FILE,
        &verified.manifest.kernel_cmdline,
        *pvh,
        bridge,
    );
    Ok(crate::xen::render(&config)?)
}

fn launch_in(
    options: &LaunchOptions,
    keys: &[VerifyingKey],
    domain_dir: &Path,
    cancel: &AtomicBool,
) -> Result<DomainRecord> {
    // 1. The private copy, and its verification.
    let boot_dir = domain_dir.join("boot");
    let verified = verified_copy(options, keys, &boot_dir)?;
    let manifest = &verified.manifest;

    if let Backend::Xen { pvh, bridge } = &options.backend {
        let (initrd, report_public) = per_boot_key(&boot_dir, &verified)?;
        return launch_xen(
            options,
            domain_dir,
            &initrd,
            &verified,
            &report_public,
            *pvh,
            bridge,
            cancel,
        );
    }

    // The host resources, before anything is started or a key exists: a
    // taken port costs nothing, and the KVM probe (when there is no cached
    // answer) boots the verified image itself, never a file that carries
    // the per-boot key.
    check_port_free(options.host_port)?;
    let verified_image = BootImage {
        loader: boot_dir.join(LOADER_FILE),
        image: boot_dir.join(IMAGE_FILE),
        flavor: serde_json::from_value(serde_json::Value::String(
            manifest.provenance.flavor.clone(),
        ))
        .map_err(|_| LaunchError::BadImageDir {
            path: boot_dir.join(MANIFEST_FILE),
            problem: format!("unknown flavor {:?}", manifest.provenance.flavor),
        })?,
    };
    let (accel, _reason) = accel::choose(options.accel, &verified_image, domain_dir);

    // 2. The per-boot report key, and QEMU, paused, from the verified bytes.
    let (initrd, report_public) = per_boot_key(&boot_dir, &verified)?;
    let image_info = BootImage {
        image: initrd.clone(),
        ..verified_image
    };
    let service_port = service_port(&manifest.kernel_cmdline);
    let config = QemuConfig {
        image: image_info,
        accel,
        memory_mib: options.memory_mib,
        cpus: options.cpus,
        cmdline: manifest.kernel_cmdline.clone(),
        forward: Some(Forward {
            host_port: options.host_port,
            guest_port: service_port,
        }),
        console: domain_dir.join("console.log"),
        qmp: domain_dir.join("qmp.sock"),
    };
    let spawned = config.spawn_with(&SpawnOptions {
        paused: true,
        stderr_log: Some(domain_dir.join("qemu.log")),
    });
    let mut guest = match spawned {
        Ok(guest) => guest,
        Err(err) => {
            let _ = fs::remove_file(&initrd);
            return Err(err);
        }
    };
    // 3. The vTPM and the extends, while QEMU sets the machine up.
    let (vtpm, pcrs) = measure(
        domain_dir,
        manifest,
        &verified.manifest_bytes,
        &report_public,
    )?;

    // QEMU reads -kernel and -initrd while it sets the machine up, before its
    // monitor answers: once QMP is up, the key file has served its purpose.
    // (On any error above, `launch` removes the whole boot directory.)
    let monitor = guest.monitor(Duration::from_secs(10));
    let _ = fs::remove_file(&initrd);
    // The vCPU threads exist before the guest runs its first instruction.
    let watchdog_vcpu = sched::place_watchdog(&mut monitor?, options.cpus, options.watchdog_vcpu)?;

    // 4. Run, and record.
    let forwarding = guest.open_forwarding()?;
    guest.resume()?;
    let boot = guest.wait_healthy(forwarding.port, options.boot_timeout, cancel)?;
    let record = DomainRecord {
        backend: "qemu".into(),
        qemu_pid: guest.pid(),
        url: format!("http://127.0.0.1:{}/", forwarding.port),
        accel: match accel {
            Accel::Kvm => "kvm".into(),
            Accel::Tcg => "tcg".into(),
        },
        boot_seconds: boot.as_secs_f64(),
        watchdog_vcpu,
        ..measured_record(options, &verified, &report_public, pcrs, &vtpm)
    };
    write_record(domain_dir, &record)?;
    guest.detach();
    vtpm.detach();
    Ok(record)
}

/// What every backend records of a measured launch; the backend fills in
/// how the guest runs (backend, pid, URL, accelerator, boot time).
fn measured_record(
    options: &LaunchOptions,
    verified: &Verified<'_>,
    report_public: &[u8; 32],
    pcrs: Vec<(u8, Digest)>,
    vtpm: &Vtpm,
) -> DomainRecord {
    let manifest = &verified.manifest;
    DomainRecord {
        name: options.name.clone(),
        backend: String::new(),
        qemu_pid: 0,
        swtpm_pid: vtpm.pid().unwrap_or(0),
        url: String::new(),
        accel: String::new(),
        vcpus: options.cpus,
        watchdog_vcpu: WatchdogVcpu::Normal,
        bundle: options.bundle.clone(),
        service: format!("{} {}", manifest.service.name, manifest.service.version),
        security_version: manifest.service.security_version,
        manifest_sha256: Digest(sha256(&verified.manifest_bytes)),
        signed_by: bundle::key_fingerprint(verified.key),
        report_key: Digest(*report_public),
        pcrs,
        boot_seconds: 0.0,
        launched_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        tpm_socket: vtpm.socket().to_path_buf(),
    }
}

fn write_record(domain_dir: &Path, record: &DomainRecord) -> Result<()> {
    let path = domain_dir.join(DOMAIN_FILE);
    let text = serde_json::to_vec_pretty(record).unwrap_or_default();
    let staged = domain_dir.join(".domain.json.new");
    fs::write(&staged, text)
        .and_then(|()| fs::rename(&staged, &path))
        .map_err(LaunchError::io("writing", &path))
}

/// Step 3: starts the domain's vTPM, extends the launch event list into it,
/// writes the event log, and checks PCR 9 against the manifest.
fn measure(
    domain_dir: &Path,
    manifest: &Manifest,
    manifest_bytes: &[u8],
    report_public: &[u8; 32],
) -> Result<(Vtpm, Vec<(u8, Digest)>)> {
    let vtpm = Vtpm::start(&domain_dir.join("tpm"))?;
    let inputs = LaunchInputs {
        loader_sha256: manifest.loader.sha256.0,
        image_sha256: manifest.image.sha256.0,
        manifest: manifest_bytes,
        cmdline: &manifest.kernel_cmdline,
        report_key: report_public,
    };
    let mut records = Vec::new();
    for event in inputs.events() {
        vtpm.extend(event.spec.pcr, &event.digest)?;
        records.push(Record {
            pcr: u32::from(event.spec.pcr),
            event_type: event.spec.event_type,
            sha256: event.digest,
            data: event.data,
        });
    }
    let log_path = domain_dir.join(EVENTLOG_FILE);
    fs::write(&log_path, eventlog::encode(&records))
        .map_err(LaunchError::io("writing", &log_path))?;
    let mut pcrs = Vec::new();
    for pcr in [9u8, 12, 15] {
        pcrs.push((pcr, Digest(vtpm.read_pcr(pcr)?)));
    }
    if pcrs[0].1 != manifest.pcr9 {
        return Err(LaunchError::Pcr9Mismatch {
            expected: manifest.pcr9.to_string(),
            actual: pcrs[0].1.to_string(),
        });
    }
    Ok((vtpm, pcrs))
}

/// The Xen path of steps 3 and 4: measure, write the xl.cfg (the per-boot
/// initrd as its ramdisk), `xl create`, delete the initrd, wait for the
/// guest to come up ([`wait_xen_guest`]), record. A guest that does not come
/// up is destroyed, and its swtpm stopped.
#[allow(clippy::too_many_arguments)]
fn launch_xen(
    options: &LaunchOptions,
    domain_dir: &Path,
    initrd: &Path,
    verified: &Verified<'_>,
    report_public: &[u8; 32],
    pvh: bool,
    bridge: &str,
    cancel: &AtomicBool,
) -> Result<DomainRecord> {
    let manifest = &verified.manifest;
    let domain_dir =
        fs::canonicalize(domain_dir).map_err(LaunchError::io("resolving", domain_dir))?;
    let ramdisk = initrd
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let config = xen_config(
        options,
        &domain_dir,
        ramdisk,
        &manifest.kernel_cmdline,
        pvh,
        bridge,
    );
    let (vtpm, pcrs) = measure(
        &domain_dir,
        manifest,
        &verified.manifest_bytes,
        report_public,
    )?;
    let cfg_path = domain_dir.join("xl.cfg");
    crate::xen::write(&config, &cfg_path)?;
    let started = Instant::now();
    let created = crate::xen::create(&cfg_path);
    // xl has read the ramdisk into the domain (or failed): the key file goes.
    let _ = fs::remove_file(initrd);
    created?;
    // From here on, a failure destroys the domain; dropping `vtpm` stops
    // the swtpm, and `launch` removes what the launch made.
    let up = wait_xen_guest(
        &options.name,
        &domain_dir.join("console.log"),
        pvh,
        service_port(&manifest.kernel_cmdline),
        options.boot_timeout,
        cancel,
    )
    .and_then(|up| {
        let record = DomainRecord {
            backend: "xen".into(),
            accel: if pvh {
                "xen-pvh".into()
            } else {
                "xen-hvm".into()
            },
            url: up.url,
            boot_seconds: up.since.duration_since(started).as_secs_f64(),
            ..measured_record(options, verified, report_public, pcrs, &vtpm)
        };
        write_record(&domain_dir, &record)?;
        Ok(record)
    });
    match up {
        Ok(record) => {
            vtpm.detach();
            Ok(record)
        }
        Err(err) => {
            crate::xen::destroy(&options.name);
            drop(vtpm);
            Err(err)
        }
    }
}

/// A Xen guest that came up: where its service answers, and since when.
struct XenUp {
    /// `http://<address>:<port>/` (HVM), or empty (PVH: no network).
    url: String,
    /// When the sign of life was seen.
    since: Instant,
}

/// How often the Xen backend looks at a booting guest.
const XEN_POLL: Duration = Duration::from_millis(500);

/// Waits for a Xen guest to come up, until `timeout`:
/// - HVM: its console (COM1, in `console`) says the service listens and
///   which address DHCP gave it, and `GET /healthz` there answers 200;
/// - PVH: its console (Xen's debug console, from `xl dmesg`, copied to
///   `console`) says the service listens. A PVH guest has no network.
///
/// Fails as soon as the domain is gone or its console shows a panic or a
/// loader error.
fn wait_xen_guest(
    name: &str,
    console: &Path,
    pvh: bool,
    port: u16,
    timeout: Duration,
    cancel: &AtomicBool,
) -> Result<XenUp> {
    use crate::xen::{XenError, console_signs, last_lines};
    let started = Instant::now();
    let domid = crate::xen::domid(name);
    let read_console = || -> String {
        if pvh {
            let text = domid
                .map(|domid| crate::xen::debug_console_lines(&crate::xen::dmesg(), domid))
                .unwrap_or_default();
            let _ = fs::write(console, &text);
            text
        } else {
            String::from_utf8_lossy(&fs::read(console).unwrap_or_default()).into_owned()
        }
    };
    loop {
        if cancel.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(LaunchError::Interrupted);
        }
        let text = read_console();
        let signs = console_signs(&text);
        if let Some(failure) = signs.failure {
            return Err(XenError::GuestFailed {
                name: name.into(),
                failure,
                console: last_lines(&text, 20),
            }
            .into());
        }
        if signs.listening {
            if pvh {
                return Ok(XenUp {
                    url: String::new(),
                    since: Instant::now(),
                });
            }
            if let Some(address) = signs.address {
                let addr = std::net::SocketAddr::from((address, port));
                if let Some(at) = crate::health::probe_at(addr, Duration::from_secs(2)) {
                    return Ok(XenUp {
                        url: format!("http://{address}:{port}/"),
                        since: at,
                    });
                }
            }
        }
        if crate::xen::domid(name).is_none() {
            return Err(XenError::GuestStopped {
                name: name.into(),
                console: last_lines(&read_console(), 20),
            }
            .into());
        }
        if started.elapsed() > timeout {
            let waiting_for = match (signs.listening, signs.address) {
                (false, _) if pvh && text.is_empty() => "nothing on its console (a PVH guest \
                    writes to Xen's debug console, which `xl dmesg` shows only when Xen runs \
                    with guest_loglvl=all)"
                    .to_owned(),
                (false, _) => format!("no \"{}\" on its console", crate::accel::READY_LINE),
                (true, None) => "no address from DHCP on its console (is there a DHCP \
                    server on the bridge?)"
                    .to_owned(),
                (true, Some(address)) => {
                    format!("no answer to GET http://{address}:{port}/healthz from this host")
                }
            };
            return Err(XenError::BootTimeout {
                name: name.into(),
                seconds: timeout.as_secs(),
                waiting_for,
                console: last_lines(&text, 20),
            }
            .into());
        }
        std::thread::sleep(XEN_POLL);
    }
}

/// The xl.cfg values for a domain whose verified copy is in
/// `<domain_dir>/boot` (`ramdisk`: the file name there).
fn xen_config(
    options: &LaunchOptions,
    domain_dir: &Path,
    ramdisk: &str,
    cmdline: &str,
    pvh: bool,
    bridge: &str,
) -> crate::xen::XenConfig {
    crate::xen::XenConfig {
        name: options.name.clone(),
        kernel: domain_dir.join("boot").join(LOADER_FILE),
        ramdisk: domain_dir.join("boot").join(ramdisk),
        cmdline: cmdline.to_owned(),
        memory_mib: options.memory_mib,
        vcpus: options.cpus,
        kind: if pvh {
            crate::xen::GuestKind::Pvh
        } else {
            crate::xen::GuestKind::Hvm(crate::xen::HvmDevices {
                bridge: bridge.into(),
                mac: None,
                serial_log: domain_dir.join("console.log"),
            })
        },
    }
}

/// Whether a Xen domain of this name exists (`xl domid`).
fn xen_domain_exists(name: &str) -> bool {
    std::process::Command::new("xl")
        .args(["domid", name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// The per-boot report key: a new one, its seed written into the per-boot
/// initrd (a copy of the verified image with the seed in a trailer,
/// `vigil_core::v1::handover`; readable only by us, and deleted as soon as
/// the hypervisor has loaded it). Returns the initrd and the public key.
fn per_boot_key(boot_dir: &Path, verified: &Verified<'_>) -> Result<(PathBuf, [u8; 32])> {
    let report_key = SigningKey::generate(&mut rand_core::OsRng);
    let initrd = boot_dir.join("initrd.per-boot");
    write_per_boot_initrd(&initrd, &verified.image, &report_key)?;
    Ok((initrd, report_key.verifying_key().to_bytes()))
}

/// Fails with [`LaunchError::PortInUse`] if `port` on 127.0.0.1 is taken
/// (0, "any free port", always passes). QEMU binds it later; checking first
/// means a taken port starts nothing.
fn check_port_free(port: u16) -> Result<()> {
    if port == 0 {
        return Ok(());
    }
    match std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port)) {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AddrInUse => {
            Err(LaunchError::PortInUse { port })
        }
        Err(err) => Err(LaunchError::Io {
            action: "binding",
            path: format!("127.0.0.1:{port}").into(),
            source: err,
        }),
    }
}

/// Writes `image` followed by the handover trailer for `key` to `path`
/// (created new, mode 0600), and wipes the in-memory trailer.
fn write_per_boot_initrd(path: &Path, image: &[u8], key: &SigningKey) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    let mut trailer = vigil_core::v1::handover::trailer(key.as_bytes());
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| {
            file.write_all(image)?;
            file.write_all(&trailer)
        });
    // Wipe this copy of the seed (black_box keeps the stores).
    trailer.fill(0);
    std::hint::black_box(&trailer);
    written.map_err(|source| {
        let _ = fs::remove_file(path);
        LaunchError::Io {
            action: "writing",
            path: path.into(),
            source,
        }
    })
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

/// Stops a domain: QEMU (QMP `quit`, then a kill), then its swtpm. With
/// `purge`, also deletes its vTPM state and directory.
pub fn stop(state_root: &Path, name: &str, purge: bool) -> Result<DomainRecord> {
    check_name(name)?;
    let domain_dir = state_root.join(name);
    let record =
        read_record(&domain_dir).map_err(|_| LaunchError::UnknownDomain { name: name.into() })?;
    if record.backend == "xen" && xen_domain_exists(name) {
        let _ = std::process::Command::new("xl")
            .args(["destroy", name])
            .status();
    }
    if process_alive(record.qemu_pid, &domain_dir) {
        if let Ok(mut qmp) =
            crate::qmp::Qmp::connect(&domain_dir.join("qmp.sock"), Duration::from_secs(2))
        {
            let _ = qmp.execute("quit");
        }
        wait_gone(record.qemu_pid, &domain_dir);
    }
    if process_alive(record.swtpm_pid, &domain_dir) {
        wait_gone(record.swtpm_pid, &domain_dir);
    }
    clean_runtime(&domain_dir);
    if purge {
        fs::remove_dir_all(&domain_dir).map_err(LaunchError::io("removing", &domain_dir))?;
    }
    Ok(record)
}

/// Sends SIGTERM, waits up to 5 s, then SIGKILL.
fn wait_gone(pid: u32, marker: &Path) {
    use rustix::process::{Pid, Signal, kill_process};
    let Some(pid_t) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return;
    };
    let _ = kill_process(pid_t, Signal::TERM);
    for _ in 0..500 {
        if !process_alive(pid, marker) || is_zombie(pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = kill_process(pid_t, Signal::KILL);
}

fn is_zombie(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'))
    })
}

/// A domain's state now.
#[derive(Clone, Debug, Serialize)]
pub struct DomainStatus {
    /// What was launched.
    #[serde(flatten)]
    pub record: DomainRecord,
    /// `running`, or `exited` (the guest stopped on its own, or was killed).
    pub state: &'static str,
    /// Whether its swtpm runs.
    pub vtpm_running: bool,
    /// Why an exited guest stopped, as far as its console tells: the
    /// watchdog's `halt` reaction names the violation there. `None` while
    /// running.
    pub exit_reason: Option<String>,
    /// The last lines of the guest's console.
    pub console_tail: Vec<String>,
}

/// The console line of the watchdog's `halt` reaction, up to the message.
const WATCHDOG_HALT: &str = "vigil-watchdog: HALT: ";

/// Why a guest with this console output stopped.
fn exit_reason(console: &str) -> String {
    match console
        .lines()
        .find_map(|line| line.split_once(WATCHDOG_HALT).map(|(_, message)| message))
    {
        Some(message) => format!("halted by the watchdog: {}", message.trim_end()),
        None => "the guest stopped on its own or was stopped outside vigil-dom0; see console_tail"
            .to_owned(),
    }
}

/// The state of one domain.
pub fn status(state_root: &Path, name: &str) -> Result<DomainStatus> {
    check_name(name)?;
    let domain_dir = state_root.join(name);
    let record =
        read_record(&domain_dir).map_err(|_| LaunchError::UnknownDomain { name: name.into() })?;
    let running = if record.backend == "xen" {
        xen_domain_exists(name)
    } else {
        process_alive(record.qemu_pid, &domain_dir) && !is_zombie(record.qemu_pid)
    };
    let console = fs::read(domain_dir.join("console.log")).unwrap_or_default();
    let text = String::from_utf8_lossy(&console);
    let lines: Vec<&str> = text.lines().collect();
    let console_tail = lines[lines.len().saturating_sub(20)..]
        .iter()
        .map(|l| (*l).to_owned())
        .collect();
    Ok(DomainStatus {
        state: if running { "running" } else { "exited" },
        exit_reason: (!running).then(|| exit_reason(&text)),
        vtpm_running: process_alive(record.swtpm_pid, &domain_dir),
        record,
        console_tail,
    })
}

/// How often [`wait`] looks at a domain.
const WAIT_POLL: Duration = Duration::from_millis(200);

/// Waits until a domain's guest no longer runs (it stopped on its own, was
/// halted by the watchdog, or was stopped), and returns its state then, with
/// the reason. Fails if `timeout` passes first, or when `cancel` is set; the
/// guest is left as it is either way.
pub fn wait(
    state_root: &Path,
    name: &str,
    timeout: Option<Duration>,
    cancel: &AtomicBool,
) -> Result<DomainStatus> {
    let started = Instant::now();
    loop {
        let status = status(state_root, name)?;
        if status.state != "running" {
            return Ok(status);
        }
        if cancel.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(LaunchError::WaitInterrupted { name: name.into() });
        }
        if let Some(limit) = timeout {
            if started.elapsed() >= limit {
                return Err(LaunchError::WaitTimeout {
                    name: name.into(),
                    seconds: limit.as_secs(),
                });
            }
        }
        std::thread::sleep(WAIT_POLL);
    }
}

/// Every launched domain under `state_root`, by name.
pub fn list(state_root: &Path) -> Result<Vec<DomainStatus>> {
    let Ok(entries) = fs::read_dir(state_root) else {
        return Ok(Vec::new());
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join(DOMAIN_FILE).is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names.iter().map(|name| status(state_root, name)).collect()
}
