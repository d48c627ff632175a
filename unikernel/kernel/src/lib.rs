//! Nothing to compile: this crate only names the kernel source (see Cargo.toml).
