//! `vigil-dom0`: Vigil's VM-host side.
//!
//! Today it boots built images under QEMU ([`qemu`], [`run`]); the measured
//! launch (verify, extend into the domain's vTPM, then boot) and the Xen
//! backend build on the same launcher.

pub mod accel;
pub mod error;
pub mod health;
pub mod image;
pub mod launch;
pub mod qemu;
pub mod qmp;
pub mod run;
pub mod tpm;
pub mod xen;
