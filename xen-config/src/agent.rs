//! The attestation agent (`vigil-dom0 serve`): one HTTP listener for every
//! domain under a state directory, answering verifiers with [`crate::attest`].
//!
//! | request | answer |
//! |---|---|
//! | `GET /v1/domains` | `[{"name", "state", "backend", "url", "vtpm_running"}]` |
//! | `GET /v1/domains/{name}/evidence?nonce=HEX` | the evidence (`vigil_core::v1::evidence::Evidence`) |
//! | `GET /v1/domains/{name}/identity` | the TPM identity (`Identity`) |
//! | `POST /v1/domains/{name}/activate` | `ActivationRequest` → `ActivationAnswer` |
//!
//! Errors are `{"error": "..."}` with 400 (a malformed nonce or body), 404
//! (no such domain or path), 405 (wrong method), 409 (the domain is not
//! running, with its state), 503 (its vTPM failed), 500 (anything else).
//! Requests for one domain queue on a lock of their own, so concurrent
//! challenges wait for the TPM instead of failing; requests for different
//! domains run side by side on the worker threads.
//!
//! HTTP is `tiny_http`'s: the agent only routes and speaks JSON. It listens
//! on 127.0.0.1 by default; evidence is not secret (quotes, certificates,
//! logs, the manifest), but a listener beyond loopback should be firewalled
//! to the verifiers.

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use vigil_core::v1::evidence::ActivationRequest;
use vigil_core::v1::report::Nonce;

use crate::attest::{self, AttestError};
use crate::domain::DomainDir;
use crate::lifecycle;

/// The default listening address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7600";
/// Worker threads, each serving one request at a time.
pub const WORKERS: usize = 8;
/// The largest request body read (an activation is about 400 bytes).
const MAX_BODY: u64 = 64 * 1024;
/// How often the workers look at the stop flag.
const POLL: Duration = Duration::from_millis(200);

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
}

/// A running agent's shared state.
#[derive(Debug)]
struct Agent {
    state_root: PathBuf,
    /// One lock per domain name: its requests queue on it.
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Fetches the guests' runtime reports (connections kept open).
    guests: attest::GuestClient,
}

/// An answer: status and JSON body.
struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl Answer {
    fn json(status: u16, value: &impl Serialize) -> Self {
        Self {
            status,
            body: serde_json::to_vec_pretty(value).unwrap_or_default(),
        }
    }

    fn error(status: u16, message: impl std::fmt::Display) -> Self {
        Self::json(status, &serde_json::json!({ "error": message.to_string() }))
    }

    fn from_attest(err: &AttestError) -> Self {
        Self::error(err.http_status(), vigil_cli::error_chain(err))
    }
}

/// One entry of `GET /v1/domains`.
#[derive(Serialize)]
struct Listed {
    name: String,
    state: &'static str,
    backend: &'static str,
    url: String,
    vtpm_running: bool,
}

impl Agent {
    fn lock(&self, name: &str) -> Arc<Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(locks.entry(name.to_owned()).or_default())
    }

    fn answer(&self, method: &tiny_http::Method, url: &str, body: &[u8]) -> Answer {
        use tiny_http::Method;
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match segments.as_slice() {
            ["v1", "domains"] => match method {
                Method::Get => self.list(),
                _ => Answer::error(405, "use GET"),
            },
            ["v1", "domains", name, endpoint] => {
                let domain = match DomainDir::new(&self.state_root, name) {
                    Ok(domain) => domain,
                    Err(err) => return Answer::error(404, err),
                };
                let lock = self.lock(name);
                let _queued = lock.lock().unwrap_or_else(PoisonError::into_inner);
                match (*endpoint, method) {
                    ("evidence", Method::Get) => evidence(&domain, query, &self.guests),
                    ("identity", Method::Get) => match attest::identity(&domain) {
                        Ok(identity) => Answer::json(200, &identity),
                        Err(err) => Answer::from_attest(&err),
                    },
                    ("activate", Method::Post) => activate(&domain, body),
                    ("evidence" | "identity", _) => Answer::error(405, "use GET"),
                    ("activate", _) => Answer::error(405, "use POST"),
                    _ => Answer::error(404, format!("no endpoint {endpoint}")),
                }
            }
            _ => Answer::error(404, format!("no such path: {path}")),
        }
    }

    fn list(&self) -> Answer {
        match lifecycle::list(&self.state_root) {
            Ok(domains) => Answer::json(
                200,
                &domains
                    .into_iter()
                    .map(|d| Listed {
                        state: d.state.as_str(),
                        backend: d.record.runtime.backend(),
                        url: d.record.url,
                        vtpm_running: d.vtpm_running,
                        name: d.record.name,
                    })
                    .collect::<Vec<_>>(),
            ),
            Err(err) => Answer::error(500, vigil_cli::error_chain(&err)),
        }
    }
}

