//! What a user sees when QEMU or the loader refuses an image: the launcher
//! library (`vigil_dom0::run`) on images that cannot boot.

mod common;

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use vigil_dom0::accel::AccelChoice;
use vigil_dom0::error::LaunchError;
use vigil_dom0::run::{self, RunOptions};

fn boot(image_dir: &std::path::Path) -> LaunchError {
    let run_dir = tempfile::tempdir().unwrap();
    let options = RunOptions {
        image_dir: image_dir.to_path_buf(),
        accel: AccelChoice::Tcg,
        memory_mib: 256,
        cpus: 1,
        host_port: 0,
        settings: Vec::new(),
        boot_timeout: Duration::from_secs(60),
    };
    match run::start(&options, run_dir.path(), &AtomicBool::new(false)) {
        Ok(_) => panic!("an unbootable image booted"),
        Err(err) => err,
    }
}

/// An image directory whose files are not bootable.
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

#[test]
fn qemu_refusing_the_loader_is_reported() {
    let dir = fake_image_dir();
    let err = boot(dir.path());
    let text = err.to_string() + &format!("{err:?}");
    assert!(matches!(err, LaunchError::QemuExited { .. }), "{text}");
    assert!(text.contains("(QEMU)"), "{text}");
}

#[test]
#[ignore = "boots the built loader under QEMU: run by scripts/test (cargo test -- --ignored)"]
fn the_loader_refuses_a_garbage_image_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    for file in ["vigil-loader", "build.json"] {
        std::fs::copy(common::image_dir().join(file), dir.path().join(file)).unwrap();
    }
    std::fs::write(dir.path().join("vigil-image"), vec![0x5a; 4096]).unwrap();
    let err = format!("{:?}", boot(dir.path()));
    assert!(
        err.contains("[loader] error: the image (module 0) is not an ELF file"),
        "{err}"
    );

    // A truncated copy of the real image.
    let image = std::fs::read(common::image_dir().join("vigil-image")).unwrap();
    std::fs::write(dir.path().join("vigil-image"), &image[..image.len() / 2]).unwrap();
    let err = format!("{:?}", boot(dir.path()));
    assert!(
        err.contains("[loader] error: the image is truncated"),
        "{err}"
    );
}
