//! A TPM 2.0 client for Vigil's vTPMs: the commands dom0 sends to a
//! domain's swtpm, with typed results and typed errors. No process
//! management and no policy about when to do what: that is dom0's.
//!
//! ```no_run
//! use vigil_tpm::{AK_HANDLE, AkAlgorithm, PcrSelection, Tpm};
//! # fn main() -> Result<(), vigil_tpm::TpmError> {
//! let mut tpm = Tpm::connect("/run/vigil/demo/tpm/tpm.sock");
//! tpm.extend(9, &[0x11; 32])?;
//! let identity = tpm.ensure_attestation_key(AkAlgorithm::RsaSsaSha256)?;
//! let quote = tpm.quote(AK_HANDLE, b"sixteen byte nonce", PcrSelection::LAUNCH)?;
//! # let _ = (identity, quote);
//! # Ok(())
//! # }
//! ```
//!
//! # Marshalling: `tpm2-protocol`
//!
//! Commands and responses are the typed structures of the `tpm2-protocol`
//! crate (pure Rust, no dependencies, no allocation, no panics on malformed
//! input; the field names of the TPM 2.0 Library, Part 2 and 3). It was
//! chosen over extending dom0's hand-marshalled client because a template
//! (`TPMT_PUBLIC` with its unions), a policy session and a quote response
//! read as the specification's tables instead of as offsets, and every
//! response is unmarshalled completely, with bounds checks, before any field
//! is used. This crate adds what it does not do: the transport, the response
//! code check (before unmarshalling: an error response is a bare header,
//! and vendor codes must still come out as [`TpmError`]), and the exact wire
//! bytes where they matter (the quoted `TPMS_ATTEST` and its signature are
//! sliced from the response the TPM sent, not re-marshalled).
//!
//! # Connections
//!
//! [`Tpm::connect`] opens a new connection to swtpm's command socket for
//! every command, as dom0 did before this crate; [`Tpm::connect_persistent`]
//! keeps one open. swtpm serves one client at a time: while a kept
//! connection is open, every other client of that vTPM (tpm2-tools, a
//! second dom0 process) waits, until [`UnixSocket::disconnect`]. Measured
//! on swtpm 0.7.1 (`tests/latency.rs`, release build, medians of 100): a
//! kept connection saves about 10 µs per command (`PCR_Read` 0.022 →
//! 0.012 ms), which is noise beside a quote (2.3 ms idle, up to 4 ms with
//! the machine loaded: RSA signing in swtpm). Per-command is the default.
//!
//! # Authorization
//!
//! Every authorization is an empty password (`TPM_RS_PW`: owner and
//! endorsement hierarchies, PCRs, NV indices, the AK) except the EK's, which
//! only its policy satisfies: a policy session with
//! `PolicySecret(TPM_RH_ENDORSEMENT)`. No HMAC or parameter encryption is
//! used, so no session crypto is needed. Sessions and transient objects
//! are flushed by the function that made them, also on failure: swtpm has
//! no resource manager.
//!
//! # Errors
//!
//! One [`TpmError`] variant per operation, with its context (PCR, handle,
//! algorithm); its source is the [`CommandError`] of the command that
//! failed, naming the command (`TPM2_Quote`) and, when the TPM refused it,
//! the response code by name (`TPM_RC_HANDLE (handle[1]) (0x18b)`). A
//! command the TPM did not start (`TPM_RC_RETRY`, `_YIELDED`, `_TESTING`)
//! is sent again, up to 10 times, as tpm2-tss does.
//!
//! # Provisioning (dom0's job, for reference)
//!
//! The EK certificate this crate reads is made by
//! `swtpm_setup --tpm2 --tpmstate DIR --create-ek-cert --pcr-banks sha256`
//! (swtpm-tools 0.7.1, as root, with the packaged `/etc/swtpm_setup.conf`
//! and `/etc/swtpm-localca.conf`): it creates the RSA-2048 EK (TCG template
//! L-1) persistent at 0x81010001 with its certificate at 0x01c00002, and an
//! ECC NIST P-384 EK at 0x81010016 with its certificate at 0x01c00016.

#![forbid(unsafe_code)]

mod attest;
mod client;
mod clock;
mod error;
mod keys;
mod nv;
mod pcr;
pub mod transport;

pub use attest::{AttestationIdentity, CredentialBlob, Quote};
pub use client::{ENDORSEMENT, Handle, NULL, OWNER, ShutdownType, Tpm};
pub use clock::{CLOCK_NV_UPDATE_MS, ClockInfo, ClockRecovery, TimeInfo};
pub use error::{CommandError, Malformation, ResponseCode, TpmError};
pub use keys::{AK_HANDLE, AkAlgorithm, EK_AUTH_POLICY, EK_HANDLE, PublicKey};
pub use nv::{EK_CERT_NV_INDEX, NvPublic};
pub use pcr::{InvalidPcr, PCR_COUNT, PcrSelection, PcrValues, Sha256Digest};
pub use transport::{Connection, Transport, UnixSocket};

