//! Booting the real image under QEMU for integration tests, and a small raw
//! HTTP client that lets tests send exactly the bytes they mean (bad requests
//! included) and parse answers with `httparse`.

#![allow(dead_code)] // each test file uses a different part

pub mod dom0;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use vigil_dom0::accel::{self, AccelChoice};
use vigil_dom0::image::BootImage;
use vigil_dom0::qemu::{Forward, Guest, QemuConfig, kernel_cmdline};
use vigil_dom0::run::service_config;

/// Why the guest tests are ignored by a plain `cargo test`.
pub const NEEDS_IMAGE: &str =
    "boots the built image under QEMU: run by .ci/run (cargo test -- --ignored)";

/// What Hermit 0.11 printed when it had no entropy and fell back to a
/// Park–Miller generator (kernel patch 0026d removed the fallback).
pub const ENTROPY_FALLBACK: &str = "Unable to read entropy";

/// The image under test: `$VIGIL_IMAGE_DIR`, or `target/vigil/hvm` of this checkout.
pub fn image_dir() -> PathBuf {
    std::env::var_os("VIGIL_IMAGE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/vigil/hvm"))
}

/// A guest booted for one test; stopped when dropped.
pub struct TestGuest {
    guest: Option<Guest>,
    pub port: u16,
    pub boot: Duration,
    _dir: tempfile::TempDir,
}

impl TestGuest {
    /// Boots the image with these service settings and waits for /healthz.
    pub fn boot(settings: &[(&str, &str)]) -> Self {
        let image = BootImage::from_dir(&image_dir()).unwrap_or_else(|err| {
            panic!("{err}\n(the guest tests need `cargo run -p vigil-build -- build` first)")
        });
        let settings: Vec<(String, String)> = settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let service = service_config(&settings).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (accel, _) = accel::choose(AccelChoice::Auto, &image, dir.path());
        let config = QemuConfig {
            image,
            accel,
            memory_mib: 512,
            cpus: 1,
            cmdline: kernel_cmdline(&service),
            forward: Some(Forward {
                host_port: 0,
                guest_port: service.port,
            }),
            console: dir.path().join("console.log"),
            qmp: dir.path().join("qmp.sock"),
        };
        let mut guest = config.spawn().unwrap();
        let forwarding = guest.open_forwarding().unwrap();
        assert_eq!(
            forwarding.backlog,
            Ok(()),
            "QEMU's listen backlog is raised"
        );
        let port = forwarding.port;
        let boot = guest
            .wait_healthy(port, Duration::from_secs(120), &AtomicBool::new(false))
            .unwrap_or_else(|err| panic!("guest did not come up: {err}"));
        // Every guest test also checks that the kernel had real entropy
        // (Hermit 0.11 printed this when it fell back to Park–Miller).
        let console = std::fs::read_to_string(guest.console_path()).unwrap_or_default();
        assert!(
            !console.contains(ENTROPY_FALLBACK),
            "the kernel fell back to predictable randomness:\n{console}"
        );
        Self {
            guest: Some(guest),
            port,
            boot,
            _dir: dir,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The guest's serial console so far.
    pub fn console(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.console_path()).unwrap_or_default())
            .into_owned()
    }

    /// Where QEMU writes the guest's serial console.
    pub fn console_path(&self) -> &Path {
        self.guest.as_ref().unwrap().console_path()
    }

    /// Whether QEMU is still running.
    pub fn alive(&mut self) -> bool {
        self.guest.as_mut().unwrap().try_exit().is_none()
    }

    /// A new keep-alive connection; its failures show the console's tail.
    pub fn connect(&self) -> Client {
        Client::connect_with_console(self.addr(), Some(self.console_path().to_owned()))
    }

    /// Sends `raw` on a fresh connection and reads one response.
    pub fn raw(&self, raw: &[u8]) -> Response {
        let mut client = self.connect();
        client.send(raw);
        client.response(false)
    }

    /// A request with an optional body on a fresh connection.
    pub fn request(&self, method: &str, path: &str, body: Option<&[u8]>) -> Response {
        let mut client = self.connect();
        client.request(method, path, body)
    }

    /// Asserts the service still answers /healthz.
    pub fn assert_healthy(&self) {
        let response = self.request("GET", "/healthz", None);
        assert_eq!(response.status, 200, "the service stopped answering");
    }
}

impl Drop for TestGuest {
    fn drop(&mut self) {
        if let Some(guest) = self.guest.take() {
            let _ = guest.stop(Duration::from_secs(5));
        }
    }
}

/// One HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|err| panic!("not JSON ({err}): {}", self.text()))
    }
}

/// Lines of the guest console a failed request shows.
const CONSOLE_TAIL_LINES: usize = 40;

