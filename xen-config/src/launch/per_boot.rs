//! The per-boot report key: made for one boot, its seed handed to the
//! loader privately in a per-boot copy of the initrd
//! (`vigil_core::v1::handover`), its public half measured into PCR 15.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;

use super::verified::Verified;
use crate::error::{LaunchError, Result};

/// The per-boot initrd's file name in the boot directory.
pub const INITRD_FILE: &str = "initrd.per-boot";

/// A new report key: its seed written into the per-boot initrd (a copy of
/// the verified image with the seed in a trailer, mode 0600, which the
/// backend deletes as soon as the hypervisor has loaded it). Returns the
/// initrd and the public key; the private key is wiped when this returns.
pub fn report_key(verified: &Verified<'_>) -> Result<(PathBuf, [u8; 32])> {
    let key = SigningKey::generate(&mut rand_core::OsRng);
    let initrd = verified.dir.join(INITRD_FILE);
    write_initrd(&initrd, &verified.image, &key)?;
    Ok((initrd, key.verifying_key().to_bytes()))
}

/// Writes `image` followed by the handover trailer for `key` to `path`
/// (created new, mode 0600), and wipes the in-memory trailer.
fn write_initrd(path: &Path, image: &[u8], key: &SigningKey) -> Result<()> {
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
