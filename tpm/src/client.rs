//! [`Tpm`]: one client over one [`Transport`]; the command round trip
//! (marshal, send, check the response code, unmarshal) and the two kinds of
//! authorization Vigil uses (an empty password, a policy session).

use std::fmt;
use std::path::PathBuf;

use tpm2_protocol::{
    TpmWriter,
    basic::{TpmHandle, TpmUint16},
    constant::TPM_MAX_COMMAND_SIZE,
    data::{Tpm2bAuth, Tpm2bNonce, TpmSt, TpmSu, TpmaSession, TpmsAuthCommand},
    frame::{
        TpmFrame, TpmGetRandomCommand, TpmGetRandomResponse, TpmResponse, TpmShutdownCommand,
        TpmShutdownResponse, TpmUnmarshalBody, tpm_marshal_command,
    },
};

use crate::error::{CommandError, Malformation, ResponseCode, TpmError};
use crate::transport::{Connection, HEADER_SIZE, Transport, UnixSocket};

/// A TPM handle (object, session, NV index, hierarchy), printed in hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handle(pub u32);

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}", self.0)
    }
}

impl From<Handle> for TpmHandle {
    fn from(handle: Handle) -> Self {
        TpmHandle::from(handle.0)
    }
}

/// `TPM_RH_OWNER`: the storage hierarchy (empty password on a fresh vTPM).
pub const OWNER: Handle = Handle(0x4000_0001);
/// `TPM_RH_ENDORSEMENT`: the endorsement hierarchy.
pub const ENDORSEMENT: Handle = Handle(0x4000_000b);
/// `TPM_RH_NULL`.
pub const NULL: Handle = Handle(0x4000_0007);
/// How often a command the TPM answered with `TPM_RC_RETRY`, `_YIELDED` or
/// `_TESTING` is sent (swtpm 0.7.1 answers `TPM_RC_RETRY` once to the first
/// `TPM2_Quote` after each start).
const MAX_ATTEMPTS: u32 = 10;
/// The pause before the n-th retry is n times this.
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(1);
/// `TPM_RS_PW`: the password pseudo-session.
const PASSWORD_SESSION: u32 = 0x4000_0009;

/// A TPM 2.0 client over a byte transport. Not `Sync`: one command at a
/// time (callers that share a TPM put it behind a mutex, which also queues
/// concurrent requests the way the TPM would).
#[derive(Debug)]
pub struct Tpm<T: Transport = UnixSocket> {
    transport: T,
}

impl Tpm<UnixSocket> {
    /// A client of the swtpm command socket at `path`, one connection per
    /// command (the socket stays free for other clients between commands).
    pub fn connect(path: impl Into<PathBuf>) -> Self {
        Self::new(UnixSocket::new(path, Connection::PerCommand))
    }

    /// A client that keeps one connection to the swtpm command socket at
    /// `path` open: see [`Connection::Persistent`].
    pub fn connect_persistent(path: impl Into<PathBuf>) -> Self {
        Self::new(UnixSocket::new(path, Connection::Persistent))
    }
}

/// A response whose code was success, unmarshalled as `R`, with its bytes
/// kept for the fields whose exact encoding matters (what the TPM signed).
pub(crate) struct Response<R> {
    pub(crate) body: R,
    pub(crate) bytes: Vec<u8>,
}

impl<R> Response<R> {
    /// The parameter area (after the handles and, with sessions, the
    /// `parameterSize` field; without the response sessions).
    pub(crate) fn parameters(
        &self,
        command: &'static str,
        handles: usize,
    ) -> Result<&[u8], CommandError> {
        parameter_area(&self.bytes, handles).ok_or_else(|| CommandError::Malformed {
            command,
            reason: Malformation::Unexpected("parameter area out of bounds".to_owned()),
        })
    }
}

fn parameter_area(bytes: &[u8], handles: usize) -> Option<&[u8]> {
    let tag = u16::from_be_bytes(bytes.get(0..2)?.try_into().ok()?);
    let after_handles = bytes.get(HEADER_SIZE + 4 * handles..)?;
    if tag != TpmSt::Sessions.value() {
        return Some(after_handles);
    }
    let size = u32::from_be_bytes(after_handles.get(0..4)?.try_into().ok()?) as usize;
    after_handles.get(4..4usize.checked_add(size)?)
}

