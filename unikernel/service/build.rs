//! Links the Hermit kernel into the service when building for Hermit.
//!
//! On every other target (the host, for tests) the service is an ordinary
//! program and nothing is linked. For Hermit, `vigil-build build` post-processes
//! the kernel archive and points `VIGIL_HERMIT_LIB_DIR` at the directory holding
//! `libhermit.a`; building for Hermit without it is a mistake worth a clear error.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo::rerun-if-env-changed=VIGIL_HERMIT_LIB_DIR");
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("hermit") {
        return;
    }
    let Some(dir) = env::var_os("VIGIL_HERMIT_LIB_DIR").map(PathBuf::from) else {
        panic!(
            "building vigil-service for Hermit needs the post-processed kernel: \
             run `vigil-build build`, which sets VIGIL_HERMIT_LIB_DIR"
        );
    };
    let archive = dir.join("libhermit.a");
    assert!(
        archive.is_file(),
        "VIGIL_HERMIT_LIB_DIR={} holds no libhermit.a",
        dir.display()
    );
    println!("cargo::rerun-if-changed={}", archive.display());
    println!("cargo::rustc-link-search=native={}", dir.display());
    println!("cargo::rustc-link-lib=static=hermit");
}
