//! The sealing key pair: ed25519, in the formats OpenSSL reads and writes.
//!
//! - The private key is PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), mode 0600.
//!   A private key file that its group or others can read is refused.
//! - The public key is SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
//!
//! `openssl genpkey -algorithm ed25519` keys work here, and keys written here
//! work with `openssl pkeyutl -sign/-verify -rawin`.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::{self, LineEnding};
use ed25519_dalek::pkcs8::spki::der::{Decode, zeroize::Zeroizing};
use ed25519_dalek::pkcs8::{EncodePublicKey, PrivateKeyInfo, SecretDocument};
use ed25519_dalek::{SigningKey, VerifyingKey};
use vigil_core::v1::bundle::{self, algorithm_name};

/// The ed25519 algorithm identifier.
const ED25519_OID: &str = "1.3.101.112";

/// Why a key could not be made, read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file does not exist or cannot be read.
    #[error("cannot read key file {path}")]
    Read {
        /// The key file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A private key file its group or others may read.
    #[error(
        "refusing private key {path}: its mode is {mode:04o}, so other users can read it; \
         run `chmod 600 {path}` (and consider the key exposed)"
    )]
    Exposed {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is not a PKCS#8 PEM private key.
    #[error("{path} is not a PKCS#8 PEM private key: {problem}")]
    NotPrivateKey {
        /// The key file.
        path: PathBuf,
        /// What it is instead.
        problem: String,
    },
    /// A private key for another algorithm.
    #[error(
        "{path} holds a {name} key (algorithm {oid}); Vigil signs with ed25519 \
         (create one with `vigil-build keygen`)"
    )]
    WrongType {
        /// The key file.
        path: PathBuf,
        /// The algorithm's OID.
        oid: String,
        /// Its common name.
        name: &'static str,
    },
    /// An ed25519 PKCS#8 structure whose key is malformed.
    #[error("{path}: the ed25519 private key inside is corrupt")]
    Corrupt {
        /// The key file.
        path: PathBuf,
    },
    /// A public key file that cannot be used.
    #[error("{path}: {source}")]
    Public {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: bundle::KeyError,
    },
    /// An output key file exists already.
    #[error("{path} exists already; refusing to overwrite a key")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// Writing a key file failed.
    #[error("cannot write key file {path}")]
    Write {
        /// The key file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What [`generate`] wrote.
#[derive(Debug, serde::Serialize)]
pub struct NewKey {
    /// The private key file (mode 0600).
    pub private_key: PathBuf,
    /// The public key file.
    pub public_key: PathBuf,
    /// SHA-256 of the raw public key, in hex.
    pub fingerprint: String,
}

/// Makes a new key pair: the private key at `private` (mode 0600, created
/// new), the public key at `public`. Writes neither if either exists, and
/// leaves nothing behind if writing fails.
pub fn generate(private: &Path, public: &Path) -> Result<NewKey, KeyError> {
    for path in [private, public] {
        if path.symlink_metadata().is_ok() {
            return Err(KeyError::Exists { path: path.into() });
        }
    }
    let key = SigningKey::generate(&mut rand_core::OsRng);
    let private_pem = pkcs8_v1_pem(&key).map_err(|err| write_error(private, err.to_string()))?;
    let public_pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|err| write_error(public, err.to_string()))?;
    write_new(private, private_pem.as_bytes(), 0o600)?;
    if let Err(err) = write_new(public, public_pem.as_bytes(), 0o644) {
        let _ = fs::remove_file(private);
        return Err(err);
    }
    Ok(NewKey {
        private_key: private.into(),
        public_key: public.into(),
        fingerprint: bundle::key_fingerprint(&key.verifying_key()),
    })
}

