//! The watchdog's endpoints: `/v1/integrity` (its state) and
//! `/v1/attestation/report` (a signed runtime report, [`vigil_core::v1::report`]).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Serialize, Serializer};
use vigil_core::v1::refblock::RegionName;
use vigil_core::v1::report::{Nonce, Report, ReportError, ReportKey, Verdict};

use super::metrics::IntegrityGauges;
use crate::protect::Protection;
use crate::watchdog::{Cause, Hex, Shared, Snapshot, Violation};

/// What the service knows of its own integrity: the watchdog's shared state
/// (none if the image is not sealed) and the per-boot report key (none if the
/// guest was not started by `vigil-dom0 launch`).
#[derive(Debug, Default)]
pub struct Integrity {
    watchdog: Option<Arc<Shared>>,
    key: Option<ReportKey>,
    protection: Option<Protection>,
}

/// Why a report cannot be made.
#[derive(Debug, PartialEq, Eq)]
pub enum ReportRefusal {
    /// The query is not one valid `nonce` (400).
    BadQuery(String),
    /// The image is not sealed, or the guest has no report key (503).
    Unavailable(&'static str),
}

impl Integrity {
    /// The service's integrity sources.
    pub fn new(watchdog: Option<Arc<Shared>>, key: Option<ReportKey>) -> Self {
        Self {
            watchdog,
            key,
            protection: None,
        }
    }

    /// The same, saying what write protection the image got
    /// ([`crate::protect`]).
    pub fn with_protection(mut self, protection: Protection) -> Self {
        self.protection = Some(protection);
        self
    }

    /// The first violation, once the `degrade` reaction has fired.
    pub fn degraded(&self) -> Option<Violation> {
        let watchdog = self.watchdog.as_ref().filter(|w| w.degraded())?;
        watchdog.snapshot().first_violation
    }

    /// Counts a response sent (see [`Shared::count_response`]).
    pub fn count_response(&self) {
        if let Some(watchdog) = &self.watchdog {
            watchdog.count_response();
        }
    }

    /// The `/metrics` view.
    pub fn gauges(&self) -> Option<IntegrityGauges> {
        let watchdog = self.watchdog.as_ref()?;
        let snapshot = watchdog.snapshot();
        Some(IntegrityGauges {
            checks: snapshot.checks,
            violations: snapshot.violations,
            intact: snapshot.verdict() != Verdict::Violated,
            degraded: watchdog.degraded(),
            last_duration: snapshot.last.map(|c| c.duration),
            last_ended: snapshot.last.map(|c| c.ended),
            busy: watchdog.busy(),
            answered_during_checks: watchdog.answered_during_checks(),
            interval: Duration::from_millis(watchdog.sealed().interval_ms.into()),
            write_faults: snapshot.write_faults,
        })
    }

    /// The `/v1/integrity` body.
    pub fn status(&self) -> impl Serialize + '_ {
        StatusBody {
            watchdog: self.watchdog.as_deref().map(|w| (w, w.snapshot())),
            report_key: self.key.is_some(),
            protection: self.protection.as_ref(),
        }
    }

    /// A signed report for the nonce in `query` (`nonce=<hex>`, nothing else).
    pub fn report(&self, query: &[u8]) -> Result<impl Serialize + use<>, ReportRefusal> {
        let nonce = parse_nonce(query)?;
        let watchdog = self.watchdog.as_ref().ok_or(ReportRefusal::Unavailable(
            "this image is not sealed: there are no reference values to report on",
        ))?;
        let key = self.key.as_ref().ok_or(ReportRefusal::Unavailable(
            "no report key: this guest was not started by a measured launch (vigil-dom0 launch)",
        ))?;
        let snapshot = watchdog.snapshot();
        let regions = watchdog.report_regions(&snapshot);
        let report = Report::new(
            nonce,
            key.boot_id(),
            millis(watchdog.uptime()),
            snapshot.checks,
            snapshot.last.map_or(0, |c| millis(c.ended)),
            snapshot.first_violation.map(|v| millis(v.at)),
            snapshot.verdict(),
            &regions,
        )
        .map_err(|_| ReportRefusal::Unavailable("the watchdog has no regions to report on"))?;
        let bytes = report.encode();
        let bytes = bytes.get(..report.encoded_len()).unwrap_or(&bytes).to_vec();
        let signature = key.sign(&bytes);
        Ok(ReportBody {
            signature,
            public_key: key.public_key(),
            report,
            bytes,
        })
    }
}

