//! The per-boot secrets: a report key and an entropy seed, made for one
//! boot from the host's `getrandom`, handed to the loader privately in a
//! per-boot copy of the initrd (`vigil_core::v2::handover`). The key's
//! public half is measured into PCR 15; the entropy seed is measured
//! nowhere, logged nowhere, and seeds the guest kernel's random pool.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use rand_core::RngCore;

use super::verified::Verified;
use crate::error::{LaunchError, Result};

/// The per-boot initrd's file name in the boot directory.
pub const INITRD_FILE: &str = "initrd.per-boot";

/// A new report key and a new entropy seed, written into the per-boot
/// initrd (a copy of the verified image with both in a trailer, mode 0600,
/// which the backend deletes as soon as the hypervisor has loaded it).
/// Returns the initrd and the public key; the private key and the seed are
/// wiped when this returns.
pub fn report_key(verified: &Verified<'_>) -> Result<(PathBuf, [u8; 32])> {
    let key = SigningKey::generate(&mut rand_core::OsRng);
    let initrd = verified.dir.join(INITRD_FILE);
    write_initrd(&initrd, &verified.image, Some(key.as_bytes()))?;
    Ok((initrd, key.verifying_key().to_bytes()))
}

/// Refuses an image whose kernel has no entropy slot for the seed: one
/// sealed before the per-boot seed existed, whose loader knows only the v1
/// trailer (it would boot without the report key) and whose kernel would
/// fall back to a guessable generator. `bundle` names it in the error.
pub fn require_entropy_slot(image: &[u8], bundle: &Path) -> Result<()> {
    use object::Object;
    let section = vigil_core::v1::entropy::SECTION;
    let has_slot =
        object::File::parse(image).is_ok_and(|file| file.section_by_name(section).is_some());
    if has_slot {
        return Ok(());
    }
    Err(LaunchError::BundleRejected {
        bundle: bundle.to_path_buf(),
        failures: format!(
            "its image has no entropy slot (no {section} section): it was built before \
             Vigil handed each boot an entropy seed (kernel patch 0026a, initrd trailer v2); \
             build and seal it again with this version's vigil-build"
        ),
    })
}

/// Writes `image` followed by the handover trailer for a fresh entropy seed
/// and, if given, the report key's secret seed `key` to `path` (created
/// new, mode 0600), and wipes the in-memory trailer and seed. A boot
/// without `key` (one that must not get the report key) still gets its own
/// entropy seed.
pub fn write_initrd(path: &Path, image: &[u8], key: Option<&[u8; 32]>) -> Result<()> {
    let mut entropy = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut entropy);
    let mut trailer = vigil_core::v2::handover::trailer(&entropy, key);
    let opened = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    let written = opened.map(|mut file| {
        let written = file
            .write_all(image)
            .and_then(|()| file.write_all(&trailer));
        if written.is_err() {
            // Only a file this call created is removed.
            let _ = fs::remove_file(path);
        }
        written
    });
    // Wipe these copies of the secrets (black_box keeps the stores).
    entropy.fill(0);
    trailer.fill(0);
    std::hint::black_box((&entropy, &trailer));
    written
        .and_then(|written| written)
        .map_err(|source| LaunchError::Io {
            action: "writing",
            path: path.into(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_core::v2::handover;

    #[test]
    fn an_image_without_an_entropy_slot_is_refused_by_name() {
        // An ELF without the section (this test program), and no ELF at all.
        let elf = fs::read(std::env::current_exe().unwrap()).unwrap();
        for image in [&elf[..], b"not an ELF"] {
            let err = require_entropy_slot(image, Path::new("/srv/old-bundle")).unwrap_err();
            let text = err.to_string();
            assert!(text.contains("/srv/old-bundle"), "{text}");
            assert!(text.contains("no .vigil_entropy section"), "{text}");
            assert!(text.contains("seal it again"), "{text}");
            assert_eq!(
                err.exit_code(),
                crate::error::LaunchError::BundleRejected {
                    bundle: "b".into(),
                    failures: String::new(),
                }
                .exit_code()
            );
        }
    }

    #[test]
    fn the_initrd_is_the_image_and_a_trailer_with_fresh_secrets() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let image = b"\x7fELF the verified image".to_vec();
        let (first, second) = (dir.path().join("a"), dir.path().join("b"));
        write_initrd(&first, &image, Some(&[9; 32])).unwrap();
        write_initrd(&second, &image, None).unwrap();
        let first = fs::read(&first).unwrap();
        let (loaded, secrets) = handover::split(&first).unwrap();
        assert_eq!(loaded, &image[..]);
        let secrets = secrets.unwrap();
        assert_eq!(secrets.key, Some([9; 32]));
        let second_bytes = fs::read(&second).unwrap();
        let (_, other) = handover::split(&second_bytes).unwrap();
        let other = other.unwrap();
        assert_eq!(other.key, None, "no key unless given");
        assert_ne!(secrets.entropy, other.entropy, "a new seed every time");
        assert_ne!(secrets.entropy, Some([0; 32]));
        let mode = fs::metadata(&second).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Never overwrites, nor removes what it did not create.
        assert!(write_initrd(&second, &image, None).is_err());
        assert_eq!(fs::read(&second).unwrap(), second_bytes);
    }
}
