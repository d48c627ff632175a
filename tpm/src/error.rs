//! Errors: one [`TpmError`] variant per operation, each carrying the
//! [`CommandError`] of the TPM command that failed inside it.

use std::fmt;

use tpm2_protocol::data::TpmRc;

use crate::pcr::PcrSelection;
use crate::{AkAlgorithm, Handle};

/// A `TPM_RC` response code, printed with its name from the TPM 2.0 Library
/// (Part 2) where it has one: `TPM_RC_HANDLE (handle[1]) (0x18b)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResponseCode(pub u32);

/// `TPM_RC_FMT1`: bit 7 selects the format-1 layout (error number + which
/// handle, session or parameter).
const RC_FMT1: u32 = 0x080;
/// Format-1 error numbers (Part 2, `TPM_RC`), without the index bits.
const RC_HANDLE: u32 = RC_FMT1 | 0x00b;
const RC_VALUE: u32 = RC_FMT1 | 0x004;
/// Format-0 warnings (`TPM_RC_WARN` = 0x900).
const RC_YIELDED: u32 = 0x908;
const RC_TESTING: u32 = 0x90a;
const RC_RETRY: u32 = 0x922;

impl ResponseCode {
    /// The error number without the handle/session/parameter index, so that
    /// `TPM_RC_HANDLE` for handle 1 and for handle 2 compare equal.
    pub fn base(self) -> u32 {
        if self.0 & RC_FMT1 != 0 {
            self.0 & (RC_FMT1 | 0x3f)
        } else {
            self.0
        }
    }

    /// `TPM_RC_HANDLE`: the handle does not refer to a loaded or persistent
    /// object (how a TPM says "no key at this persistent handle").
    pub fn is_handle_error(self) -> bool {
        self.base() == RC_HANDLE
    }

    /// `TPM_RC_RETRY`, `TPM_RC_YIELDED` or `TPM_RC_TESTING`: warnings that
    /// mean the TPM did not start the command and it may be sent again.
    pub fn is_retry(self) -> bool {
        matches!(self.0, RC_RETRY | RC_YIELDED | RC_TESTING)
    }

    /// `TPM_RC_VALUE`: a value is out of range for the context.
    pub fn is_value_error(self) -> bool {
        self.base() == RC_VALUE
    }
}

impl fmt::Display for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match TpmRc::try_from(self.0) {
            Ok(TpmRc::Fmt1(fmt1)) => match fmt1.index {
                Some(index) => write!(f, "{} ({index}) ({:#x})", fmt1.base, self.0),
                None => write!(f, "{} ({:#x})", fmt1.base, self.0),
            },
            Ok(rc) => write!(f, "{rc} ({:#x})", self.0),
            Err(_) => write!(f, "{:#x}", self.0),
        }
    }
}

/// Why a TPM response could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Malformation {
    /// The bytes do not unmarshal as the command's response (TPM 2.0 Part 3).
    Wire(tpm2_protocol::TpmError),
    /// The response is well-formed but not what was asked for.
    Unexpected(String),
}

impl fmt::Display for Malformation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // tpm2-protocol's Display is only the variant name; its Debug
            // form carries the offset and the counts.
            Self::Wire(err) => write!(f, "{err:?}"),
            Self::Unexpected(what) => f.write_str(what),
        }
    }
}

/// The failure of one TPM command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The transport failed (connect, write, read, timeout, framing).
    #[error("{command}: talking to the TPM at {endpoint} failed")]
    Io {
        /// The command, as Part 3 names it (`TPM2_Quote`).
        command: &'static str,
        /// Where the TPM is (the socket path).
        endpoint: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TPM answered with an error code.
    #[error("{command}: the TPM refused with {code}")]
    Refused {
        /// The command.
        command: &'static str,
        /// The decoded `TPM_RC`.
        code: ResponseCode,
    },
    /// The answer is not the command's response.
    #[error("{command}: the TPM's answer is malformed: {reason}")]
    Malformed {
        /// The command.
        command: &'static str,
        /// What was wrong.
        reason: Malformation,
    },
    /// The command could not be encoded from the arguments given (a value
    /// longer than its TPM2B allows, for instance).
    #[error("{command}: cannot encode the command: {reason}")]
    Encode {
        /// The command.
        command: &'static str,
        /// What did not fit.
        reason: String,
    },
}