/// The private key as OpenSSL writes it (`openssl genpkey -algorithm
/// ed25519`): PKCS#8 v1 (RFC 8410), the seed only. ed25519-dalek's own
/// encoder writes PKCS#8 v2 (OneAsymmetricKey with the public key attached),
/// which OpenSSL 3.0 refuses as "unsupported". Both forms are read.
fn pkcs8_v1_pem(key: &SigningKey) -> ed25519_dalek::pkcs8::Result<Zeroizing<String>> {
    // CurvePrivateKey ::= OCTET STRING: tag, length, the 32-byte seed.
    let mut curve_private_key = Zeroizing::new([0u8; 34]);
    curve_private_key[0] = 0x04;
    curve_private_key[1] = 32;
    curve_private_key[2..].copy_from_slice(key.as_bytes());
    let info = PrivateKeyInfo {
        algorithm: ed25519_dalek::pkcs8::ALGORITHM_ID,
        private_key: &curve_private_key[..],
        public_key: None,
    };
    let document = SecretDocument::try_from(info)?;
    Ok(document.to_pem("PRIVATE KEY", LineEnding::LF)?)
}

fn write_error(path: &Path, problem: String) -> KeyError {
    KeyError::Write {
        path: path.into(),
        source: std::io::Error::other(problem),
    }
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let result = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .and_then(|mut file| {
            // The umask may have cleared bits of `mode`; never added any.
            file.set_permissions(fs::Permissions::from_mode(mode))?;
            file.write_all(bytes)?;
            file.sync_all()
        });
    result.map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            KeyError::Exists { path: path.into() }
        } else {
            let _ = fs::remove_file(path);
            KeyError::Write {
                path: path.into(),
                source,
            }
        }
    })
}

/// Reads the signing key: an ed25519 PKCS#8 PEM file that only its owner can
/// read.
pub fn read_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    let read = |source| KeyError::Read {
        path: path.into(),
        source,
    };
    let mode = fs::metadata(path).map_err(read)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Exposed {
            path: path.into(),
            mode,
        });
    }
    let text = Zeroizing::new(fs::read(path).map_err(read)?);
    let not_private = |problem: &str| KeyError::NotPrivateKey {
        path: path.into(),
        problem: problem.into(),
    };
    let (label, der) = pem::decode_vec(text.trim_ascii())
        .map_err(|_| not_private("not PEM text (expected -----BEGIN PRIVATE KEY-----)"))?;
    let der = Zeroizing::new(der);
    match label {
        "PRIVATE KEY" => {}
        "PUBLIC KEY" => return Err(not_private("it is a public key")),
        "ENCRYPTED PRIVATE KEY" => {
            return Err(not_private(
                "it is encrypted; decrypt it with `openssl pkey` first",
            ));
        }
        other => return Err(not_private(&format!("its PEM label is {other:?}"))),
    }
    let info = PrivateKeyInfo::from_der(&der).map_err(|_| not_private("corrupt PKCS#8 DER"))?;
    let oid = info.algorithm.oid.to_string();
    if oid != ED25519_OID {
        let name = algorithm_name(&oid);
        return Err(KeyError::WrongType {
            path: path.into(),
            oid,
            name,
        });
    }
    SigningKey::try_from(info).map_err(|_| KeyError::Corrupt { path: path.into() })
}

