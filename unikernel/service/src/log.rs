//! Leveled logging to the console (stderr, the serial port on Hermit).
//!
//! The serial console is slow, so the default level (`info`) logs only
//! start-up and shutdown, and warnings that a client can trigger at will go
//! through a [`Throttle`].

use std::fmt;
use std::io::Write;
use std::time::{Duration, Instant};

use vigil_core::v1::config::LogLevel;

/// Writes one line to stderr in a single write.
///
/// `eprintln!` writes a formatted line piece by piece, and on Hermit the
/// kernel's own log lines (from an interrupt, or from another vCPU) then
/// landed inside it on the console (seen: `vigil-service: [0][WARN] ...`).
/// Formatting first keeps every line whole.
pub fn line(message: fmt::Arguments<'_>) {
    let mut text = message.to_string();
    text.push('\n');
    // Nothing to do if the console itself fails.
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// [`line()`] with `format!` arguments.
#[macro_export]
macro_rules! console_line {
    ($($arg:tt)*) => {
        $crate::log::line(format_args!($($arg)*))
    };
}

/// Writes messages at or above a configured level to stderr.
#[derive(Clone, Copy, Debug)]
pub struct Logger {
    level: LogLevel,
}

impl Logger {
    /// A logger that writes messages of `level` and more severe ones.
    pub const fn new(level: LogLevel) -> Self {
        Self { level }
    }

    /// Whether messages of `level` are written.
    pub fn enabled(self, level: LogLevel) -> bool {
        level <= self.level
    }

    /// Writes `message` if `level` is enabled.
    pub fn log(self, level: LogLevel, message: fmt::Arguments<'_>) {
        if self.enabled(level) {
            line(format_args!("vigil-service: {}: {message}", level.as_str()));
        }
    }

    /// Writes a warning at most once per [`Throttle::INTERVAL`], counting the
    /// ones it swallows and reporting them with the next one it writes.
    pub fn warn_throttled(
        self,
        throttle: &mut Throttle,
        now: Instant,
        message: fmt::Arguments<'_>,
    ) {
        if !self.enabled(LogLevel::Warn) {
            return;
        }
        match throttle.admit(now) {
            Some(0) => self.log(LogLevel::Warn, message),
            Some(suppressed) => self.log(
                LogLevel::Warn,
                format_args!("{message} ({suppressed} similar suppressed)"),
            ),
            None => {}
        }
    }
}

/// Rate limit for one kind of warning.
#[derive(Debug, Default)]
pub struct Throttle {
    next: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// The shortest time between two messages of one kind.
    pub const INTERVAL: Duration = Duration::from_secs(1);

    /// Returns how many messages were suppressed since the last one if a
    /// message may be written now, or `None` (and counts it) if not.
    fn admit(&mut self, now: Instant) -> Option<u64> {
        if self.next.is_some_and(|next| now < next) {
            self.suppressed += 1;
            return None;
        }
        self.next = Some(now + Self::INTERVAL);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_ordered_by_verbosity() {
        let logger = Logger::new(LogLevel::Warn);
        assert!(logger.enabled(LogLevel::Error));
        assert!(logger.enabled(LogLevel::Warn));
        assert!(!logger.enabled(LogLevel::Info));
        assert!(!logger.enabled(LogLevel::Debug));
    }

    #[test]
    fn throttle_admits_one_message_per_interval_and_counts_the_rest() {
        let start = Instant::now();
        let mut throttle = Throttle::default();
        assert_eq!(throttle.admit(start), Some(0));
        assert_eq!(throttle.admit(start), None);
        assert_eq!(throttle.admit(start + Duration::from_millis(999)), None);
        assert_eq!(throttle.admit(start + Throttle::INTERVAL), Some(2));
        assert_eq!(throttle.admit(start + Throttle::INTERVAL), None);
    }
}
