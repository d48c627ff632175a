//! Version 1 of Vigil's formats.
//!
//! - [`config`]: the service settings on the kernel command line.
//! - [`console`]: the console lines the guest writes and the host reads.
//! - [`refblock`]: the reference block sealing writes into the image.
//! - [`handover`]: the initrd trailer that carries the per-boot key to the
//!   loader (superseded for writing by [`crate::v2::handover`]).
//! - [`entropy`]: the kernel's slot for the per-boot entropy seed.
//! - [`relro`]: the fixed kernel load address and the image's RELRO part
//!   as relocated for it (what sealing measures as region `relro`).
//! - [`report`]: the runtime report the watchdog signs (signing and
//!   verifying with feature `report`).
//! - `events` (feature `digest`): the launch event list and PCR arithmetic.
//! - `eventlog` (feature `eventlog`): the TCG crypto-agile event log.
//! - `manifest` (feature `manifest`): the signed manifest.
//! - `bundle` (feature `verify`): checking a sealed bundle.
//! - `evidence` (feature `evidence`): an attestation agent's evidence (JSON)
//!   and the tpm2-tools PCR file.

#[cfg(feature = "verify")]
pub mod bundle;
pub mod config;
pub mod console;
pub mod entropy;
#[cfg(feature = "eventlog")]
pub mod eventlog;
#[cfg(feature = "digest")]
pub mod events;
#[cfg(feature = "evidence")]
pub mod evidence;
pub mod handover;
#[cfg(feature = "manifest")]
pub mod manifest;
pub mod refblock;
pub mod relro;
pub mod report;
