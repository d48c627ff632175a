//! The event loop: one thread, nonblocking sockets, `poll(2)`.
//!
//! The loop only moves bytes between sockets and [`Connection`]s, enforces
//! idle timeouts and the connection limit. Each wake-up handles every ready
//! socket, but reads a bounded number of chunks from one before turning to the
//! next, so no client can monopolize the loop. Readiness is level-triggered
//! (`poll(2)` itself: see `server/poller.rs` for why not mio).
//!
//! Deadlines (idle timeouts, the periodic accept) are the timeout of `poll`:
//! Hermit has no `SO_RCVTIMEO`. (Hermit 0.11's `poll(2)` ignored its timeout;
//! Vigil's kernel patches 0004 and 0005 fix that, see docs/building.md.)
//!
//! Sockets are dropped in the loop: closing returns at once, also on Hermit
//! since Vigil's kernel patch 0023 (its close used to block until the client
//! had closed too, so a pool of threads did the dropping).

mod peer;
mod poller;

use std::io::{self, Write};
use std::net::{TcpListener, TcpStream};
#[cfg(not(target_os = "hermit"))]
use std::os::fd::AsRawFd;
#[cfg(target_os = "hermit")]
use std::os::hermit::io::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use slab::Slab;
use vigil_core::v1::config::{LogLevel, ServiceConfig};

use self::peer::{IoContext, Peer, Progress};
use self::poller::{Interest, Poller, Token};
use crate::app::App;
use crate::http::{Connection, Limits, Persistence, Response, Status};
use crate::log::Throttle;
use crate::setting;

/// The listening socket's token.
const LISTENER: Token = 0;
/// Tokens of connections are their slab keys plus this.
const FIRST_PEER: Token = 1;

/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 16 << 10;

/// Chunks read from one connection before the loop turns to the others.
const READ_BUDGET: usize = 16;

/// How often the listener is asked for connections whether or not an event
/// said so.
///
/// Hermit 0.11 keeps a listening socket as one kernel socket per backlog slot,
/// but its `poll` looks only at the first of them: a connection that lands on
/// another slot does not make the listener readable until the first slot gets
/// one too. Accepting finds every slot's connection, so this periodic accept
/// bounds the wait for such a connection to the interval. With nothing
/// pending it costs one failed `accept`. It also bounds how long
/// [`ServerHandle::stop`] takes.
const RESCAN: Duration = Duration::from_millis(100);

/// How long a connection that timed out gets to take its 408 before it is
/// dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// How long a connection that is over keeps discarding what the client
/// still sends (a lingering close).
///
/// A connection ends after an answer that closes it (an error, a 503 to a
/// connection beyond the limit, `Connection: close`, a timeout) while the
/// client may still be sending: the body of a refused upload, pipelined
/// requests. Closing a socket with unread input resets the connection (on
/// Linux, and on Hermit with Vigil's kernel patch 0014), which can destroy
/// the last answer before the client has read it; and a client that writes
/// its whole body before it reads (Python's `http.client`) blocks once the
/// windows fill and never sees the answer. So once the last answer is
/// written, the loop shuts down the write side (the FIN follows the answer)
/// and reads and discards until the client closes, for at most this long and
/// [`LINGER_BYTES`]; then it drops the socket (a reset if the client is still
/// sending).
const LINGER: Duration = Duration::from_secs(2);

/// Bytes a closing connection discards at most (see [`LINGER`]): the
/// largest body `max-body-bytes` can allow.
const LINGER_BYTES: usize = 16 << 20;

/// Connections that may be closing at once: lingering after their last
/// answer, or turned away at the limit and sending their 503. They are out
/// of service, so they do not count against `max-connections`: a client's
/// slot is free as soon as its last answer is written. Beyond this many, a
/// connection that is over is dropped at once (a turned-away one gets its
/// 503 as far as its socket takes it right away).
const MAX_CLOSING: usize = 64;

/// The whole response to a connection beyond the limit.
const TOO_MANY_CONNECTIONS: &[u8] = br#"{"error":"too many connections"}"#;

/// An HTTP server on one listening socket.
#[derive(Debug)]
pub struct Server {
    poller: Poller,
    /// Accepts connections (nonblocking).
    listener: TcpListener,
    peers: Slab<Peer>,
    /// Connections in `peers` that count against `max_connections`.
    in_service: usize,
    /// Connections in `peers` that are closing ([`MAX_CLOSING`]).
    closing: usize,
    app: App,
    limits: Limits,
    idle_timeout: Duration,
    max_connections: usize,
    /// Where reads land before they are handed to a connection.
    scratch: Box<[u8]>,
    /// The serialized 503 for connections beyond the limit.
    busy: Vec<u8>,
    /// Connections that used up their read budget, to drive again soon.
    again: Vec<usize>,
    /// The earliest deadline of any connection, if there are any.
    next_sweep: Option<Instant>,
    /// When the listener is asked for connections next ([`RESCAN`]).
    next_rescan: Instant,
    stop: Arc<AtomicBool>,
    rejections: Throttle,
}

