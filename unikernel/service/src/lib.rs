//! Vigil's HTTP microservice: a bounded HTTP/1.1 key-value and status service.
//!
//! The same code runs as a Hermit unikernel (`x86_64-unknown-hermit`) and as an
//! ordinary host program, where it is unit- and integration-tested.
//!
//! # Layers
//! - [`http`]: the I/O-free protocol engine. A [`http::Connection`] takes the
//!   bytes a client sent and appends the bytes to send back; it frames requests
//!   (head limits, `Content-Length`, `Expect: 100-continue`, keep-alive,
//!   pipelining) and hands each complete request to a [`http::Handler`].
//! - [`app`]: the service itself. [`app::App`] is the [`http::Handler`]: it
//!   routes requests ([`app::Route`]), owns the key-value [`app::store::Store`]
//!   and the [`app::metrics::Metrics`], and renders every response.
//! - [`server`]: the single-threaded `poll(2)` event loop that only moves bytes
//!   between sockets and connections, enforces idle timeouts and the
//!   connection limit.
//! - [`json`]: the strict JSON validator that `PUT` bodies must pass.
//! - [`listen`]: the address the service listens on.
//! - [`reference`](mod@reference): the reference block sealing writes into the image.
//! - [`watchdog`]: re-hashes the image's code and read-only data in memory.
//! - [`protect`]: write-protects them (W^X) and reads the kernel's record of
//!   writes it stopped.
//! - [`vcpu`]: which vCPU each thread runs on (the watchdog gets its own).
//!
//! # Running
//! ```no_run
//! use std::net::TcpListener;
//! use vigil_core::v1::config::ServiceConfig;
//! use vigil_service::server::Server;
//!
//! let config = ServiceConfig::default();
//! let listener = TcpListener::bind(("0.0.0.0", config.port))?;
//! let server = Server::new(listener, config)?;
//! let handle = server.handle(); // `handle.stop()` ends `run` from another thread
//! server.run()?;
//! # drop(handle);
//! # Ok::<(), std::io::Error>(())
//! ```

// `deny`, not `forbid`: the reference block's `link_section` needs one
// `allow` (see `reference`); nothing else may use unsafe code.
#![deny(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod app;
pub mod http;
pub mod json;
pub mod listen;
pub mod log;
pub mod protect;
pub mod reference;
pub mod server;
pub mod vcpu;
pub mod watchdog;

/// Widens a numeric setting (`u32` in the configuration) for sizes and counts.
fn setting(value: u32) -> usize {
    // Every target this runs on has a `usize` of at least 32 bits.
    usize::try_from(value).unwrap_or(usize::MAX)
}

#[cfg(test)]
#[path = "../tests/support/wire.rs"]
mod wire;
