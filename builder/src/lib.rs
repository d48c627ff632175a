//! `vigil-build`: builds the Hermit kernel, the Vigil service and the PVH
//! loader reproducibly from a clean checkout.
//!
//! The binary is a thin command-line layer over [`pipeline::build`],
//! [`keys::generate`], [`seal::seal`] and [`verify::verify_dir`].

pub mod archive;
pub mod error;
pub mod flavor;
pub mod keys;
pub mod pipeline;
pub mod seal;
pub mod toolchain;
pub mod verify;

use std::path::{Path, PathBuf};

/// The Vigil checkout to build: the nearest directory at or above `start`
/// that holds `unikernel/Cargo.toml`, else the checkout this binary was built from.
pub fn find_project_dir(start: &Path) -> PathBuf {
    start
        .ancestors()
        .find(|dir| dir.join("unikernel").join("Cargo.toml").is_file())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
        })
}
