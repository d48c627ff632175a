//! `vigil-dom0`: Vigil's VM-host side.
//!
//! The binary's only way to boot is the measured launch ([`launch`]: verify,
//! extend into the domain's vTPM ([`tpm`]), then boot under QEMU ([`qemu`])
//! or Xen ([`xen`])). [`run`] boots a built image unmeasured, for tests and
//! the benchmarks' baseline only.

pub mod accel;
pub mod error;
pub mod health;
pub mod image;
pub mod launch;
pub mod qemu;
pub mod qmp;
pub mod run;
pub mod sched;
pub mod tpm;
pub mod xen;
