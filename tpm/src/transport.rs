//! How command bytes reach a TPM: the [`Transport`] trait, swtpm's Unix
//! command socket ([`UnixSocket`]), and [`Replay`] for unit tests.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The TPM response header: tag (2), size (4), response code (4).
pub const HEADER_SIZE: usize = 10;
/// The largest response accepted. swtpm answers within its 4 KiB I/O
/// buffer by default; the bound only stops a corrupted size field from
/// making the reader allocate gigabytes.
pub const MAX_RESPONSE_SIZE: usize = 64 * 1024;
/// How long one command may take before the transport gives up (RSA key
/// generation is the slowest command: well under a second on swtpm).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Carries one complete TPM command and returns one complete response.
pub trait Transport {
    /// Sends `command` (a whole command frame) and returns the whole
    /// response frame (at least the 10-byte header, exactly as many bytes
    /// as its size field says).
    fn transact(&mut self, command: &[u8]) -> io::Result<Vec<u8>>;

    /// Where the TPM is, for error messages (a socket path).
    fn endpoint(&self) -> String;
}

impl<T: Transport + ?Sized> Transport for &mut T {
    fn transact(&mut self, command: &[u8]) -> io::Result<Vec<u8>> {
        (**self).transact(command)
    }

    fn endpoint(&self) -> String {
        (**self).endpoint()
    }
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn transact(&mut self, command: &[u8]) -> io::Result<Vec<u8>> {
        (**self).transact(command)
    }

    fn endpoint(&self) -> String {
        (**self).endpoint()
    }
}

/// When [`UnixSocket`] connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connection {
    /// A new connection for every command, closed after the response (what
    /// dom0 did before this crate). swtpm serves one client at a time, so
    /// this leaves the socket free between commands for other clients
    /// (tpm2-tools, another dom0 process).
    PerCommand,
    /// One connection kept open across commands (saves the connect and
    /// swtpm's accept per command). While it is open, every other client of
    /// the same swtpm waits. A connection the peer has closed (swtpm
    /// restarted) is noticed before the next command and replaced.
    Persistent,
}

/// swtpm's command socket (`swtpm socket --server type=unixio,path=...`).
#[derive(Debug)]
pub struct UnixSocket {
    path: PathBuf,
    connection: Connection,
    timeout: Duration,
    stream: Option<UnixStream>,
}

impl UnixSocket {
    /// The socket at `path`, connected per `connection`. Nothing is
    /// connected until the first command.
    pub fn new(path: impl Into<PathBuf>, connection: Connection) -> Self {
        Self {
            path: path.into(),
            connection,
            timeout: DEFAULT_TIMEOUT,
            stream: None,
        }
    }

    /// Sets how long one command may take (connect excluded).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes a kept connection (the next command connects again), so
    /// that other clients of the same swtpm can be served.
    pub fn disconnect(&mut self) {
        self.stream = None;
    }

    fn connect(&self) -> io::Result<UnixStream> {
        let stream = UnixStream::connect(&self.path)?;
        stream.set_read_timeout(Some(self.timeout))?;
        stream.set_write_timeout(Some(self.timeout))?;
        Ok(stream)
    }

    /// The kept connection if the peer has not closed it, else a new one.
    fn stream(&mut self) -> io::Result<UnixStream> {
        if let Some(stream) = self.stream.take()
            && peer_is_open(&stream)
        {
            return Ok(stream);
        }
        self.connect()
    }
}

/// Whether the peer still has the connection open: a non-blocking peek
/// finds nothing to read (`EAGAIN`) on an idle open connection, and end of
/// stream once swtpm has closed it. (No response bytes can be pending
/// between commands.)
fn peer_is_open(stream: &UnixStream) -> bool {
    let flags = rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT;
    matches!(
        rustix::net::recv(stream, &mut [0u8; 1], flags),
        Err(rustix::io::Errno::AGAIN)
    )
}

impl Transport for UnixSocket {
    fn transact(&mut self, command: &[u8]) -> io::Result<Vec<u8>> {
        let mut stream = self.stream()?;
        let response = exchange(&mut stream, command)?;
        if self.connection == Connection::Persistent {
            // Only a connection that completed an exchange is kept: after
            // an error its state (a half-read response) is unknown.
            self.stream = Some(stream);
        }
        Ok(response)
    }

