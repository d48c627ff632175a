//! Evidence for a remote verifier, from a launched domain: what
//! `vigil-dom0 attest` prints and the agent (`vigil-dom0 serve`) answers.
//!
//! For a nonce: a TPM2 quote by the domain's attestation key over the
//! launch PCRs (9, 12, 15) with the nonce as qualifying data, the PCR
//! values in tpm2-tools' file format, the AK's public area and the EK
//! certificate, the binary event log, the verified manifest and its
//! signature, and the guest's own runtime report fetched with the same
//! nonce (`vigil_core::v1::evidence`). The verifier checks all of it
//! (`vigil-verify`); nothing here judges it.
//!
//! Also the two steps of a verifier's enrollment: the domain's TPM identity
//! (EK certificate, EK and AK public areas, AK name) and
//! `TPM2_ActivateCredential` of a credential made for that AK and EK.

use std::fs;
use std::io::Read;
use std::time::Duration;

use vigil_core::v1::bundle::{MANIFEST_FILE, SIGNATURE_FILE};
use vigil_core::v1::evidence::{
    self, ActivationAnswer, ActivationRequest, Base64, Evidence, HexNonce, Identity, PcrFile,
};
use vigil_core::v1::report::Nonce;
use vigil_tpm::{AK_HANDLE, EK_HANDLE, PcrSelection, PcrValues, Tpm, TpmError};

use crate::domain::{DomainDir, DomainRecord};
use crate::lifecycle::{self, GuestState};

/// How long fetching the guest's runtime report may take, connection
/// included.
pub const REPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest runtime report answer read from a guest.
const MAX_REPORT_BYTES: u64 = 64 * 1024;
/// How often a quote is retried when the PCRs changed while it was made.
const QUOTE_ATTEMPTS: usize = 3;
/// `TPM_ALG_SHA256`: the PCR bank quoted.
const SHA256: u16 = 0x000b;

/// Why there is no evidence (or identity, or activation).
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    /// The domain is not a launched one.
    #[error(transparent)]
    Domain(#[from] crate::error::LaunchError),
    /// The guest or its vTPM does not run.
    #[error("domain {name} is not running (guest {guest}, vTPM {vtpm})")]
    NotRunning {
        /// The domain.
        name: String,
        /// The guest's state.
        guest: &'static str,
        /// Whether its swtpm runs.
        vtpm: &'static str,
    },
    /// The domain's vTPM has no attestation key (it was launched by a
    /// `vigil-dom0` that made none): relaunch it.
    #[error(
        "domain {name}'s vTPM has no attestation key at {AK_HANDLE}; \
         stop and launch it again to make one"
    )]
    NoAttestationKey {
        /// The domain.
        name: String,
    },
    /// A TPM command failed.
    #[error("domain {name}'s vTPM")]
    Tpm {
        /// The domain.
        name: String,
        /// What failed.
        #[source]
        source: TpmError,
    },
    /// The PCRs kept changing while the quote was made.
    #[error(
        "domain {name}'s launch PCRs changed during each of {QUOTE_ATTEMPTS} quotes; \
         something on this host is extending them"
    )]
    PcrsUnstable {
        /// The domain.
        name: String,
    },
    /// A file of the domain (event log, manifest) cannot be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The PCR values could not be written in tpm2-tools' format.
    #[error("encoding the PCR values: {0}")]
    PcrFile(evidence::PcrFileError),
}

impl AttestError {
    /// The HTTP status the agent answers with.
    pub fn http_status(&self) -> u16 {
        use crate::error::LaunchError;
        match self {
            Self::Domain(LaunchError::UnknownDomain { .. } | LaunchError::BadDomainName { .. }) => {
                404
            }
            Self::NotRunning { .. } | Self::NoAttestationKey { .. } => 409,
            Self::Tpm { .. } | Self::PcrsUnstable { .. } => 503,
            Self::Domain(_) | Self::Read { .. } | Self::PcrFile(_) => 500,
        }
    }
}

