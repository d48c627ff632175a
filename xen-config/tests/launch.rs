//! The measured launch, end to end, through the real `vigil-dom0` binary:
//! a sealed bundle of the built image, a real swtpm, a real QEMU guest, and
//! tpm2-tools as the independent judge of PCRs and event log.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::dom0::{Setup, stderr};

const EXIT_REFUSED: i32 = 8;
const EXIT_DOMAIN: i32 = 9;

fn tpm2_pcrread(socket: &Path, pcr: u8) -> String {
    let out = Command::new("tpm2_pcrread")
        .arg("-T")
        .arg(format!("swtpm:path={}", socket.display()))
        .arg(format!("sha256:{pcr}"))
        .output()
        .expect("tpm2_pcrread (tpm2-tools)");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    text.split("0x").nth(1).unwrap().trim().to_owned()
}

/// The threads of process `pid` in Linux's idle scheduling class.
fn idle_threads(pid: u64) -> usize {
    fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| task.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&tid| {
            vigil_dom0::sched::policy_of(tid).ok() == Some(vigil_dom0::sched::SCHED_IDLE)
        })
        .count()
}

#[test]
#[ignore = "boots the built image under QEMU: run by scripts/test"]
fn measured_launch_matches_the_manifest_and_the_log_replays() {
    let setup = Setup::new();
    let output = setup.launch("bundle", "k.pub", "t", &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let record: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(setup.path("bundle/manifest.json")).unwrap()).unwrap();

    // The guest answers.
    let url = record["url"].as_str().unwrap();
    let addr: std::net::SocketAddr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let mut client = common::Client::connect(addr);
    assert_eq!(client.request("GET", "/healthz", None).status, 200);

    // The per-boot key file is gone once QEMU has loaded it, and the key
    // is on no command line.
    assert!(!setup.path("state/t/boot/initrd.per-boot").exists());
    let qemu_pid = record["qemu_pid"].as_u64().unwrap();
    let cmdline = fs::read(format!("/proc/{qemu_pid}/cmdline")).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains("VIGILKEY"));

    // The watchdog's vCPU (the last of the default two) runs in the host's
    // idle class; QEMU's other threads do not.
    assert_eq!(record["vcpus"], 2);
    assert_eq!(record["watchdog_vcpu"], "idle");
    assert_eq!(idle_threads(qemu_pid), 1);

    // The loader put the key into the guest's key slot.
    let console = fs::read_to_string(setup.path("state/t/console.log")).unwrap();
    assert!(console.contains("report key: provisioned"), "{console}");

    // PCR 9 is the manifest's prediction, per tpm2_pcrread.
    let socket = PathBuf::from(record["tpm_socket"].as_str().unwrap());
    assert_eq!(tpm2_pcrread(&socket, 9), manifest["pcr9"].as_str().unwrap());

    // tpm2_eventlog replays the log to what the vTPM reports.
    let log = setup.path("state/t/eventlog.bin");
    let replay = Command::new("tpm2_eventlog").arg(&log).output().unwrap();
    assert!(replay.status.success(), "{}", stderr(&replay));
    let text = String::from_utf8_lossy(&replay.stdout).to_ascii_lowercase();
    for pcr in [9u8, 12, 15] {
        let value = tpm2_pcrread(&socket, pcr);
        assert!(
            text.lines().any(
                |l| l.split(':').next().map(str::trim) == Some(&pcr.to_string())
                    && l.contains(&value)
            ),
            "PCR {pcr} = {value} not replayed:\n{text}"
        );
    }

    // The domain is listed and running; a second launch of it is refused.
    let status = setup.dom0(&["status", "t"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["state"], "running");
    let twice = setup.launch("bundle", "k.pub", "t", &[]);
    assert_eq!(twice.status.code(), Some(EXIT_DOMAIN), "{}", stderr(&twice));
    let events = setup.dom0(&["eventlog", "t"]);
    let events: serde_json::Value = serde_json::from_slice(&events.stdout).unwrap();
    assert_eq!(events["events"].as_array().unwrap().len(), 5);

    // Stop: nothing left running, the vTPM state kept; a relaunch starts
    // from fresh PCRs (same PCR 9, new report key in PCR 15).
    let stop = setup.dom0(&["stop", "t"]);
    assert!(stop.status.success(), "{}", stderr(&stop));
    assert_eq!(setup.processes(), 0);
    assert!(setup.path("state/t/tpm/state").is_dir());
    let again = setup.launch("bundle", "k.pub", "t", &[]);
    assert!(again.status.success(), "{}", stderr(&again));
    let second: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(second["pcrs"][0], record["pcrs"][0]);
    assert_ne!(second["pcrs"][2], record["pcrs"][2]);
    let purge = setup.dom0(&["stop", "t", "--purge"]);
    assert!(purge.status.success(), "{}", stderr(&purge));
    assert!(!setup.path("state/t").exists());
    assert_eq!(setup.processes(), 0);
}

