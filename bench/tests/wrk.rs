//! `wrk` with vigil-bench's script against a small server: the request it
//! sends and the latency distribution it reports. Needs the apt package
//! `wrk`, so a plain `cargo test` ignores it; scripts/test runs it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vigil_bench::wrk::{self, Load, Method};

/// The first request line and body the server saw.
type Seen = Mutex<Option<(String, Vec<u8>)>>;

/// Answers every request with 200, after a pause for one in fifty; records
/// the first request line and body it saw.
fn serve(listener: TcpListener, seen: Arc<Seen>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { return };
        let seen = Arc::clone(&seen);
        std::thread::spawn(move || connection(stream, &seen));
    }
}

fn connection(stream: TcpStream, seen: &Seen) {
    stream.set_nodelay(true).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    for count in 0u64.. {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        seen.lock()
            .unwrap()
            .get_or_insert((request_line.trim().to_owned(), body));
        if count % 50 == 49 {
            std::thread::sleep(Duration::from_millis(150));
        }
        if writer
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .is_err()
        {
            return;
        }
    }
}

#[test]
#[ignore = "needs wrk (apt): run by scripts/test"]
fn wrk_sends_the_request_and_reports_the_distribution() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1/kv/bench", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(None));
    let server_seen = Arc::clone(&seen);
    std::thread::spawn(move || serve(listener, server_seen));

    let load = Load {
        threads: 1,
        connections: 2,
        seconds: 2,
    };
    let body = r#"{"benchmark":true}"#;
    let result = wrk::run_request(&url, &load, Method::Put(body)).unwrap();
    let (line, sent) = seen.lock().unwrap().clone().unwrap();
    assert_eq!(line, "PUT /v1/kv/bench HTTP/1.1");
    assert_eq!(sent, body.as_bytes());

    assert!(result.requests > 20, "{result:?}");
    assert_eq!(result.errors, 0);
    // One request in fifty waits 150 ms: some are over the 100 ms
    // threshold (wrk counts more of them than one in fifty), none is
    // quicker than 150 ms at the top.
    let over = result.over_threshold.unwrap();
    assert!(over > 0.005 && over < 0.5, "{result:?}");
    assert!(result.max_ms.unwrap() >= 150.0, "{result:?}");
    // The script's percentiles are wrk's own.
    let p99 = result
        .percentiles
        .iter()
        .find(|(p, _)| *p == 99.0)
        .unwrap()
        .1;
    assert!((p99 - result.p99_ms).abs() < 0.01, "{result:?}");
    assert_eq!(result.percentiles.len(), wrk::PERCENTILES.len());
    let values: Vec<f64> = result.percentiles.iter().map(|(_, ms)| *ms).collect();
    assert!(values.windows(2).all(|w| w[0] <= w[1]), "{values:?}");
    assert!(result.command.contains("PUT of 18 JSON bytes"));
}
