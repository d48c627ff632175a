//! Ctrl-C (SIGINT to the process group, as a terminal sends it) and SIGTERM
//! (to the benchmark alone) while `vigil-bench launch` boots guests: the run
//! exits 130 and leaves no QEMU, no swtpm, no temporary directory and no
//! report behind.
//!
//! These boot the built image, so a plain `cargo test` ignores them;
//! scripts/test runs them after `vigil-build build`.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process, kill_process_group};

const BENCH: &str = env!("CARGO_BIN_EXE_vigil-bench");

/// The image under test: `$VIGIL_IMAGE_DIR`, or `target/vigil/hvm` of this checkout.
fn image_dir() -> PathBuf {
    std::env::var_os("VIGIL_IMAGE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| project().join("target/vigil/hvm"))
}

/// This checkout.
fn project() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Live (not zombie) processes named `comm` whose command line mentions `marker`.
fn processes(comm: &str, marker: &Path) -> Vec<u32> {
    processes_with(comm, marker, "")
}

/// [`processes`] whose command line also contains `also`.
fn processes_with(comm: &str, marker: &Path, also: &str) -> Vec<u32> {
    let marker = marker.display().to_string();
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let proc = PathBuf::from(format!("/proc/{pid}"));
            let named = fs::read_to_string(proc.join("comm")).is_ok_and(|c| c.trim() == comm);
            let mentions = fs::read(proc.join("cmdline")).is_ok_and(|c| {
                let line = String::from_utf8_lossy(&c);
                line.contains(&marker) && line.contains(also)
            });
            let zombie = fs::read_to_string(proc.join("stat")).is_ok_and(|stat| {
                stat.rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
            });
            named && mentions && !zombie
        })
        .collect()
}

/// QEMU's command name as /proc shows it (15 characters at most).
const QEMU_COMM: &str = "qemu-system-x86";

/// `vigil-bench launch` in a process group of its own, working in `work`.
fn start_launch_bench(work: &Path) -> Child {
    Command::new(BENCH)
        .args(["launch", "--rounds", "3", "--image-dir"])
        .arg(image_dir())
        .arg("--work-dir")
        .arg(work)
        .arg("--out")
        .arg(work.join("launch.md"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap()
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < timeout, "{what} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn wait_exit(child: &mut Child, timeout: Duration) -> (ExitStatus, String) {
    use std::io::Read;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            panic!("vigil-bench did not exit within {timeout:?} of the signal");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stderr)
}

/// What an interrupted run must leave: exit 130, no QEMU or swtpm of its
/// own, no temporary directory, no report.
fn assert_clean_exit(child: &mut Child, work: &Path) {
    let (status, stderr) = wait_exit(child, Duration::from_secs(60));
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("vigil-bench: interrupted"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(processes(QEMU_COMM, work), Vec::<u32>::new(), "{stderr}");
    assert_eq!(processes("swtpm", work), Vec::<u32>::new(), "{stderr}");
    let left: Vec<String> = fs::read_dir(work)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.is_empty(),
        "left behind in {}: {left:?}",
        work.display()
    );
}

fn pid(child: &Child) -> Pid {
    Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap()
}

#[test]
#[ignore = "boots the built image under QEMU: run by scripts/test"]
fn ctrl_c_during_a_measured_launch_stops_guests_and_vtpms() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().canonicalize().unwrap();
    let mut bench = start_launch_bench(&work);
    // The measured launches run swtpm and QEMU in process groups of their
    // own: the terminal's signal reaches neither, only the benchmark.
    wait_until(
        "a measured launch's swtpm",
        Duration::from_secs(180),
        || !processes("swtpm", &work).is_empty(),
    );
    kill_process_group(pid(&bench), Signal::INT).unwrap();
    assert_clean_exit(&mut bench, &work);
}

#[test]
#[ignore = "boots the built image under QEMU: run by scripts/test"]
fn sigterm_during_an_unmeasured_boot_stops_the_guest() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().canonicalize().unwrap();
    let mut bench = start_launch_bench(&work);
    // The first boot of round 0 is unmeasured; SIGTERM to the benchmark
    // alone (as a supervisor sends it) reaches neither QEMU nor swtpm.
    wait_until("the first QEMU", Duration::from_secs(120), || {
        !processes(QEMU_COMM, &work).is_empty()
    });
    kill_process(pid(&bench), Signal::TERM).unwrap();
    assert_clean_exit(&mut bench, &work);
}

#[test]
#[ignore = "boots both built images and the Linux guest (apt-get download once): run by scripts/test"]
fn ctrl_c_during_all_stops_the_linux_guests_too() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().canonicalize().unwrap();
    let project = project();
    let mut bench = Command::new(BENCH)
        .args(["all", "--quick", "--hvm"])
        .arg(image_dir())
        .arg("--virtio")
        .arg(project.join("target/vigil/virtio"))
        .arg("--linux-cache")
        .arg(project.join("target/vigil/linux-baseline"))
        .arg("--work-dir")
        .arg(&work)
        .arg("--out-dir")
        .arg(work.join("out"))
        .current_dir(&project)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    // A Linux guest (its command line names the NIC for /init).
    wait_until("a Linux guest's QEMU", Duration::from_secs(600), || {
        !processes_with(QEMU_COMM, &work, "vigil.nic=").is_empty()
    });
    kill_process_group(pid(&bench), Signal::INT).unwrap();
    assert_clean_exit(&mut bench, &work);
}