impl CommandError {
    /// The TPM's response code, when the TPM refused the command.
    pub fn response_code(&self) -> Option<ResponseCode> {
        match self {
            Self::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// A failed TPM operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TpmError {
    /// `TPM2_Shutdown` failed.
    #[error("shutting the TPM down ({kind}) failed")]
    Shutdown {
        /// `CLEAR` or `STATE`.
        kind: &'static str,
        /// Why.
        #[source]
        source: CommandError,
    },
    /// `TPM2_GetRandom` failed.
    #[error("reading {bytes} random bytes from the TPM failed")]
    GetRandom {
        /// How many bytes were asked for.
        bytes: u16,
        /// Why.
        #[source]
        source: CommandError,
    },
    /// `TPM2_PCR_Extend` failed.
    #[error("extending PCR {pcr} (sha256) failed")]
    Extend {
        /// The PCR.
        pcr: u8,
        /// Why.
        #[source]
        source: CommandError,
    },
    /// `TPM2_PCR_Read` failed.
    #[error("reading PCRs {pcrs} (sha256) failed")]
    PcrRead {
        /// The PCRs asked for.
        pcrs: PcrSelection,
        /// Why.
        #[source]
        source: CommandError,
    },
    /// The endorsement key could not be created or read.
    #[error("creating the endorsement key (TCG default RSA-2048 template) failed")]
    CreateEk {
        /// Why.
        #[source]
        source: CommandError,
    },
    /// The key at a persistent handle is not the one Vigil expects there.
    #[error("the key at {handle} is not the expected {expected}: {found}")]
    UnexpectedKey {
        /// The persistent handle.
        handle: Handle,
        /// What should be there.
        expected: &'static str,
        /// What differs.
        found: String,
    },
    /// The attestation key could not be created or loaded.
    #[error("creating the {alg} attestation key under the endorsement key failed")]
    CreateAk {
        /// The AK's algorithm.
        alg: AkAlgorithm,
        /// Why.
        #[source]
        source: CommandError,
    },
    /// A policy session (`StartAuthSession` + `PolicySecret(ENDORSEMENT)`)
    /// could not be set up.
    #[error("starting the endorsement policy session failed")]
    PolicySession {
        /// Why.
        #[source]
        source: CommandError,
    },
    /// `TPM2_ReadPublic` failed.
    #[error("reading the public area of {handle} failed")]
    ReadPublic {
        /// The object.
        handle: Handle,
        /// Why.
        #[source]
        source: CommandError,
    },
    /// `TPM2_EvictControl` failed.
    #[error("persisting {object} at {persistent} failed")]
    Persist {
        /// The transient object.
        object: Handle,
        /// The persistent handle.
        persistent: Handle,
        /// Why.
        #[source]
        source: CommandError,
    },
    /// `TPM2_EvictControl` of a persistent object (removal) failed.
    #[error("removing the persistent object {persistent} failed")]
    Evict {
        /// The persistent handle.
        persistent: Handle,
        /// Why.
        #[source]
        source: CommandError,
    },
    /// `TPM2_FlushContext` failed.
    #[error("flushing {handle} failed")]
    Flush {
        /// The transient object or session.
        handle: Handle,
        /// Why.
        #[source]
        source: CommandError,
    },
    /// `TPM2_NV_ReadPublic` or `TPM2_NV_Read` failed.
    #[error("reading NV index {index} failed")]
    NvRead {
        /// The NV index.
        index: Handle,
        /// Why.
        #[source]
        source: CommandError,
    },
    /// `TPM2_Quote` failed.
    #[error("quoting PCRs {pcrs} with the key at {ak} failed")]
    Quote {
        /// The signing key.
        ak: Handle,
        /// The PCRs.
        pcrs: PcrSelection,
        /// Why.
        #[source]
        source: CommandError,
    },
    /// `TPM2_ActivateCredential` failed (a credential made for another EK or
    /// another key name is refused with `TPM_RC_INTEGRITY`).
    #[error("activating the credential (AK {ak}, EK {ek}) failed")]
    ActivateCredential {
        /// The key the credential names.
        ak: Handle,
        /// The endorsement key that decrypts the seed.
        ek: Handle,
        /// Why.
        #[source]
        source: CommandError,
    },
    /// A credential file is not what `tpm2_makecredential` writes.
    #[error("the credential file is malformed: {reason}")]
    CredentialFile {
        /// What was wrong.
        reason: String,
    },
    /// `TPM2_ReadClock` failed.
    #[error("reading the TPM clock failed")]
    ReadClock {
        /// Why.
        #[source]
        source: CommandError,
    },
    /// `TPM2_ClockSet` failed.
    #[error("setting the TPM clock to {new_time} ms failed")]
    ClockSet {
        /// The requested clock value.
        new_time: u64,
        /// Why.
        #[source]
        source: CommandError,
    },
    /// The clock's `safe` flag was still clear after the recovery.
    #[error(
        "the TPM clock is still not safe after setting it from {before_ms} ms to {set_ms} ms (now {after_ms} ms)"
    )]
    ClockNotRestored {
        /// Clock before the recovery.
        before_ms: u64,
        /// Clock value set.
        set_ms: u64,
        /// Clock after.
        after_ms: u64,
    },
}
