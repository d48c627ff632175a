//! The I/O-free HTTP/1.1 engine.
//!
//! A [`Connection`] is fed the bytes a client sent and produces the bytes to
//! send back; the caller owns the socket. Everything about the protocol lives
//! here: request framing and its limits, keep-alive, pipelining and
//! `Expect: 100-continue`. What a request *means* is up to the [`Handler`].

mod buffer;
mod connection;
mod response;

pub use connection::{Connection, Limits, MAX_HEADERS, OUTPUT_HIGH_WATER};
pub use response::{Response, Status};

/// The request methods the service tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`: answered like `GET`, without the body.
    Head,
    /// `PUT`
    Put,
    /// `DELETE`
    Delete,
    /// Any other (syntactically valid) method.
    Other,
}

impl Method {
    /// Classifies a method token (case-sensitive, as methods are).
    pub fn parse(token: &str) -> Self {
        match token {
            "GET" => Self::Get,
            "HEAD" => Self::Head,
            "PUT" => Self::Put,
            "DELETE" => Self::Delete,
            _ => Self::Other,
        }
    }

    /// The method token; `"other"` for methods the service does not know.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Head => "HEAD",
            Self::Put => "PUT",
            Self::Delete => "DELETE",
            Self::Other => "other",
        }
    }
}

/// What happens to the connection after a response, and how the response
/// says so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persistence {
    /// HTTP/1.1 default: the connection stays open, nothing to announce.
    Persistent,
    /// HTTP/1.0 with `Connection: keep-alive`: stays open, echoed in the response.
    KeepAlive,
    /// The server closes after this response (`Connection: close`).
    Close,
}

impl Persistence {
    /// Whether the connection stays open after the response.
    pub const fn keeps_open(self) -> bool {
        !matches!(self, Self::Close)
    }
}

/// A complete request, borrowed from the connection's input buffer.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The method.
    pub method: Method,
    /// The request target exactly as sent (path and query; not decoded).
    pub target: &'a [u8],
    /// The body (`Content-Length` bytes; empty without one).
    pub body: &'a [u8],
    /// Whether and how the connection stays open after the response.
    pub persistence: Persistence,
}

/// A request the connection refuses before it reaches the handler.
///
/// The request's framing cannot be trusted (or its body was not read), so the
/// connection is closed after the response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// The head is not valid HTTP/1.x (400).
    Malformed,
    /// A `Content-Length` that is not plain digits, or several that differ (400).
    BadContentLength,
    /// Both `Transfer-Encoding` and `Content-Length` (400).
    AmbiguousLength,
    /// `Transfer-Encoding` without `Content-Length`: chunked bodies are not supported (411).
    TransferEncoding,
    /// A `PUT` without `Content-Length` (411).
    LengthRequired,
    /// `Content-Length` above the body limit (413).
    BodyTooLarge,
    /// The request target, or the unfinished request line, exceeds its limit (414).
    UriTooLong,
    /// The head exceeds the header limit (431).
    HeadTooLarge,
    /// More than [`MAX_HEADERS`] header fields (431).
    TooManyHeaders,
    /// The client went quiet in the middle of a request (408).
    Timeout,
    /// No memory for the body buffer (503).
    OutOfMemory,
}

impl RequestError {
    /// The status the response carries.
    pub const fn status(self) -> Status {
        match self {
            Self::Malformed | Self::BadContentLength | Self::AmbiguousLength => Status::BadRequest,
            Self::TransferEncoding | Self::LengthRequired => Status::LengthRequired,
            Self::BodyTooLarge => Status::ContentTooLarge,
            Self::UriTooLong => Status::UriTooLong,
            Self::HeadTooLarge | Self::TooManyHeaders => Status::HeaderFieldsTooLarge,
            Self::Timeout => Status::RequestTimeout,
            Self::OutOfMemory => Status::ServiceUnavailable,
        }
    }

    /// A human-readable explanation for the client.
    pub const fn message(self) -> &'static str {
        match self {
            Self::Malformed => "malformed request",
            Self::BadContentLength => "invalid Content-Length",
            Self::AmbiguousLength => "Transfer-Encoding and Content-Length must not be combined",
            Self::TransferEncoding => "Transfer-Encoding is not supported; send a Content-Length",
            Self::LengthRequired => "PUT requires a Content-Length",
            Self::BodyTooLarge => "request body too large",
            Self::UriTooLong => "request target too long",
            Self::HeadTooLarge => "request header fields too large",
            Self::TooManyHeaders => "too many request header fields",
            Self::Timeout => "request timed out",
            Self::OutOfMemory => "out of memory",
        }
    }
}

/// The application behind the connections: turns requests into responses.
pub trait Handler {
    /// Appends the complete response to `request` to `out`.
    fn respond(&mut self, request: &Request<'_>, out: &mut Vec<u8>);

    /// Appends the response to a refused request to `out`; it must carry
    /// `Connection: close` (see [`Persistence::Close`]).
    fn reject(&mut self, error: RequestError, out: &mut Vec<u8>);
}