/// Stops a running [`Server`] from another thread.
#[derive(Clone, Debug)]
pub struct ServerHandle {
    stop: Arc<AtomicBool>,
}

impl ServerHandle {
    /// Makes [`Server::run`] return within 100 ms (the longest it waits for
    /// events). Connections are dropped, not drained.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }
}

impl Server {
    /// A server accepting connections on `listener` and serving them as
    /// `config` says (its `port` is not used: the listener is bound already).
    ///
    /// Bind the listener with [`std::net::TcpListener::bind`]: its backlog of
    /// 128 is the one to have on Hermit, which allocates the buffers of every
    /// backlog slot up front.
    pub fn new(listener: TcpListener, config: ServiceConfig) -> io::Result<Self> {
        Self::with_app(listener, App::new(config))
    }

    /// A server like [`Server::new`]'s that serves `app` (a service that
    /// reports its watchdog's state, in the image).
    pub fn with_app(listener: TcpListener, app: App) -> io::Result<Self> {
        let config = *app.config();
        listener.set_nonblocking(true)?;
        let mut poller = Poller::default();
        poller.register(listener.as_raw_fd(), LISTENER, Interest::READ);
        let mut busy = Vec::new();
        Response::json(Status::ServiceUnavailable, TOO_MANY_CONNECTIONS).write_to(
            &mut busy,
            false,
            Persistence::Close,
        );
        Ok(Self {
            poller,
            listener,
            peers: Slab::new(),
            in_service: 0,
            closing: 0,
            limits: Limits {
                max_header_bytes: setting(config.max_header_bytes),
                max_uri_bytes: setting(config.max_uri_bytes),
                max_body_bytes: setting(config.max_body_bytes),
            },
            idle_timeout: Duration::from_millis(config.idle_timeout_ms.into()),
            max_connections: setting(config.max_connections),
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            busy,
            again: Vec::new(),
            next_sweep: None,
            next_rescan: Instant::now() + RESCAN,
            stop: Arc::new(AtomicBool::new(false)),
            rejections: Throttle::default(),
            app,
        })
    }