    fn endpoint(&self) -> String {
        self.path.display().to_string()
    }
}

/// Writes one command and reads exactly one response frame.
pub fn exchange(stream: &mut (impl Read + Write), command: &[u8]) -> io::Result<Vec<u8>> {
    stream.write_all(command)?;
    let mut response = vec![0u8; HEADER_SIZE];
    stream.read_exact(&mut response)?;
    let size = response_size(&response)?;
    response.resize(size, 0);
    stream.read_exact(&mut response[HEADER_SIZE..])?;
    Ok(response)
}

/// The size field of a response header, checked against the header size
/// and [`MAX_RESPONSE_SIZE`].
fn response_size(header: &[u8]) -> io::Result<usize> {
    let field: [u8; 4] = header
        .get(2..6)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "short response header"))?;
    let size = u32::from_be_bytes(field) as usize;
    if (HEADER_SIZE..=MAX_RESPONSE_SIZE).contains(&size) {
        Ok(size)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("response size field {size} outside {HEADER_SIZE}..={MAX_RESPONSE_SIZE}"),
        ))
    }
}

/// A transport that plays back recorded exchanges, for unit tests: each
/// command must equal the next recorded one (else `InvalidInput`), and gets
/// the recorded response.
#[derive(Debug, Default)]
pub struct Replay {
    exchanges: VecDeque<(Vec<u8>, Vec<u8>)>,
}

impl Replay {
    /// Plays back `exchanges` (command, response) in order.
    pub fn new(exchanges: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) -> Self {
        Self {
            exchanges: exchanges.into_iter().collect(),
        }
    }

    /// Whether every recorded exchange was played.
    pub fn is_done(&self) -> bool {
        self.exchanges.is_empty()
    }
}

impl Transport for Replay {
    fn transact(&mut self, command: &[u8]) -> io::Result<Vec<u8>> {
        let Some((expected, response)) = self.exchanges.pop_front() else {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "no recorded exchange left",
            ));
        };
        if command != expected {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "command differs from the recording:\n sent     {}\n recorded {}",
                    hex(command),
                    hex(&expected)
                ),
            ));
        }
        Ok(response)
    }

    fn endpoint(&self) -> String {
        "recorded exchanges".to_owned()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A byte stream: reads from `input`, records what is written.
    struct Pipe {
        input: io::Cursor<Vec<u8>>,
        written: Vec<u8>,
    }

    impl Read for Pipe {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn pipe(input: &[u8]) -> Pipe {
        Pipe {
            input: io::Cursor::new(input.to_vec()),
            written: Vec::new(),
        }
    }

    #[test]
    fn exchange_reads_exactly_one_frame() {
        let frame = [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0, 0, 0xaa, 0xbb];
        let mut input = frame.to_vec();
        input.extend_from_slice(&[0xcc; 5]);
        let mut stream = pipe(&input);
        let response = exchange(&mut stream, b"command").unwrap();
        assert_eq!(response, frame);
        assert_eq!(stream.written, b"command");
    }

    #[test]
    fn exchange_rejects_impossible_sizes_and_short_frames() {
        for size in [0u32, 9, 64 * 1024 + 1, u32::MAX] {
            let mut frame = vec![0x80, 0x01];
            frame.extend_from_slice(&size.to_be_bytes());
            frame.extend_from_slice(&[0; 4]);
            let err = exchange(&mut pipe(&frame), b"c").unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "size {size}");
        }
        let short = [0x80, 0x01, 0, 0, 0, 20, 0, 0, 0, 0, 1, 2];
        let err = exchange(&mut pipe(&short), b"c").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let err = exchange(&mut pipe(&[0x80]), b"c").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn replay_checks_each_command() {
        let mut replay = Replay::new([(b"one".to_vec(), b"1".to_vec())]);
        assert_eq!(
            replay.transact(b"two").unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        let mut replay = Replay::new([(b"one".to_vec(), b"1".to_vec())]);
        assert_eq!(replay.transact(b"one").unwrap(), b"1");
        assert!(replay.is_done());
        assert_eq!(
            replay.transact(b"one").unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }
}