/// The nonce of a report query: exactly one `nonce=<hex>` parameter.
fn parse_nonce(query: &[u8]) -> Result<Nonce, ReportRefusal> {
    let bad = |message: String| ReportRefusal::BadQuery(message);
    let query = std::str::from_utf8(query).map_err(|_| bad("query is not UTF-8".into()))?;
    let mut nonce = None;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        match pair.split_once('=') {
            Some(("nonce", value)) if nonce.is_none() => nonce = Some(value),
            Some(("nonce", _)) => return Err(bad("nonce given more than once".into())),
            _ => {
                let name = pair.split('=').next().unwrap_or(pair);
                return Err(bad(format!(
                    "unknown query parameter `{}`: only nonce=<hex> is accepted",
                    name.escape_default()
                )));
            }
        }
    }
    let nonce =
        nonce.ok_or_else(|| bad("missing nonce: ask for ?nonce=<16 to 32 bytes in hex>".into()))?;
    Nonce::from_hex(nonce).map_err(|error: ReportError| bad(error.to_string()))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Serializes with `Display`.
fn display<S: Serializer, T: fmt::Display>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

fn region_name<S: Serializer>(name: &RegionName, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(name.as_str())
}

/// `0x`-prefixed hexadecimal.
struct Address(u64);

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        display(self, serializer)
    }
}

/// A digest in lowercase hex.
struct Digest([u8; 32]);

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Hex(&self.0).serialize(serializer)
    }
}

impl Serialize for Hex<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        display(self, serializer)
    }
}

struct StatusBody<'a> {
    watchdog: Option<(&'a Shared, Snapshot)>,
    report_key: bool,
    protection: Option<&'a Protection>,
}

impl Serialize for StatusBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Some((watchdog, snapshot)) = self.watchdog else {
            return Unsealed {
                state: "unsealed",
                report_key: self.report_key,
            }
            .serialize(serializer);
        };
        let sealed = watchdog.sealed();
        let regions: Vec<RegionStatus<'_>> = watchdog
            .regions()
            .enumerate()
            .map(|(i, w)| {
                let actual = snapshot.last.map(|c| c.actual[i]);
                RegionStatus {
                    name: w.sealed.name.as_str(),
                    address: Address(w.address),
                    length: w.sealed.len,
                    expected: Digest(w.sealed.sha256),
                    matches: actual.map(|a| a == w.sealed.sha256),
                    actual: actual.map(Digest),
                }
            })
            .collect();
        Status {
            state: snapshot.verdict().as_str(),
            policy: sealed.reaction.as_str(),
            interval_ms: sealed.interval_ms,
            degraded: watchdog.degraded(),
            uptime_ms: millis(watchdog.uptime()),
            checks: snapshot.checks,
            violations: snapshot.violations,
            last_check: snapshot.last.map(|c| LastCheck {
                number: c.number,
                uptime_ms: millis(c.ended),
                unix_ms: c.ended_unix_ms,
                duration_us: u64::try_from(c.duration.as_micros()).unwrap_or(u64::MAX),
                intact: c.intact,
            }),
            write_faults: snapshot.write_faults,
            first_violation: snapshot.first_violation.map(|v| FirstViolation {
                region: v.region,
                cause: v.cause.as_str(),
                address: match v.cause {
                    Cause::Written { address, .. } => Some(Address(address)),
                    Cause::Changed => None,
                },
                instruction: match v.cause {
                    Cause::Written { ip, .. } => Some(Address(ip)),
                    Cause::Changed => None,
                },
                check: v.check,
                uptime_ms: millis(v.at),
                unix_ms: v.at_unix_ms,
            }),
            protection: self.protection.map(ProtectionStatus::of),
            load_offset: Address(watchdog.load_offset()),
            vcpu: watchdog.vcpu(),
            report_key: self.report_key,
            regions: &regions,
        }
        .serialize(serializer)
    }
}

