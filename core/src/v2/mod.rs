//! Version 2 of the formats that changed since [`v1`](crate::v1).
//!
//! - `events` (feature `digest`): the launch event list v2, whose PCR 15
//!   event is an `EV_EVENT_TAG`; reading a log tells v1 from v2.
//! - [`handover`]: the initrd trailer v2, which carries the per-boot
//!   entropy seed and, when there is one, the report key; v1 trailers
//!   still read.

#[cfg(feature = "digest")]
pub mod events;
pub mod handover;
