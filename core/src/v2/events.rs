//! The launch event list, version 2.
//!
//! Identical to [v1](crate::v1::events) except event 5, the per-boot report
//! key in PCR 15. v1 logged the key's 32 raw bytes as an `EV_IPL` event,
//! whose data tools print as text: `tpm2_eventlog` prints garbage and warns,
//! and Keylime's parser (which decodes that text as UTF-8) crashes. v2 logs it
//! as an `EV_EVENT_TAG` event whose data is a `TCG_PCClientTaggedEvent`,
//! which every tool prints as hex.
//!
//! | # | PCR | event type | digest extended | event data |
//! |---:|---:|---|---|---|
//! | 1 | 9 | `EV_IPL` | SHA-256 of the loader file | `vigil-loader` |
//! | 2 | 9 | `EV_IPL` | SHA-256 of the image file | `vigil-image` |
//! | 3 | 12 | `EV_IPL` | SHA-256 of the exact manifest bytes | the manifest bytes |
//! | 4 | 12 | `EV_IPL` | SHA-256 of the kernel command line | the command line |
//! | 5 | 15 | `EV_EVENT_TAG` | SHA-256 of the per-boot report public key (32 raw bytes) | `TCG_PCClientTaggedEvent` below |
//!
//! The tagged event (little-endian, [`TAGGED_KEY_BYTES`] bytes):
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 4 | `taggedEventID` = [`REPORT_KEY_TAG`] (the ASCII bytes `VGRK`) |
//! | 4 | 4 | `taggedEventDataSize` = 32 |
//! | 8 | 32 | the key's 32 raw bytes |
//!
//! The digest extended is that of the key, not of the event data, exactly as
//! in v1: PCR values do not depend on the list version, so a manifest's PCR 9
//! and a verifier's replay are the same for both. A reader tells the version
//! of a log from the type of its PCR 15 event ([`list_version`]).

use crate::v1::events::{
    EventSpec, LAUNCH_EVENTS as V1_EVENTS, LaunchEvent, LaunchInputs, Measured,
};

/// TCG PC Client event type `EV_EVENT_TAG`.
pub const EV_EVENT_TAG: u32 = 0x0000_0006;

/// The `taggedEventID` of the report key event: the ASCII bytes `VGRK`
/// ("Vigil report key") read as a little-endian u32 (0x4b524756).
pub const REPORT_KEY_TAG: u32 = u32::from_le_bytes(*b"VGRK");

/// Bytes of the report key's tagged event data.
pub const TAGGED_KEY_BYTES: usize = 8 + 32;

/// The launch event list (v2), in extend order: v1's first four events,
/// then the report key as a tagged event.
pub const LAUNCH_EVENTS: [EventSpec; 5] = [
    V1_EVENTS[0],
    V1_EVENTS[1],
    V1_EVENTS[2],
    V1_EVENTS[3],
    EventSpec {
        pcr: 15,
        event_type: EV_EVENT_TAG,
        measured: Measured::ReportKey,
    },
];

/// Which launch event list a log follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ListVersion {
    /// [`crate::v1::events::LAUNCH_EVENTS`]: the report key as `EV_IPL`.
    V1,
    /// [`LAUNCH_EVENTS`]: the report key as `EV_EVENT_TAG`.
    V2,
}

impl ListVersion {
    /// The list's entries, in extend order.
    pub const fn events(self) -> &'static [EventSpec; 5] {
        match self {
            Self::V1 => &crate::v1::events::LAUNCH_EVENTS,
            Self::V2 => &LAUNCH_EVENTS,
        }
    }

    /// The version number, 1 or 2.
    pub const fn number(self) -> u8 {
        match self {
            Self::V1 => 1,
            Self::V2 => 2,
        }
    }

    /// The report key from the event data of the list's PCR 15 event, if
    /// the data has this version's form.
    pub fn report_key(self, data: &[u8]) -> Option<[u8; 32]> {
        match self {
            Self::V1 => data.try_into().ok(),
            Self::V2 => untag_report_key(data),
        }
    }
}

impl core::fmt::Display for ListVersion {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "v{}", self.number())
    }
}

/// The event data of the v2 report key event.
pub fn tag_report_key(key: &[u8; 32]) -> [u8; TAGGED_KEY_BYTES] {
    let mut out = [0u8; TAGGED_KEY_BYTES];
    out[..4].copy_from_slice(&REPORT_KEY_TAG.to_le_bytes());
    out[4..8].copy_from_slice(&32u32.to_le_bytes());
    out[8..].copy_from_slice(key);
    out
}

/// The key inside v2 report key event data; `None` unless the data is
/// exactly a [`REPORT_KEY_TAG`] event of 32 bytes.
pub fn untag_report_key(data: &[u8]) -> Option<[u8; 32]> {
    if data.len() != TAGGED_KEY_BYTES
        || data[..4] != REPORT_KEY_TAG.to_le_bytes()
        || data[4..8] != 32u32.to_le_bytes()
    {
        return None;
    }
    data[8..].try_into().ok()
}

