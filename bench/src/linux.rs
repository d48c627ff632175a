//! The Linux baseline guest: the same service code as the unikernel, built
//! as a static `x86_64-unknown-linux-musl` binary, as PID 1's only job in a
//! small initramfs, booted with Debian's own generic kernel.
//!
//! Everything downloaded comes from Debian's archive through apt
//! (`apt-get download`, into the cache directory, once):
//! - the kernel: the package `linux-image-amd64` depends on, a
//!   `linux-image-6.1.0-*-amd64` (the generic one; the `-cloud-` kernels have
//!   no RTL8139 driver). Its NIC drivers are modules, and only these go into
//!   the initramfs ([`Nic::modules`]);
//! - `busybox-static`, which gives `/init` its shell and tools.
//!
//! The service is built with the host toolchain (`rust-toolchain.toml` at the
//! root; the image's pinned nightly has no musl std), from the same sources
//! and lockfile as the image, into the cache's own target directory.
//!
//! `/init` ([`INIT`]) mounts /proc, /sys and /dev, loads the NIC's modules
//! (the kernel command line says which NIC: `vigil.nic=`), gives `eth0`
//! QEMU's user-network address 10.0.2.15/24 via 10.0.2.2, and runs the
//! service with the words after `--` on the kernel command line (the same
//! `--name=value` settings the unikernel gets) and `VIGIL_SERVICE_ADDRESS=0.0.0.0`
//! (the host build otherwise listens on loopback only). When the service
//! exits, the guest powers off.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use vigil_core::v1::config::ServiceConfig;
use vigil_dom0::image::Flavor;

use crate::cpio::Archive;
use crate::error::{BenchError, spawn_error};

/// The Debian metapackage whose dependency names the current generic kernel.
pub const KERNEL_METAPACKAGE: &str = "linux-image-amd64";
/// The Debian package with a statically linked busybox.
pub const BUSYBOX_PACKAGE: &str = "busybox-static";
/// The Rust target of the service's Linux build.
pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";
/// The cache directory under the project, beside the images.
pub const CACHE_DIR: &str = "target/vigil/linux-baseline";

/// The guest's PID 1.
pub const INIT: &str = r#"#!/bin/sh
# PID 1 of vigil-bench's Linux baseline guest (bench/src/linux.rs): load the
# NIC's modules, configure QEMU's user network statically, run the service
# with the settings after `--` on the kernel command line, power off when it
# ends. Any failure powers off at once, so the benchmark sees QEMU exit and
# reports this console's tail.
export PATH=/bin
fail() {
    echo "vigil-init: $*"
    poweroff -f
    exit 1
}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
nic=
for word in $(cat /proc/cmdline); do
    case "$word" in vigil.nic=*) nic="${word#vigil.nic=}" ;; esac
done
case "$nic" in
    rtl8139) modules="mii 8139cp" ;;
    virtio) modules="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net" ;;
    *) fail "unknown vigil.nic=$nic" ;;
esac
for module in $modules; do
    insmod "/lib/modules/$module.ko" || fail "insmod $module failed"
done
ip link set lo up
ip link set eth0 up || fail "no eth0 ($nic)"
ip addr add 10.0.2.15/24 dev eth0 || fail "cannot give eth0 its address"
ip route add default via 10.0.2.2 || fail "cannot add the default route"
echo "vigil-init: eth0 up ($nic); starting vigil-service $*"
VIGIL_SERVICE_ADDRESS=0.0.0.0 /bin/vigil-service "$@"
fail "vigil-service exited with status $?"
"#;

/// The busybox applets `/init` uses, as links in /bin.
const APPLETS: [&str; 6] = ["sh", "mount", "cat", "insmod", "ip", "poweroff"];

/// The NIC a guest is given; the same device as the unikernel's flavor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Nic {
    /// QEMU's RTL8139 (the `hvm` image: QEMU `pc` and Xen HVM).
    Rtl8139,
    /// virtio-net-pci (the `virtio` image).
    Virtio,
}

impl Nic {
    /// Both, in report order.
    pub const ALL: [Nic; 2] = [Nic::Rtl8139, Nic::Virtio];

    /// The NIC of an image flavor (microvm has no Linux counterpart here).
    pub fn of_flavor(flavor: Flavor) -> Option<Self> {
        match flavor {
            Flavor::Hvm => Some(Self::Rtl8139),
            Flavor::Virtio => Some(Self::Virtio),
            Flavor::Microvm => None,
        }
    }

    /// The image flavor with this NIC: it decides QEMU's machine and device.
    pub fn flavor(self) -> Flavor {
        match self {
            Self::Rtl8139 => Flavor::Hvm,
            Self::Virtio => Flavor::Virtio,
        }
    }

