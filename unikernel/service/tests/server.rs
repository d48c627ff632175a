//! The real event loop on 127.0.0.1, driven by real TCP clients.

#[path = "support/wire.rs"]
mod wire;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use vigil_core::v1::config::ServiceConfig;
use vigil_service::server::{Server, ServerHandle};
use wire::Parsed;

/// Bound on any single wait in these tests.
const PATIENCE: Duration = Duration::from_secs(10);

/// A server on an ephemeral port, stopped when dropped.
struct Running {
    addr: SocketAddr,
    handle: ServerHandle,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Running {
    fn start(args: &[&str]) -> Self {
        let args = [&["--log=warn"], args].concat();
        let config = ServiceConfig::from_args(args).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Server::new(listener, config).unwrap();
        let handle = server.handle();
        let thread = Some(thread::spawn(move || server.run()));
        Self {
            addr,
            handle,
            thread,
        }
    }

    fn connect(&self) -> Client {
        let stream = TcpStream::connect(self.addr).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// The value of a metric without labels.
    fn metric(&self, name: &str) -> f64 {
        let text = self.connect().request("GET", "/metrics", None).body;
        let text = String::from_utf8(text).unwrap();
        let line = text
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{name} in {text}"));
        line.parse().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handle.stop();
        let result = self.thread.take().map(JoinHandle::join);
        if !thread::panicking() {
            result.unwrap().unwrap().unwrap();
        }
    }
}

/// One client connection.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn send(&mut self, raw: &[u8]) {
        self.stream.write_all(raw).unwrap();
    }

    /// Reads the next response; `head` if it answers a HEAD request.
    fn response(&mut self, head: bool) -> Parsed {
        loop {
            if let Some((mut parsed, head_len, body_len)) = wire::parse_head(&self.buf).unwrap() {
                let body_len = if head { 0 } else { body_len };
                if self.buf.len() >= head_len + body_len {
                    parsed.body = self.buf[head_len..head_len + body_len].to_vec();
                    self.buf.drain(..head_len + body_len);
                    return parsed;
                }
            }
            assert!(self.fill() > 0, "connection closed mid-response");
        }
    }