/// A launch's v2 events: the v1 inputs plus the tagged key event's bytes,
/// which the events borrow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchEvents<'a> {
    inputs: LaunchInputs<'a>,
    tagged_key: [u8; TAGGED_KEY_BYTES],
}

impl<'a> LaunchEvents<'a> {
    /// The v2 events of a launch with these inputs.
    pub fn new(inputs: LaunchInputs<'a>) -> Self {
        Self {
            tagged_key: tag_report_key(inputs.report_key),
            inputs,
        }
    }

    /// The launch's events, in extend order: v1's digests, v2's types and
    /// data.
    pub fn events(&self) -> [LaunchEvent<'_>; 5] {
        let mut events = self.inputs.events();
        for (event, spec) in events.iter_mut().zip(LAUNCH_EVENTS) {
            event.spec = spec;
            if spec.measured == Measured::ReportKey {
                event.data = &self.tagged_key;
            }
        }
        events
    }
}

/// The list version of a log, from the type of its first PCR 15 record:
/// `EV_IPL` is v1, `EV_EVENT_TAG` v2; `None` if there is no PCR 15 record or
/// it has another type.
#[cfg(feature = "eventlog")]
pub fn list_version(records: &[crate::v1::eventlog::Record<'_>]) -> Option<ListVersion> {
    match records.iter().find(|r| r.pcr == 15)?.event_type {
        crate::v1::events::EV_IPL => Some(ListVersion::V1),
        EV_EVENT_TAG => Some(ListVersion::V2),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::events::{replay, sha256};

    fn inputs(key: &[u8; 32]) -> LaunchInputs<'_> {
        LaunchInputs {
            loader_sha256: sha256(b"loader"),
            image_sha256: sha256(b"image"),
            manifest: b"{}\n",
            cmdline: "-- --port=8080",
            report_key: key,
        }
    }

    #[test]
    fn same_digests_as_v1_so_same_pcr_values() {
        let key = [7u8; 32];
        let v1 = inputs(&key).events();
        let v2 = LaunchEvents::new(inputs(&key));
        let v2 = v2.events();
        for (a, b) in v1.iter().zip(&v2) {
            assert_eq!(a.digest, b.digest);
            assert_eq!(a.spec.pcr, b.spec.pcr);
            assert_eq!(a.spec.measured, b.spec.measured);
        }
        for pcr in [9, 12, 15] {
            assert_eq!(
                replay(pcr, v1.iter().map(|e| (e.spec.pcr, &e.digest))),
                replay(pcr, v2.iter().map(|e| (e.spec.pcr, &e.digest)))
            );
        }
        assert_eq!(v2[4].spec.event_type, EV_EVENT_TAG);
        assert_eq!(v2[4].digest, sha256(&key));
        assert_eq!(v2[3].data, v1[3].data);
    }

    #[test]
    fn tagged_event_layout() {
        let key = [0xabu8; 32];
        let data = tag_report_key(&key);
        assert_eq!(&data[..4], b"VGRK");
        assert_eq!(REPORT_KEY_TAG, 0x4b52_4756);
        assert_eq!(&data[4..8], &[32, 0, 0, 0]);
        assert_eq!(&data[8..], &key);
        assert_eq!(untag_report_key(&data), Some(key));
        assert_eq!(ListVersion::V2.report_key(&data), Some(key));
        assert_eq!(ListVersion::V1.report_key(&key), Some(key));
        assert_eq!(ListVersion::V1.report_key(&data), None);
        assert_eq!(ListVersion::V2.report_key(&key), None);
        let mut other_tag = data;
        other_tag[0] = b'X';
        assert_eq!(untag_report_key(&other_tag), None);
        let mut other_size = data;
        other_size[4] = 31;
        assert_eq!(untag_report_key(&other_size), None);
        assert_eq!(untag_report_key(&data[..39]), None);
    }

    #[cfg(feature = "eventlog")]
    #[test]
    fn a_reader_tells_v1_from_v2() {
        use crate::v1::eventlog::{Record, encode, parse};
        extern crate alloc;
        use alloc::vec::Vec;

        let key = [3u8; 32];
        let records = |events: &[LaunchEvent<'_>]| -> Vec<u8> {
            let records: Vec<Record<'_>> = events
                .iter()
                .map(|e| Record {
                    pcr: u32::from(e.spec.pcr),
                    event_type: e.spec.event_type,
                    sha256: e.digest,
                    data: e.data,
                })
                .collect();
            encode(&records)
        };
        let v1 = records(&inputs(&key).events());
        let launch = LaunchEvents::new(inputs(&key));
        let v2 = records(&launch.events());
        let v1 = parse(&v1).unwrap();
        let v2 = parse(&v2).unwrap();
        assert_eq!(list_version(&v1), Some(ListVersion::V1));
        assert_eq!(list_version(&v2), Some(ListVersion::V2));
        assert_eq!(list_version(&v1[..4]), None);
        for pcr in [9, 12, 15] {
            assert_eq!(
                crate::v1::eventlog::replay(&v1, pcr),
                crate::v1::eventlog::replay(&v2, pcr)
            );
        }
        assert_eq!(ListVersion::V2.report_key(v2[4].data), Some(key));
    }
}
