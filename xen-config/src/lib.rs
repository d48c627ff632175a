//! `vigil-dom0`: Vigil's VM-host side.
//!
//! The binary's only way to boot is the measured launch ([`launch`]: verify,
//! extend into the domain's vTPM, then boot under QEMU ([`qemu`]) or Xen
//! ([`xen`]) through the backend seam [`launch::backend`]). A launched
//! domain lives in its directory ([`domain`]) and is looked after by
//! [`lifecycle`]; its vTPM is a [`swtpm`] process spoken to with `vigil-tpm`.
//! [`run`] boots a built image unmeasured, for tests and the benchmarks'
//! baseline only.

pub mod accel;
pub mod agent;
pub mod attest;
pub mod console;
pub mod domain;
pub mod error;
pub mod health;
pub mod image;
pub mod launch;
pub mod lifecycle;
pub mod name;
pub mod process;
pub mod qemu;
pub mod qmp;
pub mod run;
pub mod sched;
pub mod swtpm;
pub mod xen;
