//! The appraisal: one pure function from evidence, the enrolled AK, the
//! policy and the challenge to a list of named claims, each with what was
//! expected and what was found.
//!
//! Every check runs, whether or not an earlier one failed (like
//! [`vigil_core::v1::bundle::verify`]); a check that cannot run because
//! what it needs is missing says so (value 0, "no claim") and the check that
//! found the missing piece fails. Each claim feeds one AR4SI trustworthiness
//! claim of the EAR ([`TrustClaim`]); its value is the one for "passed" or
//! the documented one for how it failed (`docs/attestation.md`).

use std::collections::BTreeMap;
use std::fmt;

use ed25519_dalek::VerifyingKey;
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use vigil_core::v1::bundle::{self, BundleFiles};
use vigil_core::v1::eventlog::{self, Record};
use vigil_core::v1::events::{LAUNCH_PCRS, sha256};
use vigil_core::v1::evidence::{Evidence, PcrFile, PcrSelection, SignedReport};
use vigil_core::v1::manifest::{Digest, Manifest};
use vigil_core::v1::report::{self, Nonce, Report, Verdict};
use vigil_core::v2::events::{ListVersion, list_version};

use crate::tpm::{
    self, ClockInfo, QuoteInfo, QuoteSignature, TPM_ALG_SHA256, TPM_GENERATED_VALUE,
    TPM_ST_ATTEST_QUOTE, TpmPublic, describe_selection, hex,
};

/// The AR4SI trustworthiness claims (draft-ietf-rats-ar4si), as EAR names
/// them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrustClaim {
    /// The attester is the one enrolled (AK, nonce, domain, boot key).
    InstanceIdentity,
    /// The launch configuration (signed manifest, command line).
    Configuration,
    /// The code that was loaded and runs (PCRs, log, runtime report).
    Executables,
    /// The TPM itself (clock, counters).
    Hardware,
}

impl TrustClaim {
    /// The EAR name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InstanceIdentity => "instance-identity",
            Self::Configuration => "configuration",
            Self::Executables => "executables",
            Self::Hardware => "hardware",
        }
    }
}

/// An EAR appraisal status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// No claim.
    None,
    /// Every claim passed.
    Affirming,
    /// A claim failed in a way that calls for attention.
    Warning,
    /// A claim failed: do not trust this domain.
    Contraindicated,
}

impl Status {
    /// The tier of an AR4SI value: −1..=1 none, 2..=31 affirming,
    /// 32..=95 warning, 96..=127 contraindicated.
    pub const fn of(value: i8) -> Self {
        match value {
            i8::MIN..=1 => Self::None,
            2..=31 => Self::Affirming,
            32..=95 => Self::Warning,
            _ => Self::Contraindicated,
        }
    }

    /// The EAR word.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Affirming => "affirming",
            Self::Warning => "warning",
            Self::Contraindicated => "contraindicated",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// AR4SI values Vigil uses.
pub mod value {
    /// The claim was not evaluated.
    pub const NO_CLAIM: i8 = 0;
    /// Passed (instance-identity: trustworthy; configuration: approved;
    /// executables: approved boot and runtime; hardware: genuine).
    pub const PASSED: i8 = 2;
    /// Known-unsafe (configuration below the security floor, hardware clock
    /// not safe) or not vouched for (a stale runtime report).
    pub const UNSAFE: i8 = 32;
    /// Executables: the runtime state is not recognized (no report, or no
    /// check finished yet).
    pub const UNRECOGNIZED_RUNTIME: i8 = 33;
    /// Contraindicated / untrustworthy.
    pub const CONTRAINDICATED: i8 = 96;
    /// Cryptographic validation failed.
    pub const CRYPTO_FAILED: i8 = 99;
}

use value::{CONTRAINDICATED, CRYPTO_FAILED, NO_CLAIM, PASSED, UNRECOGNIZED_RUNTIME, UNSAFE};

/// One claim: a named check, its outcome and what it was compared with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Claim {
    /// Its name, e.g. `nonce` or `pcr-9-replay`.
    pub name: &'static str,
    /// The trustworthiness claim it feeds.
    pub trust: TrustClaim,
    /// Its AR4SI value.
    pub value: i8,
    /// The tier of that value.
    pub status: Status,
    /// What it should be.
    pub expected: String,
    /// What it is.
    pub actual: String,
}

