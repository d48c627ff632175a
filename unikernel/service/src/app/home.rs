//! The HTML status page at `/`.

use std::io;

use super::metrics::Gauges;

/// The `Content-Type` of the page.
pub const CONTENT_TYPE: &str = "text/html; charset=utf-8";

/// What the status page shows.
#[derive(Clone, Copy, Debug)]
pub struct Status {
    /// Uptime and store size.
    pub gauges: Gauges,
    /// The store's byte limit.
    pub store_limit: u32,
    /// Connections in service.
    pub connections: u64,
    /// Responses sent so far.
    pub requests: u64,
}

impl Status {
    /// Writes the page.
    pub fn render(&self, w: &mut impl io::Write) -> io::Result<()> {
        let name = env!("CARGO_PKG_NAME");
        let version = env!("CARGO_PKG_VERSION");
        let Gauges {
            uptime,
            kv_keys,
            kv_bytes,
        } = self.gauges;
        write!(
            w,
            "<!doctype html>\n\
             <html lang=\"en\">\n\
             <head><meta charset=\"utf-8\"><title>{name}</title></head>\n\
             <body>\n\
             <h1>{name} {version}</h1>\n\
             <table>\n\
             <tr><th>Uptime</th><td>{uptime} s</td></tr>\n\
             <tr><th>Keys stored</th><td>{kv_keys}</td></tr>\n\
             <tr><th>Bytes stored</th><td>{kv_bytes} of {limit}</td></tr>\n\
             <tr><th>Open connections</th><td>{connections}</td></tr>\n\
             <tr><th>Requests served</th><td>{requests}</td></tr>\n\
             </table>\n\
             <ul>\n\
             <li><a href=\"/healthz\">/healthz</a></li>\n\
             <li><a href=\"/metrics\">/metrics</a></li>\n\
             <li><a href=\"/v1/kv\">/v1/kv</a></li>\n\
             </ul>\n\
             </body>\n\
             </html>\n",
            uptime = uptime.as_secs(),
            limit = self.store_limit,
            connections = self.connections,
            requests = self.requests,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn shows_the_numbers_and_links() {
        let status = Status {
            gauges: Gauges {
                uptime: Duration::from_secs(42),
                kv_keys: 3,
                kv_bytes: 120,
            },
            store_limit: 1024,
            connections: 2,
            requests: 17,
        };
        let mut page = Vec::new();
        status.render(&mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        for needle in [
            concat!("<h1>vigil-service ", env!("CARGO_PKG_VERSION"), "</h1>"),
            "<td>42 s</td>",
            "<td>3</td>",
            "<td>120 of 1024</td>",
            "<td>2</td>",
            "<td>17</td>",
            "href=\"/healthz\"",
            "href=\"/metrics\"",
            "href=\"/v1/kv\"",
        ] {
            assert!(page.contains(needle), "{needle} in {page}");
        }
    }
}
