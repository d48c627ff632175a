//! The `vigil-verify` binary end to end: enrollment and checks over HTTP
//! against a stand-in agent (127.0.0.1 only) whose TPM side is a real swtpm
//! driven by tpm2-tools, documented exit codes, and an ES256 EAR that
//! Python's PyJWT verifies. `#[ignore]`d: needs swtpm, tpm2-tools, and
//! `python3 -m pip install pyjwt cryptography`.

mod support;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use support::{AK_HANDLE, Domain, Launch, ReportSpec};
use vigil_core::v1::evidence::Base64;
use vigil_core::v1::report::Nonce;
use vigil_verify::tpm::hex;

const BIN: &str = env!("CARGO_BIN_EXE_vigil-verify");

/// A webhook receiver on loopback: answers every POST with 200 and keeps
/// its body.
struct Webhook {
    url: String,
    bodies: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Webhook {
    fn posts(&self) -> Vec<String> {
        self.bodies.lock().unwrap().clone()
    }
}

fn webhook() -> Webhook {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = std::io::Read::read_exact(&mut reader, &mut body);
            kept.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&body).into_owned());
            respond(&mut stream, 200, "{}");
        }
    });
    Webhook { url, bodies }
}

/// A minimal agent: the contract's three endpoints for one domain, `demo`.
struct StandIn {
    address: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.address.trim_start_matches("http://"));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn respond(stream: &mut TcpStream, code: u16, body: &str) {
    let _ = write!(
        stream,
        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn serve(domain: Arc<Domain>, launch: Arc<Launch>) -> StandIn {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let thread = std::thread::spawn(move || {
        for stream in listener.incoming() {
            if stopping.load(Ordering::SeqCst) {
                return;
            }
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut length = 0;
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).unwrap();
                if header.trim().is_empty() {
                    break;
                }
                if let Some(value) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap();
                }
            }
            let mut body = vec![0u8; length];
            reader.read_exact(&mut body).unwrap();
            let target = line.split(' ').nth(1).unwrap_or("").to_string();
            if target == "/v1/domains/demo/identity" {
                let identity = serde_json::json!({
                    "ek_certificate": Base64(domain.ek_certificate.clone()),
                    "ek_public": Base64(domain.ek_public.clone()),
                    "ak_public": Base64(domain.ak_public.clone()),
                    "ak_name": hex(&domain.ak_name),
                });
                respond(&mut stream, 200, &identity.to_string());
            } else if target == "/v1/domains/demo/activate" {
                let request: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let part = |name: &str| {
                    serde_json::from_value::<Base64>(request[name].clone())
                        .unwrap()
                        .0
                };
                let credential = vigil_verify::credential::Credential {
                    credential_blob: part("credential_blob"),
                    encrypted_secret: part("encrypted_secret"),
                };
                let secret = support::activate(&domain, &credential);
                respond(
                    &mut stream,
                    200,
                    &serde_json::json!({"secret": Base64(secret)}).to_string(),
                );
            } else if let Some(nonce) = target.strip_prefix("/v1/domains/demo/evidence?nonce=") {
                let nonce = Nonce::from_hex(nonce).unwrap();
                let quote = domain.quote(AK_HANDLE, &nonce);
                let evidence = launch.evidence(
                    "demo",
                    &nonce,
                    quote,
                    &domain.ak_public,
                    launch.event_log(true),
                    Some(launch.runtime_report(&ReportSpec::intact(nonce), None)),
                );
                respond(
                    &mut stream,
                    200,
                    std::str::from_utf8(&evidence.emit()).unwrap(),
                );
            } else {
                respond(&mut stream, 404, r#"{"error":"unknown domain"}"#);
            }
        }
    });
    StandIn {
        address,
        stop,
        thread: Some(thread),
    }
}

fn vigil(args: &[&str], agent: &str, state: &std::path::Path) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--agent")
        .arg(agent)
        .arg("--state-dir")
        .arg(state)
        .output()
        .unwrap()
}