    /// Its name in reports and on the guest's command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rtl8139 => "rtl8139",
            Self::Virtio => "virtio",
        }
    }

    /// The Linux modules that drive it, in load order: each after those it
    /// depends on (`modinfo -F depends`). `8139too` refuses QEMU's RTL8139;
    /// `8139cp` drives it.
    pub fn modules(self) -> &'static [&'static str] {
        match self {
            Self::Rtl8139 => &["mii", "8139cp"],
            Self::Virtio => &[
                "virtio_ring",
                "virtio",
                "virtio_pci_legacy_dev",
                "virtio_pci_modern_dev",
                "virtio_pci",
                "failover",
                "net_failover",
                "virtio_net",
            ],
        }
    }
}

/// The Linux kernel command line for a guest with `nic` whose service gets
/// `service`'s settings (the same words the unikernel's command line has
/// after `--`; Linux hands those to `/init` as its arguments).
pub fn kernel_cmdline(nic: Nic, service: &ServiceConfig) -> String {
    format!(
        "console=ttyS0 quiet panic=-1 vigil.nic={} {}",
        nic.name(),
        vigil_dom0::qemu::kernel_cmdline(service)
    )
}

/// What was built, for the report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BaselineInfo {
    /// The kernel package and its version.
    pub kernel_package: String,
    /// Its Debian version.
    pub kernel_version: String,
    /// busybox-static's Debian version.
    pub busybox_version: String,
    /// The toolchain the service was built with.
    pub toolchain: String,
    /// The kernel image (QEMU's `-kernel`).
    pub kernel: PathBuf,
    /// The initramfs (QEMU's `-initrd`).
    pub initramfs: PathBuf,
    /// Sizes: kernel, initramfs, and the service binary inside it.
    pub kernel_bytes: u64,
    /// The initramfs, uncompressed cpio.
    pub initramfs_bytes: u64,
    /// The static service binary.
    pub service_bytes: u64,
}

/// Where the baseline is made and from what.
#[derive(Clone, Debug)]
pub struct Prepare {
    /// The Vigil checkout (for `unikernel/` and `rust-toolchain.toml`).
    pub project_dir: PathBuf,
    /// The cache: downloads, extracted files, the service build, outputs.
    pub cache_dir: PathBuf,
}

/// Downloads (once), builds and assembles the baseline; returns its files.
pub fn prepare(options: &Prepare) -> Result<BaselineInfo> {
    let debs = options.cache_dir.join("debs");
    fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    // Absolute: cargo runs in unikernel/.
    let cache = &options.cache_dir.canonicalize()?;

    let kernel_package = kernel_package()?;
    let kernel_deb = downloaded(&debs, &kernel_package)?;
    let busybox_deb = downloaded(&debs, BUSYBOX_PACKAGE)?;
    let kernel_dir = extracted(
        &kernel_deb,
        &cache.join("extract").join(&kernel_package),
        &kernel_patterns(),
    )?;
    let busybox_dir = extracted(
        &busybox_deb,
        &cache.join("extract").join(BUSYBOX_PACKAGE),
        &["./bin/busybox".to_owned()],
    )?;
    let vmlinuz = find_file(&kernel_dir, |name| name.starts_with("vmlinuz-"))?;
    let mut modules = Vec::new();
    for module in Nic::ALL.iter().flat_map(|nic| nic.modules()) {
        let file = format!("{module}.ko");
        modules.push((module, find_file(&kernel_dir, |name| name == file)?));
    }

    let (toolchain, service) = build_service(&options.project_dir, cache)?;

    let mut archive = Archive::new();
    for dir in ["bin", "dev", "proc", "sys", "tmp", "lib", "lib/modules"] {
        archive.dir(dir, 0o755);
    }
    archive.char_device("dev/console", 0o600, 5, 1);
    archive.file("init", 0o755, INIT.as_bytes());
    archive.file(
        "bin/busybox",
        0o755,
        &read(&busybox_dir.join("bin/busybox"))?,
    );
    for applet in APPLETS {
        archive.symlink(&format!("bin/{applet}"), "busybox");
    }
    for (module, path) in &modules {
        archive.file(&format!("lib/modules/{module}.ko"), 0o644, &read(path)?);
    }
    let service_bytes = read(&service)?;
    archive.file("bin/vigil-service", 0o755, &service_bytes);

    let initramfs = cache.join("initramfs.cpio");
    let kernel = cache.join("vmlinuz");
    write_atomically(&initramfs, &archive.finish())?;
    write_atomically(&kernel, &read(&vmlinuz)?)?;
    let info = BaselineInfo {
        kernel_version: deb_field(&kernel_deb, "Version")?,
        busybox_version: deb_field(&busybox_deb, "Version")?,
        kernel_package,
        toolchain,
        kernel_bytes: fs::metadata(&kernel)?.len(),
        initramfs_bytes: fs::metadata(&initramfs)?.len(),
        service_bytes: service_bytes.len() as u64,
        kernel,
        initramfs,
    };
    write_atomically(
        &cache.join("baseline.json"),
        (serde_json::to_string_pretty(&info)? + "\n").as_bytes(),
    )?;
    Ok(info)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// Writes `bytes` to a temporary file beside `path`, then renames it.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    file.write_all(bytes)?;
    file.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The generic kernel package the metapackage depends on now.
fn kernel_package() -> Result<String> {
    let output = Command::new("apt-cache")
        .args([
            "depends",
            "--no-recommends",
            "--no-suggests",
            KERNEL_METAPACKAGE,
        ])
        .stderr(Stdio::piped())
        .output()
        .map_err(|err| spawn_error("apt-cache", "apt", err))?;
    let text = String::from_utf8_lossy(&output.stdout);
    match kernel_dependency(&text) {
        Some(package) if output.status.success() => Ok(package),
        _ => bail!(
            "apt does not know {KERNEL_METAPACKAGE}'s kernel (`apt-cache depends \
             {KERNEL_METAPACKAGE}`: {}); run `apt-get update` first",
            String::from_utf8_lossy(&output.stderr).trim()
        ),
    }
}

/// The `linux-image-*-amd64` package in `apt-cache depends` output.
pub fn kernel_dependency(apt_cache_depends: &str) -> Option<String> {
    apt_cache_depends.lines().find_map(|line| {
        let package = line.trim().strip_prefix("Depends:")?.trim();
        (package.starts_with("linux-image-")
            && package.ends_with("-amd64")
            && !package.contains("-cloud-")
            && !package.contains("-rt-"))
        .then(|| package.to_owned())
    })
}

/// The cached .deb of `package`, downloaded with `apt-get download` first
/// if there is none.
fn downloaded(debs: &Path, package: &str) -> Result<PathBuf> {
    if let Some(deb) = cached_deb(debs, package)? {
        return Ok(deb);
    }
    eprintln!(
        "vigil-bench: apt-get download {package} (once; cached in {})",
        debs.display()
    );
    let output = Command::new("apt-get")
        .args(["download", "-q", package])
        .current_dir(debs)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|err| spawn_error("apt-get", "apt", err))?;
    if !output.status.success() {
        bail!(
            "`apt-get download {package}` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    cached_deb(debs, package)?.with_context(|| {
        format!(
            "`apt-get download {package}` left no .deb in {}",
            debs.display()
        )
    })
}