#[test]
#[ignore = "boots the built image under QEMU: run by scripts/test"]
fn refused_bundles_start_nothing_and_leave_nothing() {
    let setup = Setup::new();
    // A tampered image.
    let tampered = setup.path("tampered");
    fs::create_dir(&tampered).unwrap();
    for file in [
        "vigil-image",
        "vigil-loader",
        "manifest.json",
        "manifest.sig",
    ] {
        fs::copy(setup.path("bundle").join(file), tampered.join(file)).unwrap();
    }
    let mut image = fs::read(tampered.join("vigil-image")).unwrap();
    let last = image.len() - 1;
    image[last] ^= 1;
    fs::write(tampered.join("vigil-image"), image).unwrap();

    let cases: [(&str, &str, &[&str], &str); 3] = [
        ("tampered", "k.pub", &[], "image sha256"),
        ("bundle", "other.pub", &[], "signature"),
        (
            "bundle",
            "k.pub",
            &["--min-version", "4"],
            "security_version",
        ),
    ];
    for (bundle, trust, extra, check) in cases {
        let output = setup.launch(bundle, trust, "t", extra);
        assert_eq!(
            output.status.code(),
            Some(EXIT_REFUSED),
            "{}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(check),
            "want {check}: {}",
            stderr(&output)
        );
        assert_eq!(setup.processes(), 0, "a process was left behind");
        assert!(!setup.path("state/t/domain.json").exists());
        assert!(!setup.path("state/t/boot").exists());
    }

    // A taken port is found before anything starts: neither QEMU nor swtpm
    // is ever run (each is a wrapper that notes its start).
    let bin = setup.path("bin");
    fs::create_dir(&bin).unwrap();
    let starts = setup.path("starts.log");
    for program in ["qemu-system-x86_64", "swtpm"] {
        let wrapper = bin.join(program);
        fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\necho {program} >>{}\nexec {} \"$@\"\n",
                starts.display(),
                which_in_path(program).display()
            ),
        )
        .unwrap();
        fs::set_permissions(
            &wrapper,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let path = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&path)));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let output = setup
        .launch_command("bundle", "k.pub", "t", &["--port", &port])
        .env("PATH", path.unwrap())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("already in use"),
        "{}",
        stderr(&output)
    );
    assert!(
        !starts.exists(),
        "started: {:?}",
        fs::read_to_string(&starts)
    );
    assert_eq!(setup.processes(), 0, "a process was left behind");
    assert!(!setup.path("state/t").exists());

    // A state directory that cannot be written.
    let output = Command::new(env!("CARGO_BIN_EXE_vigil-dom0"))
        .args(["launch"])
        .arg(setup.path("bundle"))
        .arg("--trust")
        .arg(setup.path("k.pub"))
        .args(["--state-dir", "/proc/vigil-cannot-write", "--port", "0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));
}

#[test]
#[ignore = "boots the built image under QEMU: run by scripts/test"]
fn two_domains_run_at_once_each_with_its_own_vtpm() {
    let setup = Setup::new();
    let first = setup.launch("bundle", "k.pub", "t", &[]);
    assert!(first.status.success(), "{}", stderr(&first));
    let second = setup.launch("bundle", "k.pub", "again", &["--watchdog-vcpu", "normal"]);
    assert!(second.status.success(), "{}", stderr(&second));
    let first: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    let second: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    // Asked to, the launch leaves every QEMU thread at the normal policy.
    assert_eq!(second["watchdog_vcpu"], "normal");
    assert_eq!(idle_threads(second["qemu_pid"].as_u64().unwrap()), 0);
    assert_ne!(first["url"], second["url"]);
    assert_ne!(first["tpm_socket"], second["tpm_socket"]);
    // Same image, same PCR 9; each boot its own key, so its own PCR 15.
    assert_eq!(first["pcrs"][0], second["pcrs"][0]);
    assert_ne!(first["pcrs"][2], second["pcrs"][2]);
    let list = setup.dom0(&["list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let states: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap().to_owned(),
                d["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("again".to_owned(), "running".to_owned()),
            ("t".to_owned(), "running".to_owned())
        ]
    );
    for name in ["t", "again"] {
        assert!(setup.dom0(&["stop", name]).status.success());
    }
    assert_eq!(setup.processes(), 0);
}

#[test]
#[ignore = "boots the built image under QEMU: run by scripts/test"]
fn a_missing_swtpm_is_named_and_nothing_is_left() {
    let setup = Setup::new();
    // A PATH with QEMU but without swtpm.
    let bin = setup.path("bin");
    fs::create_dir(&bin).unwrap();
    let qemu = which_in_path("qemu-system-x86_64");
    std::os::unix::fs::symlink(qemu, bin.join("qemu-system-x86_64")).unwrap();
    let output = setup
        .launch_command("bundle", "k.pub", "t", &[])
        .env("PATH", &bin)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("Debian package `swtpm`"),
        "{}",
        stderr(&output)
    );
    assert_eq!(setup.processes(), 0, "QEMU was left behind");
    assert!(!setup.path("state/t/domain.json").exists());
}

#[test]
#[ignore = "needs the built image: run by scripts/test"]
fn a_missing_qemu_is_named_and_nothing_is_left() {
    let setup = Setup::new();
    let empty = setup.path("empty-bin");
    fs::create_dir(&empty).unwrap();
    let output = setup
        .launch_command("bundle", "k.pub", "t", &[])
        .env("PATH", &empty)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("Debian package `qemu-system-x86`"),
        "{}",
        stderr(&output)
    );
    assert_eq!(setup.processes(), 0);
    assert!(!setup.path("state/t").exists());
}

