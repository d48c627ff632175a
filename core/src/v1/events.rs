//! The launch event list: what dom0 extends into the domain's vTPM, in order.
//!
//! Defined once, here, and used by all three sides: `vigil-build seal` predicts
//! PCR 9 from it, `vigil-dom0` extends it (one event-log record per entry), and
//! the verifier replays it. SHA-256 bank only.
//!
//! | # | PCR | event type | digest extended | event data |
//! |---:|---:|---|---|---|
//! | 1 | 9 | `EV_IPL` | SHA-256 of the loader file | `vigil-loader` |
//! | 2 | 9 | `EV_IPL` | SHA-256 of the image file | `vigil-image` |
//! | 3 | 12 | `EV_IPL` | SHA-256 of the exact manifest bytes | the manifest bytes |
//! | 4 | 12 | `EV_IPL` | SHA-256 of the kernel command line (UTF-8, no terminator) | the command line |
//! | 5 | 15 | `EV_IPL` | SHA-256 of the per-boot report public key (32 raw bytes) | the key's 32 raw bytes |
//!
//! PCR 9 is predictable at seal time and recorded in the manifest. PCR 12 (a
//! manifest cannot hold its own digest) and PCR 15 (the key is per boot) are
//! checked by replaying the event log. Every launch starts from
//! `TPM2_Startup(CLEAR)`, so every PCR starts at 32 zero bytes.

use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Sha256Digest = [u8; 32];

/// TCG PC Client event type `EV_IPL` (an initial program loader measurement).
pub const EV_IPL: u32 = 0x0000_000d;

/// The PCRs the launch extends, in the order they are first used.
pub const LAUNCH_PCRS: [u8; 3] = [9, 12, 15];

/// What a launch event measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Measured {
    /// The loader file.
    Loader,
    /// The image file.
    Image,
    /// The manifest's exact bytes.
    Manifest,
    /// The kernel command line.
    Cmdline,
    /// The per-boot report public key.
    ReportKey,
}

/// One entry of the launch event list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EventSpec {
    /// The PCR it extends.
    pub pcr: u8,
    /// Its TCG event type.
    pub event_type: u32,
    /// What it measures.
    pub measured: Measured,
}

/// The launch event list (v1), in extend order.
pub const LAUNCH_EVENTS: [EventSpec; 5] = [
    EventSpec {
        pcr: 9,
        event_type: EV_IPL,
        measured: Measured::Loader,
    },
    EventSpec {
        pcr: 9,
        event_type: EV_IPL,
        measured: Measured::Image,
    },
    EventSpec {
        pcr: 12,
        event_type: EV_IPL,
        measured: Measured::Manifest,
    },
    EventSpec {
        pcr: 12,
        event_type: EV_IPL,
        measured: Measured::Cmdline,
    },
    EventSpec {
        pcr: 15,
        event_type: EV_IPL,
        measured: Measured::ReportKey,
    },
];

/// The inputs of one launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchInputs<'a> {
    /// SHA-256 of the loader file.
    pub loader_sha256: Sha256Digest,
    /// SHA-256 of the image file.
    pub image_sha256: Sha256Digest,
    /// The manifest's exact bytes.
    pub manifest: &'a [u8],
    /// The kernel command line the guest gets.
    pub cmdline: &'a str,
    /// The per-boot report public key (ed25519, raw).
    pub report_key: &'a [u8; 32],
}

/// One event of a launch: what is extended into which PCR, and the event
/// data its log record carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchEvent<'a> {
    /// The list entry.
    pub spec: EventSpec,
    /// The digest extended.
    pub digest: Sha256Digest,
    /// The event data of its log record.
    pub data: &'a [u8],
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> Sha256Digest {
    Sha256::digest(bytes).into()
}

/// A TPM's SHA-256 extend: `SHA-256(pcr ‖ digest)`.
pub fn extend(pcr: &Sha256Digest, digest: &Sha256Digest) -> Sha256Digest {
    let mut hasher = Sha256::new();
    hasher.update(pcr);
    hasher.update(digest);
    hasher.finalize().into()
}

