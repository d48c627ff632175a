//! Waiting for the guest's service: `GET /healthz` with short timeouts.
//!
//! Hand-written rather than an HTTP client crate because the timing is the
//! point: QEMU's user networking accepts the host's connection at once, even
//! while the guest is still booting, and then drops it. A probe therefore has
//! to give up on a silent connection quickly and try again; one fixed request
//! and a status-line check are all it needs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How long one probe waits for the connection and for the answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(150);

/// One `GET /healthz`: true if the service answered `200`.
pub fn probe(addr: SocketAddr, timeout: Duration) -> bool {
    probe_at(addr, timeout).is_some()
}

/// One `GET /healthz`: when the `200` status line arrived, if it did.
///
/// After a `200` it reads on until the service closes the connection (the
/// request says `Connection: close`) or `timeout` strikes, so that the
/// service has let go of the connection when this returns: a caller that
/// goes on to use the service finds none of its connection slots still held
/// by a probe.
pub fn probe_at(addr: SocketAddr, timeout: Duration) -> Option<Instant> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    let request = b"GET /healthz HTTP/1.1\r\nHost: vigil\r\nConnection: close\r\n\r\n";
    stream.write_all(request).ok()?;
    let mut head = [0u8; 16];
    let mut filled = 0;
    while filled < head.len() {
        match stream.read(&mut head[filled..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => filled += n,
        }
    }
    if !(head[..filled].starts_with(b"HTTP/1.1 200 ")
        || head[..filled].starts_with(b"HTTP/1.0 200 "))
    {
        return None;
    }
    let answered = Instant::now();
    let mut rest = [0u8; 512];
    while matches!(stream.read(&mut rest), Ok(n) if n > 0) {}
    Some(answered)
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn answers_200_is_healthy() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buf = [0u8; 256];
            let _ = stream.read(&mut buf).unwrap();
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
        });
        assert!(probe(addr, Duration::from_secs(2)));
        server.join().unwrap();
    }

    #[test]
    fn silence_and_errors_are_not_healthy() {
        // Accepts, then says nothing: what QEMU's user networking does while the guest boots.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            std::thread::sleep(Duration::from_millis(300));
            drop(stream);
            let (mut stream, _) = listener.accept().unwrap();
            let mut buf = [0u8; 256];
            let _ = stream.read(&mut buf).unwrap();
            stream
                .write_all(b"HTTP/1.1 503 Service Unavailable\r\n\r\n")
                .unwrap();
        });
        assert!(!probe(addr, Duration::from_millis(100)));
        assert!(!probe(addr, Duration::from_secs(2)));
        server.join().unwrap();

        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(!probe(closed, Duration::from_millis(100)));
    }
}