#[test]
#[ignore = "boots the built image under QEMU: run by scripts/test"]
fn a_refused_scheduling_class_is_named_and_nothing_is_left() {
    let setup = Setup::new();
    // A PATH whose `chrt` refuses (as a host policy forbidding SCHED_IDLE would).
    let bin = setup.path("bin");
    fs::create_dir(&bin).unwrap();
    let chrt = bin.join("chrt");
    fs::write(
        &chrt,
        "#!/bin/sh\necho 'chrt: failed to set pid policy: refused' >&2\nexit 1\n",
    )
    .unwrap();
    fs::set_permissions(&chrt, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let path = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&path)));
    let output = setup
        .launch_command("bundle", "k.pub", "t", &[])
        .env("PATH", path.unwrap())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("idle scheduling class") && stderr(&output).contains("refused"),
        "{}",
        stderr(&output)
    );
    assert_eq!(setup.processes(), 0, "QEMU or swtpm was left behind");
    assert!(!setup.path("state/t/domain.json").exists());
}

fn which_in_path(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(program))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_else(|| panic!("{program} is not installed"))
}

#[test]
#[ignore = "needs the built image: run by scripts/test"]
fn xen_dry_run_verifies_then_prints_the_config_and_starts_nothing() {
    let setup = Setup::new();
    let output = setup.launch("bundle", "k.pub", "t", &["--backend", "xen", "--dry-run"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let config = String::from_utf8(output.stdout).unwrap();
    assert!(config.contains("type = \"hvm\""), "{config}");
    assert!(config.contains("/t/boot/vigil-image\""), "{config}");
    assert!(config.contains("model=rtl8139"), "{config}");
    assert!(
        !config.lines().any(|l| l.trim_start().starts_with("vtpm")),
        "{config}"
    );
    assert_eq!(setup.processes(), 0);
    assert!(!setup.path("state/t").exists(), "a dry run leaves nothing");

    // Without --dry-run, on a host that is not a Xen dom0: a clear error,
    // no swtpm left, no domain recorded.
    let real = setup.launch("bundle", "k.pub", "t", &["--backend", "xen"]);
    assert_eq!(real.status.code(), Some(3), "{}", stderr(&real));
    assert!(stderr(&real).contains("xen"), "{}", stderr(&real));
    assert_eq!(setup.processes(), 0);
    assert!(
        !setup.path("state/t").exists(),
        "a new domain's failed launch leaves nothing"
    );

    // A refused bundle prints no config.
    let refused = setup.launch(
        "bundle",
        "other.pub",
        "t",
        &["--backend", "xen", "--dry-run"],
    );
    assert_eq!(refused.status.code(), Some(EXIT_REFUSED));
    assert!(refused.stdout.is_empty());
}

#[test]
#[ignore = "boots the built image under QEMU: run by scripts/test"]
fn a_bundle_swapped_during_launch_never_boots_unverified_bytes() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let setup = Setup::new();
    let bundle = setup.path("bundle");
    let good = fs::read(bundle.join("vigil-image")).unwrap();
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    fs::write(setup.path("good-image"), &good).unwrap();
    fs::write(setup.path("bad-image"), &bad).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(bundle.join("manifest.json")).unwrap()).unwrap();
    let digest = manifest["image"]["sha256"].as_str().unwrap().to_owned();

    // Swap the bundle's image between good and tampered bytes, atomically
    // and as fast as possible, while launches run.
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let stop = Arc::clone(&stop);
        let (good, bad, target) = (
            setup.path("good-image"),
            setup.path("bad-image"),
            bundle.join("vigil-image"),
        );
        let staging = setup.path("swap.tmp");
        std::thread::spawn(move || {
            let mut flip = false;
            while !stop.load(Ordering::Relaxed) {
                fs::copy(if flip { &bad } else { &good }, &staging).unwrap();
                fs::rename(&staging, &target).unwrap();
                flip = !flip;
            }
        })
    };
    let mut booted = 0;
    for _ in 0..4 {
        let output = setup.launch("bundle", "k.pub", "t", &[]);
        match output.status.code() {
            Some(0) => {
                booted += 1;
                // What was verified and booted is the sealed image.
                let copy = fs::read(setup.path("state/t/boot/vigil-image")).unwrap();
                let sum: String = vigil_core::v1::events::sha256(&copy)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                assert_eq!(sum, digest);
                let record: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
                assert_eq!(record["pcrs"][0][1], manifest["pcr9"]);
                let qemu_pid = record["qemu_pid"].as_u64().unwrap();
                let cmdline = fs::read(format!("/proc/{qemu_pid}/cmdline")).unwrap();
                assert!(
                    !String::from_utf8_lossy(&cmdline).contains(&bundle.display().to_string()),
                    "QEMU reads the bundle itself"
                );
                assert!(setup.dom0(&["stop", "t"]).status.success());
            }
            Some(EXIT_REFUSED) => {
                assert!(
                    stderr(&output).contains("image sha256"),
                    "{}",
                    stderr(&output)
                );
            }
            other => panic!("unexpected exit {other:?}: {}", stderr(&output)),
        }
        assert_eq!(setup.processes(), 0);
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    eprintln!("{booted} of 4 launches booted (the others refused a tampered copy)");
}

