//! Ctrl-C and SIGTERM: a benchmark stops at its next step and returns
//! [`BenchError::Interrupted`]; unwinding that error drops its guests (which
//! stops their QEMU and swtpm) and its temporary directories.
//!
//! Measured launches put QEMU and swtpm in process groups of their own, so
//! Ctrl-C on the terminal does not reach them: stopping them is this
//! process's job (an unmeasured QEMU may get the terminal's signal too, and
//! is then reaped the same way). Waits that can last (a boot, a `wrk` run)
//! take [`flag`] or poll [`interrupted`], and end early.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use crate::error::BenchError;

static INTERRUPTED: OnceLock<Arc<AtomicBool>> = OnceLock::new();

fn shared() -> &'static Arc<AtomicBool> {
    INTERRUPTED.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

/// Catches SIGINT and SIGTERM from now on: they set [`flag`] instead of
/// ending the process.
pub fn catch() -> std::io::Result<()> {
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(shared()))?;
    }
    Ok(())
}

/// The flag a signal sets, for waits that take a cancel flag
/// (`Guest::wait_healthy`, `launch::launch`).
pub fn flag() -> &'static AtomicBool {
    shared()
}

/// Whether a signal has arrived.
pub fn interrupted() -> bool {
    shared().load(Ordering::Relaxed)
}

/// Fails with [`BenchError::Interrupted`] once a signal has arrived: called
/// before every step of a benchmark.
pub fn check() -> Result<(), BenchError> {
    if interrupted() {
        Err(BenchError::Interrupted)
    } else {
        Ok(())
    }
}

/// Sleeps for `duration`, in short steps, unless interrupted.
pub fn sleep(duration: std::time::Duration) -> Result<(), BenchError> {
    let until = std::time::Instant::now() + duration;
    loop {
        check()?;
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(std::time::Duration::from_millis(50)));
    }
}