    /// A handle to stop the server with.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            stop: Arc::clone(&self.stop),
        }
    }

    /// Serves until stopped through a [`ServerHandle`]. Fails only if waiting
    /// for events fails.
    pub fn run(mut self) -> io::Result<()> {
        let mut ready = Vec::new();
        let mut again = Vec::new();
        while !self.stop.load(Ordering::Acquire) {
            let timeout = if self.again.is_empty() {
                let now = Instant::now();
                earliest(self.next_sweep, Some(self.next_rescan))
                    .map(|deadline| deadline.saturating_duration_since(now))
            } else {
                Some(Duration::ZERO)
            };
            if let Err(error) = self.poller.poll(&mut ready, timeout) {
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error);
            }
            let now = Instant::now();
            std::mem::swap(&mut again, &mut self.again);
            for key in again.drain(..) {
                self.ready(key, now);
            }
            for &token in &ready {
                match token {
                    LISTENER => self.accept(now),
                    token => self.ready(token.wrapping_sub(FIRST_PEER), now),
                }
            }
            self.sweep(now);
            self.rescan(now);
        }
        self.app
            .logger()
            .log(LogLevel::Info, format_args!("stopped"));
        Ok(())
    }

    /// Accepts every pending connection.
    fn accept(&mut self, now: Instant) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => self.admit(stream, now),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if is_transient(&error) => {}
                Err(error) => {
                    self.app
                        .logger()
                        .log(LogLevel::Warn, format_args!("accept failed: {error}"));
                    break;
                }
            }
        }
    }

    /// Takes a new connection into service, or turns it away at the limit.
    fn admit(&mut self, stream: TcpStream, now: Instant) {
        if let Err(error) = stream.set_nonblocking(true) {
            self.app.logger().log(
                LogLevel::Warn,
                format_args!("cannot make a connection nonblocking: {error}"),
            );
            drop(stream);
            return;
        }
        if self.in_service >= self.max_connections {
            self.turn_away(stream, now);
            return;
        }
        let deadline = now + self.idle_timeout;
        self.watch(stream, Connection::new(self.limits), deadline, true);
        self.in_service += 1;
        self.app.metrics_mut().connection_opened();
    }

    /// Watches `stream` and takes it into `peers`, in service or closing;
    /// its key.
    fn watch(
        &mut self,
        stream: TcpStream,
        conn: Connection,
        deadline: Instant,
        in_service: bool,
    ) -> usize {
        // Best effort: responses are written whole, so Nagle only adds delay.
        let _ = stream.set_nodelay(true);
        let entry = self.peers.vacant_entry();
        let key = entry.key();
        self.poller
            .register(stream.as_raw_fd(), key + FIRST_PEER, Interest::READ);
        entry.insert(Peer::new(stream, conn, deadline, in_service));
        self.schedule(deadline);
        key
    }

    /// Answers 503 and closes, lingering like any connection that is over
    /// (see [`LINGER`]) unless [`MAX_CLOSING`] already close.
    fn turn_away(&mut self, mut stream: TcpStream, now: Instant) {
        self.app.metrics_mut().connection_rejected();
        let limit = self.max_connections;
        self.app.logger().warn_throttled(
            &mut self.rejections,
            now,
            format_args!("turned a connection away: {limit} connections in service"),
        );
        if self.closing >= MAX_CLOSING {
            let sent = stream.write(&self.busy).unwrap_or(0);
            self.app.metrics_mut().record_sent(sent);
            return;
        }
        let conn = Connection::refused(self.limits, &self.busy);
        let key = self.watch(stream, conn, now + CLOSE_GRACE, false);
        self.closing += 1;
        self.ready(key, now);
    }

    /// Lets connection `key` make progress after readiness or a budget break.
    fn ready(&mut self, key: usize, now: Instant) {
        let Some(peer) = self.peers.get_mut(key) else {
            return;
        };
        let mut io = IoContext {
            poller: &mut self.poller,
            scratch: &mut self.scratch,
            now,
            idle_timeout: self.idle_timeout,
        };
        let progress = peer.drive(&mut self.app, &mut io);
        let deadline = peer.deadline;
        if peer.in_service && peer.is_lingering() {
            // Its last answer is written: out of service, its slot free.
            peer.in_service = false;
            self.in_service -= 1;
            self.closing += 1;
            self.app.metrics_mut().connection_closed();
            if self.closing > MAX_CLOSING {
                self.close(key);
                return;
            }
        }
        match progress {
            Progress::Wait => self.schedule(deadline),
            Progress::Again => {
                self.schedule(deadline);
                self.again.push(key);
            }
            Progress::Done => self.close(key),
        }
    }

    /// Accepts pending connections once per [`RESCAN`], in case the
    /// listener did not report them (see there).
    fn rescan(&mut self, now: Instant) {
        if now < self.next_rescan {
            return;
        }
        self.next_rescan = now + RESCAN;
        self.accept(now);
    }

    /// Makes sure the loop wakes up by `deadline`.
    fn schedule(&mut self, deadline: Instant) {
        self.next_sweep = Some(self.next_sweep.map_or(deadline, |at| at.min(deadline)));
    }

    /// Handles the connections whose deadline has passed.
    fn sweep(&mut self, now: Instant) {
        if self.next_sweep.is_none_or(|at| now < at) {
            return;
        }
        let expired: Vec<usize> = self
            .peers
            .iter()
            .filter(|(_, peer)| peer.deadline <= now)
            .map(|(key, _)| key)
            .collect();
        for key in expired {
            self.expire(key, now);
        }
        self.next_sweep = self.peers.iter().map(|(_, peer)| peer.deadline).min();
    }

    /// An idle connection gets its 408 (if it was mid-request) and
    /// [`CLOSE_GRACE`] to take it; a closed one whose time is up (its last
    /// response stuck, or done lingering) is dropped.
    fn expire(&mut self, key: usize, now: Instant) {
        let Some(peer) = self.peers.get_mut(key) else {
            return;
        };
        if peer.conn.is_closed() {
            self.close(key);
            return;
        }
        peer.conn.time_out(&mut self.app);
        peer.deadline = now + CLOSE_GRACE;
        self.ready(key, now);
    }

    /// Drops connection `key`.
    fn close(&mut self, key: usize) {
        let Some(peer) = self.peers.try_remove(key) else {
            return;
        };
        self.poller.deregister(peer.stream.as_raw_fd());
        if peer.in_service {
            self.in_service -= 1;
            self.app.metrics_mut().connection_closed();
        } else {
            self.closing -= 1;
        }
        drop(peer.stream);
    }
}

/// The earlier of two optional instants.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Accept errors that concern one connection only.
fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::Interrupted
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