/// The newest `package_*.deb` in `debs`.
fn cached_deb(debs: &Path, package: &str) -> Result<Option<PathBuf>> {
    let prefix = format!("{package}_");
    let mut found = Vec::new();
    for entry in fs::read_dir(debs).with_context(|| format!("reading {}", debs.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.ends_with(".deb") {
            found.push((entry.metadata()?.modified()?, entry.path()));
        }
    }
    found.sort();
    Ok(found.pop().map(|(_, path)| path))
}

/// One control field of a .deb (`dpkg-deb -f`).
fn deb_field(deb: &Path, field: &str) -> Result<String> {
    let output = Command::new("dpkg-deb")
        .arg("-f")
        .arg(deb)
        .arg(field)
        .output()
        .map_err(|err| spawn_error("dpkg-deb", "dpkg", err))?;
    if !output.status.success() {
        bail!("`dpkg-deb -f {} {field}` failed", deb.display());
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The kernel package's members the guest needs: the kernel and the NIC
/// modules (tar wildcards; `*` matches `/`).
fn kernel_patterns() -> Vec<String> {
    let mut patterns = vec!["./boot/vmlinuz-*".to_owned()];
    patterns.extend(
        Nic::ALL
            .iter()
            .flat_map(|nic| nic.modules())
            .map(|module| format!("*/lib/modules/*/{module}.ko")),
    );
    patterns
}

/// The members of `deb` matching `patterns`, extracted into `dir` once
/// (`dpkg-deb --fsys-tarfile | tar -x`); a marker file says it is complete.
fn extracted(deb: &Path, dir: &Path, patterns: &[String]) -> Result<PathBuf> {
    let done = dir.join(".extracted");
    let source = deb.display().to_string();
    if fs::read_to_string(&done).is_ok_and(|from| from == source) {
        return Ok(dir.to_owned());
    }
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|err| spawn_error("dpkg-deb", "dpkg", err))?;
    let stream = dpkg.stdout.take().context("dpkg-deb's output")?;
    let tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(dir)
        .arg("--wildcards")
        .args(patterns)
        .stdin(stream)
        .stderr(Stdio::piped())
        .output()
        .map_err(|err| spawn_error("tar", "tar", err))?;
    let dpkg = dpkg.wait()?;
    if !dpkg.success() || !tar.status.success() {
        bail!(
            "extracting {} failed (dpkg-deb {dpkg}, tar {}): {}",
            deb.display(),
            tar.status,
            String::from_utf8_lossy(&tar.stderr).trim()
        );
    }
    fs::write(&done, source)?;
    Ok(dir.to_owned())
}

/// The one file under `dir` whose name passes `wanted`.
fn find_file(dir: &Path, wanted: impl Fn(&str) -> bool) -> Result<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(current) = pending.pop() {
        for entry in fs::read_dir(&current)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() && wanted(&entry.file_name().to_string_lossy()) {
                found.push(entry.path());
            }
        }
    }
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "{} holds no such file (an unexpected package layout)",
            dir.display()
        ),
        more => bail!("{} holds several: {more:?}", dir.display()),
    }
}

