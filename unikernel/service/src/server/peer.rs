//! One connection in service: its socket, protocol state and deadline.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use vigil_core::v1::config::LogLevel;

use super::{LINGER, LINGER_BYTES, READ_BUDGET};
use crate::app::App;
use crate::http::Connection;

/// What the loop lends a connection to make progress with.
pub(super) struct IoContext<'a> {
    pub(super) registry: &'a Registry,
    pub(super) scratch: &'a mut [u8],
    pub(super) now: Instant,
    pub(super) idle_timeout: Duration,
}

/// Where a connection stands after [`Peer::drive`].
pub(super) enum Progress {
    /// Blocked on the socket; readiness events will tell when to go on.
    Wait,
    /// Read budget used up with input possibly left: drive it again soon.
    Again,
    /// Over: drop it.
    Done,
}

/// A connection in service: socket, protocol state and timing.
#[derive(Debug)]
pub(super) struct Peer {
    pub(super) stream: TcpStream,
    token: Token,
    pub(super) conn: Connection,
    /// When the connection times out: idle since the last byte in either
    /// direction, or out of grace (after a timeout) or lingering time.
    pub(super) deadline: Instant,
    /// Whether the registration includes [`Interest::WRITABLE`].
    writable: bool,
    /// Our side is shut down; what arrives is discarded.
    lingering: bool,
    /// Bytes discarded while lingering.
    discarded: usize,
    /// The client has closed its side.
    client_done: bool,
    /// Counted against the connection limit: taken into service and not
    /// yet closing (a connection turned away at the limit never is).
    pub(super) in_service: bool,
}

impl Peer {
    /// A new connection on `stream`, registered (readable) under `token`.
    pub(super) fn new(
        stream: TcpStream,
        token: Token,
        conn: Connection,
        deadline: Instant,
        in_service: bool,
    ) -> Self {
        Self {
            stream,
            token,
            conn,
            deadline,
            writable: false,
            lingering: false,
            discarded: 0,
            client_done: false,
            in_service,
        }
    }

    /// Moves bytes until the socket would block, the read budget is used up
    /// or the connection is over.
    ///
    /// mio's readiness is edge-triggered (and on Hermit's poll(2) selector an
    /// event disarms the socket until an operation returns `WouldBlock`), so
    /// this only returns [`Progress::Wait`] after a `WouldBlock`.
    pub(super) fn drive(&mut self, app: &mut App, io: &mut IoContext<'_>) -> Progress {
        for _ in 0..READ_BUDGET {
            // Answer what is complete (including requests held back while
            // output was above the high-water mark), then send.
            self.conn.process(app);
            if let Err(error) = self.flush(app, io) {
                return failed(app, &error);
            }
            if self.conn.is_finished() && !self.lingering {
                if self.client_done {
                    return Progress::Done;
                }
                self.start_lingering(io.now);
            }
            if !self.lingering && !self.conn.wants_input() {
                // Output above the high-water mark, or a last response still
                // being sent: flushing hit `WouldBlock`.
                return Progress::Wait;
            }
            match self.stream.read(io.scratch) {
                Ok(0) => {
                    self.client_done = true;
                    self.conn.end_of_input();
                    if self.lingering {
                        return Progress::Done;
                    }
                }
                Ok(n) => {
                    app.metrics_mut().record_received(n);
                    if self.lingering {
                        self.discarded = self.discarded.saturating_add(n);
                        if self.discarded >= LINGER_BYTES {
                            return Progress::Done;
                        }
                    } else {
                        self.deadline = io.now + io.idle_timeout;
                        self.conn
                            .receive(io.scratch.get(..n).unwrap_or_default(), app);
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    return Progress::Wait;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return failed(app, &error),
            }
        }
        Progress::Again
    }

    /// Whether its last answer is written and it discards what comes.
    pub(super) fn is_lingering(&self) -> bool {
        self.lingering
    }

    /// Writes output until done or the socket would block; keeps the
    /// registration's writable interest in step with pending output.
    fn flush(&mut self, app: &mut App, io: &IoContext<'_>) -> io::Result<()> {
        while !self.conn.output().is_empty() {
            match self.stream.write(self.conn.output()) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.conn.consume_output(n);
                    app.metrics_mut().record_sent(n);
                    self.deadline = io.now + io.idle_timeout;
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        let writable = !self.conn.output().is_empty();
        if writable != self.writable {
            let interest = if writable {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            io.registry
                .reregister(&mut self.stream, self.token, interest)?;
            self.writable = writable;
        }
        Ok(())
    }

    /// Everything is sent: stop sending, keep reading (and discarding) until
    /// the client closes, [`LINGER`] is up or [`LINGER_BYTES`] are read.
    fn start_lingering(&mut self, now: Instant) {
        // A failed shutdown only means the client is gone; reading will tell.
        let _ = self.stream.shutdown(Shutdown::Write);
        self.lingering = true;
        self.deadline = now + LINGER;
    }
}

/// A socket error ends the connection (logged at debug level: clients do that).
fn failed(app: &App, error: &io::Error) -> Progress {
    app.logger()
        .log(LogLevel::Debug, format_args!("connection failed: {error}"));
    Progress::Done
}
