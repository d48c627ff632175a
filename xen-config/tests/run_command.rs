//! The `vigil-dom0 run` binary as a user runs it.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn dom0() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vigil-dom0"))
}

/// An image directory whose files are not bootable; enough for checks that
/// must fail before QEMU starts.
fn fake_image_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for file in ["vigil-image", "vigil-loader"] {
        std::fs::write(dir.path().join(file), b"not an ELF").unwrap();
    }
    std::fs::write(
        dir.path().join("build.json"),
        r#"{"schema":"vigil.build-info.v1","flavor":"hvm"}"#,
    )
    .unwrap();
    dir
}

fn run_fails(args: &[&str], image_dir: &Path) -> (i32, String) {
    let out = dom0()
        .arg("run")
        .arg("--image-dir")
        .arg(image_dir)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_input_is_refused_before_anything_boots() {
    let dir = fake_image_dir();
    let (code, err) = run_fails(&["--set", "colour=red"], dir.path());
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("unknown setting `colour`"), "{err}");

    let (code, err) = run_fails(&["--set", "port=0"], dir.path());
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("out of range"), "{err}");

    let missing = tempfile::tempdir().unwrap();
    let (code, err) = run_fails(&[], missing.path());
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("vigil-build build"), "{err}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (code, err) = run_fails(&["--port", &port], dir.path());
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("already in use"), "{err}");
}

#[test]
fn qemu_refusing_the_loader_is_reported() {
    let dir = fake_image_dir();
    let (code, err) = run_fails(&["--accel", "tcg"], dir.path());
    assert_eq!(code, 6, "{err}");
    assert!(
        err.contains("QEMU exited") && err.contains("(QEMU)"),
        "{err}"
    );
}

#[test]
#[ignore = "boots the built loader under QEMU: run by .ci/run (cargo test -- --ignored)"]
fn the_loader_refuses_a_garbage_image_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    for file in ["vigil-loader", "build.json"] {
        std::fs::copy(common::image_dir().join(file), dir.path().join(file)).unwrap();
    }
    std::fs::write(dir.path().join("vigil-image"), vec![0x5a; 4096]).unwrap();
    let (code, err) = run_fails(&["--accel", "tcg"], dir.path());
    assert_eq!(code, 6, "{err}");
    assert!(
        err.contains("[loader] error: the image (module 0) is not an ELF file"),
        "{err}"
    );

    // A truncated copy of the real image.
    let image = std::fs::read(common::image_dir().join("vigil-image")).unwrap();
    std::fs::write(dir.path().join("vigil-image"), &image[..image.len() / 2]).unwrap();
    let (code, err) = run_fails(&["--accel", "tcg"], dir.path());
    assert_eq!(code, 6, "{err}");
    assert!(
        err.contains("[loader] error: the image is truncated"),
        "{err}"
    );
}

#[test]
#[ignore = "boots the built image under QEMU: run by .ci/run (cargo test -- --ignored)"]
fn run_serves_until_sigterm_then_stops_the_guest() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = dom0()
        .arg("run")
        .arg("--image-dir")
        .arg(common::image_dir())
        .args(["--port", &port.to_string(), "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ready: serde_json::Value = serde_json::from_str(&line).expect("a JSON ready line");
    assert_eq!(ready["url"], format!("http://127.0.0.1:{port}/"));
    let qemu_pid = ready["pid"].as_u64().unwrap();

    let mut client = common::Client::connect(format!("127.0.0.1:{port}").parse().unwrap());
    assert_eq!(client.request("GET", "/healthz", None).status, 200);
    drop(client);

    // Stop it the way a service manager would.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !Path::new(&format!("/proc/{qemu_pid}")).exists(),
        "QEMU {qemu_pid} is still running"
    );
}