fn code(output: &Output) -> i32 {
    output.status.code().unwrap_or(-1)
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
#[ignore = "needs swtpm, tpm2-tools and python3 with pyjwt + cryptography"]
fn enroll_check_watch_and_a_jwt_python_verifies() {
    let domain = Arc::new(Domain::new());
    let launch = Arc::new(Launch::new(1, 3, 7));
    domain.launch(&launch);
    let agent = serve(domain.clone(), launch.clone());
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    let key = support::write(
        work.path(),
        "manifest.pub",
        {
            use ed25519_dalek::pkcs8::EncodePublicKey as _;
            launch
                .manifest_public_key()
                .to_public_key_pem(Default::default())
                .unwrap()
        }
        .as_bytes(),
    );
    let key = key.to_str().unwrap();

    // Not enrolled yet: exit 4.
    let output = vigil(
        &["check", "demo", "--manifest-key", key],
        &agent.address,
        &state,
    );
    assert_eq!(code(&output), 4, "{}", text(&output));
    // An unknown domain: the agent's 404, exit 5.
    let output = vigil(
        &["enroll", "nope", "--pin-on-first-contact"],
        &agent.address,
        &state,
    );
    assert_eq!(code(&output), 5, "{}", text(&output));
    // A CA that did not issue the EK certificate: refused, exit 7.
    let root = domain.tpm.path("ca/swtpm-localca-rootca-cert.pem");
    let output = vigil(
        &["enroll", "demo", "--ek-ca", root.to_str().unwrap()],
        &agent.address,
        &state,
    );
    assert_eq!(code(&output), 7, "{}", text(&output));

    let ca = domain.tpm.path("ca/issuercert.pem");
    let output = vigil(
        &["enroll", "demo", "--ek-ca", ca.to_str().unwrap()],
        &agent.address,
        &state,
    );
    assert_eq!(code(&output), 0, "{}", text(&output));
    assert!(text(&output).contains("EK certificate verified against the CA"));

    let output = vigil(
        &["check", "demo", "--manifest-key", key],
        &agent.address,
        &state,
    );
    assert_eq!(code(&output), 0, "{}", text(&output));
    assert!(
        text(&output).starts_with("demo: affirming"),
        "{}",
        text(&output)
    );

    let output = vigil(
        &["check", "demo", "--manifest-key", key, "--json"],
        &agent.address,
        &state,
    );
    assert_eq!(code(&output), 0, "{}", text(&output));
    let ear: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(ear["eat_profile"], vigil_verify::ear::PROFILE);
    assert_eq!(ear["submods"]["demo"]["ear.status"], "affirming");
    assert_eq!(
        ear["submods"]["demo"]["ear.trustworthiness-vector"]["executables"],
        2
    );

    // Below the floor: not affirming, exit 1, the claim named.
    let output = vigil(
        &[
            "check",
            "demo",
            "--manifest-key",
            key,
            "--min-security-version",
            "9",
        ],
        &agent.address,
        &state,
    );
    assert_eq!(code(&output), 1, "{}", text(&output));
    assert!(
        text(&output).contains("security-version"),
        "{}",
        text(&output)
    );

    // A signed EAR, checked by PyJWT with the verifier's public key.
    let private = work.path().join("ear.pem");
    let public = work.path().join("ear.pub.pem");
    for args in [
        vec![
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            private.to_str().unwrap(),
        ],
        vec![
            "pkey",
            "-in",
            private.to_str().unwrap(),
            "-pubout",
            "-out",
            public.to_str().unwrap(),
        ],
    ] {
        assert!(
            Command::new("openssl")
                .args(&args)
                .status()
                .unwrap()
                .success()
        );
    }
    let output = vigil(
        &[
            "check",
            "demo",
            "--manifest-key",
            key,
            "--jwt-key",
            private.to_str().unwrap(),
        ],
        &agent.address,
        &state,
    );
    assert_eq!(code(&output), 0, "{}", text(&output));
    let token = String::from_utf8(output.stdout).unwrap();
    let python = Command::new("python3")
        .arg("-c")
        .arg(
            "import jwt, sys, json\n\
             key = open(sys.argv[1]).read()\n\
             claims = jwt.decode(sys.argv[2].strip(), key, algorithms=['ES256'])\n\
             print(claims['submods']['demo']['ear.status'])",
        )
        .arg(&public)
        .arg(&token)
        .output()
        .unwrap();
    assert!(
        python.status.success(),
        "PyJWT refused the EAR: {}",
        String::from_utf8_lossy(&python.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&python.stdout).trim(), "affirming");
    // A flipped payload byte is refused by PyJWT too.
    let mut forged = token.trim().to_string().into_bytes();
    let dot = forged.iter().position(|&b| b == b'.').unwrap();
    forged[dot + 5] = if forged[dot + 5] == b'A' { b'B' } else { b'A' };
    let python = Command::new("python3")
        .arg("-c")
        .arg("import jwt, sys\njwt.decode(sys.argv[2], open(sys.argv[1]).read(), algorithms=['ES256'])")
        .arg(&public)
        .arg(String::from_utf8(forged).unwrap())
        .output()
        .unwrap();
    assert!(!python.status.success());

    // Watch: two rounds, one change reported (start → affirming), the
    // command run once with the EAR on stdin, and one POST to the webhook.
    let hook = webhook();
    let seen = work.path().join("changes");
    let command = format!(
        "echo \"$VIGIL_PREVIOUS_STATUS>$VIGIL_STATUS\" >> {0}; head -c 1 >> {0}",
        seen.display()
    );
    let output = vigil(
        &[
            "watch",
            "demo",
            "--manifest-key",
            key,
            "--interval",
            "1",
            "--rounds",
            "2",
            "--on-change",
            &command,
            "--webhook",
            &hook.url,
        ],
        &agent.address,
        &state,
    );
    assert_eq!(code(&output), 0, "{}", text(&output));
    assert_eq!(std::fs::read_to_string(&seen).unwrap(), ">affirming\n{");
    let posts = hook.posts();
    assert_eq!(posts.len(), 1, "one change, one POST: {posts:?}");
    let post: serde_json::Value = serde_json::from_str(&posts[0]).unwrap();
    assert_eq!(post["domain"], "demo");
    assert_eq!(post["status"], "affirming");
    assert_eq!(
        post["ear"]["submods"]["demo"]["ear.status"], "affirming",
        "{post}"
    );
    let address = agent.address.clone();
    drop(agent);

    // The agent gone: check exits 5.
    let output = vigil(&["check", "demo", "--manifest-key", key], &address, &state);
    assert_eq!(code(&output), 5, "{}", text(&output));
}
