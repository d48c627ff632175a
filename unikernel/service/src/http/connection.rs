//! The per-connection state machine: framing, keep-alive and pipelining.

use std::ops::Range;

use super::buffer::ByteQueue;
use super::{Handler, Method, Persistence, Request, RequestError};

/// Header fields a request may have; one more is answered 431.
pub const MAX_HEADERS: usize = 64;

/// Unsent output above which a connection stops reading and answering
/// requests until the client has taken some of it.
pub const OUTPUT_HIGH_WATER: usize = 1 << 20;

/// The interim response to `Expect: 100-continue`.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The size limits a connection enforces on requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of request line plus header fields (431 above; 414 if the request
    /// line alone does not fit).
    pub max_header_bytes: usize,
    /// Bytes of the request target (414 above).
    pub max_uri_bytes: usize,
    /// Bytes of a body (413 above).
    pub max_body_bytes: usize,
}

/// One client connection's protocol state.
///
/// Feed it what the client sent with [`receive`](Self::receive); send what
/// [`output`](Self::output) holds and report it with
/// [`consume_output`](Self::consume_output). Requests are answered in order as
/// soon as they are complete, as long as less than [`OUTPUT_HIGH_WATER`] bytes
/// wait to be sent; [`process`](Self::process) resumes once they have been.
#[derive(Debug)]
pub struct Connection {
    limits: Limits,
    input: ByteQueue,
    output: ByteQueue,
    state: State,
}

#[derive(Clone, Debug)]
enum State {
    /// Waiting for a complete head; `scanned` input bytes hold no end of head.
    Head { scanned: usize },
    /// Head accepted; waiting for the body.
    Body(Framing),
    /// No more requests: the output is the last thing this connection sends.
    Closed,
}

/// An accepted request head, located in the input buffer.
#[derive(Clone, Debug)]
struct Framing {
    method: Method,
    target: Range<usize>,
    head_len: usize,
    body_len: usize,
    persistence: Persistence,
    /// The client waits for `100 Continue` before sending the body.
    expects_continue: bool,
}

impl Framing {
    fn total_len(&self) -> usize {
        self.head_len + self.body_len
    }
}

