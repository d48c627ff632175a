//! The result as an IETF RATS EAR (draft-ietf-rats-ear): JSON claims, shown
//! as text for people, optionally signed as a JWT with ES256 by the
//! verifier's own P-256 key.
//!
//! ```json
//! {"eat_profile": "tag:vigil.invalid,2026:ear/v1", "iat": 1796300000,
//!  "ear.verifier-id": {"build": "vigil-verify 0.1.0", "developer": "Vigil"},
//!  "eat_nonce": "<base64url of the nonce>",
//!  "submods": {"demo": {"ear.status": "affirming",
//!    "ear.trustworthiness-vector": {"instance-identity": 2, "configuration": 2,
//!                                   "executables": 2, "hardware": 2},
//!    "ear.appraisal-policy-id": "tag:vigil.invalid,2026:policy/launch-and-runtime",
//!    "vigil.claims": [{"name": "nonce", "trust": "instance-identity", "value": 2,
//!                      "status": "affirming", "expected": "…", "actual": "…"}, …],
//!    "vigil.list-version": 2, "vigil.boot-id": "…", "vigil.tpm-clock": {…},
//!    "vigil.service": {…}, "vigil.runtime": {…}}}}
//! ```
//!
//! The profile is a `tag:` URI under `vigil.invalid` (a name nobody can own,
//! RFC 2606) until the project has a domain of its own to mint it under.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use serde::{Deserialize, Serialize};

use crate::appraise::{Appraisal, Claim};
use crate::tpm::ClockInfo;

/// Vigil's EAR profile.
pub const PROFILE: &str = "tag:vigil.invalid,2026:ear/v1";
/// The appraisal policy every EAR names.
pub const POLICY_ID: &str = "tag:vigil.invalid,2026:policy/launch-and-runtime";
/// How long a signed EAR is valid, in seconds (Trustee uses 5 minutes).
pub const JWT_LIFETIME_S: i64 = 300;

/// `ear.verifier-id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifierId {
    /// The verifier's build.
    pub build: String,
    /// Who makes it.
    pub developer: String,
}

impl Default for VerifierId {
    fn default() -> Self {
        Self {
            build: concat!("vigil-verify ", env!("CARGO_PKG_VERSION")).into(),
            developer: "Vigil".into(),
        }
    }
}

/// One submodule's appraisal (a domain).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Submod {
    /// `ear.status`.
    #[serde(rename = "ear.status")]
    pub status: String,
    /// `ear.trustworthiness-vector`.
    #[serde(rename = "ear.trustworthiness-vector")]
    pub vector: BTreeMap<String, i8>,
    /// `ear.appraisal-policy-id`.
    #[serde(rename = "ear.appraisal-policy-id")]
    pub policy_id: String,
    /// Every claim Vigil checked.
    #[serde(rename = "vigil.claims")]
    pub claims: Vec<serde_json::Value>,
    /// The launch event list version of the log.
    #[serde(rename = "vigil.list-version", skip_serializing_if = "Option::is_none")]
    pub list_version: Option<u8>,
    /// The boot id (SHA-256 of the per-boot report key).
    #[serde(rename = "vigil.boot-id", skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// The TPM's clock and counters (from a verified quote).
    #[serde(rename = "vigil.tpm-clock", skip_serializing_if = "Option::is_none")]
    pub clock: Option<ClockInfo>,
    /// The sealed service.
    #[serde(rename = "vigil.service", skip_serializing_if = "Option::is_none")]
    pub service: Option<serde_json::Value>,
    /// The runtime report's content.
    #[serde(rename = "vigil.runtime", skip_serializing_if = "Option::is_none")]
    pub runtime: Option<serde_json::Value>,
}

/// An EAR.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ear {
    /// `eat_profile`.
    pub eat_profile: String,
    /// `iat`: when it was made (seconds since the epoch).
    pub iat: i64,
    /// `exp`: only in a signed EAR.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub exp: Option<i64>,
    /// `ear.verifier-id`.
    #[serde(rename = "ear.verifier-id")]
    pub verifier_id: VerifierId,
    /// `eat_nonce`: the nonce, base64url without padding.
    pub eat_nonce: String,
    /// `submods`: one per domain.
    pub submods: BTreeMap<String, Submod>,
}

