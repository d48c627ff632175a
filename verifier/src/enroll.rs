//! Enrollment: trusting a domain's AK, and remembering it.
//!
//! An AK is trusted only after
//! 1. its attributes are those of an attestation key (restricted, signing,
//!    fixed to its TPM) and its name is its public area's;
//! 2. the EK certificate verifies against a configured CA and certifies the
//!    EK the agent presents ([`crate::ekcert`]) — or the operator chose
//!    [`Trust::PinOnFirstContact`], which skips this step only;
//! 3. a credential made for that EK and the AK's name
//!    ([`crate::credential`]) comes back from the agent's ActivateCredential
//!    with the same secret: the AK lives in the TPM that holds the EK.
//!
//! The state (per agent and domain: the AK, the EK certificate's
//! fingerprint, the last clock and counters) is one JSON file per domain in
//! the state directory, replaced atomically.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use vigil_core::v1::evidence::Base64;

use crate::agent::{Agent, AgentError};
use crate::credential::{self, CredentialError};
use crate::ekcert::{self, EkCertError};
use crate::tpm::{ClockInfo, TpmParseError, TpmPublic, hex};

/// The `format` of an enrollment file.
pub const FORMAT: &str = "vigil.enrollment.v1";

/// How the EK was trusted.
#[derive(Debug)]
pub enum Trust {
    /// Its certificate verifies against one of these CA certificates.
    Ca(Vec<x509_cert::Certificate>),
    /// Whatever EK the agent presents on first contact (logged loudly by
    /// the caller; the credential check still runs).
    PinOnFirstContact,
}

/// What the EK's trust rested on, as recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrustBasis {
    /// The EK certificate verified against a configured CA.
    EkCa,
    /// Pinned on first contact, without a CA.
    Pinned,
}

/// A domain's enrollment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrollment {
    /// Always [`FORMAT`].
    pub format: String,
    /// The agent's address.
    pub agent: String,
    /// The domain.
    pub domain: String,
    /// The AK's `TPM2B_PUBLIC`.
    pub ak_public: Base64,
    /// The AK's name (hex).
    pub ak_name: String,
    /// SHA-256 of the EK certificate (DER), hex.
    pub ek_certificate_sha256: String,
    /// What the EK's trust rested on.
    pub trust: TrustBasis,
    /// When it was enrolled (seconds since the epoch).
    pub enrolled_unix: u64,
    /// The clock and counters of the latest verified quote.
    pub counters: Option<ClockInfo>,
}

impl Enrollment {
    /// The enrolled AK.
    pub fn ak(&self) -> Result<TpmPublic, TpmParseError> {
        TpmPublic::parse(&self.ak_public.0)
    }
}

/// Why enrollment failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The agent failed.
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// The EK or AK public area does not parse.
    #[error("the {which} public area is not usable")]
    Public {
        /// `EK` or `AK`.
        which: &'static str,
        /// Why.
        #[source]
        source: TpmParseError,
    },
    /// The AK is not a restricted signing key fixed to its TPM.
    #[error(
        "the AK's attributes {0:#010x} are not those of an attestation key (restricted, sign, fixedTPM, fixedParent, sensitiveDataOrigin, no decrypt)"
    )]
    AkAttributes(u32),
    /// The agent's AK name is not the AK's.
    #[error("the agent names the AK {named}, its public area gives {computed}")]
    AkName {
        /// What the agent said.
        named: String,
        /// What the public area gives.
        computed: String,
    },
    /// The EK certificate is not trusted.
    #[error("the EK certificate is refused")]
    EkCertificate(#[source] EkCertError),
    /// MakeCredential failed.
    #[error("making a credential for this EK failed")]
    Credential(#[source] CredentialError),
    /// The TPM recovered another secret.
    #[error(
        "ActivateCredential returned another secret: the AK does not live in the TPM of this EK"
    )]
    Activation,
}

