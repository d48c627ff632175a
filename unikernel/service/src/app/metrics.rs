//! Service counters and their Prometheus text exposition (format 0.0.4).

use std::fmt::Display;
use std::io;
use std::time::Duration;

use super::Route;
use crate::http::Status;

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

const REQUESTS: &str = "vigil_http_requests_total";

/// Counters of requests, bytes and connections.
///
/// Requests are counted per route and status: both sets are closed, so the
/// label set is bounded.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: [[u64; Status::ALL.len()]; Route::ALL.len()],
    received_bytes: u64,
    sent_bytes: u64,
    connections_open: u64,
    connections_accepted: u64,
    connections_rejected: u64,
}

/// Values sampled when the metrics are rendered.
#[derive(Clone, Copy, Debug)]
pub struct Gauges {
    /// Time since the service started.
    pub uptime: Duration,
    /// Keys in the store.
    pub kv_keys: usize,
    /// Bytes of keys plus values in the store.
    pub kv_bytes: usize,
}

/// The watchdog's numbers, sampled when the metrics are rendered (only for a
/// sealed image, which has a watchdog).
#[derive(Clone, Copy, Debug)]
pub struct IntegrityGauges {
    /// Checks finished.
    pub checks: u64,
    /// Checks that found a region changed.
    pub violations: u64,
    /// False from the first violation on (latched).
    pub intact: bool,
    /// Whether the `degrade` reaction has fired.
    pub degraded: bool,
    /// How long the latest check took.
    pub last_duration: Option<Duration>,
    /// Uptime at the end of the latest check.
    pub last_ended: Option<Duration>,
    /// Time spent hashing since start.
    pub busy: Duration,
    /// HTTP responses sent while a check was hashing.
    pub answered_during_checks: u64,
    /// The sealed interval between checks.
    pub interval: Duration,
    /// Writes to protected memory the kernel stopped.
    pub write_faults: u64,
}

impl IntegrityGauges {
    /// Writes the watchdog's metric families.
    fn render(&self, w: &mut impl io::Write) -> io::Result<()> {
        let seconds = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64());
        let samples: [Sample<'_>; 10] = [
            (
                "vigil_integrity_checks_total",
                "counter",
                "Watchdog checks of the measured regions finished.",
                &self.checks,
            ),
            (
                "vigil_integrity_violations_total",
                "counter",
                "Watchdog checks that found a measured region changed or written to.",
                &self.violations,
            ),
            (
                "vigil_integrity_intact",
                "gauge",
                "1 until the watchdog first finds a measured region changed, then 0 until reboot.",
                &u8::from(self.intact),
            ),
            (
                "vigil_integrity_degraded",
                "gauge",
                "1 once the degrade reaction has fired (503 until reboot).",
                &u8::from(self.degraded),
            ),
            (
                "vigil_integrity_last_check_duration_seconds",
                "gauge",
                "How long the latest watchdog check took (NaN before the first).",
                &seconds(self.last_duration),
            ),
            (
                "vigil_integrity_last_check_uptime_seconds",
                "gauge",
                "Uptime at the end of the latest watchdog check (NaN before the first).",
                &seconds(self.last_ended),
            ),
            (
                "vigil_integrity_busy_seconds_total",
                "counter",
                "Time the watchdog spent hashing.",
                &self.busy.as_secs_f64(),
            ),
            (
                "vigil_integrity_responses_during_checks_total",
                "counter",
                "HTTP responses sent while a watchdog check was hashing.",
                &self.answered_during_checks,
            ),
            (
                "vigil_integrity_interval_seconds",
                "gauge",
                "The sealed interval between watchdog checks.",
                &self.interval.as_secs_f64(),
            ),
            (
                "vigil_integrity_write_faults_total",
                "counter",
                "Writes to write-protected code or read-only data that the kernel stopped (each ended its thread).",
                &self.write_faults,
            ),
        ];
        unlabelled(w, &samples)
    }
}

impl Metrics {
    /// Counts a response.
    pub fn record_request(&mut self, route: Route, status: Status) {
        if let Some(count) = self
            .requests
            .get_mut(route.index())
            .and_then(|row| row.get_mut(status.index()))
        {
            *count += 1;
        }
    }

    /// Responses sent so far, over all routes and statuses.
    pub fn requests_total(&self) -> u64 {
        self.requests.iter().flatten().sum()
    }

    /// Counts bytes read from a client.
    pub fn record_received(&mut self, bytes: usize) {
        self.received_bytes += bytes as u64;
    }

    /// Counts bytes written to a client.
    pub fn record_sent(&mut self, bytes: usize) {
        self.sent_bytes += bytes as u64;
    }

    /// Counts a connection taken into service.
    pub fn connection_opened(&mut self) {
        self.connections_accepted += 1;
        self.connections_open += 1;
    }

    /// Counts the end of a connection counted by [`connection_opened`](Self::connection_opened).
    pub fn connection_closed(&mut self) {
        self.connections_open = self.connections_open.saturating_sub(1);
    }

    /// Counts a connection turned away at the connection limit.
    pub fn connection_rejected(&mut self) {
        self.connections_rejected += 1;
    }

    /// Connections currently in service.
    pub fn connections_open(&self) -> u64 {
        self.connections_open
    }