    /// Reads more bytes into the buffer; returns how many (0 at end of stream).
    fn fill(&mut self) -> usize {
        let mut chunk = [0; 16 << 10];
        let n = self
            .stream
            .read(&mut chunk)
            .expect("server answers in time");
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    fn request(&mut self, method: &str, target: &str, body: Option<&[u8]>) -> Parsed {
        let mut raw = format!("{method} {target} HTTP/1.1\r\nHost: test\r\n").into_bytes();
        match body {
            Some(body) => {
                raw.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
                raw.extend_from_slice(body);
            }
            None => raw.extend_from_slice(b"\r\n"),
        }
        self.send(&raw);
        self.response(method == "HEAD")
    }

    /// Asserts that the server closes the connection, with nothing more to read.
    fn assert_closed(&mut self) {
        assert_eq!(self.fill(), 0, "expected end of stream");
        assert!(
            self.buf.is_empty(),
            "unexpected {:?}",
            String::from_utf8_lossy(&self.buf)
        );
    }
}

#[test]
fn serves_keep_alive_and_pipelined_requests() {
    let server = Running::start(&[]);
    let mut client = server.connect();
    assert_eq!(
        client.request("GET", "/healthz", None).body,
        br#"{"status":"ok"}"#
    );
    assert_eq!(
        client.request("PUT", "/v1/kv/x", Some(b"{\"a\":1}")).status,
        201
    );
    assert_eq!(client.request("GET", "/v1/kv/x", None).body, b"{\"a\":1}");
    let head = client.request("HEAD", "/v1/kv/x", None);
    assert_eq!(head.header("content-length"), Some("7"));

    client.send(
        b"GET /v1/kv/x HTTP/1.1\r\n\r\nDELETE /v1/kv/x HTTP/1.1\r\n\r\nGET /v1/kv/x HTTP/1.1\r\n\r\n",
    );
    let statuses: Vec<u16> = (0..3).map(|_| client.response(false).status).collect();
    assert_eq!(statuses, [200, 204, 404]);

    client.send(b"GET /healthz HTTP/1.0\r\n\r\n");
    assert!(client.response(false).closes());
    client.assert_closed();
}

#[test]
fn concurrent_keep_alive_clients_never_lose_an_acknowledged_write() {
    const CLIENTS: usize = 64;
    const ROUNDS: usize = 40;
    let server = Running::start(&[]);
    let started = Instant::now();
    let workers: Vec<JoinHandle<()>> = (0..CLIENTS)
        .map(|c| {
            let mut client = server.connect();
            thread::spawn(move || {
                for i in 0..ROUNDS {
                    let value = format!("{{\"client\":{c},\"round\":{i}}}");
                    let key = format!("/v1/kv/c{c}-{}", i % 10);
                    let put = client.request("PUT", &key, Some(value.as_bytes()));
                    assert!(matches!(put.status, 200 | 201), "{}", put.text());
                    let get = client.request("GET", &key, None);
                    assert_eq!(get.text(), value, "read after write");
                    // Interleave with a request the others also make.
                    assert_eq!(client.request("GET", "/healthz", None).status, 200);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let mut checker = server.connect();
    for c in 0..CLIENTS {
        for slot in 0..10 {
            let last_round = (0..ROUNDS).filter(|i| i % 10 == slot).max().unwrap();
            let expected = format!("{{\"client\":{c},\"round\":{last_round}}}");
            let response = checker.request("GET", &format!("/v1/kv/c{c}-{slot}"), None);
            assert_eq!(response.text(), expected);
        }
    }
    let listed = checker.request("GET", "/v1/kv?limit=1000", None);
    let listed: serde_json::Value = serde_json::from_slice(&listed.body).unwrap();
    assert_eq!(listed["keys"].as_array().unwrap().len(), CLIENTS * 10);
    assert_eq!(server.metric("vigil_kv_keys"), (CLIENTS * 10) as f64);
    assert!(
        started.elapsed() < 2 * PATIENCE,
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn turns_away_connections_beyond_the_limit() {
    let server = Running::start(&["--max-connections=2"]);
    let mut first = server.connect();
    let mut second = server.connect();
    assert_eq!(first.request("GET", "/healthz", None).status, 200);
    assert_eq!(second.request("GET", "/healthz", None).status, 200);

    let mut third = server.connect();
    let response = third.response(false);
    assert_eq!(response.status, 503);
    assert_eq!(response.body, br#"{"error":"too many connections"}"#);
    assert!(response.closes());
    third.assert_closed();

    drop(first);
    let deadline = Instant::now() + PATIENCE;
    let mut fourth = loop {
        // The server notices the close asynchronously.
        let mut client = server.connect();
        client.send(b"GET /healthz HTTP/1.1\r\n\r\n");
        if client.response(false).status == 200 {
            break client;
        }
        assert!(Instant::now() < deadline, "slot never freed");
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(fourth.request("GET", "/v1/kv", None).status, 200);
    drop((second, fourth));
    // The metrics request itself needs a slot: wait for one.
    thread::sleep(Duration::from_millis(100));
    assert!(server.metric("vigil_connections_rejected_total") >= 1.0);
}

#[test]
fn idle_connections_time_out() {
    let server = Running::start(&["--idle-timeout-ms=200"]);
    let started = Instant::now();

    let mut partial = server.connect();
    partial.send(b"GET /healthz HTTP/1.1\r\nHost:");
    let mut silent = server.connect();
    let mut kept = server.connect();
    assert_eq!(kept.request("GET", "/healthz", None).status, 200);

    let response = partial.response(false);
    assert_eq!(response.status, 408);
    assert!(response.closes());
    partial.assert_closed();
    silent.assert_closed();
    kept.assert_closed();
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[test]
fn traffic_keeps_a_connection_alive() {
    let server = Running::start(&["--idle-timeout-ms=300"]);
    let mut client = server.connect();
    for _ in 0..5 {
        thread::sleep(Duration::from_millis(150));
        assert_eq!(client.request("GET", "/healthz", None).status, 200);
    }
}

#[test]
fn refused_uploads_still_get_their_answer() {
    let server = Running::start(&["--max-body-bytes=1024"]);
    let mut client = server.connect();
    let mut raw = b"PUT /v1/kv/big HTTP/1.1\r\nContent-Length: 400000\r\n\r\n".to_vec();
    raw.resize(raw.len() + 400_000, b'1');
    // The server answers before reading the body; keep sending anyway.
    let mut writer = client.stream.try_clone().unwrap();
    let upload = thread::spawn(move || {
        let _ = writer.write_all(&raw);
    });
    let response = client.response(false);
    assert_eq!(response.status, 413);
    assert!(response.closes());
    upload.join().unwrap();
}

#[test]
fn a_client_that_sends_its_whole_body_before_reading_gets_its_413() {
    // Like Python's http.client: head, then the whole body, then read.
    let server = Running::start(&[]);
    let mut client = server.connect();
    client
        .stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let body = 4 << 20;
    let started = Instant::now();
    client.send(format!("PUT /v1/kv/big HTTP/1.1\r\nContent-Length: {body}\r\n\r\n").as_bytes());
    client.send(&vec![b'1'; body]);
    let response = client.response(false);
    assert_eq!(response.status, 413);
    assert!(response.closes());
    client.assert_closed();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

/// Sends a 413-inducing head, reads the 413, then keeps sending `chunk`
/// every `pause` until a write fails; how long that took and how much was sent.
fn send_after_413_until_cut_off(chunk: usize, pause: Duration) -> (Duration, usize) {
    let server = Running::start(&["--max-body-bytes=1024"]);
    let mut client = server.connect();
    client.send(b"PUT /v1/kv/big HTTP/1.1\r\nContent-Length: 999999999999\r\n\r\n");
    assert_eq!(client.response(false).status, 413);
    let mut writer = client.stream.try_clone().unwrap();
    writer
        .set_write_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let started = Instant::now();
    let bytes = vec![b'1'; chunk];
    let mut sent = 0;
    while writer.write_all(&bytes).is_ok() {
        sent += chunk;
        assert!(
            started.elapsed() < PATIENCE,
            "still accepted after {sent} bytes"
        );
        thread::sleep(pause);
    }
    (started.elapsed(), sent)
}

#[test]
fn a_closing_connection_discards_a_bounded_number_of_bytes() {
    // 16 MiB discarded, plus what the sockets' buffers hold.
    let (took, sent) = send_after_413_until_cut_off(64 << 10, Duration::ZERO);
    assert!(sent < 40 << 20, "{sent} bytes in {took:?}");
}

#[test]
fn a_closing_connection_discards_for_a_bounded_time() {
    // A trickle is cut off once the lingering time (2 s) is up.
    let (took, sent) = send_after_413_until_cut_off(1024, Duration::from_millis(20));
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(5),
        "{sent} bytes in {took:?}"
    );
}

#[test]
fn a_connection_whose_last_answer_is_written_frees_its_slot() {
    let server = Running::start(&["--max-connections=1"]);
    // The first client's connection is over (Connection: close), but it
    // keeps its socket open: the server lingers, out of service.
    let mut first = server.connect();
    first.send(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(first.response(false).status, 200);
    let mut second = server.connect();
    assert_eq!(second.request("GET", "/healthz", None).status, 200);
    first.assert_closed();
}

#[test]
fn a_turned_away_client_that_sent_a_request_reads_its_503() {
    let server = Running::start(&["--max-connections=1"]);
    let mut held = server.connect();
    assert_eq!(held.request("GET", "/healthz", None).status, 200);
    // The request sits unread when the server answers 503 and closes; a
    // socket closed with unread input is reset, and a reset destroys the
    // answer before the client reads it, unless the server lingers.
    let mut refused = server.connect();
    refused.send(b"GET /healthz HTTP/1.1\r\n\r\n");
    thread::sleep(Duration::from_millis(200));
    let response = refused.response(false);
    assert_eq!(response.status, 503);
    refused.assert_closed();
    assert_eq!(held.request("GET", "/healthz", None).status, 200);
}

#[test]
fn answers_expect_100_continue() {
    let server = Running::start(&[]);
    let mut client = server.connect();
    client.send(b"PUT /v1/kv/c HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
    assert_eq!(client.response(false).status, 100);
    client.send(b"true");
    assert_eq!(client.response(false).status, 201);
}

#[test]
fn answers_a_client_that_half_closes() {
    let server = Running::start(&[]);
    let mut client = server.connect();
    client.send(b"GET /healthz HTTP/1.1\r\n\r\n");
    client.stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(client.response(false).status, 200);
    client.assert_closed();
}

#[test]
fn misbehaving_clients_do_not_hold_up_others() {
    let server = Running::start(&["--idle-timeout-ms=5000"]);
    // A slow client stuck mid-head, one sending garbage, one leaving
    // mid-request, and one flooding pipelined requests without reading.
    let mut slow = server.connect();
    slow.send(b"PUT /v1/kv/slow HTTP/1.1\r\nContent-Le");
    let mut garbage = server.connect();
    garbage.send(&[0x16, 0x03, 0x01, 0x00, 0xff, 0x01, 0x00]);
    let mut gone = server.connect();
    gone.send(b"PUT /v1/kv/r HTTP/1.1\r\nContent-Length: 100\r\n\r\n{");
    drop(gone);
    let flood = server.connect();
    let mut flood_writer = flood.stream.try_clone().unwrap();
    let flooding = thread::spawn(move || {
        let requests = b"GET / HTTP/1.1\r\n\r\n".repeat(1000);
        for _ in 0..200 {
            if flood_writer.write_all(&requests).is_err() {
                break;
            }
        }
    });

    let started = Instant::now();
    let mut client = server.connect();
    for i in 0..50 {
        let key = format!("/v1/kv/k{i}");
        assert_eq!(client.request("PUT", &key, Some(b"1")).status, 201);
    }
    assert!(started.elapsed() < PATIENCE);
    assert_eq!(garbage.response(false).status, 400);
    garbage.assert_closed();
    drop(flood);
    flooding.join().unwrap();
    drop(slow);
}

#[test]
fn counts_bytes_and_connections() {
    let server = Running::start(&[]);
    let mut client = server.connect();
    client.request("GET", "/healthz", None);
    assert!(server.metric("vigil_http_received_bytes_total") > 0.0);
    assert!(server.metric("vigil_http_sent_bytes_total") > 0.0);
    assert!(server.metric("vigil_connections_accepted_total") >= 2.0);
    assert!(server.metric("vigil_connections_open") >= 2.0);
    assert!(server.metric("vigil_uptime_seconds") > 0.0);
}
