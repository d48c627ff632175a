//! The service: routing, the key-value store, metrics and every response body.

mod home;
pub mod integrity;
pub mod kv;
pub mod metrics;
mod route;
pub mod store;

use std::fmt::Display;
use std::io;
use std::time::Instant;

use serde::{Serialize, Serializer};
use vigil_core::v1::config::{LogLevel, ServiceConfig};

use self::integrity::{Integrity, ReportRefusal};
use self::kv::{ListQuery, Page};
use self::metrics::{Gauges, Metrics};
pub use self::route::Route;
use self::store::{Store, Stored};
use crate::http::{Handler, Method, Persistence, Request, RequestError, Response, Status};
use crate::log::{Logger, Throttle};
use crate::{json, setting};

/// The smallest buffer a JSON body is first rendered into; it doubles up to
/// [`MAX_JSON_BYTES`] until the body fits.
const MIN_JSON_BYTES: usize = 256;

/// The largest JSON body the service renders (a full key page is about 1 MiB).
const MAX_JSON_BYTES: usize = 8 << 20;

/// The body of a 500, for when rendering the real body failed.
const INTERNAL_ERROR: &[u8] = br#"{"error":"internal error"}"#;

/// The application state and request handler.
///
/// One `App` serves all connections of a server. It is the place for state
/// that responses depend on (including handles shared with other threads).
#[derive(Debug)]
pub struct App {
    config: ServiceConfig,
    started: Instant,
    log: Logger,
    store: Store,
    metrics: Metrics,
    /// The watchdog's state and the report key.
    integrity: Integrity,
    /// Reused buffer that bodies are rendered into.
    body: Vec<u8>,
    store_full_warnings: Throttle,
}

impl App {
    /// A fresh service with an empty store, and no watchdog or report key
    /// (an unsealed image).
    pub fn new(config: ServiceConfig) -> Self {
        Self::with_integrity(config, Integrity::default())
    }

    /// A fresh service with an empty store that reports `integrity`.
    pub fn with_integrity(config: ServiceConfig, integrity: Integrity) -> Self {
        Self {
            integrity,
            started: Instant::now(),
            log: Logger::new(config.log_level),
            store: Store::new(setting(config.max_keys), setting(config.store_bytes)),
            metrics: Metrics::default(),
            body: Vec::new(),
            store_full_warnings: Throttle::default(),
            config,
        }
    }

    /// The configuration the service runs with.
    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// The service's logger.
    pub fn logger(&self) -> Logger {
        self.log
    }

    /// The counters, for the event loop to count bytes and connections.
    pub fn metrics_mut(&mut self) -> &mut Metrics {
        &mut self.metrics
    }

    /// The key-value store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Finds the route of `request` and produces its response.
    fn dispatch(&mut self, request: &Request<'_>) -> (Route, Response<'_>) {
        let Some((path, query)) = split_target(request.target) else {
            let response = error(
                &mut self.body,
                Status::BadRequest,
                &"request target must be a path (origin form)",
            );
            return (Route::Other, response);
        };
        let (route, key) = Route::resolve(path);
        let degraded = if route.degrades() {
            self.integrity.degraded()
        } else {
            None
        };
        let response = match route {
            Route::Other => error(&mut self.body, Status::NotFound, &"no such resource"),
            _ if !route.methods().contains(&request.method) => {
                method_not_allowed(&mut self.body, route)
            }
            _ if degraded.is_some() => {
                let reason = degraded.map(|v| v.to_string()).unwrap_or_default();
                error(
                    &mut self.body,
                    Status::ServiceUnavailable,
                    &format_args!("{reason}; the service is degraded until reboot"),
                )
            }
            Route::Home => self.home(),
            Route::Health => json(&mut self.body, Status::Ok, &StatusBody { status: "ok" }),
            Route::Metrics => self.metrics_page(),
            Route::Keys => self.list(query),
            Route::Key => self.entry(request.method, key, request.body),
            Route::Integrity => json(&mut self.body, Status::Ok, &self.integrity.status()),
            Route::Report => match self.integrity.report(query) {
                Ok(report) => json(&mut self.body, Status::Ok, &report),
                Err(ReportRefusal::BadQuery(message)) => {
                    error(&mut self.body, Status::BadRequest, &message)
                }
                Err(ReportRefusal::Unavailable(message)) => {
                    error(&mut self.body, Status::ServiceUnavailable, &message)
                }
            },
        };
        (route, response)
    }

    fn gauges(&self) -> Gauges {
        Gauges {
            uptime: self.started.elapsed(),
            kv_keys: self.store.len(),
            kv_bytes: self.store.bytes(),
        }
    }