#[derive(Serialize)]
struct Unsealed {
    state: &'static str,
    report_key: bool,
}

#[derive(Serialize)]
struct Status<'a> {
    state: &'static str,
    policy: &'static str,
    interval_ms: u32,
    degraded: bool,
    uptime_ms: u64,
    checks: u64,
    violations: u64,
    write_faults: u64,
    last_check: Option<LastCheck>,
    first_violation: Option<FirstViolation>,
    protection: Option<ProtectionStatus<'a>>,
    load_offset: Address,
    /// The vCPU the watchdog runs on (null where unknown: host tests).
    vcpu: Option<usize>,
    report_key: bool,
    regions: &'a [RegionStatus<'a>],
}

/// What write protection the image got.
#[derive(Serialize)]
struct ProtectionStatus<'a> {
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    code_pages: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    read_only_pages: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_pages: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

impl<'a> ProtectionStatus<'a> {
    fn of(protection: &'a Protection) -> Self {
        let mut status = Self {
            state: protection.state(),
            code_pages: None,
            read_only_pages: None,
            data_pages: None,
            reason: None,
        };
        match protection {
            Protection::Off(reason) => status.reason = Some(reason),
            Protection::Failed(reason) => status.reason = Some(reason),
            Protection::Applied {
                code_pages,
                read_only_pages,
                data_pages,
            } => {
                status.code_pages = Some(*code_pages);
                status.read_only_pages = Some(*read_only_pages);
                status.data_pages = Some(*data_pages);
            }
        }
        status
    }
}

#[derive(Serialize)]
struct LastCheck {
    number: u64,
    uptime_ms: u64,
    unix_ms: Option<u64>,
    duration_us: u64,
    intact: bool,
}

#[derive(Serialize)]
struct FirstViolation {
    #[serde(serialize_with = "region_name")]
    region: RegionName,
    /// `changed` (digest mismatch) or `written` (a write the kernel stopped).
    cause: &'static str,
    /// For `written`: where it wrote, and the instruction that did.
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<Address>,
    #[serde(skip_serializing_if = "Option::is_none")]
    instruction: Option<Address>,
    check: u64,
    uptime_ms: u64,
    unix_ms: Option<u64>,
}

#[derive(Serialize)]
struct RegionStatus<'a> {
    name: &'a str,
    address: Address,
    length: u64,
    expected: Digest,
    actual: Option<Digest>,
    matches: Option<bool>,
}

/// The report response: the signed bytes, the signature and the key, plus
/// the decoded fields for people (verifiers decode the signed bytes).
struct ReportBody {
    report: Report,
    bytes: Vec<u8>,
    signature: [u8; 64],
    public_key: [u8; 32],
}

impl Serialize for ReportBody {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let report = &self.report;
        let regions: Vec<ReportRegion<'_>> = report
            .regions()
            .map(|r| ReportRegion {
                name: r.name.as_str(),
                sha256: Digest(r.sha256),
            })
            .collect();
        ReportJson {
            format: "vigil.report.v1",
            verdict: report.verdict.as_str(),
            nonce: Hex(report.nonce.as_bytes()),
            boot_id: Digest(report.boot_id),
            uptime_ms: report.uptime_ms,
            checks: report.checks,
            last_check_ms: report.last_check_ms,
            first_violation_ms: report.first_violation_ms,
            regions: &regions,
            report: Hex(&self.bytes),
            signature: Hex(&self.signature),
            public_key: Hex(&self.public_key),
        }
        .serialize(serializer)
    }
}

#[derive(Serialize)]
struct ReportJson<'a> {
    format: &'static str,
    verdict: &'static str,
    nonce: Hex<'a>,
    boot_id: Digest,
    uptime_ms: u64,
    checks: u64,
    last_check_ms: u64,
    first_violation_ms: Option<u64>,
    regions: &'a [ReportRegion<'a>],
    report: Hex<'a>,
    signature: Hex<'a>,
    public_key: Hex<'a>,
}

#[derive(Serialize)]
struct ReportRegion<'a> {
    name: &'a str,
    sha256: Digest,
}
