//! The guest's randomness: every boot has real entropy, and no two boots
//! share it (kernel patches 0026a–e, the initrd trailer v2).
//!
//! Observed from outside, on the production image: QEMU's `filter-dump`
//! records each guest's network traffic, whose TCP initial sequence numbers
//! and DHCP transaction ids come from smoltcp's generator, which the kernel
//! seeds from its entropy pool. Before the patches both came from the
//! wall-clock second, and the kernel's pool from a Park–Miller generator
//! ("Unable to read entropy! Fallback to a naive implementation!").

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::ENTROPY_FALLBACK as FALLBACK;
use common::dom0::{Setup, stderr};
use vigil_dom0::image::BootImage;
use vigil_dom0::qemu::{Accel, QemuConfig, kernel_cmdline};

/// The kernel's line naming the sources it seeded its pool from (0026a).
const SEEDED: &str = "Entropy pool seeded from ";
/// The source the loader hands over.
const LOADER_SEED: &str = "the loader's per-boot seed";
/// The service port of a default configuration.
const SERVICE_PORT: u16 = 8080;

/// A `qemu-system-x86_64` for `PATH` that runs the real one with the
/// processor's random number instructions switched off (TCG's `max` CPU
/// has RDRAND, which would hide a lost loader seed) and the guest's
/// network traffic recorded into `<dumps>/<pid>.pcap`.
fn recording_qemu(dir: &Path) -> (PathBuf, PathBuf) {
    let bin = dir.join("bin");
    let dumps = dir.join("dumps");
    fs::create_dir_all(&bin).unwrap();
    fs::create_dir_all(&dumps).unwrap();
    let wrapper = bin.join("qemu-system-x86_64");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n\
             [ \"$1\" = --version ] && exec {qemu} \"$@\"\n\
             for arg do\n\
             \x20 shift\n\
             \x20 [ \"$arg\" = max,-monitor ] && arg=max,-monitor,-rdrand,-rdseed\n\
             \x20 set -- \"$@\" \"$arg\"\n\
             done\n\
             exec {qemu} \"$@\" -object filter-dump,id=vigil-dump,netdev=net0,file={dumps}/$$.pcap\n",
            qemu = which_in_path("qemu-system-x86_64").display(),
            dumps = dumps.display(),
        ),
    )
    .unwrap();
    fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    (bin, dumps)
}

fn which_in_path(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("{program} is not installed"))
}

/// What smoltcp's generator gave away in one guest's traffic.
#[derive(Debug, Default)]
struct Observed {
    /// Initial sequence numbers of the guest's SYN-ACKs (its service port).
    isns: BTreeSet<u32>,
    /// Transaction ids of the guest's DHCP messages.
    xids: BTreeSet<u32>,
}

fn be32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes(bytes[..4].try_into().unwrap())
}

/// Reads a pcap file (`filter-dump`: little-endian, Ethernet frames).
fn observe(pcap: &Path) -> Observed {
    let bytes = fs::read(pcap).unwrap();
    assert!(
        bytes.len() >= 24 && bytes[..4] == 0xa1b2_c3d4u32.to_le_bytes(),
        "{} is not a little-endian pcap file",
        pcap.display()
    );
    assert_eq!(&bytes[20..24], &1u32.to_le_bytes(), "Ethernet frames");
    let mut observed = Observed::default();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        let Some(frame) = bytes.get(at + 16..at + 16 + len) else {
            break;
        };
        at += 16 + len;
        // IPv4 in Ethernet.
        if frame.len() < 34 || frame[12..14] != [0x08, 0x00] {
            continue;
        }
        let ip = &frame[14..];
        let header = usize::from(ip[0] & 0x0f) * 4;
        let Some(payload) = ip.get(header..) else {
            continue;
        };
        match ip[9] {
            6 if payload.len() >= 20 => {
                let source_port = u16::from_be_bytes([payload[0], payload[1]]);
                let (syn, ack) = (payload[13] & 0x02 != 0, payload[13] & 0x10 != 0);
                if source_port == SERVICE_PORT && syn && ack {
                    observed.isns.insert(be32(&payload[4..]));
                }
            }
            17 if payload.len() >= 16 => {
                let source_port = u16::from_be_bytes([payload[0], payload[1]]);
                // BOOTP from the client: op 1, xid at offset 4.
                if source_port == 68 && payload[8] == 1 {
                    observed.xids.insert(be32(&payload[12..]));
                }
            }
            _ => {}
        }
    }
    observed
}