/// Enrolls `domain` of `agent`.
pub fn enroll(
    agent: &dyn Agent,
    domain: &str,
    trust: &Trust,
    now: SystemTime,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<Enrollment, EnrollError> {
    let identity = agent.identity(domain)?;
    let ek = TpmPublic::parse(&identity.ek_public.0).map_err(|source| EnrollError::Public {
        which: "EK",
        source,
    })?;
    let ak = TpmPublic::parse(&identity.ak_public.0).map_err(|source| EnrollError::Public {
        which: "AK",
        source,
    })?;
    if !ak.is_attestation_key() {
        return Err(EnrollError::AkAttributes(ak.attributes));
    }
    let name = hex(&ak.name());
    if identity.ak_name.to_ascii_lowercase() != name {
        return Err(EnrollError::AkName {
            named: identity.ak_name,
            computed: name,
        });
    }
    let basis = match trust {
        Trust::Ca(anchors) => {
            ekcert::verify(&identity.ek_certificate.0, anchors, &ek, now)
                .map_err(EnrollError::EkCertificate)?;
            TrustBasis::EkCa
        }
        Trust::PinOnFirstContact => TrustBasis::Pinned,
    };
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    let credential = credential::make_credential(&ek, &ak.name(), &secret, rng)
        .map_err(EnrollError::Credential)?;
    if agent.activate(domain, &credential)? != secret {
        return Err(EnrollError::Activation);
    }
    Ok(Enrollment {
        format: FORMAT.into(),
        agent: agent.id(),
        domain: domain.into(),
        ak_public: identity.ak_public,
        ak_name: name,
        ek_certificate_sha256: ekcert::fingerprint(&identity.ek_certificate.0),
        trust: basis,
        enrolled_unix: now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        counters: None,
    })
}

/// A failed state operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing a state file failed.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A state file is not an enrollment.
    #[error("{path} is not a {FORMAT} file")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A domain name that cannot name a file or a URL path segment.
    #[error(
        "domain name {0:?}: use 1 to 64 ASCII letters, digits, '.', '_' or '-', not starting with '.'"
    )]
    DomainName(String),
}

/// Checks a domain name (it becomes a file name and a URL path segment).
pub fn check_domain_name(domain: &str) -> Result<(), StoreError> {
    let ok = (1..=64).contains(&domain.len())
        && !domain.starts_with('.')
        && domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::DomainName(domain.into()))
    }
}

/// The enrollment store: `<dir>/<agent>/<domain>.json`.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// A store in `dir` (created when first written).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The file of an agent's domain.
    pub fn path(&self, agent: &str, domain: &str) -> Result<PathBuf, StoreError> {
        check_domain_name(domain)?;
        let agent = agent
            .split_once("://")
            .map_or(agent, |(_, rest)| rest)
            .trim_end_matches('/');
        let agent: String = agent
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Ok(self.dir.join(agent).join(format!("{domain}.json")))
    }

    /// The enrollment of an agent's domain, if there is one.
    pub fn load(&self, agent: &str, domain: &str) -> Result<Option<Enrollment>, StoreError> {
        let path = self.path(agent, domain)?;
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StoreError::Io {
                    what: "reading",
                    path,
                    source,
                });
            }
        };
        let enrollment: Enrollment =
            serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
                path: path.clone(),
                source,
            })?;
        Ok(Some(enrollment))
    }

    /// Writes an enrollment atomically (a temporary file, fsync, rename,
    /// fsync of the directory).
    pub fn save(&self, enrollment: &Enrollment) -> Result<PathBuf, StoreError> {
        let path = self.path(&enrollment.agent, &enrollment.domain)?;
        let bytes = serde_json::to_vec_pretty(enrollment).unwrap_or_default();
        write_atomically(&path, &bytes)?;
        Ok(path)
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let io = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { what, path, source }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let temp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("state"),
        std::process::id()
    ));
    let mut file = fs::File::create(&temp).map_err(io("creating", &temp))?;
    file.write_all(bytes).map_err(io("writing", &temp))?;
    file.sync_all().map_err(io("syncing", &temp))?;
    drop(file);
    fs::rename(&temp, path).map_err(io("renaming into place", path))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing", dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_names_and_paths() {
        let store = Store::new("/state");
        assert_eq!(
            store.path("http://127.0.0.1:7600/", "demo").unwrap(),
            Path::new("/state/127.0.0.1_7600/demo.json")
        );
        for bad in ["", ".hidden", "a/b", "a b", &"x".repeat(65), "..", "é"] {
            assert!(check_domain_name(bad).is_err(), "{bad:?}");
        }
        check_domain_name("demo-1.a_b").unwrap();
    }

    #[test]
    fn saves_and_loads_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        assert_eq!(store.load("http://a:1", "demo").unwrap(), None);
        let enrollment = Enrollment {
            format: FORMAT.into(),
            agent: "http://a:1".into(),
            domain: "demo".into(),
            ak_public: Base64(vec![1, 2, 3]),
            ak_name: "000b".into(),
            ek_certificate_sha256: "ab".into(),
            trust: TrustBasis::Pinned,
            enrolled_unix: 5,
            counters: Some(ClockInfo {
                clock: 1,
                reset_count: 2,
                restart_count: 3,
                safe: true,
            }),
        };
        let path = store.save(&enrollment).unwrap();
        assert_eq!(store.load("http://a:1", "demo").unwrap(), Some(enrollment));
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1);
        fs::write(&path, b"{}").unwrap();
        assert!(matches!(
            store.load("http://a:1", "demo"),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