    fn home(&mut self) -> Response<'_> {
        let page = home::Status {
            gauges: self.gauges(),
            store_limit: self.config.store_bytes,
            connections: self.metrics.connections_open(),
            requests: self.metrics.requests_total(),
        };
        text(&mut self.body, home::CONTENT_TYPE, |w| page.render(w))
    }

    fn metrics_page(&mut self) -> Response<'_> {
        let gauges = self.gauges();
        let integrity = self.integrity.gauges();
        let metrics = &self.metrics;
        text(&mut self.body, metrics::CONTENT_TYPE, |w| {
            metrics.render(&gauges, integrity.as_ref(), w)
        })
    }

    fn list(&mut self, query: &[u8]) -> Response<'_> {
        match ListQuery::parse(query, setting(self.config.max_key_bytes)) {
            Ok(query) => json(&mut self.body, Status::Ok, &Page::new(&self.store, query)),
            Err(message) => error(&mut self.body, Status::BadRequest, &message),
        }
    }

    /// `/v1/kv/{key}`.
    fn entry(&mut self, method: Method, key: &[u8], body: &[u8]) -> Response<'_> {
        let Some(key) = kv::parse_key(key, setting(self.config.max_key_bytes)) else {
            let max = self.config.max_key_bytes;
            return error(
                &mut self.body,
                Status::BadRequest,
                &format_args!("invalid key: use 1 to {max} bytes of A-Z a-z 0-9 . _ ~ -"),
            );
        };
        match method {
            Method::Get | Method::Head => match self.store.get(key) {
                Some(value) => Response::json(Status::Ok, value),
                None => error(&mut self.body, Status::NotFound, &"no such key"),
            },
            Method::Put => self.put(key, body),
            Method::Delete if self.store.remove(key) => Response::no_content(),
            Method::Delete => error(&mut self.body, Status::NotFound, &"no such key"),
            Method::Other => method_not_allowed(&mut self.body, Route::Key),
        }
    }

    fn put(&mut self, key: &str, value: &[u8]) -> Response<'_> {
        if let Err(problem) = json::validate(value) {
            return error(
                &mut self.body,
                Status::BadRequest,
                &format_args!("request body is {problem}"),
            );
        }
        match self.store.put(key, value) {
            Ok(Stored::Created) => json(
                &mut self.body,
                Status::Created,
                &StatusBody { status: "created" },
            ),
            Ok(Stored::Replaced) => json(
                &mut self.body,
                Status::Ok,
                &StatusBody { status: "replaced" },
            ),
            Err(problem) => {
                self.log.warn_throttled(
                    &mut self.store_full_warnings,
                    Instant::now(),
                    format_args!("refusing to store `{key}`: {problem}"),
                );
                error(&mut self.body, Status::InsufficientStorage, &problem)
            }
        }
    }
}

impl Handler for App {
    fn respond(&mut self, request: &Request<'_>, out: &mut Vec<u8>) {
        let (route, response) = self.dispatch(request);
        let status = response.status;
        response.write_to(out, request.method == Method::Head, request.persistence);
        self.metrics.record_request(route, status);
        self.integrity.count_response();
        self.log.log(
            LogLevel::Debug,
            format_args!(
                "{} {} -> {}",
                request.method.as_str(),
                request.target.escape_ascii(),
                status.code()
            ),
        );
    }

    fn reject(&mut self, problem: RequestError, out: &mut Vec<u8>) {
        let status = problem.status();
        error(&mut self.body, status, &problem.message()).write_to(out, false, Persistence::Close);
        self.metrics.record_request(Route::Other, status);
        self.integrity.count_response();
        self.log.log(
            LogLevel::Debug,
            format_args!(
                "refused request -> {}: {}",
                status.code(),
                problem.message()
            ),
        );
    }
}

/// Splits an origin-form request target into path and query; `None` for
/// other forms (`*`, absolute URIs).
fn split_target(target: &[u8]) -> Option<(&[u8], &[u8])> {
    if !target.starts_with(b"/") {
        return None;
    }
    Some(match target.iter().position(|&byte| byte == b'?') {
        Some(at) => (target.get(..at)?, target.get(at + 1..)?),
        None => (target, &[]),
    })
}

/// `{"status":"..."}`
#[derive(Serialize)]
struct StatusBody {
    status: &'static str,
}

/// `{"error":"..."}`, with the message formatted straight into the body.
#[derive(Serialize)]
struct ErrorBody<'a> {
    #[serde(serialize_with = "serialize_display")]
    error: &'a dyn Display,
}

fn serialize_display<S: Serializer>(
    value: &&dyn Display,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// `405` listing the methods `route` answers.
fn method_not_allowed(buf: &mut Vec<u8>, route: Route) -> Response<'_> {
    error(buf, Status::MethodNotAllowed, &"method not allowed").with_allow(route.methods())
}

/// A JSON error response.
fn error<'b>(buf: &'b mut Vec<u8>, status: Status, message: &dyn Display) -> Response<'b> {
    json(buf, status, &ErrorBody { error: message })
}

/// A JSON response rendered into `buf`.
fn json<'b>(buf: &'b mut Vec<u8>, status: Status, value: &impl Serialize) -> Response<'b> {
    match serialize(buf, value) {
        Some(body) => Response::json(status, body),
        None => Response::json(Status::InternalServerError, INTERNAL_ERROR),
    }
}

/// Serializes `value` into `buf`, growing it as needed; `None` if the JSON
/// would exceed [`MAX_JSON_BYTES`].
fn serialize<'b>(buf: &'b mut Vec<u8>, value: &impl Serialize) -> Option<&'b [u8]> {
    let mut size = MIN_JSON_BYTES;
    loop {
        if buf.len() < size {
            buf.resize(size, 0);
        }
        match serde_json_core::to_slice(value, buf.get_mut(..size)?) {
            Ok(len) => return buf.get(..len),
            Err(serde_json_core::ser::Error::BufferFull) if size < MAX_JSON_BYTES => size *= 2,
            Err(_) => return None,
        }
    }
}

/// A `200` text response rendered into `buf` by `render`.
fn text<'b>(
    buf: &'b mut Vec<u8>,
    content_type: &'static str,
    render: impl FnOnce(&mut Vec<u8>) -> io::Result<()>,
) -> Response<'b> {
    buf.clear();
    match render(buf) {
        Ok(()) => Response::new(Status::Ok, content_type, buf),
        Err(_) => Response::json(Status::InternalServerError, INTERNAL_ERROR),
    }
}

#[cfg(test)]
mod tests;