/// The nonce of an evidence query: exactly one `nonce=<hex>` parameter.
pub fn parse_nonce_query(query: &str) -> Result<Nonce, String> {
    let mut nonce = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("nonce", value)) if nonce.is_none() => nonce = Some(value),
            Some(("nonce", _)) => return Err("more than one nonce".into()),
            _ => return Err(format!("unknown query parameter {pair:?}")),
        }
    }
    let nonce = nonce.ok_or("missing nonce=<hex>")?;
    Nonce::from_hex(nonce).map_err(|_| {
        format!(
            "the nonce must be {} to {} bytes of hexadecimal",
            vigil_core::v1::report::MIN_NONCE,
            vigil_core::v1::report::MAX_NONCE
        )
    })
}

fn evidence(domain: &DomainDir, query: &str, guests: &attest::GuestClient) -> Answer {
    let nonce = match parse_nonce_query(query) {
        Ok(nonce) => nonce,
        Err(why) => return Answer::error(400, why),
    };
    match attest::evidence(domain, &nonce, guests) {
        Ok(evidence) => Answer {
            status: 200,
            body: evidence.emit(),
        },
        Err(err) => Answer::from_attest(&err),
    }
}

fn activate(domain: &DomainDir, body: &[u8]) -> Answer {
    let request: ActivationRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(err) => return Answer::error(400, format!("not an activation request: {err}")),
    };
    match attest::activate(domain, &request) {
        Ok(answer) => Answer::json(200, &answer),
        Err(err) => Answer::from_attest(&err),
    }
}

/// A bound agent, ready to serve.
pub struct Listener {
    server: Arc<tiny_http::Server>,
    agent: Arc<Agent>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("addr", &self.local_addr())
            .field("state_root", &self.agent.state_root)
            .finish()
    }
}

impl Listener {
    /// Binds `addr` for the domains under `state_root`.
    pub fn bind(addr: SocketAddr, state_root: PathBuf) -> Result<Self, AgentError> {
        let fail = |reason: String| AgentError::Listen { addr, reason };
        let listener = std::net::TcpListener::bind(addr).map_err(|err| fail(err.to_string()))?;
        // Linux gives accepted sockets the listener's TCP_NODELAY. Without
        // it, a kept-alive connection waits for the client's delayed ACK
        // (40 ms) before the tail of every answer larger than one segment
        // (tiny_http writes head and body separately): measured, evidence
        // over a kept-alive connection took 52 ms instead of 8.
        rustix::net::sockopt::set_tcp_nodelay(&listener, true)
            .map_err(|err| fail(format!("setting TCP_NODELAY: {err}")))?;
        let server = tiny_http::Server::from_listener(listener, None)
            .map_err(|err| fail(err.to_string()))?;
        Ok(Self {
            server: Arc::new(server),
            agent: Arc::new(Agent {
                state_root,
                locks: Mutex::new(HashMap::new()),
                guests: attest::GuestClient::default(),
            }),
        })
    }

    /// The address it listens on (the port the OS chose for port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.server.server_addr().to_ip()
    }

    /// Serves until `stop` is set, on [`WORKERS`] threads.
    pub fn serve(self, stop: &AtomicBool) {
        std::thread::scope(|scope| {
            for _ in 0..WORKERS {
                let (server, agent) = (&self.server, &self.agent);
                scope.spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match server.recv_timeout(POLL) {
                            Ok(Some(request)) => handle(agent, request),
                            Ok(None) => {}
                            Err(_) => std::thread::sleep(POLL),
                        }
                    }
                });
            }
        });
    }
}

fn handle(agent: &Agent, mut request: tiny_http::Request) {
    let mut body = Vec::new();
    let read = request
        .as_reader()
        .take(MAX_BODY + 1)
        .read_to_end(&mut body);
    let answer = if read.is_err() {
        Answer::error(400, "the request body could not be read")
    } else if body.len() as u64 > MAX_BODY {
        Answer::error(413, format!("the body is over {MAX_BODY} bytes"))
    } else {
        let (method, url) = (request.method().clone(), request.url().to_owned());
        agent.answer(&method, &url, &body)
    };
    let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..]);
    let mut response = tiny_http::Response::from_data(answer.body).with_status_code(answer.status);
    if let Ok(header) = header {
        response.add_header(header);
    }
    let _ = request.respond(response);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_queries_are_strict() {
        let good = "00112233445566778899aabbccddeeff";
        assert!(parse_nonce_query(&format!("nonce={good}")).is_ok());
        for bad in [
            String::new(),
            "nonce=zz".into(),
            "nonce=00".into(),
            format!("nonce={good}&nonce={good}"),
            format!("nonce={good}&x=1"),
            format!("nonce={}", "ab".repeat(33)),
        ] {
            assert!(parse_nonce_query(&bad).is_err(), "{bad}");
        }
    }
}
