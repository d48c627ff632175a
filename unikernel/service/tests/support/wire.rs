//! Splits the bytes a server sent into HTTP responses, checking that each one
//! is well formed.
//!
//! Shared (by `#[path]`) between the unit tests, the integration tests and the
//! `http_request` fuzz target.

#![allow(dead_code)] // each user needs a different part

/// One response as it was sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// The status code.
    pub status: u16,
    /// Header fields in order, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body; empty if it was left out.
    pub body: Vec<u8>,
    /// `Content-Length` announced a body that was not sent: an answer to `HEAD`.
    pub head_only: bool,
}

impl Parsed {
    /// The value of header `name` (lowercase), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Whether the server announced it closes the connection.
    pub fn closes(&self) -> bool {
        self.header("connection") == Some("close")
    }

    /// The body as text.
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap_or("<binary>")
    }
}

/// Splits `bytes` into complete responses. Fails on anything malformed or
/// truncated, and on bytes after a `Connection: close` response.
///
/// Bodies never start with `HTTP/1.1 ` (JSON, HTML and the metrics text
/// cannot), so a `Content-Length` followed directly by the next status line
/// or the end of the stream is an answer to `HEAD`.
pub fn parse_responses(mut bytes: &[u8]) -> Result<Vec<Parsed>, String> {
    let mut responses: Vec<Parsed> = Vec::new();
    while !bytes.is_empty() {
        if responses.last().is_some_and(Parsed::closes) {
            return Err("bytes after a `Connection: close` response".into());
        }
        let (response, len) = parse_one(bytes)?;
        responses.push(response);
        bytes = &bytes[len..];
    }
    Ok(responses)
}

/// Parses the response at the start of `bytes`; returns it and its length.
pub fn parse_one(bytes: &[u8]) -> Result<(Parsed, usize), String> {
    let (mut parsed, head_len, body_len) = parse_head(bytes)?.ok_or("truncated response head")?;
    let rest = &bytes[head_len..];
    if body_len > 0 && (rest.is_empty() || rest.starts_with(b"HTTP/1.1 ")) {
        parsed.head_only = true;
        return Ok((parsed, head_len));
    }
    parsed.body = rest.get(..body_len).ok_or("truncated body")?.to_vec();
    Ok((parsed, head_len + body_len))
}

/// Parses and checks the response head at the start of `bytes`: `None` if
/// it is incomplete, else the response without body, the head's length and
/// the body length it announces.
pub fn parse_head(bytes: &[u8]) -> Result<Option<(Parsed, usize, usize)>, String> {
    let mut fields = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut fields);
    let head_len = match response.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(format!("malformed response head: {error}")),
    };
    if response.version != Some(1) {
        return Err("not an HTTP/1.1 response".into());
    }
    let status = response.code.ok_or("no status")?;
    let headers: Vec<(String, String)> = response
        .headers
        .iter()
        .map(|field| {
            let value = String::from_utf8(field.value.to_vec()).map_err(|_| "non-UTF-8 header")?;
            Ok((field.name.to_ascii_lowercase(), value))
        })
        .collect::<Result<_, String>>()?;
    let parsed = Parsed {
        status,
        headers,
        body: Vec::new(),
        head_only: false,
    };
    let length = parsed.header("content-length");
    if (100..200).contains(&status) || status == 204 {
        if length.is_some() || parsed.header("content-type").is_some() {
            return Err(format!("{status} with body headers"));
        }
        return Ok(Some((parsed, head_len, 0)));
    }
    let length: usize = length
        .filter(|value| !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_digit()))
        .ok_or(format!("{status} without a valid Content-Length"))?
        .parse()
        .map_err(|_| "Content-Length out of range")?;
    if parsed.header("content-type").is_none() {
        return Err(format!("{status} without Content-Type"));
    }
    Ok(Some((parsed, head_len, length)))
}