/// The last `lines` lines of the console file at `path`.
pub fn console_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A raw HTTP/1.1 client on one connection.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    /// The guest's console, shown when a request gets no answer.
    console: Option<PathBuf>,
    /// When the connection was made.
    connected: Instant,
}

impl Client {
    /// A connection to `addr` that knows no console.
    pub fn connect(addr: SocketAddr) -> Self {
        Self::connect_with_console(addr, None)
    }

    /// A connection to `addr` whose failures show the tail of `console`.
    pub fn connect_with_console(addr: SocketAddr, console: Option<PathBuf>) -> Self {
        let stream =
            TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap_or_else(|err| {
                panic!(
                    "cannot connect to {addr}: {err}{}",
                    Self::console_report(console.as_deref())
                )
            });
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Self {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
            console,
            connected: Instant::now(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        if let Err(err) = self.writer.write_all(bytes) {
            self.fail(&format!("sending {} bytes failed: {err}", bytes.len()));
        }
    }

    /// Sends a request (keep-alive) and reads its response.
    pub fn request(&mut self, method: &str, path: &str, body: Option<&[u8]>) -> Response {
        let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n").into_bytes();
        if let Some(body) = body {
            raw.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            raw.extend_from_slice(body);
        } else {
            raw.extend_from_slice(b"\r\n");
        }
        self.send(&raw);
        match self.try_response(method == "HEAD") {
            Ok(response) => response,
            Err(why) => self.fail(&format!("{method} {path}: no response: {why}")),
        }
    }

    /// Reads one response, or panics saying why there was none (with the
    /// tail of the guest's console).
    pub fn response(&mut self, head: bool) -> Response {
        self.try_response(head)
            .unwrap_or_else(|why| self.fail(&format!("no response: {why}")))
    }

    /// Reads one response; the error says how it failed (the server closed
    /// the connection, a reset, a timeout).
    pub fn try_response(&mut self, head: bool) -> Result<Response, String> {
        let mut raw = Vec::new();
        loop {
            let mut line = Vec::new();
            let n = self
                .reader
                .read_until(b'\n', &mut line)
                .map_err(|err| self.failure(&raw, &line, &format!("read failed: {err}")))?;
            if n == 0 {
                return Err(self.failure(&raw, &line, "the server closed the connection"));
            }
            raw.extend_from_slice(&line);
            if line == b"\r\n" {
                break;
            }
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Response::new(&mut headers);
        let status = parsed.parse(&raw).expect("a well-formed response head");
        assert!(status.is_complete());
        let headers: Vec<(String, String)> = parsed
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let code = parsed.code.unwrap();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse().expect("numeric Content-Length"))
            .unwrap_or(0);
        let mut body = vec![
            0;
            if head || code == 204 || code == 100 {
                0
            } else {
                length
            }
        ];
        self.reader.read_exact(&mut body).map_err(|err| {
            self.failure(
                &raw,
                &[],
                &format!("reading a {length}-byte body failed: {err}"),
            )
        })?;
        Ok(Response {
            status: code,
            headers,
            body,
        })
    }

    /// Describes a failed read: what, after how long, and what had arrived.
    fn failure(&self, head: &[u8], line: &[u8], what: &str) -> String {
        let received = head.len() + line.len();
        format!(
            "{what} ({:.3} s after connecting, local {}, {received} bytes of the response received)",
            self.connected.elapsed().as_secs_f64(),
            self.writer
                .local_addr()
                .map_or_else(|_| "?".to_owned(), |a| a.to_string()),
        )
    }

    /// Panics with `what` and the tail of the guest's console.
    fn fail(&self, what: &str) -> ! {
        panic!("{what}{}", Self::console_report(self.console.as_deref()))
    }

    fn console_report(console: Option<&Path>) -> String {
        match console {
            Some(path) => format!(
                "\n--- guest console, last {CONSOLE_TAIL_LINES} lines ---\n{}\n--- end of console ---",
                console_tail(path, CONSOLE_TAIL_LINES)
            ),
            None => String::new(),
        }
    }

    /// True if the server closed the connection (EOF) within the read timeout.
    pub fn closed_by_server(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.reader.read(&mut byte), Ok(0))
    }

    pub fn set_read_timeout(&self, timeout: Duration) {
        self.writer.set_read_timeout(Some(timeout)).unwrap();
    }

    pub fn set_write_timeout(&self, timeout: Duration) {
        self.writer.set_write_timeout(Some(timeout)).unwrap();
    }

    /// Fixes the socket's send buffer (which turns Linux's autotuning off).
    pub fn set_send_buffer(&self, bytes: usize) {
        rustix::net::sockopt::set_socket_send_buffer_size(&self.writer, bytes).unwrap();
    }
}
