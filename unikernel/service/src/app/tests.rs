//! The routes, end to end through a [`Connection`], without sockets.

use vigil_core::v1::config::ServiceConfig;

use super::App;
use crate::http::{Connection, Limits};
use crate::wire::{Parsed, parse_responses};

/// A small service: 3 keys, 1 KiB of store, keys of up to 8 bytes.
fn app() -> App {
    let config = ServiceConfig::from_args([
        "--max-keys=3",
        "--store-bytes=1024",
        "--max-key-bytes=8",
        "--max-body-bytes=1024",
        "--max-uri-bytes=64",
        "--max-header-bytes=512",
    ])
    .unwrap();
    App::new(config)
}

/// A client on one connection to an [`App`].
struct Client {
    app: App,
    conn: Connection,
}

impl Client {
    fn new() -> Self {
        Self::with(app())
    }

    fn with(app: App) -> Self {
        let config = app.config();
        let conn = Connection::new(Limits {
            max_header_bytes: config.max_header_bytes as usize,
            max_uri_bytes: config.max_uri_bytes as usize,
            max_body_bytes: config.max_body_bytes as usize,
        });
        Self { app, conn }
    }

    /// Sends raw bytes; returns the responses they produced.
    fn send(&mut self, raw: &[u8]) -> Vec<Parsed> {
        self.conn.receive(raw, &mut self.app);
        let responses = parse_responses(self.conn.output()).unwrap();
        self.conn.consume_output(self.conn.output().len());
        responses
    }

    /// Sends one request and returns its single response.
    fn request(&mut self, method: &str, target: &str, body: Option<&str>) -> Parsed {
        let mut raw = format!("{method} {target} HTTP/1.1\r\nHost: test\r\n");
        if let Some(body) = body {
            raw += &format!("Content-Length: {}\r\n\r\n{body}", body.len());
        } else {
            raw += "\r\n";
        }
        let mut responses = self.send(raw.as_bytes());
        assert_eq!(responses.len(), 1, "{method} {target}");
        assert!(!self.conn.is_closed(), "{method} {target}: stays open");
        responses.remove(0)
    }

    fn get(&mut self, target: &str) -> Parsed {
        self.request("GET", target, None)
    }

    fn put(&mut self, target: &str, body: &str) -> Parsed {
        self.request("PUT", target, Some(body))
    }

    fn metrics(&mut self) -> String {
        self.get("/metrics").text().to_owned()
    }
}

#[track_caller]
fn assert_json(response: &Parsed, status: u16, body: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.text(), body);
}

