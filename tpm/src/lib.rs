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
//! # Authorization
//!
//! Every authorization is an empty password (`TPM_RS_PW`: owner and
//! endorsement hierarchies, PCRs, NV indices, the AK) except the EK's, which
//! only its policy satisfies: a policy session with
//! `PolicySecret(TPM_RH_ENDORSEMENT)`. No HMAC or parameter encryption is
//! used, so no session crypto is needed. Sessions and transient objects
//! are flushed by the function that made them, also on failure: swtpm has
//! no resource manager.

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
pub use clock::{ClockInfo, ClockRecovery, TimeInfo};
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

    /// A success response frame without sessions around `body`.
    pub(crate) fn response(body: &[u8]) -> Vec<u8> {
        let mut frame = vec![0x80, 0x01];
        frame.extend_from_slice(&(10 + body.len() as u32).to_be_bytes());
        frame.extend_from_slice(&[0; 4]);
        frame.extend_from_slice(body);
        frame
    }
}
