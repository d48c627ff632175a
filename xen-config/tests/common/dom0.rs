//! A test's own vigil-dom0 world: keys, sealed bundles of the built image,
//! a state directory, and `vigil-dom0` commands run against them.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};

use vigil_build::seal::{SealOptions, seal};
use vigil_core::v1::config::ServiceConfig;
use vigil_core::v1::refblock::Reaction;

pub struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    /// Keys (`k`, trusted, and `other`) and `bundle`, a sealed bundle of the
    /// built image (security version 3, watchdog `log` every second).
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        vigil_build::keys::generate(&dir.path().join("k.pem"), &dir.path().join("k.pub")).unwrap();
        vigil_build::keys::generate(&dir.path().join("other.pem"), &dir.path().join("other.pub"))
            .unwrap();
        let setup = Self { dir };
        setup.seal("bundle", 1000, Reaction::Log);
        setup
    }

    /// Seals the built image with key `k` into bundle `out`, with this
    /// watchdog interval and reaction.
    pub fn seal(&self, out: &str, interval_ms: u32, reaction: Reaction) {
        seal(&SealOptions {
            image_dir: super::image_dir(),
            key: self.path("k.pem"),
            out: self.path(out),
            service_name: "vigil-service".into(),
            service_version: "test".into(),
            security_version: 3,
            interval_ms,
            reaction,
            service: ServiceConfig::default(),
        })
        .unwrap();
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `vigil-dom0 <args>` with this test's state directory.
    pub fn dom0_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_vigil-dom0"));
        command
            .args(args)
            .env("VIGIL_STATE_DIR", self.path("state"));
        command
    }

    pub fn dom0(&self, args: &[&str]) -> Output {
        self.dom0_command(args).output().unwrap()
    }

    pub fn launch(&self, bundle: &str, trust: &str, name: &str, extra: &[&str]) -> Output {
        self.launch_command(bundle, trust, name, extra)
            .output()
            .unwrap()
    }

    /// `vigil-dom0 launch` of a bundle in this test's directory, under TCG
    /// and on any free port unless `extra` says otherwise.
    pub fn launch_command(&self, bundle: &str, trust: &str, name: &str, extra: &[&str]) -> Command {
        let bundle = self.path(bundle).display().to_string();
        let trust = self.path(trust).display().to_string();
        let mut args = vec!["launch", &bundle, "--trust", &trust, "--name", name];
        if !extra.contains(&"--accel") {
            args.extend(["--accel", "tcg"]);
        }
        if !extra.contains(&"--port") {
            args.extend(["--port", "0"]);
        }
        args.extend_from_slice(extra);
        self.dom0_command(&args)
    }

    /// swtpm or QEMU processes started for this test's state directory.
    pub fn processes(&self) -> usize {
        let marker = self.path("state").display().to_string();
        fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            })
            .filter(|e| {
                fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                    String::from_utf8_lossy(&c).contains(&marker)
                        && fs::read_to_string(e.path().join("stat")).is_ok_and(|s| {
                            !s.rsplit(')')
                                .next()
                                .unwrap_or("")
                                .trim_start()
                                .starts_with('Z')
                        })
                })
            })
            .count()
    }
}

impl Drop for Setup {
    /// Stops every domain the test launched.
    fn drop(&mut self) {
        let Ok(entries) = fs::read_dir(self.path("state")) else {
            return;
        };
        for entry in entries.flatten() {
            if let Some(name) = entry.file_name().to_str() {
                let _ = self.dom0(&["stop", name]);
            }
        }
    }
}

/// A command's stderr, for assertion messages.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
