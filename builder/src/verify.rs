//! `vigil-build verify`: checks a bundle the way dom0 will, and says which
//! check failed, with expected and actual values.

use std::fs;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use vigil_core::v1::bundle::{
    self, BundleFiles, Check, IMAGE_FILE, LOADER_FILE, MANIFEST_FILE, SIGNATURE_FILE,
};

/// The outcome of verifying a bundle directory, as `--json` prints it.
#[derive(Debug, serde::Serialize)]
pub struct Report {
    /// The bundle directory.
    pub bundle: PathBuf,
    /// Whether every check held.
    pub passed: bool,
    /// The fingerprint of the key the bundle was checked against.
    pub key_fingerprint: String,
    /// Every check, in order.
    pub checks: Vec<Check>,
}

/// Verifies the bundle directory `dir` against `key`. A file that cannot be
/// read is a failed check, like a wrong digest.
pub fn verify_dir(dir: &Path, key: &VerifyingKey, min_security_version: u64) -> Report {
    let mut unreadable = Vec::new();
    let mut read = |name: &str| match fs::read(dir.join(name)) {
        Ok(bytes) => bytes,
        Err(err) => {
            unreadable.push(Check {
                name: format!("file {name}"),
                passed: false,
                expected: "a readable file".into(),
                actual: err.to_string(),
            });
            Vec::new()
        }
    };
    let manifest = read(MANIFEST_FILE);
    let signature = read(SIGNATURE_FILE);
    let image = read(IMAGE_FILE);
    let loader = read(LOADER_FILE);
    let verdict = bundle::verify(
        &BundleFiles {
            manifest: &manifest,
            signature: &signature,
            image: &image,
            loader: &loader,
        },
        key,
        min_security_version,
    );
    let mut checks = unreadable;
    checks.extend(verdict.checks);
    Report {
        bundle: dir.into(),
        passed: checks.iter().all(|c| c.passed),
        key_fingerprint: bundle::key_fingerprint(key),
        checks,
    }
}

impl Report {
    /// The report for people: one line per check, expected and actual values
    /// under each failure.
    pub fn human(&self) -> String {
        let failed = self.checks.iter().filter(|c| !c.passed).count();
        let mut text = if self.passed {
            format!(
                "bundle {}: verified ({} checks passed)\n",
                self.bundle.display(),
                self.checks.len()
            )
        } else {
            format!(
                "bundle {}: FAILED ({failed} of {} checks failed)\n",
                self.bundle.display(),
                self.checks.len()
            )
        };
        for check in &self.checks {
            if check.passed {
                text.push_str(&format!("  ok    {}\n", check.name));
            } else {
                text.push_str(&format!(
                    "  FAIL  {}\n          expected: {}\n          actual:   {}\n",
                    check.name, check.expected, check.actual
                ));
            }
        }
        text
    }
}