impl Claim {
    /// Whether it passed.
    pub fn passed(&self) -> bool {
        self.status == Status::Affirming
    }
}

/// What the guest's runtime report said.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RuntimeSummary {
    /// The watchdog's latched verdict.
    pub verdict: &'static str,
    /// Checks finished since boot.
    pub checks: u64,
    /// Guest uptime when the report was made (ms).
    pub uptime_ms: u64,
    /// Guest uptime at the end of the latest check (ms).
    pub last_check_ms: u64,
}

/// The outcome of [`appraise`].
#[derive(Clone, Debug, Serialize)]
pub struct Appraisal {
    /// The domain asked about.
    pub domain: String,
    /// The worst tier of the vector.
    pub status: Status,
    /// Per trustworthiness claim, the worst value of its claims.
    pub vector: BTreeMap<TrustClaim, i8>,
    /// Every claim, in the order checked.
    pub claims: Vec<Claim>,
    /// The launch event list version of the log.
    pub list_version: Option<u8>,
    /// The TPM's clock and counters, from a quote whose signature verified.
    pub clock: Option<ClockInfo>,
    /// SHA-256 of the per-boot report key (the boot id), from the log.
    pub boot_id: Option<String>,
    /// The sealed service's name, version and security version.
    pub service: Option<(String, String, u64)>,
    /// The runtime report's content, if it verified.
    pub runtime: Option<RuntimeSummary>,
}

impl Appraisal {
    /// The claims that did not pass (failed or were not evaluated).
    pub fn failures(&self) -> impl Iterator<Item = &Claim> {
        self.claims.iter().filter(|c| c.status > Status::Affirming)
    }
}

/// The relying party's policy.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Keys a manifest may be signed with.
    pub manifest_keys: Vec<VerifyingKey>,
    /// The lowest security version accepted.
    pub min_security_version: u64,
}

/// The challenge and what the verifier knows about the domain.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The domain asked about.
    pub domain: &'a str,
    /// The nonce sent.
    pub nonce: &'a Nonce,
    /// The enrolled AK.
    pub ak: &'a TpmPublic,
    /// Clock and counters of the last quote from this TPM, if known.
    pub previous: Option<ClockInfo>,
}

struct Claims(Vec<Claim>);

impl Claims {
    fn push(
        &mut self,
        name: &'static str,
        trust: TrustClaim,
        value: i8,
        expected: impl Into<String>,
        actual: impl Into<String>,
    ) {
        self.0.push(Claim {
            name,
            trust,
            value,
            status: Status::of(value),
            expected: expected.into(),
            actual: actual.into(),
        });
    }

    /// Passes when `expected == actual`, else has `fail`.
    fn compare(
        &mut self,
        name: &'static str,
        trust: TrustClaim,
        fail: i8,
        expected: impl Into<String>,
        actual: impl Into<String>,
    ) {
        let (expected, actual) = (expected.into(), actual.into());
        let value = if expected == actual { PASSED } else { fail };
        self.push(name, trust, value, expected, actual);
    }

    /// Passes when `ok`.
    fn check(
        &mut self,
        name: &'static str,
        trust: TrustClaim,
        ok: bool,
        fail: i8,
        expected: impl Into<String>,
        actual: impl Into<String>,
    ) {
        self.push(
            name,
            trust,
            if ok { PASSED } else { fail },
            expected,
            actual,
        );
    }

    fn not_evaluated(
        &mut self,
        name: &'static str,
        trust: TrustClaim,
        expected: impl Into<String>,
        why: &str,
    ) {
        self.push(
            name,
            trust,
            NO_CLAIM,
            expected,
            format!("not evaluated: {why}"),
        );
    }
}

