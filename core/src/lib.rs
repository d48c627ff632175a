//! Vigil's shared core: the formats that more than one part of Vigil reads or
//! writes, in one `no_std` crate that the guest image links too.
//!
//! Every format lives in a versioned module ([`v1`], [`v2`]). A serialized type is an
//! API boundary: it changes only with a new version module.

#![no_std]
#![forbid(unsafe_code)]

#[cfg(any(feature = "manifest", feature = "eventlog", feature = "evidence"))]
extern crate alloc;

pub mod v1;
pub mod v2;