/// The host toolchain's channel, from the root `rust-toolchain.toml`.
fn host_toolchain(project_dir: &Path) -> Result<String> {
    let path = project_dir.join("rust-toolchain.toml");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .find_map(|line| {
            let value = line
                .trim()
                .strip_prefix("channel")?
                .trim()
                .strip_prefix('=')?;
            Some(value.trim().trim_matches('"').to_owned())
        })
        .with_context(|| format!("{} names no channel", path.display()))
}

/// Builds the service for [`MUSL_TARGET`] with the host toolchain; returns
/// the toolchain and the binary.
fn build_service(project_dir: &Path, cache: &Path) -> Result<(String, PathBuf)> {
    let toolchain = host_toolchain(project_dir)?;
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed", "--toolchain", &toolchain])
        .output()
        .map_err(|err| spawn_error("rustup", "rustup", err))?;
    if !String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|line| line.trim() == MUSL_TARGET)
    {
        return Err(BenchError::MissingRustTarget {
            target: MUSL_TARGET,
            toolchain,
        }
        .into());
    }
    let target_dir = cache.join("cargo");
    eprintln!("vigil-bench: building vigil-service for {MUSL_TARGET} with toolchain {toolchain}");
    let status = Command::new("cargo")
        .args([
            "build",
            "--release",
            "--locked",
            "--quiet",
            "-p",
            "vigil-service",
        ])
        .args(["--target", MUSL_TARGET])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(project_dir.join("unikernel"))
        // Beats unikernel/rust-toolchain.toml (the image's nightly).
        .env("RUSTUP_TOOLCHAIN", &toolchain)
        .stdout(Stdio::null())
        .status()
        .map_err(|err| spawn_error("cargo", "rustup", err))?;
    if !status.success() {
        bail!(
            "building vigil-service for {MUSL_TARGET} failed ({status}); cargo's output is above"
        );
    }
    Ok((
        toolchain,
        target_dir
            .join(MUSL_TARGET)
            .join("release")
            .join("vigil-service"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generic_kernel_is_picked() {
        let text = "linux-image-amd64\n  Depends: linux-image-6.1.0-57-amd64\n";
        assert_eq!(
            kernel_dependency(text).as_deref(),
            Some("linux-image-6.1.0-57-amd64")
        );
        let cloud = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-57-cloud-amd64\n";
        assert_eq!(kernel_dependency(cloud), None);
        assert_eq!(kernel_dependency(""), None);
    }

    #[test]
    fn the_command_line_carries_the_nic_and_the_service_settings() {
        let service = ServiceConfig::default();
        let line = kernel_cmdline(Nic::Virtio, &service);
        assert!(line.starts_with("console=ttyS0 quiet panic=-1 vigil.nic=virtio -- --port=8080 "));
        let (_, settings) = line.split_once(" -- ").unwrap();
        let words: Vec<&str> = settings.split_whitespace().collect();
        assert_eq!(ServiceConfig::from_args(words).unwrap(), service);
    }

    #[test]
    fn init_loads_exactly_the_modules_of_each_nic() {
        for nic in Nic::ALL {
            let line = INIT
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("{})", nic.name())))
                .unwrap();
            assert!(
                line.contains(&format!("modules=\"{}\"", nic.modules().join(" "))),
                "{line}"
            );
        }
        for applet in ["mount", "cat", "insmod", "ip", "poweroff"] {
            assert!(APPLETS.contains(&applet));
        }
        assert!(INIT.contains("VIGIL_SERVICE_ADDRESS=0.0.0.0 /bin/vigil-service \"$@\""));
        // Every failure powers the guest off, so that QEMU exits at once.
        for line in INIT
            .lines()
            .filter(|l| l.contains("insmod \"") || l.starts_with("ip "))
        {
            if !line.contains("lo up") {
                assert!(line.contains("|| fail"), "{line}");
            }
        }
    }

    #[test]
    fn nics_match_the_flavors() {
        for nic in Nic::ALL {
            assert_eq!(Nic::of_flavor(nic.flavor()), Some(nic));
        }
        assert_eq!(Nic::of_flavor(Flavor::Microvm), None);
    }
}