/// The selection every quote must sign: the SHA-256 bank's launch PCRs.
fn launch_selection() -> String {
    PcrSelection::new(TPM_ALG_SHA256, &LAUNCH_PCRS)
        .map_or_else(|err| err.to_string(), |s| describe_selection(&[s]))
}

/// Appraises `evidence` for `request` under `policy`. Pure: no I/O, no
/// clock (freshness is judged on the guest's own clock, recency by the
/// nonce).
pub fn appraise(evidence: &Evidence, request: &Request<'_>, policy: &Policy) -> Appraisal {
    use TrustClaim::*;
    let mut claims = Claims(Vec::new());
    let mut appraisal = Appraisal {
        domain: request.domain.to_string(),
        status: Status::None,
        vector: BTreeMap::new(),
        claims: Vec::new(),
        list_version: None,
        clock: None,
        boot_id: None,
        service: None,
        runtime: None,
    };

    // The attester: domain, AK, the quote's structure, signature and nonce.
    claims.compare(
        "domain",
        InstanceIdentity,
        CONTRAINDICATED,
        request.domain,
        evidence.domain.as_str(),
    );
    claims.compare(
        "ak-public",
        InstanceIdentity,
        CONTRAINDICATED,
        format!("the enrolled AK {}", request.ak.fingerprint()),
        format!(
            "the enrolled AK {}",
            hex(&Sha256::digest(&evidence.ak_public.0))
        ),
    );
    let message = &evidence.quote.message.0;
    let header = tpm::attest_header(message);
    claims.compare(
        "attest-magic",
        InstanceIdentity,
        CONTRAINDICATED,
        format!("{TPM_GENERATED_VALUE:#010x} (TPM_GENERATED_VALUE)"),
        header.map_or("too short".into(), |(magic, _)| {
            if magic == TPM_GENERATED_VALUE {
                format!("{magic:#010x} (TPM_GENERATED_VALUE)")
            } else {
                format!("{magic:#010x}")
            }
        }),
    );
    claims.compare(
        "attest-type",
        InstanceIdentity,
        CONTRAINDICATED,
        format!("{TPM_ST_ATTEST_QUOTE:#06x} (TPM_ST_ATTEST_QUOTE)"),
        header.map_or("too short".into(), |(_, kind)| {
            if kind == TPM_ST_ATTEST_QUOTE {
                format!("{kind:#06x} (TPM_ST_ATTEST_QUOTE)")
            } else {
                format!("{kind:#06x}")
            }
        }),
    );
    let signed_by = format!(
        "a valid signature by the enrolled AK {} ({})",
        request.ak.fingerprint(),
        request.ak.describe()
    );
    let signature = QuoteSignature::parse(&evidence.quote.signature.0)
        .map_err(|err| err.to_string())
        .and_then(|signature| {
            request
                .ak
                .verify(message, &signature)
                .map_err(|err| err.to_string())
        });
    let signature_ok = signature.is_ok();
    claims.check(
        "quote-signature",
        InstanceIdentity,
        signature_ok,
        CRYPTO_FAILED,
        signed_by.clone(),
        signature.map_or_else(|err| err, |()| signed_by),
    );
    let quote = QuoteInfo::parse(message);
    claims.check(
        "quote-structure",
        InstanceIdentity,
        quote.is_ok(),
        CONTRAINDICATED,
        "a TPMS_ATTEST quote",
        quote
            .as_ref()
            .map_or_else(|err| err.to_string(), |_| "a TPMS_ATTEST quote".into()),
    );
    let quote = quote.ok();
    let nonce_hex = hex(request.nonce.as_bytes());
    match &quote {
        Some(quote) => claims.compare(
            "nonce",
            InstanceIdentity,
            CONTRAINDICATED,
            nonce_hex.clone(),
            hex(&quote.extra_data),
        ),
        None => claims.not_evaluated("nonce", InstanceIdentity, nonce_hex.clone(), "no quote"),
    }

    // The TPM: clock and counters.
    match &quote {
        Some(quote) => {
            claims.check(
                "clock-safe",
                Hardware,
                quote.clock.safe,
                UNSAFE,
                "safe = 1",
                format!("safe = {}", u8::from(quote.clock.safe)),
            );
            counters_claim(&mut claims, request.previous, quote.clock);
            if signature_ok {
                appraisal.clock = Some(quote.clock);
            }
        }
        None => {
            claims.not_evaluated("clock-safe", Hardware, "safe = 1", "no quote");
            claims.not_evaluated("tpm-counters", Hardware, "not going backwards", "no quote");
        }
    }

    // The PCRs: selection, digest.
    let pcr_file = PcrFile::parse(&evidence.quote.pcrs.0);
    claims.check(
        "pcr-file",
        Executables,
        pcr_file.is_ok(),
        CONTRAINDICATED,
        "a tpm2-tools PCR file",
        pcr_file
            .as_ref()
            .map_or_else(|err| err.to_string(), |_| "a tpm2-tools PCR file".into()),
    );
    let pcr_file = pcr_file.ok();
    match (&quote, &pcr_file) {
        (Some(quote), Some(file)) => {
            let (signed, presented) = (&quote.selection, &file.selections);
            claims.check(
                "pcr-selection",
                Executables,
                signed == presented,
                CONTRAINDICATED,
                format!("the signed selection, {}", describe_selection(signed)),
                format!("presented {}", describe_selection(presented)),
            );
            let digest = Sha256::digest(file.digests.concat());
            claims.compare(
                "pcr-digest",
                Executables,
                CRYPTO_FAILED,
                hex(&quote.pcr_digest),
                hex(&digest),
            );
        }
        _ => {
            claims.not_evaluated(
                "pcr-selection",
                Executables,
                "the signed selection",
                "no quote or no PCR file",
            );
            claims.not_evaluated(
                "pcr-digest",
                Executables,
                "the signed PCR digest",
                "no quote or no PCR file",
            );
        }
    }
    match &quote {
        Some(quote) => claims.compare(
            "launch-pcrs",
            Executables,
            CONTRAINDICATED,
            launch_selection(),
            describe_selection(&quote.selection),
        ),
        None => claims.not_evaluated("launch-pcrs", Executables, launch_selection(), "no quote"),
    }

    // The event log and its replay.
    let log = eventlog::parse(&evidence.event_log.0);
    let version = log.as_ref().ok().and_then(|records| list_version(records));
    appraisal.list_version = version.map(ListVersion::number);
    claims.check(
        "event-log",
        Executables,
        log.is_ok() && version.is_some(),
        CONTRAINDICATED,
        "a SHA-256 crypto-agile log of launch list v1 or v2",
        match (&log, version) {
            (Err(err), _) => err.to_string(),
            (Ok(_), None) => "a log without a v1 or v2 PCR 15 event".into(),
            (Ok(records), Some(version)) => format!(
                "a SHA-256 crypto-agile log of launch list {version} ({} records)",
                records.len()
            ),
        },
    );
    let log = log.ok();
    let presented = |pcr: u8| -> Option<Vec<u8>> {
        let file = pcr_file.as_ref()?;
        let values = file.values().ok()?;
        values
            .iter()
            .find(|v| v.hash == TPM_ALG_SHA256 && v.pcr == pcr)
            .map(|v| v.digest.to_vec())
    };
    for (pcr, name) in [
        (9, "pcr-9-replay"),
        (12, "pcr-12-replay"),
        (15, "pcr-15-replay"),
    ] {
        let Some(records) = &log else {
            claims.not_evaluated(name, Executables, "the log's replay", "no event log");
            continue;
        };
        claims.compare(
            name,
            Executables,
            CONTRAINDICATED,
            format!(
                "the log's replay {}",
                hex(&eventlog::replay(records, u32::from(pcr)))
            ),
            presented(pcr).map_or_else(
                || format!("PCR {pcr} not presented"),
                |value| format!("the log's replay {}", hex(&value)),
            ),
        );
    }

    // The manifest: signature, security version, PCR 9.
    let manifest = manifest_claims(&mut claims, evidence, policy);
    if let Some(manifest) = &manifest {
        appraisal.service = Some((
            manifest.service.name.clone(),
            manifest.service.version.clone(),
            manifest.service.security_version,
        ));
        claims.compare(
            "pcr-9-manifest",
            Executables,
            CONTRAINDICATED,
            format!("the sealed PCR 9 {}", manifest.pcr9),
            presented(9).map_or_else(
                || "PCR 9 not presented".into(),
                |value| {
                    if value == manifest.pcr9.0 {
                        format!("the sealed PCR 9 {}", manifest.pcr9)
                    } else {
                        hex(&value)
                    }
                },
            ),
        );
    } else {
        claims.not_evaluated(
            "pcr-9-manifest",
            Executables,
            "the sealed PCR 9",
            "no usable manifest",
        );
    }

    // The log's entries against the manifest.
    let report_key = log_entry_claims(
        &mut claims,
        log.as_deref(),
        version,
        manifest.as_ref(),
        &evidence.manifest.0,
    );
    appraisal.boot_id = report_key.map(|key| hex(&report::boot_id(&key)));

    // The runtime report.
    appraisal.runtime = runtime_claims(
        &mut claims,
        evidence,
        request.nonce,
        report_key,
        manifest.as_ref(),
    );

    appraisal.claims = claims.0;
    for claim in &appraisal.claims {
        let entry = appraisal.vector.entry(claim.trust).or_insert(NO_CLAIM);
        if Status::of(claim.value) > Status::of(*entry)
            || (Status::of(claim.value) == Status::of(*entry) && claim.value > *entry)
        {
            *entry = claim.value;
        }
    }
    appraisal.status = appraisal
        .vector
        .values()
        .map(|&v| Status::of(v))
        .max()
        .unwrap_or(Status::None);
    appraisal
}