#[test]
#[ignore = "boots the built image under QEMU: run by scripts/test"]
fn guests_launched_together_draw_different_randomness_from_the_loader_seed() {
    let setup = Setup::new();
    let (bin, dumps) = recording_qemu(&setup.path("qemu"));
    let path = std::env::var_os("PATH").unwrap_or_default();
    let path =
        std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&path))).unwrap();

    // Two measured launches at once: both guests boot within the same
    // second or two, with no RDRAND or RDSEED.
    let launches: Vec<_> = ["a", "b"]
        .map(|name| {
            let mut command = setup.launch_command("bundle", "k.pub", name, &[]);
            command.env("PATH", &path);
            std::thread::spawn(move || command.output().unwrap())
        })
        .into_iter()
        .collect();
    let mut urls = Vec::new();
    for launch in launches {
        let output = launch.join().unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        let record: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        urls.push(record["url"].as_str().unwrap().to_owned());
    }
    // A few more connections each, on top of the launcher's health probes.
    for url in &urls {
        let addr: SocketAddr = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .unwrap();
        for _ in 0..3 {
            let response = common::Client::connect(addr).request("GET", "/healthz", None);
            assert_eq!(response.status, 200);
        }
    }
    let consoles: Vec<String> = ["a", "b"]
        .iter()
        .map(|name| fs::read_to_string(setup.path("state").join(name).join("console.log")).unwrap())
        .collect();
    for name in ["a", "b"] {
        assert!(setup.dom0(&["stop", name]).status.success());
    }

    for console in &consoles {
        assert!(!console.contains(FALLBACK), "{console}");
        let seeded = console
            .lines()
            .find_map(|line| line.split_once(SEEDED).map(|(_, sources)| sources))
            .unwrap_or_else(|| panic!("no `{SEEDED}` line:\n{console}"));
        assert_eq!(seeded.trim(), LOADER_SEED, "the only source without RDRAND");
    }
    let mut observed: Vec<Observed> = fs::read_dir(&dumps)
        .unwrap()
        .map(|entry| observe(&entry.unwrap().path()))
        .collect();
    assert_eq!(observed.len(), 2, "one recording per guest: {observed:?}");
    let (b, a) = (observed.pop().unwrap(), observed.pop().unwrap());
    eprintln!("guest 1: {a:x?}\nguest 2: {b:x?}");
    for guest in [&a, &b] {
        assert!(!guest.isns.is_empty(), "no SYN-ACK recorded: {guest:?}");
        assert!(
            !guest.xids.is_empty(),
            "no DHCP request recorded: {guest:?}"
        );
    }
    assert!(
        a.isns.is_disjoint(&b.isns),
        "two guests chose the same TCP initial sequence numbers: {a:x?} {b:x?}"
    );
    assert!(
        a.xids.is_disjoint(&b.xids),
        "two guests chose the same DHCP transaction ids: {a:x?} {b:x?}"
    );
}

#[test]
#[ignore = "boots the built image under QEMU: run by scripts/test"]
fn without_any_entropy_source_the_kernel_refuses_to_run() {
    // An unmeasured boot (no trailer, so no loader seed) on a CPU without
    // RDRAND and RDSEED: the kernel stops instead of running on
    // predictable randomness.
    let dir = tempfile::tempdir().unwrap();
    let image = BootImage::from_dir(&common::image_dir()).unwrap();
    let config = QemuConfig {
        image,
        accel: Accel::Tcg,
        memory_mib: 256,
        cpus: 1,
        cmdline: kernel_cmdline(&Default::default()),
        forward: None,
        console: dir.path().join("console.log"),
        qmp: dir.path().join("qmp.sock"),
    };
    let args: Vec<_> = config
        .args()
        .into_iter()
        .map(|arg| {
            if arg == "max,-monitor" {
                "max,-monitor,-rdrand,-rdseed".into()
            } else {
                arg
            }
        })
        .collect();
    let mut qemu = Command::new("qemu-system-x86_64")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = qemu.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = qemu.kill();
            let _ = qemu.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let console = fs::read_to_string(&config.console).unwrap_or_default();
    assert!(status.is_some(), "the guest kept running:\n{console}");
    assert!(console.contains("[PANIC]"), "{console}");
    assert!(
        console.contains("no entropy: the loader handed over no per-boot seed"),
        "{console}"
    );
    assert!(!console.contains(FALLBACK), "{console}");
    assert!(
        !console.contains(vigil_core::v1::console::READY),
        "{console}"
    );
}

#[test]
#[ignore = "boots the built image under QEMU: run by scripts/test"]
fn an_unmeasured_boot_seeds_from_the_processor() {
    // No trailer, TCG's `max` CPU: RDRAND is the source, and there is no
    // fallback line.
    let guest = common::TestGuest::boot(&[]);
    let console = guest.console();
    assert!(!console.contains(FALLBACK), "{console}");
    assert!(console.contains(&format!("{SEEDED}RDRAND")), "{console}");
    assert!(!console.contains(LOADER_SEED), "{console}");
}