/// A running domain's record, or why there is none.
fn running(domain: &DomainDir) -> Result<DomainRecord, AttestError> {
    let record = domain.read_record()?;
    let guest = lifecycle::guest_runs(domain, &record);
    let vtpm = lifecycle::vtpm_runs(domain, &record);
    if !guest || !vtpm {
        return Err(AttestError::NotRunning {
            name: domain.name().into(),
            guest: if guest {
                GuestState::Running
            } else {
                GuestState::Exited
            }
            .as_str(),
            vtpm: if vtpm { "running" } else { "stopped" },
        });
    }
    Ok(record)
}

fn tpm_error(domain: &DomainDir) -> impl Fn(TpmError) -> AttestError + '_ {
    |source| {
        let missing_ak = matches!(&source, TpmError::ReadPublic { handle, source }
            if *handle == AK_HANDLE
                && source.response_code().is_some_and(|code| code.is_handle_error()));
        if missing_ak {
            AttestError::NoAttestationKey {
                name: domain.name().into(),
            }
        } else {
            AttestError::Tpm {
                name: domain.name().into(),
                source,
            }
        }
    }
}

fn read(path: std::path::PathBuf) -> Result<Vec<u8>, AttestError> {
    fs::read(&path).map_err(|source| AttestError::Read { path, source })
}

/// The domain's TPM identity: what a verifier enrolls.
pub fn identity(domain: &DomainDir) -> Result<Identity, AttestError> {
    let record = running(domain)?;
    let fail = tpm_error(domain);
    let mut tpm = Tpm::connect(&record.tpm_socket);
    let ak = tpm.read_public(AK_HANDLE).map_err(&fail)?;
    let ek = tpm.read_public(EK_HANDLE).map_err(&fail)?;
    let certificate = tpm.read_ek_certificate().map_err(&fail)?;
    Ok(Identity {
        ek_certificate: Base64(certificate),
        ek_public: Base64(ek.public),
        ak_public: Base64(ak.public),
        ak_name: ak.name.iter().map(|b| format!("{b:02x}")).collect(),
    })
}

/// `TPM2_ActivateCredential` in the domain's vTPM: the secret a verifier
/// sealed to its EK and the name of its AK.
pub fn activate(
    domain: &DomainDir,
    request: &ActivationRequest,
) -> Result<ActivationAnswer, AttestError> {
    let record = running(domain)?;
    let secret = Tpm::connect(&record.tpm_socket)
        .activate_credential(
            AK_HANDLE,
            EK_HANDLE,
            &request.credential_blob.0,
            &request.encrypted_secret.0,
        )
        .map_err(tpm_error(domain))?;
    Ok(ActivationAnswer {
        secret: Base64(secret),
    })
}

/// The HTTP client that fetches guests' runtime reports. One per process:
/// it keeps connections to the guests open between challenges (the
/// service keeps them alive), which saves a TCP handshake through the
/// hypervisor's network each time.
#[derive(Debug, Clone)]
pub struct GuestClient(ureq::Agent);

impl Default for GuestClient {
    fn default() -> Self {
        Self(
            ureq::AgentBuilder::new()
                .timeout_connect(REPORT_TIMEOUT)
                .timeout(REPORT_TIMEOUT)
                .build(),
        )
    }
}

/// Evidence for `nonce`. Concurrent calls for one domain are safe (swtpm
/// serves one command at a time); the agent still queues them per domain.
pub fn evidence(
    domain: &DomainDir,
    nonce: &Nonce,
    guests: &GuestClient,
) -> Result<Evidence, AttestError> {
    let record = running(domain)?;
    // The guest signs its report while the vTPM quotes.
    let (tpm_part, report) = std::thread::scope(|scope| {
        let report = scope.spawn(|| runtime_report(guests, &record, nonce));
        let tpm_part = quote_and_identity(domain, &record, nonce);
        let report = report
            .join()
            .unwrap_or_else(|_| Err("fetching the runtime report failed".into()));
        (tpm_part, report)
    });
    let (ak, quote, values, ek_certificate) = tpm_part?;
    let pcr_selection = evidence::PcrSelection::new(
        SHA256,
        &values
            .values
            .iter()
            .map(|(pcr, _)| *pcr)
            .collect::<Vec<_>>(),
    )
    .map_err(AttestError::PcrFile)?;
    let pcrs = PcrFile {
        selections: vec![pcr_selection],
        digests: values.values.iter().map(|(_, v)| v.to_vec()).collect(),
    }
    .emit()
    .map_err(AttestError::PcrFile)?;
    let (runtime_report, runtime_report_error) = match report {
        Ok(report) => (Some(report), None),
        Err(why) => (None, Some(why)),
    };
    Ok(Evidence {
        format: evidence::FORMAT.into(),
        domain: domain.name().into(),
        nonce: HexNonce(*nonce),
        quote: evidence::Quote {
            message: Base64(quote.message),
            signature: Base64(quote.signature),
            pcrs: Base64(pcrs),
        },
        ak_public: Base64(ak.public),
        ek_certificate: Base64(ek_certificate),
        event_log: Base64(read(domain.eventlog())?),
        manifest: Base64(read(domain.boot().join(MANIFEST_FILE))?),
        manifest_signature: Base64(read(domain.boot().join(SIGNATURE_FILE))?),
        runtime_report,
        runtime_report_error,
    })
}