fn counters_claim(claims: &mut Claims, previous: Option<ClockInfo>, now: ClockInfo) {
    let actual = format!(
        "reset {}, restart {}, clock {} ms",
        now.reset_count, now.restart_count, now.clock
    );
    let Some(before) = previous else {
        claims.push(
            "tpm-counters",
            TrustClaim::Hardware,
            PASSED,
            "no earlier quote recorded",
            actual,
        );
        return;
    };
    let expected = format!(
        "not below reset {}, restart {}, clock {} ms",
        before.reset_count, before.restart_count, before.clock
    );
    let backwards = now.reset_count < before.reset_count
        || (now.reset_count == before.reset_count && now.restart_count < before.restart_count)
        || (now.reset_count == before.reset_count
            && now.restart_count == before.restart_count
            && now.clock < before.clock);
    claims.check(
        "tpm-counters",
        TrustClaim::Hardware,
        !backwards,
        CONTRAINDICATED,
        expected,
        actual,
    );
}

/// The manifest's claims, through [`vigil_core::v1::bundle::verify`] (the
/// same checks dom0 makes at launch, less those on the image and loader
/// files, which the verifier does not have: the log and PCR 9 stand for
/// them).
fn manifest_claims(claims: &mut Claims, evidence: &Evidence, policy: &Policy) -> Option<Manifest> {
    use TrustClaim::Configuration;
    let files = BundleFiles {
        manifest: &evidence.manifest.0,
        signature: &evidence.manifest_signature.0,
        image: &[],
        loader: &[],
    };
    let verdicts: Vec<bundle::Verdict> = policy
        .manifest_keys
        .iter()
        .map(|key| bundle::verify(&files, key, policy.min_security_version))
        .collect();
    let find = |verdict: &bundle::Verdict, name: &str| {
        verdict.checks.iter().find(|c| c.name == name).cloned()
    };
    let trusted = verdicts
        .iter()
        .position(|v| find(v, "signature").is_some_and(|c| c.passed));
    let keys: Vec<String> = policy
        .manifest_keys
        .iter()
        .map(bundle::key_fingerprint)
        .collect();
    let expected = format!(
        "a valid ed25519 signature by a trusted key ({})",
        if keys.is_empty() {
            "none configured".to_string()
        } else {
            keys.join(", ")
        }
    );
    match trusted {
        Some(index) => claims.push(
            "manifest-signature",
            Configuration,
            PASSED,
            expected,
            format!("a valid ed25519 signature by trusted key {}", keys[index]),
        ),
        None => claims.push(
            "manifest-signature",
            Configuration,
            CRYPTO_FAILED,
            expected,
            "no trusted key verifies the signature over these manifest bytes",
        ),
    }
    // An untrusted signature: the first key's verdict still says what the
    // other checks found.
    let verdict = verdicts.into_iter().nth(trusted.unwrap_or(0));
    let Some(verdict) = verdict else {
        for name in ["manifest", "security-version", "manifest-pcr9"] {
            claims.not_evaluated(
                name,
                Configuration,
                "",
                "no trusted manifest key configured",
            );
        }
        return Manifest::parse(&evidence.manifest.0).ok();
    };
    for (check, name, fail) in [
        ("manifest", "manifest", CONTRAINDICATED),
        ("security_version", "security-version", UNSAFE),
        ("pcr9", "manifest-pcr9", CONTRAINDICATED),
    ] {
        match find(&verdict, check) {
            Some(c) => claims.check(name, Configuration, c.passed, fail, c.expected, c.actual),
            None => claims.not_evaluated(name, Configuration, "", "the manifest did not parse"),
        }
    }
    verdict.manifest
}