impl<'a> LaunchInputs<'a> {
    /// The launch's events, in extend order.
    pub fn events(&self) -> [LaunchEvent<'a>; 5] {
        LAUNCH_EVENTS.map(|spec| {
            let (digest, data): (Sha256Digest, &'a [u8]) = match spec.measured {
                Measured::Loader => (self.loader_sha256, b"vigil-loader"),
                Measured::Image => (self.image_sha256, b"vigil-image"),
                Measured::Manifest => (sha256(self.manifest), self.manifest),
                Measured::Cmdline => (sha256(self.cmdline.as_bytes()), self.cmdline.as_bytes()),
                Measured::ReportKey => (sha256(self.report_key), self.report_key),
            };
            LaunchEvent { spec, digest, data }
        })
    }
}

/// The value `pcr` has after replaying `digests` (PCR, digest pairs, in
/// order) from a fresh start.
pub fn replay<'a>(
    pcr: u8,
    digests: impl IntoIterator<Item = (u8, &'a Sha256Digest)>,
) -> Sha256Digest {
    digests
        .into_iter()
        .filter(|(index, _)| *index == pcr)
        .fold([0u8; 32], |value, (_, digest)| extend(&value, digest))
}

/// PCR 9 after a launch of this loader and image: what the manifest records.
pub fn predict_pcr9(loader_sha256: &Sha256Digest, image_sha256: &Sha256Digest) -> Sha256Digest {
    let digests = LAUNCH_EVENTS.iter().filter_map(|spec| match spec.measured {
        Measured::Loader => Some((spec.pcr, loader_sha256)),
        Measured::Image => Some((spec.pcr, image_sha256)),
        _ => None,
    });
    replay(9, digests)
}

#[cfg(test)]
mod tests {
    use super::*;

    extern crate std;

    fn hex(digest: &Sha256Digest) -> std::string::String {
        use core::fmt::Write;
        let mut s = std::string::String::new();
        for b in digest {
            let _ = write!(s, "{b:02x}");
        }
        s
    }

    #[test]
    fn extend_matches_a_tpm() {
        // PCR 9 after extending sha256("a") once, as `tpm2_pcrextend` computes
        // it: sha256(32 zero bytes ‖ sha256("a")).
        let value = extend(&[0; 32], &sha256(b"a"));
        let mut expected_input = [0u8; 64];
        expected_input[32..].copy_from_slice(&sha256(b"a"));
        assert_eq!(value, sha256(&expected_input));
        // A fixed vector, so the construction can never drift unnoticed.
        assert_eq!(
            hex(&extend(&[0; 32], &[0; 32])),
            "f5a5fd42d16a20302798ef6ed309979b43003d2320d9f0e8ea9831a92759fb4b"
        );
    }

    #[test]
    fn prediction_equals_replay_of_the_full_launch() {
        let key = [5u8; 32];
        let inputs = LaunchInputs {
            loader_sha256: sha256(b"loader"),
            image_sha256: sha256(b"image"),
            manifest: b"{}",
            cmdline: "-- --port=8080",
            report_key: &key,
        };
        let events = inputs.events();
        let digests = events.iter().map(|e| (e.spec.pcr, &e.digest));
        assert_eq!(
            replay(9, digests.clone()),
            predict_pcr9(&inputs.loader_sha256, &inputs.image_sha256)
        );
        assert_eq!(
            replay(12, digests.clone()),
            extend(
                &extend(&[0; 32], &sha256(b"{}")),
                &sha256(b"-- --port=8080")
            )
        );
        assert_eq!(replay(15, digests), extend(&[0; 32], &sha256(&key)));
        assert_eq!(events[3].data, b"-- --port=8080");
        assert_eq!(events[4].data, &key);
    }

    #[test]
    fn order_matters() {
        let a = sha256(b"a");
        let b = sha256(b"b");
        assert_ne!(predict_pcr9(&a, &b), predict_pcr9(&b, &a));
    }
}