/// What the vTPM contributes: the AK's public area, the quote and the PCR
/// values, and the EK certificate (kept beside the vTPM state since the
/// launch that provisioned it; read from NV if it is not there).
fn quote_and_identity(
    domain: &DomainDir,
    record: &DomainRecord,
    nonce: &Nonce,
) -> Result<(vigil_tpm::PublicKey, vigil_tpm::Quote, PcrValues, Vec<u8>), AttestError> {
    let fail = tpm_error(domain);
    let mut tpm = Tpm::connect(&record.tpm_socket);
    let ak = tpm.read_public(AK_HANDLE).map_err(&fail)?;
    let (quote, values) = consistent_quote(&mut tpm, domain, nonce)?;
    let ek_certificate = match fs::read(domain.ek_certificate()) {
        Ok(der) => der,
        Err(_) => tpm.read_ek_certificate().map_err(&fail)?,
    };
    Ok((ak, quote, values, ek_certificate))
}

/// A quote of the launch PCRs and their values, read before and after it:
/// if an extend happened in between (the update counter moved), the pair
/// would not match, so it is made again.
fn consistent_quote(
    tpm: &mut Tpm,
    domain: &DomainDir,
    nonce: &Nonce,
) -> Result<(vigil_tpm::Quote, PcrValues), AttestError> {
    let fail = tpm_error(domain);
    for _ in 0..QUOTE_ATTEMPTS {
        let before = tpm.pcr_read(PcrSelection::LAUNCH).map_err(&fail)?;
        let quote = tpm
            .quote(AK_HANDLE, nonce.as_bytes(), PcrSelection::LAUNCH)
            .map_err(&fail)?;
        let after = tpm.pcr_read(PcrSelection::LAUNCH).map_err(&fail)?;
        if before == after {
            return Ok((quote, after));
        }
    }
    Err(AttestError::PcrsUnstable {
        name: domain.name().into(),
    })
}

/// The guest's signed runtime report for `nonce` (its JSON answer, as it
/// is), or why there is none.
fn runtime_report(
    guests: &GuestClient,
    record: &DomainRecord,
    nonce: &Nonce,
) -> Result<serde_json::Value, String> {
    if record.url.is_empty() {
        return Err("the guest has no network (Xen PVH): no runtime report".into());
    }
    let hex: String = nonce
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let url = format!(
        "{}/v1/attestation/report?nonce={hex}",
        record.url.trim_end_matches('/')
    );
    let response = match guests.0.get(&url).call() {
        Ok(response) => response,
        Err(ureq::Error::Status(code, response)) => {
            let body = response.into_string().unwrap_or_default();
            return Err(format!(
                "the guest answered {code}: {}",
                body.chars().take(300).collect::<String>()
            ));
        }
        Err(err) => return Err(format!("the guest did not answer {url}: {err}")),
    };
    let mut body = Vec::new();
    response
        .into_reader()
        .take(MAX_REPORT_BYTES + 1)
        .read_to_end(&mut body)
        .map_err(|err| format!("reading the guest's report: {err}"))?;
    if body.len() as u64 > MAX_REPORT_BYTES {
        return Err(format!(
            "the guest's report is over {MAX_REPORT_BYTES} bytes"
        ));
    }
    serde_json::from_slice(&body).map_err(|err| format!("the guest's report is not JSON: {err}"))
}