impl Ear {
    /// The EAR for one appraisal.
    pub fn new(appraisal: &Appraisal, nonce: &[u8], iat: i64) -> Self {
        let claims = appraisal
            .claims
            .iter()
            .map(|c| serde_json::to_value(c).unwrap_or_default())
            .collect();
        let submod = Submod {
            status: appraisal.status.as_str().into(),
            vector: appraisal
                .vector
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), *v))
                .collect(),
            policy_id: POLICY_ID.into(),
            claims,
            list_version: appraisal.list_version,
            boot_id: appraisal.boot_id.clone(),
            clock: appraisal.clock,
            service: appraisal.service.as_ref().map(|(name, version, security)| {
                serde_json::json!({"name": name, "version": version, "security_version": security})
            }),
            runtime: appraisal
                .runtime
                .map(|r| serde_json::to_value(r).unwrap_or_default()),
        };
        Self {
            eat_profile: PROFILE.into(),
            iat,
            exp: None,
            verifier_id: VerifierId::default(),
            eat_nonce: URL_SAFE_NO_PAD.encode(nonce),
            submods: BTreeMap::from([(appraisal.domain.clone(), submod)]),
        }
    }

    /// The worst status of the submodules.
    pub fn status(&self) -> &str {
        let rank = |s: &str| match s {
            "affirming" => 1,
            "warning" => 2,
            "contraindicated" => 3,
            _ => 0,
        };
        self.submods
            .values()
            .map(|s| s.status.as_str())
            .max_by_key(|s| rank(s))
            .unwrap_or("none")
    }

    /// Signs the EAR as a compact JWT (`alg` ES256), valid for
    /// [`JWT_LIFETIME_S`] from its `iat`.
    pub fn sign(&self, key: &p256::ecdsa::SigningKey) -> String {
        let mut claims = self.clone();
        claims.exp = Some(self.iat + JWT_LIFETIME_S);
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap_or_default());
        let input = format!("{header}.{payload}");
        let signature: p256::ecdsa::Signature = key.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }
}

/// Why a JWT is not a valid EAR from this key.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    /// Not three base64url parts.
    #[error("not a compact JWT")]
    Form,
    /// The header is not ES256.
    #[error("the JWT's header is not {{\"alg\":\"ES256\"}}")]
    Algorithm,
    /// The signature does not verify.
    #[error("the JWT's signature does not verify with this key")]
    Signature,
    /// The payload is not an EAR.
    #[error("the JWT's payload is not an EAR")]
    Payload(#[source] serde_json::Error),
}

/// Checks an ES256 JWT and returns its EAR (for tests and relying parties
/// in Rust; other tools use any JWT library).
pub fn verify_jwt(token: &str, key: &p256::ecdsa::VerifyingKey) -> Result<Ear, JwtError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Form);
    };
    let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).map_err(|_| JwtError::Form);
    let header: serde_json::Value =
        serde_json::from_slice(&decode(header)?).map_err(|_| JwtError::Form)?;
    if header.get("alg").and_then(|a| a.as_str()) != Some("ES256") {
        return Err(JwtError::Algorithm);
    }
    let signature =
        p256::ecdsa::Signature::from_slice(&decode(signature)?).map_err(|_| JwtError::Signature)?;
    let signed = &token[..token.rfind('.').unwrap_or(0)];
    key.verify(signed.as_bytes(), &signature)
        .map_err(|_| JwtError::Signature)?;
    serde_json::from_slice(&decode(payload)?).map_err(JwtError::Payload)
}

fn mark(claim: &Claim) -> &'static str {
    match claim.status {
        crate::appraise::Status::Affirming => "ok  ",
        crate::appraise::Status::None => "--  ",
        crate::appraise::Status::Warning => "WARN",
        crate::appraise::Status::Contraindicated => "FAIL",
    }
}

/// The appraisal for people: the status, the vector, then every claim;
/// failed ones with expected and actual values.
pub fn render_text(appraisal: &Appraisal, verbose: bool) -> String {
    let mut out = String::new();
    let vector: Vec<String> = appraisal
        .vector
        .iter()
        .map(|(k, v)| format!("{} {v}", k.as_str()))
        .collect();
    let _ = writeln!(
        out,
        "{}: {} ({})",
        appraisal.domain,
        appraisal.status,
        vector.join(", ")
    );
    if let Some((name, version, security)) = &appraisal.service {
        let _ = writeln!(
            out,
            "  service {name} {version} (security version {security})"
        );
    }
    if let Some(runtime) = &appraisal.runtime {
        let _ = writeln!(
            out,
            "  watchdog {} after {} checks, uptime {} ms",
            runtime.verdict, runtime.checks, runtime.uptime_ms
        );
    }
    for claim in &appraisal.claims {
        if claim.passed() && !verbose {
            continue;
        }
        let _ = writeln!(
            out,
            "  {} {} [{} {}]",
            mark(claim),
            claim.name,
            claim.trust.as_str(),
            claim.value
        );
        if !claim.passed() {
            let _ = writeln!(out, "         expected: {}", claim.expected);
            let _ = writeln!(out, "         actual:   {}", claim.actual);
        }
    }
    let passed = appraisal.claims.iter().filter(|c| c.passed()).count();
    let _ = writeln!(
        out,
        "  {passed} of {} claims passed",
        appraisal.claims.len()
    );
    out
}