impl<T: Transport> Tpm<T> {
    /// A client over `transport`.
    pub fn new(transport: T) -> Self {
        Self { transport }
    }

    /// The transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// The transport, mutably (to close a kept connection).
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Gives the transport back.
    pub fn into_transport(self) -> T {
        self.transport
    }

    /// Sends `command` with `sessions` (none: `TPM_ST_NO_SESSIONS`) and
    /// returns the response unmarshalled as `R`.
    pub(crate) fn execute<C, R>(
        &mut self,
        name: &'static str,
        command: &C,
        sessions: &[TpmsAuthCommand],
    ) -> Result<Response<R>, CommandError>
    where
        C: TpmFrame,
        R: TpmUnmarshalBody,
    {
        let frame = encode(name, command, sessions)?;
        let mut attempt = 1;
        loop {
            let bytes = self
                .transport
                .transact(&frame)
                .map_err(|source| CommandError::Io {
                    command: name,
                    endpoint: self.transport.endpoint(),
                    source,
                })?;
            match decode(name, bytes) {
                Err(CommandError::Refused { code, .. })
                    if code.is_retry() && attempt < MAX_ATTEMPTS =>
                {
                    // The TPM did not start the command: send it again
                    // (tpm2-tss does the same).
                    std::thread::sleep(RETRY_PAUSE * attempt);
                    attempt += 1;
                }
                result => return result,
            }
        }
    }
}

/// `TPM2_Shutdown`'s type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownType {
    /// `TPM_SU_CLEAR`: the next `Startup(CLEAR)` is a TPM Reset.
    Clear,
    /// `TPM_SU_STATE`: the TPM saves its state; a later `Startup(STATE)`
    /// resumes it (a `Startup(CLEAR)`, as swtpm's `startup-clear` sends,
    /// is then a TPM Restart).
    State,
}

impl ShutdownType {
    fn name(self) -> &'static str {
        match self {
            Self::Clear => "CLEAR",
            Self::State => "STATE",
        }
    }
}

const SHUTDOWN: &str = "TPM2_Shutdown";
const GET_RANDOM: &str = "TPM2_GetRandom";

impl<T: Transport> Tpm<T> {
    /// `TPM2_Shutdown`: saves the TPM's state orderly, so that the next
    /// start keeps its clock `safe`. Send it before stopping swtpm.
    pub fn shutdown(&mut self, kind: ShutdownType) -> Result<(), TpmError> {
        let command = TpmShutdownCommand {
            handles: [],
            shutdown_type: match kind {
                ShutdownType::Clear => TpmSu::Clear,
                ShutdownType::State => TpmSu::State,
            },
        };
        self.execute::<_, TpmShutdownResponse>(SHUTDOWN, &command, &[])
            .map(|_| ())
            .map_err(|source| TpmError::Shutdown {
                kind: kind.name(),
                source,
            })
    }

    /// `TPM2_GetRandom`: up to `bytes` random bytes (a TPM returns at most
    /// one digest's worth per call: 64 bytes on swtpm). Also a cheap
    /// liveness check.
    pub fn get_random(&mut self, bytes: u16) -> Result<Vec<u8>, TpmError> {
        let command = TpmGetRandomCommand {
            handles: [],
            bytes_requested: TpmUint16::from(bytes),
        };
        let response = self
            .execute::<_, TpmGetRandomResponse>(GET_RANDOM, &command, &[])
            .map_err(|source| TpmError::GetRandom { bytes, source })?;
        let random = response.body.random_bytes.to_vec();
        if random.len() > usize::from(bytes) {
            return Err(TpmError::GetRandom {
                bytes,
                source: CommandError::Malformed {
                    command: GET_RANDOM,
                    reason: Malformation::Unexpected(format!("{} bytes", random.len())),
                },
            });
        }
        Ok(random)
    }
}

/// Marshals a command frame.
pub(crate) fn encode<C: TpmFrame>(
    name: &'static str,
    command: &C,
    sessions: &[TpmsAuthCommand],
) -> Result<Vec<u8>, CommandError> {
    let tag = if sessions.is_empty() {
        TpmSt::NoSessions
    } else {
        TpmSt::Sessions
    };
    let mut buffer = vec![0u8; TPM_MAX_COMMAND_SIZE];
    let mut writer = TpmWriter::new(&mut buffer);
    tpm_marshal_command(command, tag, sessions, &mut writer).map_err(|err| {
        CommandError::Encode {
            command: name,
            reason: format!("{err:?}"),
        }
    })?;
    let len = writer.len();
    buffer.truncate(len);
    Ok(buffer)
}

