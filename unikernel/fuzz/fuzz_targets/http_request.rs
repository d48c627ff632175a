//! Arbitrary bytes through the connection state machine and the router.
//!
//! The first byte picks how the stream is cut into reads and how the
//! connection ends; the rest is what the client sends. Small limits make every
//! limit reachable. Whatever arrives, the service must not panic, and what it
//! sends must be a sequence of well-formed responses with known statuses,
//! nothing after a `Connection: close`, and a closed connection at the end.

#![no_main]

#[path = "../../service/tests/support/wire.rs"]
mod wire;

use libfuzzer_sys::fuzz_target;
use vigil_core::v1::config::ServiceConfig;
use vigil_service::app::App;
use vigil_service::http::{Connection, Limits};

/// Statuses the service may send (500 would be a rendering bug).
const STATUSES: &[u16] = &[
    100, 200, 201, 204, 400, 404, 405, 408, 411, 413, 414, 431, 503, 507,
];

const LIMITS: Limits = Limits {
    max_header_bytes: 256,
    max_uri_bytes: 64,
    max_body_bytes: 128,
};

fn app() -> App {
    let config = ServiceConfig::from_args([
        "--max-header-bytes=256",
        "--max-uri-bytes=64",
        "--max-body-bytes=128",
        "--max-keys=4",
        "--max-key-bytes=8",
        "--store-bytes=1024",
        "--log=error",
    ])
    .expect("valid fuzzing configuration");
    App::new(config)
}

/// Moves everything the connection wants to send to `sent`.
fn drain(conn: &mut Connection, sent: &mut Vec<u8>) {
    sent.extend_from_slice(conn.output());
    conn.consume_output(conn.output().len());
}

fuzz_target!(|data: &[u8]| {
    let Some((&shape, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(shape & 0x3f) + 1;
    let slow_reader = shape & 0x40 != 0;
    let times_out = shape & 0x80 != 0;

    let mut app = app();
    let mut conn = Connection::new(LIMITS);
    let mut sent = Vec::new();
    for piece in stream.chunks(chunk) {
        conn.receive(piece, &mut app);
        // A slow reader only takes output once the connection holds back.
        if !slow_reader || !conn.wants_input() {
            drain(&mut conn, &mut sent);
            conn.process(&mut app);
        }
    }
    drain(&mut conn, &mut sent);
    conn.process(&mut app);
    if times_out {
        conn.time_out(&mut app);
    } else {
        conn.end_of_input();
    }
    drain(&mut conn, &mut sent);
    assert!(conn.is_finished());

    let responses = wire::parse_responses(&sent)
        .unwrap_or_else(|problem| panic!("{problem} in {:?}", String::from_utf8_lossy(&sent)));
    for response in &responses {
        assert!(
            STATUSES.contains(&response.status),
            "unexpected status {}",
            response.status
        );
    }
});
