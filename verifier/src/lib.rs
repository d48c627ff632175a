//! Vigil's remote verifier: the relying party's side of remote attestation.
//!
//! - [`enroll`]: trusting a domain's attestation key (EK certificate against
//!   a CA, MakeCredential/ActivateCredential through the agent) and the
//!   enrollment state.
//! - [`appraise`]: the appraisal, a pure function from evidence to named
//!   claims with expected and actual values.
//! - [`ear`]: the result as an IETF RATS EAR, as text, JSON or an ES256 JWT.
//! - [`check`]: one round (fresh nonce → evidence → appraisal), and the
//!   watch loop's bookkeeping.
//! - [`agent`]: the HTTP client for dom0's agent.
//! - [`tpm`], [`credential`], [`ekcert`]: TPM structures, MakeCredential,
//!   EK certificates.
//!
//! It links no code that can sign a manifest or a runtime report
//! (`core/tests/dependency_direction.rs`); it signs only its own EARs, with
//! its own P-256 key.

#![forbid(unsafe_code)]

pub mod agent;
pub mod appraise;
pub mod check;
pub mod credential;
pub mod ear;
pub mod ekcert;
pub mod enroll;
pub mod tpm;
