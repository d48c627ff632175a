//! A built image directory: `vigil-image`, `vigil-loader` and `build.json`,
//! as `vigil-build build` leaves them.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{LaunchError, Result};

/// File name of the image (kernel and service in one ELF).
pub const IMAGE_FILE: &str = "vigil-image";
/// File name of the PVH loader.
pub const LOADER_FILE: &str = "vigil-loader";
/// File name of the build description.
pub const INFO_FILE: &str = "build.json";
/// The build description schema this crate reads.
pub const INFO_SCHEMA: &str = "vigil.build-info.v1";

/// Which NIC and machine an image needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Flavor {
    /// RTL8139 on QEMU `pc` (also Xen HVM).
    Hvm,
    /// virtio-net-pci on QEMU `pc`.
    Virtio,
    /// virtio-net over MMIO on QEMU `microvm`.
    Microvm,
}

/// The parts of `build.json` the launcher needs.
#[derive(Debug, Deserialize)]
struct BuildInfo {
    schema: String,
    flavor: Flavor,
}

/// A bootable image on disk.
#[derive(Clone, Debug)]
pub struct BootImage {
    /// The loader ELF (QEMU's `-kernel`).
    pub loader: PathBuf,
    /// The Hermit image (QEMU's `-initrd`).
    pub image: PathBuf,
    /// Its flavor.
    pub flavor: Flavor,
}

impl BootImage {
    /// Reads an image directory made by `vigil-build build`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let info_path = dir.join(INFO_FILE);
        let loader = dir.join(LOADER_FILE);
        let image = dir.join(IMAGE_FILE);
        for path in [&info_path, &loader, &image] {
            if !path.is_file() {
                return Err(LaunchError::MissingImage { path: path.clone() });
            }
        }
        let text =
            std::fs::read_to_string(&info_path).map_err(LaunchError::io("reading", &info_path))?;
        let info: BuildInfo =
            serde_json::from_str(&text).map_err(|err| LaunchError::BadImageDir {
                path: info_path.clone(),
                problem: format!("not a build description: {err}"),
            })?;
        if info.schema != INFO_SCHEMA {
            return Err(LaunchError::BadImageDir {
                path: info_path,
                problem: format!("schema `{}`, expected `{INFO_SCHEMA}`", info.schema),
            });
        }
        Ok(Self {
            loader,
            image,
            flavor: info.flavor,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_dir(info: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(IMAGE_FILE), b"\x7fELF").unwrap();
        std::fs::write(dir.path().join(LOADER_FILE), b"\x7fELF").unwrap();
        std::fs::write(dir.path().join(INFO_FILE), info).unwrap();
        dir
    }

    #[test]
    fn reads_the_flavor() {
        let dir = image_dir(r#"{"schema":"vigil.build-info.v1","flavor":"microvm","nic":"x"}"#);
        assert_eq!(
            BootImage::from_dir(dir.path()).unwrap().flavor,
            Flavor::Microvm
        );
    }

    #[test]
    fn names_what_is_wrong() {
        let dir = image_dir(r#"{"schema":"other","flavor":"hvm"}"#);
        let err = BootImage::from_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("schema `other`"), "{err}");

        let dir = image_dir("not json");
        let err = BootImage::from_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not a build description"), "{err}");

        std::fs::remove_file(dir.path().join(LOADER_FILE)).unwrap();
        let err = BootImage::from_dir(dir.path()).unwrap_err();
        assert!(matches!(err, LaunchError::MissingImage { .. }), "{err}");
        assert!(err.to_string().contains("vigil-build build"));
    }
}
