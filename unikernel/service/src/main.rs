use std::io::{Read, Write};
use std::net::TcpListener;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = vigil_core::v1::config::ServiceConfig::from_args(args.iter().map(String::as_str))
        .expect("config");
    let listener = TcpListener::bind(("0.0.0.0", config.port)).unwrap();
    eprintln!("vigil: listening on port {}", config.port);
    for stream in listener.incoming() {
        let mut stream = stream.unwrap();
        let mut buf = [0u8; 1024];
        let _ = stream.read(&mut buf);
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n");
    }
}