/// Reads a trusted public key: ed25519 SPKI PEM.
pub fn read_public_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    let text = fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.into(),
        source,
    })?;
    bundle::public_key_from_pem(&text).map_err(|source| KeyError::Public {
        path: path.into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_pair_reads_back_and_matches() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = (dir.path().join("k.pem"), dir.path().join("k.pub"));
        let made = generate(&private, &public).unwrap();
        let mode = fs::metadata(&private).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let signing = read_signing_key(&private).unwrap();
        let verifying = read_public_key(&public).unwrap();
        assert_eq!(signing.verifying_key(), verifying);
        assert_eq!(made.fingerprint, bundle::key_fingerprint(&verifying));
        assert!(
            fs::read_to_string(&private)
                .unwrap()
                .starts_with("-----BEGIN PRIVATE KEY-----\n")
        );
        assert!(
            fs::read_to_string(&public)
                .unwrap()
                .starts_with("-----BEGIN PUBLIC KEY-----\n")
        );
    }

    #[test]
    fn private_keys_are_written_as_pkcs8_v1_and_v2_keys_still_read() {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = (dir.path().join("k.pem"), dir.path().join("k.pub"));
        generate(&private, &public).unwrap();
        let text = fs::read_to_string(&private).unwrap();
        let (_, der) = pem::decode_vec(text.trim_ascii().as_bytes()).unwrap();
        // RFC 8410's example layout: 48 bytes, version 0, no public key.
        assert_eq!(der.len(), 48);
        let info = PrivateKeyInfo::from_der(&der).unwrap();
        assert!(info.public_key.is_none());
        assert_eq!(der[4], 0, "version 0 (v1)");
        let key = read_signing_key(&private).unwrap();

        // A v2 key (what ed25519-dalek writes) is still accepted.
        let v2 = dir.path().join("v2.pem");
        fs::write(&v2, key.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes()).unwrap();
        fs::set_permissions(&v2, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_signing_key(&v2).unwrap().to_bytes(), key.to_bytes());
    }

    #[test]
    fn existing_files_are_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = (dir.path().join("k.pem"), dir.path().join("k.pub"));
        fs::write(&public, "keep me").unwrap();
        assert!(matches!(
            generate(&private, &public),
            Err(KeyError::Exists { .. })
        ));
        assert!(!private.exists());
        assert_eq!(fs::read_to_string(&public).unwrap(), "keep me");
    }

    #[test]
    fn bad_private_keys_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = (dir.path().join("k.pem"), dir.path().join("k.pub"));
        generate(&private, &public).unwrap();

        fs::set_permissions(&private, fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_signing_key(&private).unwrap_err();
        assert!(
            matches!(err, KeyError::Exposed { mode: 0o644, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"));

        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            fs::write(&path, text).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
            path
        };
        let garbage = write("garbage", "hello");
        assert!(matches!(
            read_signing_key(&garbage),
            Err(KeyError::NotPrivateKey { .. })
        ));
        let public_as_private = write("pub-as-priv", &fs::read_to_string(&public).unwrap());
        assert!(matches!(
            read_signing_key(&public_as_private),
            Err(KeyError::NotPrivateKey { .. })
        ));
        // A P-256 key made with `openssl genpkey -algorithm EC -pkeyopt
        // ec_paramgen_curve:P-256` (a test key, never used for anything).
        let ec = write(
            "ec.pem",
            "-----BEGIN PRIVATE KEY-----\n\
             MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg63yb4l6Cr2GAKprZ\n\
             Lxh13UQLoT8JqtaQ+BIh2c1MQumhRANCAAQivEL5t/jXW1Sz+TMXUskAyLxmtR25\n\
             icEO07RWJXNR9QF+PjhgHaRnnYqOpoUF3OEYB5fDjUTXpWYKlNxRkecx\n\
             -----END PRIVATE KEY-----\n",
        );
        let err = read_signing_key(&ec).unwrap_err();
        assert!(
            matches!(err, KeyError::WrongType { name: "EC", .. }),
            "{err}"
        );
        // A truncated key: PEM that decodes, but not to a whole structure.
        let good = fs::read_to_string(dir.path().join("k.pem")).unwrap();
        let lines: Vec<&str> = good.lines().collect();
        let truncated = write(
            "trunc.pem",
            &format!(
                "{}\nMC4CAQAwBQYDK2Vw\n{}\n",
                lines[0],
                lines[lines.len() - 1]
            ),
        );
        assert!(read_signing_key(&truncated).is_err());
        assert!(matches!(
            read_signing_key(&dir.path().join("missing")),
            Err(KeyError::Read { .. })
        ));
    }

    #[test]
    fn bad_public_keys_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = (dir.path().join("k.pem"), dir.path().join("k.pub"));
        generate(&private, &public).unwrap();
        let err = read_public_key(&private).unwrap_err();
        assert!(err.to_string().contains("PRIVATE KEY"), "{err}");
        let garbage = dir.path().join("g");
        fs::write(&garbage, "nope").unwrap();
        assert!(read_public_key(&garbage).is_err());
    }
}
