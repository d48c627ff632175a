//! The launch event log, in the TCG PC Client crypto-agile format.
//!
//! One record per extend, so that standard tools (`tpm2_eventlog`) parse the
//! log and replay it to the PCR values the vTPM reports. SHA-256 bank only.
//!
//! # Format (TCG PC Client Platform Firmware Profile, little-endian)
//! 1. A header record in the old SHA-1 layout (`TCG_PCClientPCREvent`): PCR 0,
//!    type `EV_NO_ACTION`, 20 zero bytes of digest, and a
//!    `TCG_EfiSpecIDEvent` ("Spec ID Event03", spec 2.0, 64-bit `UINTN`, one
//!    algorithm: SHA-256, 32 bytes).
//! 2. One `TCG_PCR_EVENT2` per extend: PCR index (u32), event type (u32),
//!    digest count (u32, always 1), algorithm (u16, `TPM_ALG_SHA256` = 0x000b),
//!    the 32-byte digest, event size (u32), event data.

use alloc::vec::Vec;
use core::fmt;

use super::events::{Sha256Digest, extend};

/// `EV_NO_ACTION`: the header record's type.
pub const EV_NO_ACTION: u32 = 0x0000_0003;
/// `TPM_ALG_SHA256`.
pub const TPM_ALG_SHA256: u16 = 0x000b;
/// The largest event data a record may carry (the parser's bound).
pub const MAX_EVENT_BYTES: usize = 64 * 1024;
/// The most records a log may hold (the parser's bound).
pub const MAX_RECORDS: usize = 1024;

const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";

/// One extend, as the log records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// The PCR extended.
    pub pcr: u32,
    /// The TCG event type.
    pub event_type: u32,
    /// The SHA-256 digest extended.
    pub sha256: Sha256Digest,
    /// The event data.
    pub data: &'a [u8],
}

fn spec_id_event() -> Vec<u8> {
    let mut event = Vec::with_capacity(33);
    event.extend_from_slice(SPEC_ID_SIGNATURE);
    event.extend_from_slice(&0u32.to_le_bytes()); // platformClass: client
    event.extend_from_slice(&[0, 2, 0, 2]); // spec 2.0, errata 0, UINTN = 64 bits
    event.extend_from_slice(&1u32.to_le_bytes()); // numberOfAlgorithms
    event.extend_from_slice(&TPM_ALG_SHA256.to_le_bytes());
    event.extend_from_slice(&32u16.to_le_bytes());
    event.push(0); // vendorInfoSize
    event
}

/// The header record every log starts with.
pub fn header() -> Vec<u8> {
    let event = spec_id_event();
    let mut out = Vec::with_capacity(32 + event.len());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&EV_NO_ACTION.to_le_bytes());
    out.extend_from_slice(&[0u8; 20]);
    out.extend_from_slice(&(event.len() as u32).to_le_bytes());
    out.extend_from_slice(&event);
    out
}

impl Record<'_> {
    /// The record's bytes (`TCG_PCR_EVENT2`).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(50 + self.data.len());
        out.extend_from_slice(&self.pcr.to_le_bytes());
        out.extend_from_slice(&self.event_type.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&TPM_ALG_SHA256.to_le_bytes());
        out.extend_from_slice(&self.sha256);
        out.extend_from_slice(&(self.data.len() as u32).to_le_bytes());
        out.extend_from_slice(self.data);
        out
    }
}

/// A whole log: the header, then every record.
pub fn encode(records: &[Record<'_>]) -> Vec<u8> {
    let mut out = header();
    for record in records {
        out.extend_from_slice(&record.encode());
    }
    out
}

/// Why bytes are not a valid Vigil event log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventLogError {
    /// The log ends inside a record (at this byte offset).
    Truncated(usize),
    /// The header record is not the SHA-256-only Spec ID event Vigil writes.
    BadHeader,
    /// A record carries another digest count or algorithm than one SHA-256.
    UnsupportedDigests(usize),
    /// A record's event data is larger than [`MAX_EVENT_BYTES`].
    EventTooLarge(usize),
    /// More than [`MAX_RECORDS`] records.
    TooManyRecords,
}

