//! Booting the real image under QEMU for integration tests, and a small raw
//! HTTP client that lets tests send exactly the bytes they mean (bad requests
//! included) and parse answers with `httparse`.

#![allow(dead_code)] // each test file uses a different part

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use vigil_dom0::accel::{self, AccelChoice};
use vigil_dom0::image::BootImage;
use vigil_dom0::qemu::{Forward, Guest, QemuConfig, kernel_cmdline};
use vigil_dom0::run::service_config;

/// Why the guest tests are ignored by a plain `cargo test`.
pub const NEEDS_IMAGE: &str =
    "boots the built image under QEMU: run by .ci/run (cargo test -- --ignored)";

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
        let guest = self.guest.as_ref().unwrap();
        String::from_utf8_lossy(&std::fs::read(guest.console_path()).unwrap_or_default())
            .into_owned()
    }

    /// Whether QEMU is still running.
    pub fn alive(&mut self) -> bool {
        self.guest.as_mut().unwrap().try_exit().is_none()
    }

    /// A new keep-alive connection.
    pub fn connect(&self) -> Client {
        Client::connect(self.addr())
    }

    /// Sends `raw` on a fresh connection and reads one response.
    pub fn raw(&self, raw: &[u8]) -> Response {
        let mut client = self.connect();
        client.send(raw);
        client.response(false).expect("a response")
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

/// A raw HTTP/1.1 client on one connection.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Self {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
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
        self.response(method == "HEAD").expect("a response")
    }

    /// Reads one response; `None` if the server closed the connection first.
    pub fn response(&mut self, head: bool) -> Option<Response> {
        let mut raw = Vec::new();
        loop {
            let mut line = Vec::new();
            let n = self.reader.read_until(b'\n', &mut line).ok()?;
            if n == 0 {
                return None;
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
        self.reader.read_exact(&mut body).ok()?;
        Some(Response {
            status: code,
            headers,
            body,
        })
    }

    /// True if the server closed the connection (EOF) within the read timeout.
    pub fn closed_by_server(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.reader.read(&mut byte), Ok(0))
    }

    pub fn set_read_timeout(&self, timeout: Duration) {
        self.writer.set_read_timeout(Some(timeout)).unwrap();
    }
}
