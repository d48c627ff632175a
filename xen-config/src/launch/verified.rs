//! Step 1 of a launch: the trusted keys, and the bundle copied into the
//! domain's private directory and verified there. Only these bytes boot.

use std::fs;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use vigil_core::v1::bundle::{
    self, BundleFiles, IMAGE_FILE, LOADER_FILE, MANIFEST_FILE, SIGNATURE_FILE,
};
use vigil_core::v1::manifest::Manifest;

use crate::domain::private_dir;
use crate::error::{LaunchError, Result};

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

/// A bundle copied into a private directory and verified there.
#[derive(Debug)]
pub struct Verified<'k> {
    /// The manifest, parsed from the verified bytes.
    pub manifest: Manifest,
    /// The manifest's exact bytes.
    pub manifest_bytes: Vec<u8>,
    /// The image's bytes.
    pub image: Vec<u8>,
    /// The trusted key that signed it.
    pub key: &'k VerifyingKey,
    /// The directory of the private copy.
    pub dir: PathBuf,
}

impl Verified<'_> {
    /// The verified loader file.
    pub fn loader_file(&self) -> PathBuf {
        self.dir.join(LOADER_FILE)
    }

    /// The verified image file (without any key trailer).
    pub fn image_file(&self) -> PathBuf {
        self.dir.join(IMAGE_FILE)
    }
}

/// Copies the bundle's files into `boot_dir` (created 0700) and verifies the
/// bytes that were written there (and that will be booted) against `keys`
/// and the security version floor.
pub fn verified_copy<'k>(
    bundle_dir: &Path,
    keys: &'k [VerifyingKey],
    min_version: u64,
    boot_dir: &Path,
) -> Result<Verified<'k>> {
    private_dir(boot_dir)?;
    let read = |name: &str| -> Result<Vec<u8>> {
        let from = bundle_dir.join(name);
        let bytes = fs::read(&from).map_err(|source| LaunchError::BundleUnreadable {
            path: from.clone(),
            source,
        })?;
        let to = boot_dir.join(name);
        fs::write(&to, &bytes).map_err(LaunchError::io("writing", &to))?;
        Ok(bytes)
    };
    let manifest_bytes = read(MANIFEST_FILE)?;
    let signature = read(SIGNATURE_FILE)?;
    let image = read(IMAGE_FILE)?;
    let loader = read(LOADER_FILE)?;
    let files = BundleFiles {
        manifest: &manifest_bytes,
        signature: &signature,
        image: &image,
        loader: &loader,
    };
    let mut refusal = None;
    for key in keys {
        let verdict = bundle::verify(&files, key, min_version);
        if verdict.passed() {
            if let Some(manifest) = verdict.manifest {
                return Ok(Verified {
                    manifest,
                    manifest_bytes,
                    image,
                    key,
                    dir: boot_dir.to_path_buf(),
                });
            }
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
        bundle: bundle_dir.to_path_buf(),
        failures,
    })
}
