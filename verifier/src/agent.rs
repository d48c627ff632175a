//! Talking to dom0's attestation agent (`vigil-dom0 serve`), over HTTP with
//! a timeout on every request.
//!
//! - `GET  /v1/domains/{name}/evidence?nonce=HEX` → [`Evidence`]
//! - `GET  /v1/domains/{name}/identity` → [`Identity`]
//! - `POST /v1/domains/{name}/activate` → `{"secret": b64}`
//!
//! [`Agent`] is the seam: the CLI uses [`HttpAgent`]; tests may answer
//! from a TPM directly.

use std::io::Read as _;
use std::time::Duration;

pub use vigil_core::v1::evidence::Identity;
use vigil_core::v1::evidence::{
    ActivationAnswer, ActivationRequest, Base64, Evidence, EvidenceError, MAX_EVIDENCE_BYTES,
};
use vigil_core::v1::report::Nonce;

use crate::credential::Credential;
use crate::tpm::hex;

/// The agent's default address.
pub const DEFAULT_AGENT: &str = "http://127.0.0.1:7600";
/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a whole request may take (a quote takes well under a second;
/// requests queue on the TPM).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// The largest identity or activation answer read.
const MAX_SMALL_BODY: u64 = 64 * 1024;

/// A failed exchange with the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// No answer (connection refused, timeout, DNS).
    #[error("the agent at {url} did not answer")]
    Unreachable {
        /// The request.
        url: String,
        /// Why.
        #[source]
        source: Box<ureq::Transport>,
    },
    /// An HTTP error status.
    #[error("the agent answered {url} with {code}: {message}")]
    Status {
        /// The request.
        url: String,
        /// The status code.
        code: u16,
        /// The agent's `error` text, or the body.
        message: String,
    },
    /// An answer that is not what the endpoint returns.
    #[error("the agent's answer to {url} is malformed: {reason}")]
    Body {
        /// The request.
        url: String,
        /// Why.
        reason: String,
    },
    /// An answer that is not valid evidence.
    #[error("the agent's answer to {url} is not valid evidence")]
    Evidence {
        /// The request.
        url: String,
        /// Why.
        #[source]
        source: EvidenceError,
    },
}

/// What the verifier asks an agent.
pub trait Agent {
    /// A stable name for the agent (its address), for the enrollment store.
    fn id(&self) -> String;
    /// The domain's EK and AK.
    fn identity(&self, domain: &str) -> Result<Identity, AgentError>;
    /// ActivateCredential in the domain's TPM: the secret it recovers.
    fn activate(&self, domain: &str, credential: &Credential) -> Result<Vec<u8>, AgentError>;
    /// Evidence for `nonce`.
    fn evidence(&self, domain: &str, nonce: &Nonce) -> Result<Evidence, AgentError>;
}

/// An agent over HTTP.
#[derive(Debug)]
pub struct HttpAgent {
    base: String,
    http: ureq::Agent,
}

impl HttpAgent {
    /// An agent at `base` (e.g. `http://127.0.0.1:7600`).
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            http: ureq::AgentBuilder::new()
                .timeout_connect(CONNECT_TIMEOUT)
                .timeout(REQUEST_TIMEOUT)
                .build(),
        }
    }

    fn url(&self, domain: &str, rest: &str) -> String {
        format!("{}/v1/domains/{domain}/{rest}", self.base)
    }

    fn read(
        url: &str,
        result: Result<ureq::Response, ureq::Error>,
        limit: u64,
    ) -> Result<Vec<u8>, AgentError> {
        let response = match result {
            Ok(response) => response,
            Err(ureq::Error::Status(code, response)) => {
                let body = response.into_string().unwrap_or_default();
                let message = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                    .unwrap_or_else(|| body.chars().take(300).collect());
                return Err(AgentError::Status {
                    url: url.into(),
                    code,
                    message,
                });
            }
            Err(ureq::Error::Transport(transport)) => {
                return Err(AgentError::Unreachable {
                    url: url.into(),
                    source: Box::new(transport),
                });
            }
        };
        let mut body = Vec::new();
        response
            .into_reader()
            .take(limit + 1)
            .read_to_end(&mut body)
            .map_err(|err| AgentError::Body {
                url: url.into(),
                reason: err.to_string(),
            })?;
        if body.len() as u64 > limit {
            return Err(AgentError::Body {
                url: url.into(),
                reason: format!("more than {limit} bytes"),
            });
        }
        Ok(body)
    }

    fn json<T: serde::de::DeserializeOwned>(url: &str, body: &[u8]) -> Result<T, AgentError> {
        serde_json::from_slice(body).map_err(|err| AgentError::Body {
            url: url.into(),
            reason: err.to_string(),
        })
    }
}

impl Agent for HttpAgent {
    fn id(&self) -> String {
        self.base.clone()
    }

    fn identity(&self, domain: &str) -> Result<Identity, AgentError> {
        let url = self.url(domain, "identity");
        let body = Self::read(&url, self.http.get(&url).call(), MAX_SMALL_BODY)?;
        Self::json(&url, &body)
    }

    fn activate(&self, domain: &str, credential: &Credential) -> Result<Vec<u8>, AgentError> {
        let url = self.url(domain, "activate");
        let request = ActivationRequest {
            credential_blob: Base64(credential.credential_blob.clone()),
            encrypted_secret: Base64(credential.encrypted_secret.clone()),
        };
        let result = self
            .http
            .post(&url)
            .set("Content-Type", "application/json")
            .send_bytes(&serde_json::to_vec(&request).unwrap_or_default());
        let body = Self::read(&url, result, MAX_SMALL_BODY)?;
        Ok(Self::json::<ActivationAnswer>(&url, &body)?.secret.0)
    }

    fn evidence(&self, domain: &str, nonce: &Nonce) -> Result<Evidence, AgentError> {
        let url = self.url(domain, &format!("evidence?nonce={}", hex(nonce.as_bytes())));
        let body = Self::read(&url, self.http.get(&url).call(), MAX_EVIDENCE_BYTES as u64)?;
        Evidence::parse(&body).map_err(|source| AgentError::Evidence { url, source })
    }
}