fn event_name(event_type: u32) -> String {
    match event_type {
        vigil_core::v1::events::EV_IPL => "EV_IPL".into(),
        vigil_core::v2::events::EV_EVENT_TAG => "EV_EVENT_TAG".into(),
        other => format!("type {other:#x}"),
    }
}

fn text_of(data: &[u8]) -> String {
    match std::str::from_utf8(data) {
        Ok(text) if text.len() <= 200 => format!("{text:?}"),
        Ok(_) | Err(_) => format!("{} bytes, sha256 {}", data.len(), hex(&sha256(data))),
    }
}

/// Compares the log's records with the launch event list and the manifest;
/// returns the report key of the PCR 15 event if it is well-formed.
fn log_entry_claims(
    claims: &mut Claims,
    log: Option<&[Record<'_>]>,
    version: Option<ListVersion>,
    manifest: Option<&Manifest>,
    manifest_bytes: &[u8],
) -> Option<[u8; 32]> {
    use TrustClaim::*;
    let names = [
        ("log-loader", Executables),
        ("log-image", Executables),
        ("log-manifest", Configuration),
        ("log-cmdline", Configuration),
        ("log-report-key", InstanceIdentity),
    ];
    let (Some(records), Some(version)) = (log, version) else {
        claims.not_evaluated(
            "log-structure",
            Executables,
            "the launch event list",
            "no usable log",
        );
        for (name, trust) in names {
            claims.not_evaluated(name, trust, "", "no usable log");
        }
        return None;
    };
    let describe = |entries: &mut dyn Iterator<Item = (u32, u32)>| {
        entries
            .map(|(pcr, kind)| format!("{pcr} {}", event_name(kind)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let expected = describe(
        &mut version
            .events()
            .iter()
            .map(|s| (u32::from(s.pcr), s.event_type)),
    );
    let actual = describe(&mut records.iter().map(|r| (r.pcr, r.event_type)));
    claims.compare(
        "log-structure",
        Executables,
        CONTRAINDICATED,
        format!("list {version}: {expected}"),
        format!("list {version}: {actual}"),
    );
    if records.len() != 5 {
        for (name, trust) in names {
            claims.not_evaluated(
                name,
                trust,
                "",
                "the log does not have the list's 5 records",
            );
        }
        return None;
    }
    let bound = |record: &Record<'_>| record.sha256 == sha256(record.data);
    match manifest {
        Some(manifest) => {
            for (index, (name, artifact, data)) in [
                ("log-loader", &manifest.loader, &b"vigil-loader"[..]),
                ("log-image", &manifest.image, &b"vigil-image"[..]),
            ]
            .into_iter()
            .enumerate()
            {
                let record = &records[index];
                claims.compare(
                    name,
                    Executables,
                    CONTRAINDICATED,
                    format!("{} {}", text_of(data), artifact.sha256),
                    format!("{} {}", text_of(record.data), Digest(record.sha256)),
                );
            }
            let cmdline = &records[3];
            claims.check(
                "log-cmdline",
                Configuration,
                cmdline.data == manifest.kernel_cmdline.as_bytes() && bound(cmdline),
                CONTRAINDICATED,
                format!(
                    "the sealed command line {}, its SHA-256 extended",
                    text_of(manifest.kernel_cmdline.as_bytes())
                ),
                format!(
                    "{}{}",
                    text_of(cmdline.data),
                    if bound(cmdline) {
                        ", its SHA-256 extended"
                    } else {
                        ", another digest extended"
                    }
                ),
            );
        }
        None => {
            for (name, trust) in [
                ("log-loader", Executables),
                ("log-image", Executables),
                ("log-cmdline", Configuration),
            ] {
                claims.not_evaluated(name, trust, "", "no usable manifest");
            }
        }
    }
    let record = &records[2];
    claims.check(
        "log-manifest",
        Configuration,
        record.data == manifest_bytes && bound(record),
        CONTRAINDICATED,
        format!(
            "the presented manifest's bytes (sha256 {}), their SHA-256 extended",
            hex(&sha256(manifest_bytes))
        ),
        format!(
            "{} bytes (sha256 {}){}",
            record.data.len(),
            hex(&sha256(record.data)),
            if bound(record) {
                ", their SHA-256 extended"
            } else {
                ", another digest extended"
            }
        ),
    );
    let record = &records[4];
    let key = version.report_key(record.data);
    let key_ok = key.is_some_and(|key| record.sha256 == sha256(&key));
    claims.check(
        "log-report-key",
        InstanceIdentity,
        key_ok,
        CONTRAINDICATED,
        format!("a {version} report key event whose key's SHA-256 is extended"),
        match key {
            None => format!("{} bytes of event data", record.data.len()),
            Some(key) if key_ok => format!(
                "a {version} report key event whose key's SHA-256 is extended (boot id {})",
                hex(&report::boot_id(&key))
            ),
            Some(_) => "a key whose SHA-256 is not the digest extended".into(),
        },
    );
    key.filter(|_| key_ok)
}

fn describe_regions<'a>(regions: impl Iterator<Item = (&'a str, [u8; 32])>) -> String {
    regions
        .map(|(name, digest)| format!("{name} {}", Digest(digest)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn runtime_claims(
    claims: &mut Claims,
    evidence: &Evidence,
    nonce: &Nonce,
    report_key: Option<[u8; 32]>,
    manifest: Option<&Manifest>,
) -> Option<RuntimeSummary> {
    use TrustClaim::Executables;
    let rest = [
        "report-signature",
        "report-nonce",
        "report-verdict",
        "report-regions",
        "report-fresh",
    ];
    let skip = |claims: &mut Claims, why: &str| {
        for name in rest {
            claims.not_evaluated(name, Executables, "", why);
        }
    };
    let Some(answer) = &evidence.runtime_report else {
        claims.push(
            "runtime-report",
            Executables,
            UNRECOGNIZED_RUNTIME,
            "the guest's signed runtime report",
            format!(
                "none: {}",
                evidence
                    .runtime_report_error
                    .as_deref()
                    .unwrap_or("the agent gave no reason")
            ),
        );
        skip(claims, "no runtime report");
        return None;
    };
    let signed = SignedReport::from_answer(answer);
    claims.check(
        "runtime-report",
        Executables,
        signed.is_ok(),
        CONTRAINDICATED,
        "the guest's signed runtime report",
        signed.as_ref().map_or_else(
            |err| err.to_string(),
            |_| "the guest's signed runtime report".into(),
        ),
    );
    let Ok(signed) = signed else {
        skip(claims, "no readable runtime report");
        return None;
    };
    let Some(key) = report_key else {
        skip(claims, "no report key in the event log");
        return None;
    };
    let boot = hex(&report::boot_id(&key));
    let expected = format!("signed by this boot's report key (boot id {boot})");
    let verified = report::verify(&key, &signed.report, &signed.signature);
    claims.check(
        "report-signature",
        Executables,
        verified.is_ok(),
        CRYPTO_FAILED,
        expected.clone(),
        match &verified {
            Ok(_) => expected,
            Err(err) if signed.public_key != key => format!(
                "{err}: the guest signed with another key (boot id {})",
                hex(&report::boot_id(&signed.public_key))
            ),
            Err(err) => err.to_string(),
        },
    );
    let Ok(report) = verified else {
        for name in &rest[1..] {
            claims.not_evaluated(name, Executables, "", "the report did not verify");
        }
        return None;
    };
    claims.compare(
        "report-nonce",
        Executables,
        CONTRAINDICATED,
        hex(nonce.as_bytes()),
        hex(report.nonce.as_bytes()),
    );
    let (verdict_value, verdict_text) = match report.verdict {
        Verdict::Intact => (PASSED, "intact".to_string()),
        Verdict::Pending => (
            UNRECOGNIZED_RUNTIME,
            "pending: no check has finished yet".to_string(),
        ),
        Verdict::Violated => (
            CONTRAINDICATED,
            format!(
                "violated (first at uptime {} ms)",
                report.first_violation_ms.unwrap_or_default()
            ),
        ),
    };
    claims.push(
        "report-verdict",
        Executables,
        verdict_value,
        "intact",
        verdict_text,
    );
    match manifest {
        Some(manifest) => {
            let sealed = describe_regions(
                manifest
                    .regions
                    .iter()
                    .map(|r| (r.name.as_str(), r.sha256.0)),
            );
            if report.verdict == Verdict::Pending {
                claims.not_evaluated(
                    "report-regions",
                    Executables,
                    sealed,
                    "no check has finished yet",
                );
            } else {
                claims.compare(
                    "report-regions",
                    Executables,
                    CONTRAINDICATED,
                    sealed,
                    describe_regions(report.regions().map(|r| (r.name.as_str(), r.sha256))),
                );
            }
            fresh_claim(claims, &report, manifest.watchdog.interval_ms);
        }
        None => {
            claims.not_evaluated("report-regions", Executables, "", "no usable manifest");
            claims.not_evaluated("report-fresh", Executables, "", "no usable manifest");
        }
    }
    Some(RuntimeSummary {
        verdict: report.verdict.as_str(),
        checks: report.checks,
        uptime_ms: report.uptime_ms,
        last_check_ms: report.last_check_ms,
    })
}

/// How long after start the watchdog's first check may begin (ms): the
/// service waits 0.5 s, or one interval if that is shorter.
const FIRST_CHECK_DELAY_MS: u64 = 500;

fn fresh_claim(claims: &mut Claims, report: &Report, interval_ms: u32) {
    let limit = 2 * u64::from(interval_ms);
    let expected = format!("latest check at most {limit} ms old (two watchdog intervals)");
    let (ok, actual) = if report.verdict == Verdict::Pending {
        let young = report.uptime_ms <= FIRST_CHECK_DELAY_MS + limit;
        (
            young,
            format!(
                "no check finished after {} ms of uptime{}",
                report.uptime_ms,
                if young { " (still starting)" } else { "" }
            ),
        )
    } else {
        let age = report.uptime_ms.saturating_sub(report.last_check_ms);
        (
            age <= limit,
            format!(
                "latest check {age} ms old{}",
                if age <= limit {
                    ""
                } else {
                    " (the watchdog is starved)"
                }
            ),
        )
    };
    let actual = if ok { expected.clone() } else { actual };
    claims.check(
        "report-fresh",
        TrustClaim::Executables,
        ok,
        UNSAFE,
        expected,
        actual,
    );
}
