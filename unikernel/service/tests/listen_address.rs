//! The host build's listening address: loopback by default, the address in
//! `VIGIL_SERVICE_ADDRESS` when set (the benchmark's Linux guest sets
//! 0.0.0.0), a clear error for a bad value.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SERVICE: &str = env!("CARGO_BIN_EXE_vigil-service");

/// The service on a free port, killed when dropped.
struct Service {
    child: Child,
    port: u16,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(address: Option<&str>) -> Service {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut command = Command::new(SERVICE);
    command
        .args([format!("--port={port}"), "--log=warn".into()])
        .env_remove("VIGIL_SERVICE_ADDRESS")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(address) = address {
        command.env("VIGIL_SERVICE_ADDRESS", address);
    }
    let mut child = command.spawn().unwrap();
    // It says when it listens.
    let mut seen = Vec::new();
    let stderr = child.stderr.as_mut().unwrap();
    let mut byte = [0u8; 1];
    while !String::from_utf8_lossy(&seen).contains("listening on port") {
        assert_eq!(
            stderr.read(&mut byte).unwrap(),
            1,
            "{:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.push(byte[0]);
    }
    Service { child, port }
}

fn answers(ip: Ipv4Addr, port: u16) -> bool {
    let addr = SocketAddr::from((ip, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return false;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

#[test]
fn loopback_only_by_default() {
    let service = start(None);
    assert!(answers(Ipv4Addr::LOCALHOST, service.port));
    assert!(!answers(Ipv4Addr::new(127, 0, 0, 2), service.port));
}

#[test]
fn the_variable_sets_the_address() {
    let service = start(Some("127.0.0.2"));
    assert!(answers(Ipv4Addr::new(127, 0, 0, 2), service.port));
    assert!(!answers(Ipv4Addr::LOCALHOST, service.port));

    let service = start(Some("0.0.0.0"));
    assert!(answers(Ipv4Addr::LOCALHOST, service.port));
    assert!(answers(Ipv4Addr::new(127, 0, 0, 3), service.port));
}

#[test]
fn a_bad_value_stops_the_service_with_a_message() {
    let started = Instant::now();
    let output = Command::new(SERVICE)
        .env("VIGIL_SERVICE_ADDRESS", "everywhere")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("VIGIL_SERVICE_ADDRESS=\"everywhere\" is not an IPv4 address"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}