#[test]
#[ignore = "boots the built image under QEMU: run by scripts/test"]
fn the_kvm_probe_never_boots_the_per_boot_key() {
    let setup = Setup::new();
    // A QEMU that notes, for each boot, its accelerator and whether its
    // initrd ends with the key trailer, then runs the real QEMU.
    let bin = setup.path("bin");
    fs::create_dir(&bin).unwrap();
    let log = setup.path("qemu-starts.log");
    let wrapper = bin.join("qemu-system-x86_64");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n\
             [ \"$1\" = --version ] && exec {qemu} \"$@\"\n\
             trailer=none; prev=\n\
             for arg in \"$@\"; do\n\
             \x20 if [ \"$prev\" = -initrd ] && [ \"$(tail -c 8 \"$arg\")\" = VIGILKEY ]; then trailer=key; fi\n\
             \x20 prev=$arg\n\
             done\n\
             case \" $* \" in *' -accel kvm '*) accel=kvm ;; *) accel=tcg ;; esac\n\
             echo \"$accel $trailer\" >>{log}\n\
             exec {qemu} \"$@\"\n",
            log = log.display(),
            qemu = which_in_path("qemu-system-x86_64").display(),
        ),
    )
    .unwrap();
    fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let path = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&path)));
    let cache = setup.path("cache");
    let output = setup
        .launch_command("bundle", "k.pub", "t", &["--accel", "auto"])
        .env("PATH", path.unwrap())
        .env("XDG_CACHE_HOME", &cache)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let record: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    eprintln!("launched under {}", record["accel"]);
    let starts = fs::read_to_string(&log).unwrap();
    let starts: Vec<&str> = starts.lines().collect();
    // The measured boot, last, is the only start that got the key.
    let (measured, probes) = starts.split_last().unwrap();
    assert!(measured.ends_with(" key"), "{starts:?}");
    assert!(probes.iter().all(|s| s.ends_with(" none")), "{starts:?}");
    if vigil_dom0::accel::kvm_device_usable() {
        assert_eq!(probes, ["kvm none"], "one KVM probe, without the key");
    } else {
        assert!(probes.is_empty(), "no /dev/kvm, no probe: {starts:?}");
    }
    assert!(setup.dom0(&["stop", "t"]).status.success());
}
