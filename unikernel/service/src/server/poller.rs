//! Which of the loop's sockets are ready: `poll(2)`, level-triggered.
//!
//! The loop used mio, whose Hermit backend is a `poll(2)` selector that
//! emulates edge-triggered readiness: after each event it disarms the socket
//! until an operation returns `WouldBlock`, and re-arming it (at every
//! `WouldBlock`) writes and reads an eventfd to wake whichever thread polls,
//! here the loop itself. On top of its read and its write, every request
//! thus cost a read that could only fail and two eventfd calls, each a full
//! system call (see docs/network.md). Asked directly and level-triggered,
//! `poll(2)` reports a socket for as long as it is ready: nothing to re-arm,
//! and a short read means the socket is drained for now. The same code runs
//! on Linux, where the host tests drive it.

use std::io;
use std::time::Duration;

pub(super) use self::sys::RawFd;

/// What a socket is watched for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Interest {
    /// Data, the end of the stream, or a pending connection.
    pub(super) read: bool,
    /// Room to write.
    pub(super) write: bool,
}

impl Interest {
    /// Readable only.
    pub(super) const READ: Self = Self {
        read: true,
        write: false,
    };
}

/// A socket's name in the loop: the listener's, or a connection slot's.
pub(super) type Token = usize;

/// The sockets the loop watches, kept as `poll(2)`'s own array.
#[derive(Debug, Default)]
pub(super) struct Poller {
    fds: Vec<sys::PollFd>,
    tokens: Vec<Token>,
}

impl Poller {
    /// Watches `fd` for `interest`, reported as `token`.
    pub(super) fn register(&mut self, fd: RawFd, token: Token, interest: Interest) {
        self.fds.push(sys::poll_fd(fd, interest));
        self.tokens.push(token);
    }

    /// Watches `fd` for `interest` from now on.
    pub(super) fn reregister(&mut self, fd: RawFd, interest: Interest) {
        if let Some(index) = self.index(fd) {
            if let Some(entry) = self.fds.get_mut(index) {
                *entry = sys::poll_fd(fd, interest);
            }
        }
    }

    /// Stops watching `fd`.
    pub(super) fn deregister(&mut self, fd: RawFd) {
        if let Some(index) = self.index(fd) {
            self.fds.swap_remove(index);
            self.tokens.swap_remove(index);
        }
    }

    /// Waits until a socket is ready or `timeout` is up (`None`: no limit),
    /// and puts the tokens of the ready ones into `ready`.
    pub(super) fn poll(
        &mut self,
        ready: &mut Vec<Token>,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        ready.clear();
        if sys::poll(&mut self.fds, timeout_ms(timeout))? == 0 {
            return Ok(());
        }
        ready.extend(
            self.fds
                .iter()
                .zip(&self.tokens)
                .filter(|(fd, _)| sys::is_ready(fd))
                .map(|(_, token)| *token),
        );
        Ok(())
    }

    fn index(&self, fd: RawFd) -> Option<usize> {
        self.fds.iter().position(|entry| entry.fd == fd)
    }
}

/// `poll(2)`'s timeout: milliseconds rounded up (a deadline 0.3 ms away
/// must not turn into a busy loop), -1 for none.
fn timeout_ms(timeout: Option<Duration>) -> i32 {
    match timeout {
        None => -1,
        Some(timeout) => {
            let ms = timeout.as_micros().div_ceil(1000);
            i32::try_from(ms).unwrap_or(i32::MAX)
        }
    }
}

/// The one call into the system, for Hermit and for Unix.
#[allow(unsafe_code)]
mod sys {
    use std::io;

    use super::Interest;

    #[cfg(not(target_os = "hermit"))]
    pub(in crate::server) use std::os::fd::RawFd;
    #[cfg(target_os = "hermit")]
    pub(in crate::server) use std::os::hermit::io::RawFd;

    #[cfg(target_os = "hermit")]
    use hermit_abi::{POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT, pollfd as PollFdRaw};
    #[cfg(not(target_os = "hermit"))]
    use libc::{POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT, pollfd as PollFdRaw};

    /// An entry of the array `poll(2)` reads and writes.
    pub(super) type PollFd = PollFdRaw;

    /// The entry that watches `fd` for `interest`.
    pub(super) fn poll_fd(fd: RawFd, interest: Interest) -> PollFd {
        let mut events = 0;
        if interest.read {
            events |= POLLIN;
        }
        if interest.write {
            events |= POLLOUT;
        }
        PollFd {
            fd,
            events,
            revents: 0,
        }
    }

    /// Whether `poll(2)` reported anything for the entry (an error or a
    /// hang-up too: the loop then finds out by reading or writing).
    pub(super) fn is_ready(entry: &PollFd) -> bool {
        entry.revents & (entry.events | POLLERR | POLLHUP | POLLNVAL) != 0
    }

    /// `poll(2)` over `fds`; how many entries it reported.
    #[cfg(target_os = "hermit")]
    pub(super) fn poll(fds: &mut [PollFd], timeout_ms: i32) -> io::Result<usize> {
        // SAFETY: `fds` is an exclusively borrowed, initialized array of
        // `fds.len()` entries for the whole call; the kernel only writes
        // their `revents`.
        let n = unsafe { hermit_abi::poll(fds.as_mut_ptr(), fds.len(), timeout_ms) };
        // Hermit returns a negated errno.
        usize::try_from(n).map_err(|_| io::Error::from_raw_os_error(n.saturating_neg()))
    }

    /// `poll(2)` over `fds`; how many entries it reported.
    #[cfg(not(target_os = "hermit"))]
    pub(super) fn poll(fds: &mut [PollFd], timeout_ms: i32) -> io::Result<usize> {
        let len = libc::nfds_t::try_from(fds.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: `fds` is an exclusively borrowed, initialized array of
        // `len` entries for the whole call; the kernel only writes their
        // `revents`.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), len, timeout_ms) };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn timeouts_round_up_to_milliseconds() {
        assert_eq!(timeout_ms(None), -1);
        assert_eq!(timeout_ms(Some(Duration::ZERO)), 0);
        assert_eq!(timeout_ms(Some(Duration::from_micros(300))), 1);
        assert_eq!(timeout_ms(Some(Duration::from_millis(100))), 100);
        assert_eq!(timeout_ms(Some(Duration::from_secs(u64::MAX))), i32::MAX);
    }

    #[test]
    fn reports_ready_sockets_for_as_long_as_they_are_ready() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let mut poller = Poller::default();
        poller.register(listener.as_raw_fd(), 0, Interest::READ);
        poller.register(server.as_raw_fd(), 7, Interest::READ);
        let mut ready = Vec::new();
        poller.poll(&mut ready, Some(Duration::ZERO)).unwrap();
        assert!(ready.is_empty());

        client.write_all(b"x").unwrap();
        for _ in 0..2 {
            // Level-triggered: reported again while the byte is unread.
            poller
                .poll(&mut ready, Some(Duration::from_secs(5)))
                .unwrap();
            assert_eq!(ready, [7]);
        }
        poller.reregister(
            server.as_raw_fd(),
            Interest {
                read: false,
                write: true,
            },
        );
        poller
            .poll(&mut ready, Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(ready, [7], "writable");
        poller.deregister(server.as_raw_fd());
        poller.poll(&mut ready, Some(Duration::ZERO)).unwrap();
        assert!(ready.is_empty());
    }
}
