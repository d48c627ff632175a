//! One connection in service: its socket, protocol state and deadline.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
#[cfg(not(target_os = "hermit"))]
use std::os::fd::AsRawFd;
#[cfg(target_os = "hermit")]
use std::os::hermit::io::AsRawFd;
use std::time::{Duration, Instant};

use vigil_core::v1::config::LogLevel;

use super::poller::{Interest, Poller};
use super::{LINGER, LINGER_BYTES, READ_BUDGET};
use crate::app::App;
use crate::http::Connection;

/// What the loop lends a connection to make progress with.
pub(super) struct IoContext<'a> {
    pub(super) poller: &'a mut Poller,
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
    pub(super) conn: Connection,
    /// When the connection times out: idle since the last byte in either
    /// direction, or out of grace (after a timeout) or lingering time.
    pub(super) deadline: Instant,
    /// What the socket is watched for.
    interest: Interest,
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
    /// A new connection on `stream`, watched for reading.
    pub(super) fn new(
        stream: TcpStream,
        conn: Connection,
        deadline: Instant,
        in_service: bool,
    ) -> Self {
        Self {
            stream,
            conn,
            deadline,
            interest: Interest::READ,
            lingering: false,
            discarded: 0,
            client_done: false,
            in_service,
        }
    }

    /// Moves bytes until the socket is drained for now, the read budget is
    /// used up or the connection is over, and watches the socket for what
    /// it waits for next.
    pub(super) fn drive(&mut self, app: &mut App, io: &mut IoContext<'_>) -> Progress {
        let progress = self.exchange(app, io);
        if matches!(progress, Progress::Done) {
            return progress;
        }
        self.watch_for_what_is_next(io.poller);
        progress
    }

    /// Reads, answers and writes, as [`drive`](Self::drive) says.
    ///
    /// Readiness is level-triggered: a read shorter than the buffer means
    /// the socket is drained for now (if more arrives, `poll` says so), so
    /// no read is made only to see it fail with `WouldBlock`.
    fn exchange(&mut self, app: &mut App, io: &mut IoContext<'_>) -> Progress {
        let mut drained = false;
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
            if drained || self.client_done {
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
                    drained = n < io.scratch.len();
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

    /// Writes output until done or the socket would block.
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
        Ok(())
    }

    /// Watches the socket for reading while the connection takes input (or
    /// lingers) and the client has not closed, and for writing while output
    /// waits. Level-triggered readiness would otherwise report, again and
    /// again, input the connection is not taking now, or the end of a
    /// stream already seen.
    fn watch_for_what_is_next(&mut self, poller: &mut Poller) {
        let interest = Interest {
            read: !self.client_done && (self.lingering || self.conn.wants_input()),
            write: !self.conn.output().is_empty(),
        };
        if interest != self.interest {
            poller.reregister(self.stream.as_raw_fd(), interest);
            self.interest = interest;
        }
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