impl fmt::Display for EventLogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated(at) => write!(f, "event log truncated at byte {at}"),
            Self::BadHeader => f.write_str(
                "event log header is not a crypto-agile Spec ID event with only SHA-256",
            ),
            Self::UnsupportedDigests(at) => {
                write!(
                    f,
                    "record at byte {at} does not carry exactly one SHA-256 digest"
                )
            }
            Self::EventTooLarge(at) => write!(
                f,
                "record at byte {at} has more than {MAX_EVENT_BYTES} bytes of event data"
            ),
            Self::TooManyRecords => write!(f, "event log has more than {MAX_RECORDS} records"),
        }
    }
}

impl core::error::Error for EventLogError {}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EventLogError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or(EventLogError::Truncated(self.at))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u16(&mut self) -> Result<u16, EventLogError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, EventLogError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Parses a log Vigil wrote: the header, then SHA-256 records.
pub fn parse(bytes: &[u8]) -> Result<Vec<Record<'_>>, EventLogError> {
    let expected = header();
    if bytes.len() < expected.len() || bytes[..expected.len()] != expected[..] {
        return Err(EventLogError::BadHeader);
    }
    let mut reader = Reader {
        bytes,
        at: expected.len(),
    };
    let mut records = Vec::new();
    while reader.at < bytes.len() {
        if records.len() == MAX_RECORDS {
            return Err(EventLogError::TooManyRecords);
        }
        let start = reader.at;
        let pcr = reader.u32()?;
        let event_type = reader.u32()?;
        if reader.u32()? != 1 || reader.u16()? != TPM_ALG_SHA256 {
            return Err(EventLogError::UnsupportedDigests(start));
        }
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(reader.take(32)?);
        let size = reader.u32()? as usize;
        if size > MAX_EVENT_BYTES {
            return Err(EventLogError::EventTooLarge(start));
        }
        let data = reader.take(size)?;
        records.push(Record {
            pcr,
            event_type,
            sha256,
            data,
        });
    }
    Ok(records)
}

/// The value `pcr` has after replaying `records` from a fresh start.
pub fn replay(records: &[Record<'_>], pcr: u32) -> Sha256Digest {
    records
        .iter()
        .filter(|r| r.pcr == pcr)
        .fold([0u8; 32], |value, r| extend(&value, &r.sha256))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::events::{LaunchInputs, sha256};

    fn launch_records(key: &[u8; 32]) -> Vec<Record<'_>> {
        let inputs = LaunchInputs {
            loader_sha256: sha256(b"loader"),
            image_sha256: sha256(b"image"),
            manifest: b"{}\n",
            cmdline: "-- --port=8080",
            report_key: key,
        };
        inputs
            .events()
            .iter()
            .map(|e| Record {
                pcr: u32::from(e.spec.pcr),
                event_type: e.spec.event_type,
                sha256: e.digest,
                data: e.data,
            })
            .collect()
    }

    #[test]
    fn header_is_the_spec_id_event() {
        let header = header();
        assert_eq!(header.len(), 32 + 33);
        assert_eq!(&header[4..8], &EV_NO_ACTION.to_le_bytes());
        assert_eq!(&header[32..48], b"Spec ID Event03\0");
    }

    #[test]
    fn round_trips_and_replays() {
        let key = [9u8; 32];
        let records = launch_records(&key);
        let bytes = encode(&records);
        let parsed = parse(&bytes).unwrap();
        assert_eq!(parsed, records);
        assert_eq!(
            replay(&parsed, 9),
            crate::v1::events::predict_pcr9(&sha256(b"loader"), &sha256(b"image"))
        );
        assert_eq!(replay(&parsed, 16), [0; 32]);
    }

    #[test]
    fn malformed_logs_are_refused() {
        let key = [9u8; 32];
        let bytes = encode(&launch_records(&key));
        assert_eq!(parse(&bytes[..10]), Err(EventLogError::BadHeader));
        let cut = bytes.len() - 3;
        assert!(matches!(
            parse(&bytes[..cut]),
            Err(EventLogError::Truncated(_))
        ));
        let first = header().len();
        let mut two_digests = bytes.clone();
        two_digests[first + 8] = 2;
        assert_eq!(
            parse(&two_digests),
            Err(EventLogError::UnsupportedDigests(first))
        );
        let mut huge = bytes;
        huge[first + 46..first + 50].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse(&huge), Err(EventLogError::EventTooLarge(first)));
    }
}