#[cfg(test)]
mod test_util {
    /// Bytes from hex (test fixtures).
    pub(crate) fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The exchanges of a recorded fixture (`tests/data/NAME.txt`).
    pub(crate) fn fixture(name: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        let text = match name {
            "activate-credential" => include_str!("../tests/data/activate-credential.txt"),
            "clock-recovery" => include_str!("../tests/data/clock-recovery.txt"),
            "ek-certificate" => include_str!("../tests/data/ek-certificate.txt"),
            "ensure-create-ak" => include_str!("../tests/data/ensure-create-ak.txt"),
            "ensure-provisioned" => include_str!("../tests/data/ensure-provisioned.txt"),
            "pcr" => include_str!("../tests/data/pcr.txt"),
            "quote-ecc" => include_str!("../tests/data/quote-ecc.txt"),
            "quote-rsa" => include_str!("../tests/data/quote-rsa.txt"),
            _ => panic!("no fixture {name}"),
        };
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        lines
            .chunks(2)
            .map(|pair| {
                (
                    unhex(pair[0].strip_prefix("> ").unwrap()),
                    unhex(pair[1].strip_prefix("< ").unwrap()),
                )
            })
            .collect()
    }

    /// A client replaying a fixture.
    pub(crate) fn replay(name: &str) -> crate::Tpm<crate::transport::Replay> {
        crate::Tpm::new(crate::transport::Replay::new(fixture(name)))
    }

    /// A success response frame without sessions around `body`.
    pub(crate) fn response(body: &[u8]) -> Vec<u8> {
        let mut frame = vec![0x80, 0x01];
        frame.extend_from_slice(&(10 + body.len() as u32).to_be_bytes());
        frame.extend_from_slice(&[0; 4]);
        frame.extend_from_slice(body);
        frame
    }
}

#[cfg(test)]
mod tests {
    use crate::test_util::fixture;
    use crate::transport::Replay;
    use crate::{AK_HANDLE, AkAlgorithm, EK_HANDLE, PcrSelection, Tpm, TpmError};

    /// Runs the flow a fixture recorded over the given exchanges.
    fn run(name: &str, exchanges: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), TpmError> {
        let mut tpm = Tpm::new(Replay::new(exchanges));
        let nonce = [0x5a; 32];
        match name {
            "activate-credential" => {
                let (blob, secret) = crate::attest::tests::recorded_credential();
                tpm.activate_credential(AK_HANDLE, EK_HANDLE, &blob, &secret)
                    .map(drop)
            }
            "clock-recovery" => tpm.restore_clock_safe().map(drop),
            "ek-certificate" => tpm.read_ek_certificate().map(drop),
            "ensure-create-ak" | "ensure-provisioned" => tpm
                .ensure_attestation_key(AkAlgorithm::RsaSsaSha256)
                .map(drop),
            "pcr" => {
                for (pcr, byte) in [(9u8, 0x91u8), (12, 0x12), (15, 0x15)] {
                    tpm.extend(pcr, &[byte; 32])?;
                }
                tpm.pcr_read(PcrSelection::LAUNCH).map(drop)
            }
            _ => tpm.quote(AK_HANDLE, &nonce, PcrSelection::LAUNCH).map(drop),
        }
    }

    const FIXTURES: [&str; 8] = [
        "activate-credential",
        "clock-recovery",
        "ek-certificate",
        "ensure-create-ak",
        "ensure-provisioned",
        "pcr",
        "quote-ecc",
        "quote-rsa",
    ];

    /// Every recorded flow replays, and no truncated or corrupted response
    /// makes the client panic: each either still parses or is an error.
    #[test]
    fn damaged_responses_are_errors_never_panics() {
        for name in FIXTURES {
            let exchanges = fixture(name);
            run(name, exchanges.clone()).unwrap_or_else(|err| panic!("{name}: {err}"));
            for (i, (_, response)) in exchanges.iter().enumerate() {
                let with = |damaged: Vec<u8>| {
                    let mut copy = exchanges.clone();
                    copy[i].1 = damaged;
                    copy
                };
                for len in 0..response.len() {
                    let result = run(name, with(response[..len].to_vec()));
                    assert!(result.is_err(), "{name}: response {i} cut to {len} bytes");
                }
                for at in 0..response.len() {
                    for flip in [0x01, 0xff] {
                        let mut damaged = response.clone();
                        damaged[at] ^= flip;
                        let _ = run(name, with(damaged));
                    }
                }
            }
        }
    }
}
