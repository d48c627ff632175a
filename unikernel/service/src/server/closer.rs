//! Closing sockets off the event loop.
//!
//! On Hermit, dropping a TCP socket sends the FIN and then blocks until the
//! close handshake is complete, that is until the client has closed its side
//! too (unless input is left unread or still arrives: then it resets the
//! connection at once, kernel patch 0014). A client that keeps its socket
//! open after the server closed (idle timeout, `Connection: close`, a 503)
//! would stall the event loop, and a single closing thread would hold every
//! later close (and its FIN) behind it. So sockets are dropped by a pool of
//! [`THREADS`] threads, all started up front: on Hermit, a thread spawned
//! while the loop is serving can leave the loop without network wake-ups
//! until the next timer interrupt. If every thread is held up by a client
//! that never closes, later sockets wait their turn. Closing never blocks on
//! other systems, where the pool is just idle.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use mio::net::TcpStream;
use vigil_core::v1::config::LogLevel;

use crate::log::Logger;
use crate::vcpu::{self, Placement};

/// Closing threads.
const THREADS: usize = 16;

/// Stack of a closing thread: it only runs Hermit's close and network polling.
const STACK_SIZE: usize = 256 << 10;

/// Hands sockets to the closing threads. Dropping it lets the threads finish
/// the queue and exit.
#[derive(Debug)]
pub(super) struct Closer {
    shared: Arc<Shared>,
    /// No thread could be started: sockets are dropped in place.
    inline: bool,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    work: Condvar,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<TcpStream>,
    stop: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The lock is only held around queue operations: no panics there.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Closer {
    /// Starts the closing threads, reporting failures to `log`.
    pub(super) fn start(log: Logger) -> Self {
        let shared = Arc::new(Shared::default());
        let mut started = 0;
        for _ in 0..THREADS {
            let queue = Arc::clone(&shared);
            // On vCPU 0 with the event loop, as before there was a second
            // vCPU: closing polls the network, which is the loop's core's job.
            let spawned = vcpu::spawn("vigil-closer", STACK_SIZE, Placement::Service, move || {
                close_queued(&queue);
            });
            match spawned {
                Ok(_) => started += 1,
                Err(error) => {
                    log.log(
                        LogLevel::Warn,
                        format_args!("started {started} closing threads, not more: {error}"),
                    );
                    break;
                }
            }
        }
        Self {
            shared,
            inline: started == 0,
        }
    }

    /// Closes `stream` without blocking the caller (unless no closing thread
    /// runs).
    pub(super) fn close(&self, stream: TcpStream) {
        if self.inline {
            drop(stream);
            return;
        }
        self.shared.lock().queue.push_back(stream);
        self.shared.work.notify_one();
    }
}

impl Drop for Closer {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.work.notify_all();
    }
}

/// A closing thread: drops queued sockets until stopped and the queue is empty.
fn close_queued(shared: &Shared) {
    let mut state = shared.lock();
    loop {
        if let Some(stream) = state.queue.pop_front() {
            drop(state);
            drop(stream);
            state = shared.lock();
        } else if state.stop {
            return;
        } else {
            state = shared
                .work
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::{TcpListener, TcpStream as StdStream};
    use std::time::Duration;

    use super::*;

    #[test]
    fn closes_every_socket_it_is_given() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let closer = Closer::start(Logger::new(LogLevel::Error));
        assert!(!closer.inline);
        let mut clients = Vec::new();
        for _ in 0..2 * THREADS {
            let client = StdStream::connect(listener.local_addr().unwrap()).unwrap();
            let (server_side, _) = listener.accept().unwrap();
            closer.close(TcpStream::from_std(server_side));
            clients.push(client);
        }
        for mut client in clients {
            client
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            assert_eq!(client.read(&mut [0; 1]).unwrap(), 0, "end of stream");
        }
        assert!(closer.shared.lock().queue.is_empty());
    }
}