impl Connection {
    /// A fresh connection enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            input: ByteQueue::default(),
            output: ByteQueue::default(),
            state: State::Head { scanned: 0 },
        }
    }

    /// A connection that takes no requests and sends only `answer` (a
    /// connection turned away), then closes like any other.
    pub fn refused(limits: Limits, answer: &[u8]) -> Self {
        let mut conn = Self::new(limits);
        conn.output.extend(answer);
        conn.close();
        conn
    }

    /// Takes bytes the client sent and answers every request they complete.
    /// Bytes arriving after the connection closed are discarded.
    pub fn receive(&mut self, bytes: &[u8], handler: &mut impl Handler) {
        if matches!(self.state, State::Closed) {
            return;
        }
        self.input.extend(bytes);
        self.process(handler);
    }

    /// Answers buffered requests until the input holds no complete request,
    /// the output reaches [`OUTPUT_HIGH_WATER`], or the connection closes.
    pub fn process(&mut self, handler: &mut impl Handler) {
        while self.output.len() < OUTPUT_HIGH_WATER {
            let progressed = match self.state.clone() {
                State::Head { scanned } => self.read_head(scanned, handler),
                State::Body(framing) => self.read_body(&framing, handler),
                State::Closed => false,
            };
            if !progressed {
                break;
            }
        }
    }

    /// The client stopped sending. A partial request is dropped unanswered.
    pub fn end_of_input(&mut self) {
        self.close();
    }

    /// The client was idle too long: answers 408 if it was in the middle of a
    /// request, and closes.
    pub fn time_out(&mut self, handler: &mut impl Handler) {
        if self.has_partial_request() {
            self.fail(RequestError::Timeout, handler);
        } else {
            self.close();
        }
    }

    /// Bytes waiting to be sent.
    pub fn output(&self) -> &[u8] {
        self.output.as_slice()
    }

    /// Marks `n` output bytes as sent.
    pub fn consume_output(&mut self, n: usize) {
        self.output.consume(n);
    }

    /// Whether the connection can use more input now: it is open and not held
    /// back by unsent output.
    pub fn wants_input(&self) -> bool {
        !self.is_closed() && self.output.len() < OUTPUT_HIGH_WATER
    }

    /// Whether the connection takes no more requests.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Whether the connection is closed and has sent everything.
    pub fn is_finished(&self) -> bool {
        self.is_closed() && self.output.is_empty()
    }

    /// Whether part of a request has arrived.
    pub fn has_partial_request(&self) -> bool {
        match self.state {
            State::Head { .. } => !self.input.is_empty(),
            State::Body(_) => true,
            State::Closed => false,
        }
    }

    /// Looks for a complete head; returns whether the state moved on.
    fn read_head(&mut self, mut scanned: usize, handler: &mut impl Handler) -> bool {
        // Empty lines before a request are allowed (RFC 9112, section 2.2).
        let empty_lines = leading_empty_lines(self.input.as_slice());
        if empty_lines > 0 {
            self.input.consume(empty_lines);
            scanned = 0;
        }
        let data = self.input.as_slice();
        let limit = self.limits.max_header_bytes;
        // After a first look (which catches garbage early), parsing is only
        // worth it once the head has ended or cannot grow further: this keeps
        // a client trickling bytes from making it quadratic.
        if scanned > 0 && data.len() < limit && !contains_head_end(data, scanned) {
            self.state = State::Head {
                scanned: data.len(),
            };
            return false;
        }
        match parse_head(data, &self.limits) {
            Ok(Some(framing)) => self.accept_head(framing, handler),
            Ok(None) => {
                self.state = State::Head {
                    scanned: data.len(),
                };
                return false;
            }
            Err(error) => self.fail(error, handler),
        }
        true
    }

    fn accept_head(&mut self, framing: Framing, handler: &mut impl Handler) {
        let missing = framing.total_len().saturating_sub(self.input.len());
        if missing > 0 {
            if self.input.try_reserve(missing).is_err() {
                self.fail(RequestError::OutOfMemory, handler);
                return;
            }
            if framing.expects_continue {
                self.output.extend(CONTINUE);
            }
        }
        self.state = State::Body(framing);
    }

    /// Answers the request once its body is complete; returns whether it did.
    fn read_body(&mut self, framing: &Framing, handler: &mut impl Handler) -> bool {
        let data = self.input.as_slice();
        if data.len() < framing.total_len() {
            return false;
        }
        let request = Request {
            method: framing.method,
            target: data.get(framing.target.clone()).unwrap_or_default(),
            body: data
                .get(framing.head_len..framing.total_len())
                .unwrap_or_default(),
            persistence: framing.persistence,
        };
        handler.respond(&request, self.output.writer());
        self.input.consume(framing.total_len());
        if framing.persistence.keeps_open() {
            self.state = State::Head { scanned: 0 };
        } else {
            self.close();
        }
        true
    }

    /// Answers a refused request and closes.
    fn fail(&mut self, error: RequestError, handler: &mut impl Handler) {
        handler.reject(error, self.output.writer());
        self.close();
    }

    fn close(&mut self) {
        self.state = State::Closed;
        self.input.clear();
    }
}

/// Length of the empty lines (`\r\n` or `\n`) at the start of `data`.
fn leading_empty_lines(data: &[u8]) -> usize {
    let mut len = 0;
    loop {
        match data.get(len..) {
            Some([b'\n', ..]) => len += 1,
            Some([b'\r', b'\n', ..]) => len += 2,
            _ => return len,
        }
    }
}

/// Whether `data`, of which the first `scanned` bytes were searched before,
/// contains the blank line that ends a head.
fn contains_head_end(data: &[u8], scanned: usize) -> bool {
    // A terminator may straddle the old end: look back two bytes.
    let window = data.get(scanned.saturating_sub(2)..).unwrap_or_default();
    window
        .windows(2)
        .any(|pair| pair == b"\n\n" || pair == b"\n\r")
}