    /// Writes the Prometheus text exposition.
    pub fn render(
        &self,
        gauges: &Gauges,
        integrity: Option<&IntegrityGauges>,
        w: &mut impl io::Write,
    ) -> io::Result<()> {
        family(
            w,
            REQUESTS,
            "counter",
            "HTTP responses sent, by route and status code.",
        )?;
        for (route, row) in Route::ALL.into_iter().zip(&self.requests) {
            for (status, &count) in Status::ALL.into_iter().zip(row) {
                if count > 0 {
                    writeln!(
                        w,
                        "{REQUESTS}{{route=\"{}\",status=\"{}\"}} {count}",
                        route.label(),
                        status.code()
                    )?;
                }
            }
        }
        let samples: [Sample<'_>; 8] = [
            (
                "vigil_http_received_bytes_total",
                "counter",
                "Bytes received from HTTP clients.",
                &self.received_bytes,
            ),
            (
                "vigil_http_sent_bytes_total",
                "counter",
                "Bytes sent to HTTP clients.",
                &self.sent_bytes,
            ),
            (
                "vigil_uptime_seconds",
                "gauge",
                "Seconds since the service started.",
                &gauges.uptime.as_secs_f64(),
            ),
            (
                "vigil_connections_open",
                "gauge",
                "Client connections in service.",
                &self.connections_open,
            ),
            (
                "vigil_connections_accepted_total",
                "counter",
                "Client connections taken into service.",
                &self.connections_accepted,
            ),
            (
                "vigil_connections_rejected_total",
                "counter",
                "Client connections turned away at the connection limit.",
                &self.connections_rejected,
            ),
            (
                "vigil_kv_keys",
                "gauge",
                "Keys in the key-value store.",
                &gauges.kv_keys,
            ),
            (
                "vigil_kv_bytes",
                "gauge",
                "Bytes of keys plus values in the key-value store.",
                &gauges.kv_bytes,
            ),
        ];
        unlabelled(w, &samples)?;
        match integrity {
            Some(integrity) => integrity.render(w),
            None => Ok(()),
        }
    }
}

/// A single-sample family, without labels.
type Sample<'a> = (&'a str, &'a str, &'a str, &'a dyn Display);

/// Writes each family of `samples`: its `HELP` and `TYPE` lines and its one
/// sample.
fn unlabelled(w: &mut impl io::Write, samples: &[Sample<'_>]) -> io::Result<()> {
    for (name, kind, help, value) in samples {
        family(w, name, kind, help)?;
        writeln!(w, "{name} {value}")?;
    }
    Ok(())
}

/// The `HELP` and `TYPE` lines of a metric family.
fn family(w: &mut impl io::Write, name: &str, kind: &str, help: &str) -> io::Result<()> {
    writeln!(w, "# HELP {name} {help}")?;
    writeln!(w, "# TYPE {name} {kind}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(metrics: &Metrics) -> String {
        let gauges = Gauges {
            uptime: Duration::from_millis(1500),
            kv_keys: 2,
            kv_bytes: 30,
        };
        let mut out = Vec::new();
        metrics.render(&gauges, None, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn renders_every_family_with_help_and_type() {
        let text = rendered(&Metrics::default());
        for (name, kind) in [
            ("vigil_http_requests_total", "counter"),
            ("vigil_http_received_bytes_total", "counter"),
            ("vigil_http_sent_bytes_total", "counter"),
            ("vigil_uptime_seconds", "gauge"),
            ("vigil_connections_open", "gauge"),
            ("vigil_connections_accepted_total", "counter"),
            ("vigil_connections_rejected_total", "counter"),
            ("vigil_kv_keys", "gauge"),
            ("vigil_kv_bytes", "gauge"),
        ] {
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
            assert!(text.contains(&format!("# TYPE {name} {kind}\n")), "{name}");
        }
        assert!(text.contains("\nvigil_uptime_seconds 1.5\n"), "{text}");
        assert!(text.contains("\nvigil_kv_keys 2\n"), "{text}");
        assert!(text.contains("\nvigil_kv_bytes 30\n"), "{text}");
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn counts_requests_by_route_and_status() {
        let mut metrics = Metrics::default();
        metrics.record_request(Route::Health, Status::Ok);
        metrics.record_request(Route::Health, Status::Ok);
        metrics.record_request(Route::Other, Status::NotFound);
        metrics.record_request(Route::Key, Status::Created);
        assert_eq!(metrics.requests_total(), 4);
        let text = rendered(&metrics);
        assert!(
            text.contains("\nvigil_http_requests_total{route=\"/healthz\",status=\"200\"} 2\n")
        );
        assert!(text.contains("\nvigil_http_requests_total{route=\"other\",status=\"404\"} 1\n"));
        assert!(
            text.contains("\nvigil_http_requests_total{route=\"/v1/kv/{key}\",status=\"201\"} 1\n")
        );
        assert!(!text.contains("status=\"500\""), "zero series are left out");
    }

    #[test]
    fn counts_connections_and_bytes() {
        let mut metrics = Metrics::default();
        metrics.connection_opened();
        metrics.connection_opened();
        metrics.connection_closed();
        metrics.connection_rejected();
        metrics.record_received(100);
        metrics.record_sent(250);
        assert_eq!(metrics.connections_open(), 1);
        let text = rendered(&metrics);
        for line in [
            "vigil_connections_open 1",
            "vigil_connections_accepted_total 2",
            "vigil_connections_rejected_total 1",
            "vigil_http_received_bytes_total 100",
            "vigil_http_sent_bytes_total 250",
        ] {
            assert!(text.contains(&format!("\n{line}\n")), "{line}");
        }
    }
}