/// Checks a response frame's code and unmarshals it as `R`.
pub(crate) fn decode<R: TpmUnmarshalBody>(
    name: &'static str,
    bytes: Vec<u8>,
) -> Result<Response<R>, CommandError> {
    let malformed = |reason| CommandError::Malformed {
        command: name,
        reason,
    };
    // The code is read before anything else: an error response is a bare
    // header, and vendor codes (which tpm2-protocol does not decode) must
    // still come out as `Refused`.
    let code = bytes
        .get(6..HEADER_SIZE)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| malformed(Malformation::Unexpected("short header".to_owned())))?;
    if code != 0 {
        return Err(CommandError::Refused {
            command: name,
            code: ResponseCode(code),
        });
    }
    let declared = bytes
        .get(2..6)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes);
    if declared.map(|size| size as usize) != Some(bytes.len()) {
        return Err(malformed(Malformation::Unexpected(format!(
            "size field {declared:?} but {} bytes",
            bytes.len()
        ))));
    }
    let body = TpmResponse::cast(&bytes)
        .and_then(|response| response.unmarshal::<R>())
        .map_err(|err| malformed(Malformation::Wire(err)))?;
    Ok(Response { body, bytes })
}

/// The empty password (`TPM_RS_PW` with an empty HMAC field): how Vigil
/// authorizes the owner and endorsement hierarchies, PCRs, NV indices and
/// the AK, none of which has a password on a vTPM.
pub(crate) fn password() -> TpmsAuthCommand {
    TpmsAuthCommand {
        session_handle: TpmHandle::from(PASSWORD_SESSION),
        nonce: Tpm2bNonce::default(),
        session_attributes: TpmaSession::default(),
        hmac: Tpm2bAuth::default(),
    }
}

/// A policy session used for authorization: no HMAC (the policy, not a
/// secret, authorizes), kept open after the command.
pub(crate) fn policy(session: Handle) -> TpmsAuthCommand {
    TpmsAuthCommand {
        session_handle: session.into(),
        nonce: Tpm2bNonce::default(),
        session_attributes: TpmaSession::CONTINUE_SESSION,
        hmac: Tpm2bAuth::default(),
    }
}

/// Turns a failure to build a TPM2B/list value from caller arguments into
/// an encoding error.
pub(crate) fn too_long(name: &'static str, what: &str) -> CommandError {
    CommandError::Encode {
        command: name,
        reason: format!("{what} is too long"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_area_is_bounds_checked() {
        // No sessions: everything after header + handles.
        let frame = [
            0x80, 0x01, 0, 0, 0, 16, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2,
        ];
        assert_eq!(parameter_area(&frame, 1), Some(&[1u8, 2][..]));
        assert_eq!(parameter_area(&frame[..14], 1), Some(&[][..]));
        assert_eq!(parameter_area(&frame, 2), None);
        // Sessions: parameterSize says 2, then a session follows.
        let frame = [
            0x80, 0x02, 0, 0, 0, 21, 0, 0, 0, 0, 0, 0, 0, 2, 7, 8, 0, 0, 1, 0, 0,
        ];
        assert_eq!(parameter_area(&frame, 0), Some(&[7u8, 8][..]));
        let mut lying = frame;
        lying[13] = 200;
        assert_eq!(parameter_area(&lying, 0), None);
        assert_eq!(parameter_area(&[0x80], 0), None);
    }

    #[test]
    fn response_codes_have_names() {
        assert_eq!(
            ResponseCode(0x18b).to_string(),
            "TPM_RC_HANDLE (handle[1]) (0x18b)"
        );
        assert_eq!(
            ResponseCode(0x902).to_string(),
            "TPM_RC_OBJECT_MEMORY (0x902)"
        );
        assert_eq!(
            ResponseCode(0x1c4).to_string(),
            "TPM_RC_VALUE (parameter[1]) (0x1c4)"
        );
        assert!(ResponseCode(0x18b).is_handle_error());
        assert!(ResponseCode(0x28b).is_handle_error());
        assert!(!ResponseCode(0x902).is_handle_error());
        assert_eq!(ResponseCode(0x0a00_0001).to_string(), "0xa000001");
    }
}