/// Parses a head at the start of `data`: `Ok(None)` if it is incomplete but
/// may still become valid, its framing if it is complete and acceptable.
fn parse_head(data: &[u8], limits: &Limits) -> Result<Option<Framing>, RequestError> {
    let window = data.get(..limits.max_header_bytes).unwrap_or(data);
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(window) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if window.len() < limits.max_header_bytes => return Ok(None),
        Ok(httparse::Status::Partial) if window.contains(&b'\n') => {
            return Err(RequestError::HeadTooLarge);
        }
        Ok(httparse::Status::Partial) => return Err(RequestError::UriTooLong),
        Err(httparse::Error::TooManyHeaders) => return Err(RequestError::TooManyHeaders),
        Err(_) => return Err(RequestError::Malformed),
    };
    let (Some(method), Some(path), Some(version)) = (request.method, request.path, request.version)
    else {
        return Err(RequestError::Malformed);
    };
    if path.len() > limits.max_uri_bytes {
        return Err(RequestError::UriTooLong);
    }
    // The request line is `method SP target SP version` with single spaces.
    let target = method.len() + 1..method.len() + 1 + path.len();
    if data.get(target.clone()) != Some(path.as_bytes()) {
        return Err(RequestError::Malformed);
    }
    let fields = HeaderFields::scan(request.headers)?;
    let method = Method::parse(method);
    let body_len = fields.body_len(method, limits)?;
    Ok(Some(Framing {
        method,
        target,
        head_len,
        body_len,
        persistence: fields.persistence(version),
        expects_continue: version == 1 && fields.expect_continue,
    }))
}

/// What the connection needs to know from the header fields.
#[derive(Default)]
struct HeaderFields {
    content_length: Option<u64>,
    transfer_encoding: bool,
    close: bool,
    keep_alive: bool,
    expect_continue: bool,
}

