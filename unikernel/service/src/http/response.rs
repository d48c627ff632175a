//! Response statuses and serialization.

use super::{Method, Persistence};

/// Every status the service sends (besides the interim `100 Continue`).
///
/// The set is closed so that metrics labelled by status stay bounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// 200
    Ok,
    /// 201
    Created,
    /// 204
    NoContent,
    /// 400
    BadRequest,
    /// 404
    NotFound,
    /// 405
    MethodNotAllowed,
    /// 408
    RequestTimeout,
    /// 411
    LengthRequired,
    /// 413
    ContentTooLarge,
    /// 414
    UriTooLong,
    /// 431
    HeaderFieldsTooLarge,
    /// 500
    InternalServerError,
    /// 503
    ServiceUnavailable,
    /// 507
    InsufficientStorage,
}

impl Status {
    /// All statuses, in the order of [`index`](Self::index).
    pub const ALL: [Self; 14] = [
        Self::Ok,
        Self::Created,
        Self::NoContent,
        Self::BadRequest,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::RequestTimeout,
        Self::LengthRequired,
        Self::ContentTooLarge,
        Self::UriTooLong,
        Self::HeaderFieldsTooLarge,
        Self::InternalServerError,
        Self::ServiceUnavailable,
        Self::InsufficientStorage,
    ];

    /// Position in [`ALL`](Self::ALL), for tables indexed by status.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The numeric code.
    pub const fn code(self) -> u16 {
        match self {
            Self::Ok => 200,
            Self::Created => 201,
            Self::NoContent => 204,
            Self::BadRequest => 400,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::RequestTimeout => 408,
            Self::LengthRequired => 411,
            Self::ContentTooLarge => 413,
            Self::UriTooLong => 414,
            Self::HeaderFieldsTooLarge => 431,
            Self::InternalServerError => 500,
            Self::ServiceUnavailable => 503,
            Self::InsufficientStorage => 507,
        }
    }

    /// The reason phrase (RFC 9110 wording).
    pub const fn reason(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Created => "Created",
            Self::NoContent => "No Content",
            Self::BadRequest => "Bad Request",
            Self::NotFound => "Not Found",
            Self::MethodNotAllowed => "Method Not Allowed",
            Self::RequestTimeout => "Request Timeout",
            Self::LengthRequired => "Length Required",
            Self::ContentTooLarge => "Content Too Large",
            Self::UriTooLong => "URI Too Long",
            Self::HeaderFieldsTooLarge => "Request Header Fields Too Large",
            Self::InternalServerError => "Internal Server Error",
            Self::ServiceUnavailable => "Service Unavailable",
            Self::InsufficientStorage => "Insufficient Storage",
        }
    }
}

/// A response, borrowing its body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Response<'a> {
    /// The status.
    pub status: Status,
    /// The `Content-Type`, if there is a body.
    pub content_type: Option<&'static str>,
    /// The body (also sized for `HEAD`, where it is not sent).
    pub body: &'a [u8],
    /// The methods listed in an `Allow` header.
    pub allow: Option<&'static [Method]>,
}

impl<'a> Response<'a> {
    /// `Content-Type` of JSON bodies.
    pub const JSON: &'static str = "application/json";

    /// A response with a body of the given type.
    pub const fn new(status: Status, content_type: &'static str, body: &'a [u8]) -> Self {
        Self {
            status,
            content_type: Some(content_type),
            body,
            allow: None,
        }
    }

    /// A response with a JSON body.
    pub const fn json(status: Status, body: &'a [u8]) -> Self {
        Self::new(status, Self::JSON, body)
    }

    /// `204 No Content`.
    pub const fn no_content() -> Self {
        Self {
            status: Status::NoContent,
            content_type: None,
            body: &[],
            allow: None,
        }
    }

    /// Adds an `Allow` header listing `methods`.
    pub const fn with_allow(self, methods: &'static [Method]) -> Self {
        Self {
            allow: Some(methods),
            ..self
        }
    }

    /// Appends the serialized response to `out`. `head_only` leaves the body
    /// out (answering `HEAD`) but keeps its `Content-Length`.
    ///
    /// A 204 carries no `Content-Length` (RFC 9110, section 8.6); every other
    /// response does, so that keep-alive framing never depends on closing.
    pub fn write_to(&self, out: &mut Vec<u8>, head_only: bool, persistence: Persistence) {
        out.extend_from_slice(b"HTTP/1.1 ");
        push_decimal(out, usize::from(self.status.code()));
        out.push(b' ');
        out.extend_from_slice(self.status.reason().as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some(content_type) = self.content_type {
            push_header(out, "Content-Type", content_type.as_bytes());
        }
        if self.status != Status::NoContent {
            out.extend_from_slice(b"Content-Length: ");
            push_decimal(out, self.body.len());
            out.extend_from_slice(b"\r\n");
        }
        if let Some(methods) = self.allow {
            out.extend_from_slice(b"Allow: ");
            for (i, method) in methods.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b", ");
                }
                out.extend_from_slice(method.as_str().as_bytes());
            }
            out.extend_from_slice(b"\r\n");
        }
        match persistence {
            Persistence::Persistent => {}
            Persistence::KeepAlive => push_header(out, "Connection", b"keep-alive"),
            Persistence::Close => push_header(out, "Connection", b"close"),
        }
        out.extend_from_slice(b"\r\n");
        if !head_only {
            out.extend_from_slice(self.body);
        }
    }
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends `value` in decimal, without going through `fmt` (whose
/// `io::Write` adapter would hand back an error that cannot happen).
fn push_decimal(out: &mut Vec<u8>, mut value: usize) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(response: Response<'_>, head_only: bool, persistence: Persistence) -> String {
        let mut out = Vec::new();
        response.write_to(&mut out, head_only, persistence);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn serializes_status_headers_and_body() {
        let response = Response::json(Status::Ok, br#"{"status":"ok"}"#);
        assert_eq!(
            written(response, false, Persistence::Persistent),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{\"status\":\"ok\"}"
        );
    }

    #[test]
    fn head_keeps_the_length_but_not_the_body() {
        let response = Response::json(Status::NotFound, b"{}");
        assert_eq!(
            written(response, true, Persistence::Close),
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn lists_allowed_methods_and_echoes_keep_alive() {
        let response =
            Response::json(Status::MethodNotAllowed, b"").with_allow(&[Method::Get, Method::Head]);
        let text = written(response, false, Persistence::KeepAlive);
        assert!(text.contains("\r\nAllow: GET, HEAD\r\n"), "{text}");
        assert!(text.contains("\r\nConnection: keep-alive\r\n"), "{text}");
    }

    #[test]
    fn no_content_has_no_length() {
        assert_eq!(
            written(Response::no_content(), false, Persistence::Persistent),
            "HTTP/1.1 204 No Content\r\n\r\n"
        );
    }

    #[test]
    fn decimals() {
        for value in [0, 7, 10, 1234567890, usize::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, value);
            assert_eq!(out, value.to_string().as_bytes());
        }
    }

    #[test]
    fn status_table_is_consistent() {
        for (i, status) in Status::ALL.into_iter().enumerate() {
            assert_eq!(status.index(), i);
            assert!(!status.reason().is_empty());
        }
    }
}