#[track_caller]
fn assert_error(response: &Parsed, status: u16) {
    assert_eq!(response.status, status, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    let message = body["error"].as_str().unwrap();
    assert!(!message.is_empty());
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
}

#[test]
fn health() {
    let mut client = Client::new();
    assert_json(&client.get("/healthz"), 200, r#"{"status":"ok"}"#);
}

#[test]
fn head_answers_like_get_without_the_body() {
    let mut client = Client::new();
    client.put("/v1/kv/k", "[1,2,3]");
    for path in [
        "/",
        "/healthz",
        "/metrics",
        "/v1/kv",
        "/v1/kv/k",
        "/v1/kv/missing",
        "/nope",
    ] {
        let get = client.get(path);
        let head = client.request("HEAD", path, None);
        assert_eq!(head.status, get.status, "{path}");
        assert!(head.body.is_empty(), "{path}");
        assert_eq!(
            head.header("content-type"),
            get.header("content-type"),
            "{path}"
        );
        // The status page and metrics change between the two requests.
        if !matches!(path, "/" | "/metrics") {
            assert_eq!(
                head.header("content-length"),
                get.header("content-length"),
                "{path}"
            );
            assert!(head.head_only, "{path}");
        }
    }
}

#[test]
fn status_page() {
    let mut client = Client::new();
    client.put("/v1/kv/a", "true");
    let page = client.get("/");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let text = page.text();
    for needle in [
        "vigil-service",
        env!("CARGO_PKG_VERSION"),
        "<th>Keys stored</th><td>1</td>",
        "<th>Bytes stored</th><td>5 of 1024</td>", // "a" + "true"
        "<th>Requests served</th><td>1</td>",      // the PUT
        "<th>Open connections</th><td>0</td>",     // no server here
        "href=\"/healthz\"",
        "href=\"/metrics\"",
        "href=\"/v1/kv\"",
    ] {
        assert!(text.contains(needle), "{needle} in {text}");
    }
}

#[test]
fn metrics_count_requests_by_route_and_status() {
    let mut client = Client::new();
    client.get("/healthz");
    client.get("/nope");
    client.put("/v1/kv/a", "1");
    client.get("/v1/kv/a");
    client.get("/v1/kv");
    client.request("POST", "/healthz", None);
    let text = client.metrics();
    for line in [
        r#"vigil_http_requests_total{route="/healthz",status="200"} 1"#,
        r#"vigil_http_requests_total{route="/healthz",status="405"} 1"#,
        r#"vigil_http_requests_total{route="other",status="404"} 1"#,
        r#"vigil_http_requests_total{route="/v1/kv/{key}",status="201"} 1"#,
        r#"vigil_http_requests_total{route="/v1/kv/{key}",status="200"} 1"#,
        r#"vigil_http_requests_total{route="/v1/kv",status="200"} 1"#,
        "vigil_kv_keys 1",
        "vigil_kv_bytes 2",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in {text}");
    }
    assert!(text.contains("# TYPE vigil_http_requests_total counter\n"));
    let response = client.get("/metrics");
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4")
    );
    assert!(
        response
            .text()
            .contains(r#"{route="/metrics",status="200"} 1"#)
    );
}

#[test]
fn every_metrics_line_is_well_formed() {
    let mut client = Client::new();
    client.get("/healthz");
    for line in client.metrics().lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            assert!(
                comment.starts_with("HELP vigil_") || comment.starts_with("TYPE vigil_"),
                "{line}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        assert!(series.starts_with("vigil_"), "{line}");
        value.parse::<f64>().unwrap();
    }
}

#[test]
fn refused_requests_count_as_other() {
    let mut client = Client::new();
    let responses = client.send(b"GARBAGE\r\n\r\n");
    assert_error(&responses[0], 400);
    let mut other = Client::with(client.app);
    let text = other.metrics();
    assert!(
        text.contains(r#"vigil_http_requests_total{route="other",status="400"} 1"#),
        "{text}"
    );
}

#[test]
fn wrong_methods_get_405_with_allow() {
    let mut client = Client::new();
    for (path, allow) in [
        ("/", "GET, HEAD"),
        ("/healthz", "GET, HEAD"),
        ("/metrics", "GET, HEAD"),
        ("/v1/kv", "GET, HEAD"),
        ("/v1/kv/a", "GET, HEAD, PUT, DELETE"),
        ("/v1/kv/%%", "GET, HEAD, PUT, DELETE"),
    ] {
        for method in ["POST", "PATCH", "OPTIONS", "get"] {
            let response = client.request(method, path, None);
            assert_error(&response, 405);
            assert_eq!(response.header("allow"), Some(allow), "{method} {path}");
        }
    }
    let response = client.request("PUT", "/healthz", Some("{}"));
    assert_eq!(response.header("allow"), Some("GET, HEAD"));
}

#[test]
fn unknown_paths_get_404() {
    let mut client = Client::new();
    for path in ["/nope", "/healthz/", "/v1", "/v1/kvx", "//"] {
        assert_error(&client.get(path), 404);
        assert_error(&client.request("POST", path, None), 404);
    }
}

#[test]
fn other_target_forms_get_400() {
    let mut client = Client::new();
    assert_error(&client.request("OPTIONS", "*", None), 400);
    assert_error(&client.get("http://example.com/healthz"), 400);
}

#[test]
fn queries_are_ignored_outside_the_listing() {
    let mut client = Client::new();
    assert_eq!(client.get("/healthz?verbose=1").status, 200);
    client.put("/v1/kv/a?x", "1");
    assert_eq!(client.get("/v1/kv/a?whatever").text(), "1");
}

#[test]
fn stores_and_returns_json_verbatim() {
    let mut client = Client::new();
    let value = " { \"a\" : [1, 2.5e3, \"\\u00e9\"] }\n";
    assert_json(
        &client.put("/v1/kv/doc", value),
        201,
        r#"{"status":"created"}"#,
    );
    let response = client.get("/v1/kv/doc");
    assert_json(&response, 200, value);
    assert_json(
        &client.put("/v1/kv/doc", "null"),
        200,
        r#"{"status":"replaced"}"#,
    );
    assert_json(&client.get("/v1/kv/doc"), 200, "null");
}

#[test]
fn missing_keys_get_404() {
    let mut client = Client::new();
    assert_error(&client.get("/v1/kv/missing"), 404);
    assert_error(&client.request("DELETE", "/v1/kv/missing", None), 404);
}

#[test]
fn deletes() {
    let mut client = Client::new();
    client.put("/v1/kv/k", "1");
    let response = client.request("DELETE", "/v1/kv/k", None);
    assert_eq!(response.status, 204);
    assert!(response.body.is_empty());
    assert_error(&client.get("/v1/kv/k"), 404);
    assert_error(&client.request("DELETE", "/v1/kv/k", None), 404);
}

#[test]
fn invalid_keys_get_400() {
    let mut client = Client::new();
    for key in [
        "",
        "%41",
        "a%2Fb",
        "a/b",
        "123456789",
        "a+b",
        "a:b",
        "caf\u{e9}",
        "a\"b",
    ] {
        let path = format!("/v1/kv/{key}");
        assert_error(&client.get(&path), 400);
        assert_error(&client.put(&path, "1"), 400);
        assert_error(&client.request("DELETE", &path, None), 400);
    }
    assert_eq!(
        client.put("/v1/kv/12345678", "1").status,
        201,
        "8 bytes is fine"
    );
    assert_eq!(client.put("/v1/kv/A-z_0.9~", "1").status, 201);
}

#[test]
fn invalid_json_gets_400() {
    let mut client = Client::new();
    for body in [
        "",
        " ",
        "{",
        "[1,]",
        "nope",
        "01",
        "{\"a\":1}x",
        "'a'",
        &"[".repeat(65),
    ] {
        assert_error(&client.put("/v1/kv/k", body), 400);
    }
    let deep = format!("{}{}", "[".repeat(64), "]".repeat(64));
    assert_eq!(client.put("/v1/kv/k", &deep).status, 201);
    let response = client.send(b"PUT /v1/kv/k HTTP/1.1\r\nContent-Length: 3\r\n\r\n\"\xff\"");
    assert_error(&response[0], 400);
    assert_eq!(client.get("/v1/kv/k").body, deep.as_bytes(), "kept");
}

#[test]
fn enforces_the_key_limit_without_evicting() {
    let mut client = Client::new();
    for key in ["a", "b", "c"] {
        assert_eq!(client.put(&format!("/v1/kv/{key}"), "1").status, 201);
    }
    assert_error(&client.put("/v1/kv/d", "1"), 507);
    assert_eq!(
        client.put("/v1/kv/a", "2").status,
        200,
        "replacing still works"
    );
    for key in ["a", "b", "c"] {
        assert_eq!(client.get(&format!("/v1/kv/{key}")).status, 200);
    }
    assert_eq!(client.request("DELETE", "/v1/kv/b", None).status, 204);
    assert_eq!(client.put("/v1/kv/d", "1").status, 201, "room again");
}

#[test]
fn enforces_the_byte_limit_without_evicting() {
    let mut client = Client::new();
    let big = format!("\"{}\"", "x".repeat(1000)); // 1002 bytes + key "a"
    assert_eq!(client.put("/v1/kv/a", &big).status, 201);
    let bigger = format!("\"{}\"", "x".repeat(1022)); // 1 + 1024 bytes
    assert_error(&client.put("/v1/kv/a", &bigger), 507);
    assert_eq!(client.get("/v1/kv/a").text(), big, "the old value stays");
    assert_error(&client.put("/v1/kv/bcdefghi", &"1".repeat(20)), 507);
    assert_eq!(
        client.put("/v1/kv/b", "12345678901234567890").status,
        201,
        "exactly full"
    );
    assert_eq!(client.app.store().bytes(), 1024);
    assert_error(&client.put("/v1/kv/c", "1"), 507);
    let listing = client.get("/v1/kv");
    assert_json(&listing, 200, r#"{"keys":["a","b"],"next":null}"#);
}

#[test]
fn lists_keys_page_by_page() {
    let mut client = Client::with(App::new(ServiceConfig::default()));
    for key in ["k3", "k1", "k2", "K0"] {
        client.put(&format!("/v1/kv/{key}"), "0");
    }
    assert_json(
        &client.get("/v1/kv"),
        200,
        r#"{"keys":["K0","k1","k2","k3"],"next":null}"#,
    );
    assert_json(
        &client.get("/v1/kv?limit=2"),
        200,
        r#"{"keys":["K0","k1"],"next":"k1"}"#,
    );
    assert_json(
        &client.get("/v1/kv?limit=2&after=k1"),
        200,
        r#"{"keys":["k2","k3"],"next":null}"#,
    );
    assert_json(
        &client.get("/v1/kv?after=k3"),
        200,
        r#"{"keys":[],"next":null}"#,
    );
    assert_json(
        &client.get("/v1/kv?after=a"),
        200,
        r#"{"keys":["k1","k2","k3"],"next":null}"#,
    );
}

#[test]
fn lists_large_pages() {
    let config = ServiceConfig::from_args(["--max-keys=2000", "--max-key-bytes=1024"]).unwrap();
    let mut client = Client::with(App::new(config));
    for i in 0..1001 {
        let key = format!("{i:04}{}", "k".repeat(1000));
        client.put(&format!("/v1/kv/{key}"), "0");
    }
    let response = client.get("/v1/kv?limit=1000");
    assert_eq!(response.status, 200);
    let page: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(page["keys"].as_array().unwrap().len(), 1000);
    assert!(page["next"].as_str().unwrap().starts_with("0999"));
}

#[test]
fn bad_listing_queries_get_400() {
    let mut client = Client::new();
    for query in [
        "limit=0",
        "limit=1001",
        "limit=x",
        "after=a/b",
        "after=",
        "foo=1",
        "limit",
    ] {
        assert_error(&client.get(&format!("/v1/kv?{query}")), 400);
    }
}

#[test]
fn framing_errors_close_but_content_errors_do_not() {
    let mut client = Client::new();
    let responses = client.send(
        b"GET /nope HTTP/1.1\r\n\r\nPUT /v1/kv/k HTTP/1.1\r\nContent-Length: 1\r\n\r\nx\
          GET /healthz HTTP/1.1\r\n\r\nPUT /v1/kv/k HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n",
    );
    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [404, 400, 200, 411]);
    assert!(responses[3].closes());
    assert!(client.conn.is_finished());
}

#[test]
fn answers_100_continue_for_puts() {
    let mut client = Client::new();
    client.conn.receive(
        b"PUT /v1/kv/k HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
        &mut client.app,
    );
    assert_eq!(client.conn.output(), b"HTTP/1.1 100 Continue\r\n\r\n");
    client.conn.consume_output(25);
    let responses = client.send(b"true");
    assert_json(&responses[0], 201, r#"{"status":"created"}"#);
}

mod integrity {
    use vigil_core::v1::refblock::Reaction;
    use vigil_core::v1::report::{self, ReportKey, Verdict};

    use super::*;
    use crate::app::integrity::Integrity;
    use crate::watchdog::Watchdog;
    use crate::watchdog::tests::{image, never_halt, start, wait_for, with_reaction};

    const NONCE: &str = "00112233445566778899aabbccddeeff";

    fn client(
        reaction: Reaction,
        key: Option<ReportKey>,
    ) -> (Client, Watchdog, crate::watchdog::tests::TestMemory) {
        let (memory, sealed) = image();
        let watchdog = start(with_reaction(sealed, reaction), &memory, never_halt());
        wait_for(&watchdog.shared(), "a first check", |s| s.checks >= 1);
        let integrity = Integrity::new(Some(watchdog.shared()), key);
        let client = Client::with(App::with_integrity(ServiceConfig::default(), integrity));
        (client, watchdog, memory)
    }

    fn json(response: &Parsed) -> serde_json::Value {
        assert_eq!(response.header("content-type"), Some("application/json"));
        serde_json::from_slice(&response.body).unwrap()
    }

    fn hex(text: &serde_json::Value) -> Vec<u8> {
        let text = text.as_str().unwrap();
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn an_unsealed_service_says_so() {
        let mut client = Client::new();
        let status = client.get("/v1/integrity");
        assert_eq!(status.status, 200);
        assert_eq!(
            json(&status),
            serde_json::json!({"state": "unsealed", "report_key": false})
        );
        assert_error(
            &client.get(&format!("/v1/attestation/report?nonce={NONCE}")),
            503,
        );
        assert!(!client.metrics().contains("vigil_integrity"));
    }

    #[test]
    fn status_shows_policy_checks_and_every_region() {
        let (mut client, watchdog, _memory) = client(Reaction::Degrade, None);
        let body = json(&client.get("/v1/integrity"));
        assert_eq!(body["state"], "intact");
        assert_eq!(body["policy"], "degrade");
        assert_eq!(body["interval_ms"], 20);
        assert_eq!(body["degraded"], false);
        assert_eq!(body["report_key"], false);
        assert_eq!(body["load_offset"], "0x200000");
        assert!(body["vcpu"].is_null(), "host threads have no fixed vCPU");
        assert!(body["checks"].as_u64().unwrap() >= 1);
        assert!(body["first_violation"].is_null());
        assert!(body["last_check"]["duration_us"].is_u64());
        assert_eq!(body["last_check"]["intact"], true);
        let regions = body["regions"].as_array().unwrap();
        let shared = watchdog.shared();
        assert_eq!(regions.len(), 2);
        for (region, watched) in regions.iter().zip(shared.regions()) {
            assert_eq!(region["name"], watched.sealed.name.as_str());
            assert_eq!(region["address"], format!("{:#x}", watched.address));
            assert_eq!(region["length"], watched.sealed.len);
            assert_eq!(hex(&region["expected"]), watched.sealed.sha256);
            assert_eq!(region["actual"], region["expected"]);
            assert_eq!(region["matches"], true);
        }
        let metrics = client.metrics();
        assert!(
            metrics.contains("\nvigil_integrity_intact 1\n"),
            "{metrics}"
        );
        assert!(metrics.contains("\nvigil_integrity_interval_seconds 0.02\n"));
        assert!(metrics.contains("\nvigil_integrity_responses_during_checks_total "));
    }

    #[test]
    fn degrade_answers_503_on_business_routes_only() {
        let (mut client, watchdog, memory) = client(Reaction::Degrade, None);
        client.put("/v1/kv/k", "1");
        memory.flip(7);
        wait_for(&watchdog.shared(), "the violation", |s| s.violations > 0);
        for path in ["/", "/healthz", "/v1/kv", "/v1/kv/k"] {
            let response = client.get(path);
            assert_error(&response, 503);
            assert!(
                response.text().contains("region `code`"),
                "{path}: {}",
                response.text()
            );
            assert!(response.text().contains("degraded until reboot"));
        }
        assert_eq!(client.get("/metrics").status, 200);
        let body = json(&client.get("/v1/integrity"));
        assert_eq!(body["state"], "violated");
        assert_eq!(body["degraded"], true);
        assert_eq!(body["first_violation"]["region"], "code");
        assert_eq!(body["regions"][0]["matches"], false);
        assert_eq!(body["regions"][1]["matches"], true);
        let metrics = client.metrics();
        assert!(metrics.contains("\nvigil_integrity_intact 0\n"));
        assert!(metrics.contains("\nvigil_integrity_degraded 1\n"));
        assert!(!metrics.contains("\nvigil_integrity_violations_total 0\n"));
    }

    #[test]
    fn log_keeps_serving() {
        let (mut client, watchdog, memory) = client(Reaction::Log, None);
        memory.flip(7);
        wait_for(&watchdog.shared(), "the violation", |s| s.violations > 0);
        assert_json(&client.get("/healthz"), 200, r#"{"status":"ok"}"#);
        assert_eq!(json(&client.get("/v1/integrity"))["state"], "violated");
    }

    #[test]
    fn reports_are_signed_by_the_boot_key_and_carry_the_nonce() {
        let key = ReportKey::from_seed(&[42; 32]);
        let public = key.public_key();
        let (mut client, watchdog, memory) = client(Reaction::Log, Some(key));
        let response = client.get(&format!("/v1/attestation/report?nonce={NONCE}"));
        assert_eq!(response.status, 200, "{}", response.text());
        let body = json(&response);
        assert_eq!(body["format"], "vigil.report.v1");
        assert_eq!(hex(&body["public_key"]), public);
        let bytes = hex(&body["report"]);
        let signature: [u8; 64] = hex(&body["signature"]).try_into().unwrap();
        let report = report::verify(&public, &bytes, &signature).unwrap();
        assert_eq!(report.nonce.as_bytes(), hex(&serde_json::json!(NONCE)));
        assert_eq!(report.verdict, Verdict::Intact);
        assert_eq!(report.boot_id, report::boot_id(&public));
        assert_eq!(body["verdict"], "intact");
        assert_eq!(body["checks"], report.checks);
        let sealed: Vec<[u8; 32]> = watchdog
            .shared()
            .regions()
            .map(|w| w.sealed.sha256)
            .collect();
        let reported: Vec<[u8; 32]> = report.regions().map(|r| r.sha256).collect();
        assert_eq!(reported, sealed);

        memory.flip(3);
        wait_for(&watchdog.shared(), "the violation", |s| s.violations > 0);
        let body = json(&client.get(&format!("/v1/attestation/report?nonce={}", "ab".repeat(32))));
        let bytes = hex(&body["report"]);
        let signature: [u8; 64] = hex(&body["signature"]).try_into().unwrap();
        let report = report::verify(&public, &bytes, &signature).unwrap();
        assert_eq!(report.verdict, Verdict::Violated);
        assert!(report.first_violation_ms.is_some());
        assert_ne!(report.regions().next().unwrap().sha256, sealed[0]);
        assert_eq!(report.nonce.as_bytes(), [0xab; 32]);
    }

    #[test]
    fn bad_nonces_get_400() {
        let (mut client, _watchdog, _memory) =
            client(Reaction::Log, Some(ReportKey::from_seed(&[1; 32])));
        for query in [
            "",
            "?",
            "?nonce=",
            "?nonce=00",
            &format!("?nonce={}", "00".repeat(15)),
            &format!("?nonce={}", "00".repeat(33)),
            &format!("?nonce={}0", NONCE),
            &format!("?nonce={}", "zz".repeat(16)),
            &format!("?nonce={NONCE}&nonce={NONCE}"),
            &format!("?nonce={NONCE}&x=1"),
            "?other=1",
        ] {
            let response = client.get(&format!("/v1/attestation/report{query}"));
            assert_error(&response, 400);
        }
        let missing = client.get("/v1/attestation/report");
        assert!(
            missing.text().contains("missing nonce"),
            "{}",
            missing.text()
        );
        assert_eq!(
            client
                .get(&format!("/v1/attestation/report?nonce={NONCE}"))
                .status,
            200
        );
        assert_eq!(
            client
                .get(&format!("/v1/attestation/report?nonce={NONCE}&"))
                .status,
            200
        );
    }

    #[test]
    fn without_a_boot_key_there_is_no_report() {
        let (mut client, _watchdog, _memory) = client(Reaction::Log, None);
        let response = client.get(&format!("/v1/attestation/report?nonce={NONCE}"));
        assert_error(&response, 503);
        assert!(response.text().contains("measured launch"));
    }
}