impl HeaderFields {
    fn scan(headers: &[httparse::Header<'_>]) -> Result<Self, RequestError> {
        let mut fields = Self::default();
        for header in headers {
            let name = header.name;
            if name.eq_ignore_ascii_case("content-length") {
                let length = parse_content_length(header.value)?;
                if fields.content_length.is_some_and(|seen| seen != length) {
                    return Err(RequestError::BadContentLength);
                }
                fields.content_length = Some(length);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                fields.transfer_encoding = true;
            } else if name.eq_ignore_ascii_case("connection") {
                for option in header.value.split(|&byte| byte == b',') {
                    let option = option.trim_ascii();
                    fields.close |= option.eq_ignore_ascii_case(b"close");
                    fields.keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
                }
            } else if name.eq_ignore_ascii_case("expect") {
                fields.expect_continue = header
                    .value
                    .trim_ascii()
                    .eq_ignore_ascii_case(b"100-continue");
            }
        }
        Ok(fields)
    }

    /// The body length the fields announce for a `method` request.
    fn body_len(&self, method: Method, limits: &Limits) -> Result<usize, RequestError> {
        match (self.content_length, self.transfer_encoding) {
            (Some(_), true) => Err(RequestError::AmbiguousLength),
            (None, true) => Err(RequestError::TransferEncoding),
            (None, false) if method == Method::Put => Err(RequestError::LengthRequired),
            (None, false) => Ok(0),
            (Some(length), false) => usize::try_from(length)
                .ok()
                .filter(|&length| length <= limits.max_body_bytes)
                .ok_or(RequestError::BodyTooLarge),
        }
    }

    /// HTTP/1.1 stays open unless asked to close; HTTP/1.0 closes unless asked
    /// to stay open.
    fn persistence(&self, version: u8) -> Persistence {
        match (version, self.close, self.keep_alive) {
            (_, true, _) => Persistence::Close,
            (0, false, true) => Persistence::KeepAlive,
            (0, false, false) => Persistence::Close,
            _ => Persistence::Persistent,
        }
    }
}

/// A `Content-Length` value: plain ASCII digits. Values beyond `u64` saturate,
/// which the body limit then refuses.
fn parse_content_length(value: &[u8]) -> Result<u64, RequestError> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(RequestError::BadContentLength);
    }
    Ok(value.iter().fold(0u64, |length, &digit| {
        length
            .saturating_mul(10)
            .saturating_add(u64::from(digit - b'0'))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{Response, Status};
    use crate::wire::{Parsed, parse_responses};

    const LIMITS: Limits = Limits {
        max_header_bytes: 256,
        max_uri_bytes: 64,
        max_body_bytes: 100,
    };

    /// Answers every request with its body and remembers it.
    #[derive(Default)]
    struct Echo {
        requests: Vec<(Method, String, Vec<u8>)>,
        /// Extra body bytes per response, to fill the output.
        padding: usize,
    }

    impl Handler for Echo {
        fn respond(&mut self, request: &Request<'_>, out: &mut Vec<u8>) {
            let target = String::from_utf8(request.target.to_vec()).unwrap();
            self.requests
                .push((request.method, target, request.body.to_vec()));
            let mut body = request.body.to_vec();
            body.resize(body.len() + self.padding, b'.');
            Response::new(Status::Ok, "text/plain", &body).write_to(
                out,
                request.method == Method::Head,
                request.persistence,
            );
        }

        fn reject(&mut self, error: RequestError, out: &mut Vec<u8>) {
            Response::new(error.status(), "text/plain", error.message().as_bytes()).write_to(
                out,
                false,
                Persistence::Close,
            );
        }
    }

    struct Outcome {
        responses: Vec<Parsed>,
        echo: Echo,
        conn: Connection,
    }

    /// Feeds `input` in pieces of `chunk` bytes and collects all output.
    fn feed(conn: &mut Connection, echo: &mut Echo, input: &[u8], chunk: usize) -> Vec<u8> {
        let mut output = Vec::new();
        for piece in input.chunks(chunk) {
            conn.receive(piece, echo);
            output.extend_from_slice(conn.output());
            conn.consume_output(conn.output().len());
        }
        output
    }

    fn exchange_in_chunks(input: &[u8], chunk: usize) -> Outcome {
        exchange_with(LIMITS, Echo::default(), input, chunk)
    }

    fn exchange_with(limits: Limits, mut echo: Echo, input: &[u8], chunk: usize) -> Outcome {
        let mut conn = Connection::new(limits);
        let output = feed(&mut conn, &mut echo, input, chunk);
        let responses = parse_responses(&output).unwrap();
        Outcome {
            responses,
            echo,
            conn,
        }
    }

    fn exchange(input: &str) -> Outcome {
        exchange_in_chunks(input.as_bytes(), input.len().max(1))
    }

    fn statuses(outcome: &Outcome) -> Vec<u16> {
        outcome.responses.iter().map(|r| r.status).collect()
    }

    #[test]
    fn answers_a_request_and_stays_open() {
        let outcome = exchange("GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(statuses(&outcome), [200]);
        assert_eq!(outcome.responses[0].header("connection"), None);
        assert_eq!(outcome.echo.requests, [(Method::Get, "/a".into(), vec![])]);
        assert!(!outcome.conn.is_closed());
        assert!(!outcome.conn.has_partial_request());
    }

    #[test]
    fn answers_pipelined_requests_in_order_however_they_are_split() {
        let input = "GET /1 HTTP/1.1\r\n\r\nPUT /2 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc\
                     HEAD /3 HTTP/1.1\r\n\r\nDELETE /4 HTTP/1.1\r\n\r\n";
        for chunk in [1, 2, 7, input.len()] {
            let echo = Echo {
                padding: 5,
                ..Echo::default()
            };
            let outcome = exchange_with(LIMITS, echo, input.as_bytes(), chunk);
            assert_eq!(statuses(&outcome), [200, 200, 200, 200], "chunk {chunk}");
            let targets: Vec<_> = outcome.echo.requests.iter().map(|r| r.1.as_str()).collect();
            assert_eq!(targets, ["/1", "/2", "/3", "/4"]);
            assert_eq!(outcome.responses[1].body, b"abc.....");
            assert!(outcome.responses[2].head_only);
            assert_eq!(outcome.responses[2].header("content-length"), Some("5"));
        }
    }

    #[test]
    fn reads_and_passes_on_bodies_of_any_method() {
        let outcome =
            exchange("GET /x HTTP/1.1\r\nContent-Length: 4\r\n\r\nbodyGET /y HTTP/1.1\r\n\r\n");
        assert_eq!(statuses(&outcome), [200, 200]);
        assert_eq!(outcome.echo.requests[0].2, b"body");
        assert_eq!(outcome.echo.requests[1].1, "/y");
    }

    #[test]
    fn waits_for_the_whole_body() {
        let mut conn = Connection::new(LIMITS);
        let mut echo = Echo::default();
        let head = b"PUT /k HTTP/1.1\r\nContent-Length: 10\r\n\r\n01234";
        assert!(feed(&mut conn, &mut echo, head, head.len()).is_empty());
        assert!(conn.has_partial_request());
        let output = feed(&mut conn, &mut echo, b"56789", 5);
        assert_eq!(parse_responses(&output).unwrap()[0].body, b"0123456789");
    }

    #[test]
    fn skips_empty_lines_before_a_request() {
        let outcome = exchange("\r\n\n\r\nGET / HTTP/1.1\r\n\r\n");
        assert_eq!(statuses(&outcome), [200]);
    }

    #[test]
    fn accepts_bare_line_feeds() {
        assert_eq!(statuses(&exchange("GET / HTTP/1.1\nHost: x\n\n")), [200]);
    }

    #[test]
    fn http11_closes_when_asked() {
        let outcome =
            exchange("GET / HTTP/1.1\r\nConnection: Close\r\n\r\nGET /ignored HTTP/1.1\r\n\r\n");
        assert_eq!(statuses(&outcome), [200]);
        assert!(outcome.responses[0].closes());
        assert!(outcome.conn.is_finished());
        assert_eq!(outcome.echo.requests.len(), 1);
    }

    #[test]
    fn http10_closes_unless_asked_to_keep_alive() {
        let outcome = exchange("GET / HTTP/1.0\r\n\r\n");
        assert!(outcome.responses[0].closes());
        assert!(outcome.conn.is_closed());

        let outcome = exchange(
            "GET /1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.0\r\nconnection: foo, Keep-Alive\r\n\r\n",
        );
        assert_eq!(statuses(&outcome), [200, 200]);
        for response in &outcome.responses {
            assert_eq!(response.header("connection"), Some("keep-alive"));
        }
        assert!(!outcome.conn.is_closed());
    }

    #[test]
    fn sends_100_continue_before_the_body() {
        let mut conn = Connection::new(LIMITS);
        let mut echo = Echo::default();
        let head = b"PUT /k HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(feed(&mut conn, &mut echo, head, head.len()), CONTINUE);
        let output = feed(&mut conn, &mut echo, b"42", 2);
        assert_eq!(parse_responses(&output).unwrap()[0].body, b"42");
    }

    #[test]
    fn skips_100_continue_when_it_is_moot() {
        // The body is already here.
        let outcome =
            exchange("PUT /k HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n42");
        assert_eq!(statuses(&outcome), [200]);
        // No body at all.
        let outcome = exchange("GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n");
        assert_eq!(statuses(&outcome), [200]);
        // HTTP/1.0 has no 100 Continue.
        let outcome =
            exchange("PUT /k HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n");
        assert!(outcome.responses.is_empty());
        // The body is refused.
        let outcome =
            exchange("PUT /k HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 101\r\n\r\n");
        assert_eq!(statuses(&outcome), [413]);
    }

    /// Framing errors: the status, and the connection closes.
    fn assert_refused(input: &str, status: u16) {
        let outcome = exchange(input);
        assert_eq!(statuses(&outcome), [status], "{input:?}");
        assert!(outcome.responses[0].closes(), "{input:?}");
        assert!(outcome.conn.is_finished(), "{input:?}");
        assert!(outcome.echo.requests.is_empty(), "{input:?}");
    }

    #[test]
    fn refuses_malformed_heads() {
        for input in [
            "GARBAGE\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
            "GET  / HTTP/1.1\r\n\r\n",
            "GET /\x01 HTTP/1.1\r\n\r\n",
            "\x16\x03\x01\x02\x00\x01\x00\x01\x7f\x03\x03",
        ] {
            assert_refused(input, 400);
        }
    }

    #[test]
    fn checks_content_length() {
        for input in [
            "PUT / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            "PUT / HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
            "PUT / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "PUT / HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\n",
            "PUT / HTTP/1.1\r\nContent-Length: \r\n\r\n",
            "PUT / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "PUT / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert_refused(input, 400);
        }
        let outcome =
            exchange("PUT / HTTP/1.1\r\nContent-Length: 2\r\ncontent-length: 2\r\n\r\nok");
        assert_eq!(statuses(&outcome), [200], "repeated equal lengths are fine");
    }

    #[test]
    fn requires_a_length() {
        assert_refused("PUT / HTTP/1.1\r\n\r\n", 411);
        assert_refused("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411);
    }

    #[test]
    fn refuses_large_bodies_without_reading_them() {
        assert_refused("PUT / HTTP/1.1\r\nContent-Length: 101\r\n\r\n", 413);
        assert_refused(
            "PUT / HTTP/1.1\r\nContent-Length: 99999999999999999999999999\r\n\r\n",
            413,
        );
        let outcome = exchange("PUT / HTTP/1.1\r\nContent-Length: 100\r\n\r\n");
        assert!(
            outcome.responses.is_empty(),
            "at the limit: waits for the body"
        );
    }

    #[test]
    fn limits_the_target() {
        let at_limit = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(63));
        assert_eq!(statuses(&exchange(&at_limit)), [200]);
        assert_refused(&format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(64)), 414);
    }

    #[test]
    fn limits_the_head() {
        let head = |fill: usize| format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(fill));
        // 16 + 3 + fill + 2 + 2 bytes.
        assert_eq!(statuses(&exchange(&head(256 - 23))), [200]);
        assert_refused(&head(256 - 22), 431);
        // A head that never ends.
        assert_refused(&format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(300)), 431);
        // A request line that never ends.
        assert_refused(&format!("GET /{}", "a".repeat(300)), 414);
    }

    #[test]
    fn limits_the_number_of_header_fields() {
        let request = |fields: usize| {
            let mut request = String::from("GET / HTTP/1.1\r\n");
            for _ in 0..fields {
                request.push_str("A:\r\n");
            }
            request + "\r\n"
        };
        let limits = Limits {
            max_header_bytes: 1024,
            ..LIMITS
        };
        let status = |fields: usize| {
            let outcome = exchange_with(limits, Echo::default(), request(fields).as_bytes(), 1024);
            statuses(&outcome)
        };
        assert_eq!(status(MAX_HEADERS), [200]);
        assert_eq!(status(MAX_HEADERS + 1), [431]);
    }

    #[test]
    fn discards_input_after_closing() {
        let mut conn = Connection::new(LIMITS);
        let mut echo = Echo::default();
        feed(&mut conn, &mut echo, b"GARBAGE\r\n\r\n", 100);
        assert!(conn.is_finished());
        assert!(feed(&mut conn, &mut echo, b"GET / HTTP/1.1\r\n\r\n", 100).is_empty());
    }

    #[test]
    fn times_out_with_408_only_mid_request() {
        let mut conn = Connection::new(LIMITS);
        let mut echo = Echo::default();
        feed(&mut conn, &mut echo, b"GET / HTTP/1.1\r\nHost:", 100);
        conn.time_out(&mut echo);
        let responses = parse_responses(conn.output()).unwrap();
        assert_eq!(responses[0].status, 408);
        assert!(responses[0].closes());

        let mut idle = Connection::new(LIMITS);
        feed(&mut idle, &mut echo, b"GET / HTTP/1.1\r\n\r\n\r\n", 100);
        idle.time_out(&mut echo);
        assert!(idle.is_finished(), "empty lines are no partial request");
    }

    #[test]
    fn drops_a_partial_request_at_end_of_input() {
        let mut conn = Connection::new(LIMITS);
        let mut echo = Echo::default();
        feed(&mut conn, &mut echo, b"GET / HTTP/1.1\r\n", 100);
        conn.end_of_input();
        assert!(conn.is_finished());
    }

    #[test]
    fn a_refused_connection_sends_its_answer_and_takes_no_requests() {
        let mut conn = Connection::refused(LIMITS, b"busy");
        let mut echo = Echo::default();
        assert!(conn.is_closed() && !conn.wants_input());
        conn.receive(b"GET / HTTP/1.1\r\n\r\n", &mut echo);
        assert!(echo.requests.is_empty());
        assert_eq!(conn.output(), b"busy");
        conn.consume_output(4);
        assert!(conn.is_finished());
    }

    #[test]
    fn holds_back_requests_while_output_is_above_the_high_water_mark() {
        let mut conn = Connection::new(LIMITS);
        let mut echo = Echo {
            padding: 400 << 10,
            ..Echo::default()
        };
        conn.receive(&b"GET / HTTP/1.1\r\n\r\n".repeat(5), &mut echo);
        assert_eq!(echo.requests.len(), 3, "stops once above 1 MiB");
        assert!(!conn.wants_input());
        conn.process(&mut echo);
        assert_eq!(echo.requests.len(), 3, "still held back");
        let mut output = conn.output().to_vec();
        conn.consume_output(output.len());
        assert!(conn.wants_input());
        conn.process(&mut echo);
        assert_eq!(echo.requests.len(), 5);
        output.extend_from_slice(conn.output());
        assert_eq!(parse_responses(&output).unwrap().len(), 5);
    }
}
