//! Attestation evidence (v1): what dom0's agent answers a verifier's nonce
//! with, and the tpm2-tools PCR file inside it.
//!
//! # Evidence JSON
//! `GET /v1/domains/{name}/evidence?nonce=HEX` answers an [`Evidence`]
//! object. Binary fields are base64 (standard alphabet, padded); the nonce is
//! hex. The quote's three parts are exactly the files `tpm2_quote -m -s -o`
//! writes, so `tpm2_checkquote` checks them as they are:
//!
//! ```json
//! {"format": "vigil.evidence.v1", "domain": "demo", "nonce": "00112233…",
//!  "quote": {"message": "<TPMS_ATTEST>", "signature": "<TPMT_SIGNATURE>",
//!            "pcrs": "<PCR file>"},
//!  "ak_public": "<TPM2B_PUBLIC>", "ek_certificate": "<DER>",
//!  "event_log": "<TCG crypto-agile log>", "manifest": "<manifest.json bytes>",
//!  "manifest_signature": "<manifest.sig bytes>",
//!  "runtime_report": {…the guest's answer, verbatim…} | null,
//!  "runtime_report_error": null | "why there is none"}
//! ```
//!
//! # PCR file (tpm2-tools' "serialized" format, [`PcrFile`])
//! What `tpm2_quote -o` and `tpm2_pcrread -o` write: an in-memory dump of
//! tpm2-tss structures, little-endian, checked against files tpm2-tools 5.4
//! wrote on swtpm 0.7:
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 4 | `TPML_PCR_SELECTION.count`, at most 16 |
//! | 4 | 16 × 8 | `TPMS_PCR_SELECTION[16]`: u16 hash algorithm, u8 `sizeofSelect`, u8 `pcrSelect[4]`, one pad byte; unused entries zero |
//! | 132 | 4 | number of `TPML_DIGEST` that follow |
//! | 136 | n × 532 | `TPML_DIGEST`: u32 count (at most 8), 8 × `TPM2B_DIGEST` {u16 size, 64-byte buffer}; unused bytes zero |
//!
//! The digests are the selected PCRs' values in selection order, each
//! selection's PCRs ascending: the order in which the quote's PCR digest
//! hashes them. Three PCRs make a 668-byte file.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::report::{Nonce, SIGNATURE_BYTES};

/// The `format` field of every v1 evidence object.
pub const FORMAT: &str = "vigil.evidence.v1";
/// The largest evidence document [`Evidence::parse`] reads, in bytes.
pub const MAX_EVIDENCE_BYTES: usize = 4 * 1024 * 1024;

/// Bytes, base64 (standard alphabet, padded) in JSON.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Base64(pub Vec<u8>);

impl fmt::Debug for Base64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.0.len())
    }
}

impl Serialize for Base64 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Base64 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        STANDARD
            .decode(text.as_bytes())
            .map(Self)
            .map_err(|_| serde::de::Error::custom("not standard padded base64"))
    }
}

/// A nonce, hex in JSON (written lowercase, read in either case).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct HexNonce(pub Nonce);

impl fmt::Debug for HexNonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl Serialize for HexNonce {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{:?}", self.0))
    }
}

impl<'de> Deserialize<'de> for HexNonce {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Nonce::from_hex(&text)
            .map(Self)
            .map_err(serde::de::Error::custom)
    }
}

/// The three files of a TPM2 quote, as `tpm2_quote` writes them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quote {
    /// `-m`: the `TPMS_ATTEST` (its TPM2B size stripped).
    pub message: Base64,
    /// `-s`: the marshalled `TPMT_SIGNATURE`.
    pub signature: Base64,
    /// `-o`: the PCR file ([`PcrFile`]).
    pub pcrs: Base64,
}

/// An agent's answer to a nonce for one domain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    /// Always [`FORMAT`].
    pub format: String,
    /// The domain this evidence is about.
    pub domain: String,
    /// The nonce the agent was asked with (the quote's qualifying data).
    pub nonce: HexNonce,
    /// The quote over the launch PCRs.
    pub quote: Quote,
    /// The AK's `TPM2B_PUBLIC` (what `tpm2_readpublic -o` writes).
    pub ak_public: Base64,
    /// The EK certificate (DER).
    pub ek_certificate: Base64,
    /// The TCG crypto-agile event log of the launch.
    pub event_log: Base64,
    /// The exact `manifest.json` bytes of the launched bundle.
    pub manifest: Base64,
    /// The `manifest.sig` bytes.
    pub manifest_signature: Base64,
    /// The guest's `/v1/attestation/report` answer, verbatim, if it gave one.
    pub runtime_report: Option<serde_json::Value>,
    /// Why there is no runtime report.
    pub runtime_report_error: Option<String>,
}

/// Why bytes are not valid v1 evidence.
/// A domain's TPM identity, as the agent presents it
/// (`GET /v1/domains/{name}/identity`): what a verifier needs to enroll the
/// domain's attestation key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// The EK certificate (DER), from NV index 0x01c00002.
    pub ek_certificate: Base64,
    /// The EK's `TPM2B_PUBLIC`.
    pub ek_public: Base64,
    /// The AK's `TPM2B_PUBLIC`.
    pub ak_public: Base64,
    /// The AK's name (hex): algorithm id and digest.
    pub ak_name: String,
}

/// A credential for the domain's TPM to activate
/// (`POST /v1/domains/{name}/activate`): `TPM2_MakeCredential`'s output,
/// each part a TPM2B's contents without its size (the two parts of the file
/// `tpm2_makecredential -o` writes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivationRequest {
    /// `TPM2B_ID_OBJECT` contents: integrity HMAC and encrypted credential.
    pub credential_blob: Base64,
    /// `TPM2B_ENCRYPTED_SECRET` contents: the seed, encrypted to the EK.
    pub encrypted_secret: Base64,
}

/// What `TPM2_ActivateCredential` recovered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivationAnswer {
    /// The secret.
    pub secret: Base64,
}

#[derive(Debug)]
#[non_exhaustive]
pub enum EvidenceError {
    /// More than [`MAX_EVIDENCE_BYTES`].
    TooLarge(usize),
    /// Not JSON, or not the evidence structure.
    Json(serde_json::Error),
    /// The `format` field is not [`FORMAT`].
    Format(String),
}

impl fmt::Display for EvidenceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge(len) => write!(
                f,
                "evidence is {len} bytes; at most {MAX_EVIDENCE_BYTES} are read"
            ),
            Self::Json(err) => write!(f, "not v1 evidence: {err}"),
            Self::Format(format) => write!(f, "evidence format is {format:?}, expected {FORMAT:?}"),
        }
    }
}

impl core::error::Error for EvidenceError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Self::Json(err) => Some(err),
            _ => None,
        }
    }
}

impl Evidence {
    /// Parses evidence JSON (bounded by [`MAX_EVIDENCE_BYTES`]).
    pub fn parse(bytes: &[u8]) -> Result<Self, EvidenceError> {
        if bytes.len() > MAX_EVIDENCE_BYTES {
            return Err(EvidenceError::TooLarge(bytes.len()));
        }
        let evidence: Self = serde_json::from_slice(bytes).map_err(EvidenceError::Json)?;
        if evidence.format != FORMAT {
            return Err(EvidenceError::Format(evidence.format));
        }
        Ok(evidence)
    }

    /// The JSON bytes.
    pub fn emit(&self) -> Vec<u8> {
        // Serializing these types cannot fail: every map key is a string.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The signed parts of a guest's runtime report answer
/// (`vigil.report.v1`, see `docs/watchdog.md`): the report bytes, the
/// signature and the key the guest says it signed with. The other fields of
/// the answer repeat the signed bytes for people; a verifier decodes the
/// signed bytes only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedReport {
    /// The signed report bytes ([`super::report::Report::decode`]).
    pub report: Vec<u8>,
    /// The ed25519 signature over them.
    pub signature: [u8; SIGNATURE_BYTES],
    /// The public key the guest names (a verifier takes the key from the
    /// event log instead, and compares).
    pub public_key: [u8; 32],
}

/// Why a runtime report answer cannot be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignedReportError {
    /// Not a JSON object with `"format": "vigil.report.v1"`.
    Format,
    /// This field is missing or not hex of the right length.
    Field(&'static str),
}

impl fmt::Display for SignedReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Format => f.write_str("not a vigil.report.v1 answer"),
            Self::Field(name) => write!(f, "the report answer's {name:?} is missing or malformed"),
        }
    }
}

impl core::error::Error for SignedReportError {}

impl SignedReport {
    /// Reads the signed parts of a guest's answer.
    pub fn from_answer(answer: &serde_json::Value) -> Result<Self, SignedReportError> {
        if answer.get("format").and_then(|f| f.as_str()) != Some("vigil.report.v1") {
            return Err(SignedReportError::Format);
        }
        let hex = |name: &'static str, max: usize| {
            answer
                .get(name)
                .and_then(|v| v.as_str())
                .and_then(|text| decode_hex(text, max))
                .ok_or(SignedReportError::Field(name))
        };
        let report = hex("report", super::report::MAX_BYTES)?;
        let signature = hex("signature", SIGNATURE_BYTES)?
            .try_into()
            .map_err(|_| SignedReportError::Field("signature"))?;
        let public_key = hex("public_key", 32)?
            .try_into()
            .map_err(|_| SignedReportError::Field("public_key"))?;
        Ok(Self {
            report,
            signature,
            public_key,
        })
    }
}

/// Lowercase or uppercase hex of at most `max` bytes.
fn decode_hex(text: &str, max: usize) -> Option<Vec<u8>> {
    let digits = text.as_bytes();
    if digits.len() & 1 != 0 || digits.len() > 2 * max {
        return None;
    }
    digits
        .chunks_exact(2)
        .map(|pair| {
            let high = char::from(pair[0]).to_digit(16)?;
            let low = char::from(pair[1]).to_digit(16)?;
            Some((high * 16 + low) as u8)
        })
        .collect()
}

/// The most selections a `TPML_PCR_SELECTION` holds in tpm2-tss.
pub const MAX_SELECTIONS: usize = 16;
/// Bytes of the selection list at the start of a PCR file.
pub const SELECTION_LIST_BYTES: usize = 4 + MAX_SELECTIONS * 8;
/// The most digests a `TPML_DIGEST` holds.
pub const DIGESTS_PER_LIST: usize = 8;
/// Bytes of one `TPML_DIGEST` in a PCR file.
pub const DIGEST_LIST_BYTES: usize = 4 + DIGESTS_PER_LIST * (2 + 64);
/// The most `TPML_DIGEST` a PCR file may hold (the parser's bound; 32 PCRs
/// in each of two banks need 8).
pub const MAX_DIGEST_LISTS: usize = 8;

/// One `TPMS_PCR_SELECTION`: a hash algorithm and a PCR bitmap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PcrSelection {
    /// The bank's `TPM_ALG_ID` (SHA-256 is 0x000b).
    pub hash: u16,
    /// How many bitmap bytes are in use (3 for 24 PCRs).
    pub size_of_select: u8,
    /// The bitmap: PCR `n` is bit `n % 8` of byte `n / 8`.
    pub select: [u8; 4],
}

impl PcrSelection {
    /// A selection of `pcrs` (each below 24) in bank `hash`, three bitmap
    /// bytes, as tpm2-tools makes them.
    pub fn new(hash: u16, pcrs: &[u8]) -> Result<Self, PcrFileError> {
        let mut select = [0u8; 4];
        for &pcr in pcrs {
            if pcr >= 24 {
                return Err(PcrFileError::PcrIndex(pcr));
            }
            select[usize::from(pcr / 8)] |= 1 << (pcr % 8);
        }
        Ok(Self {
            hash,
            size_of_select: 3,
            select,
        })
    }

    /// The selected PCRs, ascending.
    pub fn pcrs(&self) -> impl Iterator<Item = u8> + '_ {
        (0..32u8).filter(|&pcr| {
            usize::from(pcr / 8) < usize::from(self.size_of_select)
                && self.select[usize::from(pcr / 8)] & (1 << (pcr % 8)) != 0
        })
    }
}

/// A PCR file: which PCRs, and their values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcrFile {
    /// The selections, in order.
    pub selections: Vec<PcrSelection>,
    /// The values, in selection order (each selection's PCRs ascending).
    pub digests: Vec<Vec<u8>>,
}

/// One PCR's value as a PCR file presents it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PcrValue<'a> {
    /// The bank.
    pub hash: u16,
    /// The PCR.
    pub pcr: u8,
    /// Its value.
    pub digest: &'a [u8],
}

/// Why bytes are not a valid PCR file, or a [`PcrFile`] cannot be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PcrFileError {
    /// A length no number of digest lists gives.
    Length(usize),
    /// A selection count above [`MAX_SELECTIONS`].
    SelectionCount(usize),
    /// Selection `n` has a `sizeofSelect` outside 1..=4.
    SizeOfSelect(usize),
    /// A byte that must be zero (padding, unused entries) is not, at this
    /// offset.
    NonZero(usize),
    /// A digest list count above [`MAX_DIGEST_LISTS`], or not the number the
    /// file's length gives.
    ListCount(usize),
    /// The digest list at this offset holds more than [`DIGESTS_PER_LIST`].
    DigestCount(usize),
    /// The digest at this offset is longer than 64 bytes.
    DigestSize(usize),
    /// The selections name this many PCRs, the lists hold another number of
    /// digests.
    ValueCount {
        /// PCRs selected.
        selected: usize,
        /// Digests present.
        digests: usize,
    },
    /// A PCR index of 24 or more in [`PcrSelection::new`].
    PcrIndex(u8),
}

impl fmt::Display for PcrFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Length(len) => write!(
                f,
                "PCR file is {len} bytes; it must be {SELECTION_LIST_BYTES} + 4 + n × {DIGEST_LIST_BYTES}"
            ),
            Self::SelectionCount(n) => {
                write!(f, "PCR file selects {n} banks; at most {MAX_SELECTIONS}")
            }
            Self::SizeOfSelect(i) => {
                write!(f, "PCR selection {i} has a sizeofSelect outside 1..=4")
            }
            Self::NonZero(at) => write!(f, "PCR file byte {at} must be zero"),
            Self::ListCount(n) => write!(f, "PCR file claims {n} digest lists"),
            Self::DigestCount(at) => write!(
                f,
                "digest list at PCR file byte {at} holds more than {DIGESTS_PER_LIST} digests"
            ),
            Self::DigestSize(at) => write!(f, "digest at PCR file byte {at} is over 64 bytes"),
            Self::ValueCount { selected, digests } => write!(
                f,
                "PCR file selects {selected} PCRs but holds {digests} values"
            ),
            Self::PcrIndex(pcr) => write!(f, "PCR {pcr} is not one of PCRs 0 to 23"),
        }
    }
}

impl core::error::Error for PcrFileError {}

fn le16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn le32(bytes: &[u8], at: usize) -> usize {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize
}

fn zeros(bytes: &[u8], offset: usize) -> Result<(), PcrFileError> {
    match bytes.iter().position(|&b| b != 0) {
        Some(i) => Err(PcrFileError::NonZero(offset + i)),
        None => Ok(()),
    }
}

impl PcrFile {
    /// Parses a PCR file strictly: exact length, zero padding, as many values
    /// as selected PCRs.
    pub fn parse(bytes: &[u8]) -> Result<Self, PcrFileError> {
        let header = SELECTION_LIST_BYTES + 4;
        if bytes.len() < header
            || header + (bytes.len() - header) / DIGEST_LIST_BYTES * DIGEST_LIST_BYTES
                != bytes.len()
        {
            return Err(PcrFileError::Length(bytes.len()));
        }
        let count = le32(bytes, 0);
        if count > MAX_SELECTIONS {
            return Err(PcrFileError::SelectionCount(count));
        }
        let mut selections = Vec::with_capacity(count);
        for i in 0..MAX_SELECTIONS {
            let at = 4 + i * 8;
            let entry = &bytes[at..at + 8];
            if i >= count {
                zeros(entry, at)?;
                continue;
            }
            let size_of_select = entry[2];
            if !(1..=4).contains(&size_of_select) {
                return Err(PcrFileError::SizeOfSelect(i));
            }
            let used = 3 + usize::from(size_of_select);
            zeros(&entry[used..], at + used)?;
            selections.push(PcrSelection {
                hash: le16(entry, 0),
                size_of_select,
                select: [entry[3], entry[4], entry[5], entry[6]],
            });
        }
        let lists = le32(bytes, SELECTION_LIST_BYTES);
        if lists > MAX_DIGEST_LISTS || header + lists * DIGEST_LIST_BYTES != bytes.len() {
            return Err(PcrFileError::ListCount(lists));
        }
        let mut digests = Vec::new();
        for list in 0..lists {
            let at = header + list * DIGEST_LIST_BYTES;
            let count = le32(bytes, at);
            if count > DIGESTS_PER_LIST {
                return Err(PcrFileError::DigestCount(at));
            }
            for slot in 0..DIGESTS_PER_LIST {
                let entry_at = at + 4 + slot * 66;
                let entry = &bytes[entry_at..entry_at + 66];
                if slot >= count {
                    zeros(entry, entry_at)?;
                    continue;
                }
                let size = usize::from(le16(entry, 0));
                if size > 64 {
                    return Err(PcrFileError::DigestSize(entry_at));
                }
                zeros(&entry[2 + size..], entry_at + 2 + size)?;
                digests.push(entry[2..2 + size].to_vec());
            }
        }
        let file = Self {
            selections,
            digests,
        };
        file.values()?;
        Ok(file)
    }

    /// The file's bytes, as tpm2-tools writes them (values in lists of 8).
    pub fn emit(&self) -> Result<Vec<u8>, PcrFileError> {
        if self.selections.len() > MAX_SELECTIONS {
            return Err(PcrFileError::SelectionCount(self.selections.len()));
        }
        let lists = self.digests.len().div_ceil(DIGESTS_PER_LIST);
        if lists > MAX_DIGEST_LISTS {
            return Err(PcrFileError::ListCount(lists));
        }
        self.values()?;
        let mut out = Vec::with_capacity(SELECTION_LIST_BYTES + 4 + lists * DIGEST_LIST_BYTES);
        out.extend_from_slice(&(self.selections.len() as u32).to_le_bytes());
        for (i, selection) in self.selections.iter().enumerate() {
            if !(1..=4).contains(&selection.size_of_select) {
                return Err(PcrFileError::SizeOfSelect(i));
            }
            let mut entry = [0u8; 8];
            entry[..2].copy_from_slice(&selection.hash.to_le_bytes());
            entry[2] = selection.size_of_select;
            let used = usize::from(selection.size_of_select);
            entry[3..3 + used].copy_from_slice(&selection.select[..used]);
            out.extend_from_slice(&entry);
        }
        out.resize(SELECTION_LIST_BYTES, 0);
        out.extend_from_slice(&(lists as u32).to_le_bytes());
        for chunk in self.digests.chunks(DIGESTS_PER_LIST) {
            let start = out.len();
            out.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
            for digest in chunk {
                if digest.len() > 64 {
                    return Err(PcrFileError::DigestSize(out.len()));
                }
                let entry_at = out.len();
                out.extend_from_slice(&(digest.len() as u16).to_le_bytes());
                out.extend_from_slice(digest);
                out.resize(entry_at + 66, 0);
            }
            out.resize(start + DIGEST_LIST_BYTES, 0);
        }
        Ok(out)
    }

    /// Each PCR with its value, in the file's order.
    pub fn values(&self) -> Result<Vec<PcrValue<'_>>, PcrFileError> {
        let selected: Vec<(u16, u8)> = self
            .selections
            .iter()
            .flat_map(|s| s.pcrs().map(move |pcr| (s.hash, pcr)))
            .collect();
        if selected.len() != self.digests.len() {
            return Err(PcrFileError::ValueCount {
                selected: selected.len(),
                digests: self.digests.len(),
            });
        }
        Ok(selected
            .into_iter()
            .zip(&self.digests)
            .map(|((hash, pcr), digest)| PcrValue { hash, pcr, digest })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    /// The selection list and values of a file `tpm2_quote -l sha256:9,12,15
    /// -o` wrote (tpm2-tools 5.4, swtpm 0.7.1) after PCR 9 was extended with
    /// SHA-256("a"): its first bytes, the start of the digests, the length.
    #[test]
    fn reads_what_tpm2_quote_wrote() {
        let pcr9 = [
            0x8c, 0x37, 0x4a, 0x53, 0x78, 0x26, 0x42, 0xf7, 0x51, 0x4d, 0x08, 0x7d, 0x26, 0xa3,
            0xe7, 0x33, 0xf1, 0xb8, 0x06, 0x00, 0x9a, 0x03, 0xe0, 0x4a, 0x43, 0xb2, 0x88, 0xef,
            0x2f, 0xa9, 0xf9, 0xc0,
        ];
        let mut bytes = vec![0u8; 668];
        bytes[..11].copy_from_slice(&[1, 0, 0, 0, 0x0b, 0, 3, 0, 0x92, 0, 0]);
        bytes[132..142].copy_from_slice(&[1, 0, 0, 0, 3, 0, 0, 0, 0x20, 0]);
        bytes[142..174].copy_from_slice(&pcr9);
        bytes[206] = 0x20;
        bytes[272] = 0x20;
        let file = PcrFile::parse(&bytes).unwrap();
        assert_eq!(
            file.selections,
            [PcrSelection::new(0x000b, &[9, 12, 15]).unwrap()]
        );
        let values = file.values().unwrap();
        assert_eq!(
            values.iter().map(|v| v.pcr).collect::<Vec<_>>(),
            [9, 12, 15]
        );
        assert_eq!(values[0].digest, pcr9);
        assert_eq!(values[1].digest, [0; 32]);
        assert_eq!(file.emit().unwrap(), bytes);
    }

    fn sample(pcrs: &[u8]) -> PcrFile {
        PcrFile {
            selections: vec![PcrSelection::new(0x000b, pcrs).unwrap()],
            digests: pcrs.iter().map(|&p| vec![p; 32]).collect(),
        }
    }

    #[test]
    fn round_trips_over_several_lists() {
        for pcrs in [
            &[9u8, 12, 15][..],
            &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 23],
            &[],
        ] {
            let file = sample(pcrs);
            let bytes = file.emit().unwrap();
            assert_eq!(
                bytes.len(),
                136 + pcrs.len().div_ceil(8) * DIGEST_LIST_BYTES
            );
            assert_eq!(PcrFile::parse(&bytes).unwrap(), file);
        }
    }

    #[test]
    fn malformed_files_are_refused() {
        let good = sample(&[9, 12, 15]).emit().unwrap();
        let with = |at: usize, value: u8| {
            let mut bytes = good.clone();
            bytes[at] = value;
            PcrFile::parse(&bytes)
        };
        assert_eq!(PcrFile::parse(&good[..667]), Err(PcrFileError::Length(667)));
        assert_eq!(PcrFile::parse(&[]), Err(PcrFileError::Length(0)));
        assert_eq!(with(0, 17), Err(PcrFileError::SelectionCount(17)));
        assert_eq!(with(6, 0), Err(PcrFileError::SizeOfSelect(0)));
        assert_eq!(with(6, 5), Err(PcrFileError::SizeOfSelect(0)));
        assert_eq!(with(11, 1), Err(PcrFileError::NonZero(11)));
        assert_eq!(with(20, 1), Err(PcrFileError::NonZero(20)));
        assert_eq!(with(132, 2), Err(PcrFileError::ListCount(2)));
        assert_eq!(with(136, 9), Err(PcrFileError::DigestCount(136)));
        assert_eq!(with(140, 65), Err(PcrFileError::DigestSize(140)));
        assert_eq!(with(174, 1), Err(PcrFileError::NonZero(174)));
        assert_eq!(with(136, 2), Err(PcrFileError::NonZero(272)));
        assert_eq!(
            with(8, 0x12),
            Err(PcrFileError::ValueCount {
                selected: 2,
                digests: 3
            })
        );
        // A relabelled selection is still a well-formed file: the verifier,
        // not the parser, compares it with the signed one.
        let relabelled = with(8, 0x94).unwrap();
        assert_eq!(
            relabelled.values().unwrap()[0].pcr,
            10,
            "PCR 9's value now claims to be PCR 10's"
        );
    }

    fn evidence() -> Evidence {
        Evidence {
            format: FORMAT.into(),
            domain: "demo".into(),
            nonce: HexNonce(Nonce::new(&[0xab; 16]).unwrap()),
            quote: Quote {
                message: Base64(vec![1, 2, 3]),
                signature: Base64(vec![4]),
                pcrs: Base64(vec![]),
            },
            ak_public: Base64(vec![5; 10]),
            ek_certificate: Base64(vec![6; 10]),
            event_log: Base64(vec![7; 10]),
            manifest: Base64(b"{}\n".to_vec()),
            manifest_signature: Base64(vec![8; 64]),
            runtime_report: None,
            runtime_report_error: Some("guest unreachable".into()),
        }
    }

    #[test]
    fn evidence_json_round_trips() {
        let bytes = evidence().emit();
        let text = core::str::from_utf8(&bytes).unwrap();
        assert!(text.contains("\"nonce\":\"abababababababababababababababab\""));
        assert!(text.contains("\"message\":\"AQID\""));
        assert!(text.contains("\"manifest\":\"e30K\""));
        assert_eq!(Evidence::parse(&bytes).unwrap(), evidence());
    }

    #[test]
    fn bad_evidence_is_refused() {
        let text = alloc::string::String::from_utf8(evidence().emit()).unwrap();
        let other = text.replace("vigil.evidence.v1", "vigil.evidence.v2");
        assert!(matches!(
            Evidence::parse(other.as_bytes()),
            Err(EvidenceError::Format(_))
        ));
        let unknown = text.replace("\"domain\"", "\"extra\":1,\"domain\"");
        assert!(matches!(
            Evidence::parse(unknown.as_bytes()),
            Err(EvidenceError::Json(_))
        ));
        let unpadded = text.replace("e30K", "e30");
        assert!(matches!(
            Evidence::parse(unpadded.as_bytes()),
            Err(EvidenceError::Json(_))
        ));
        let short_nonce = text.replace(&"ab".repeat(16), &"ab".repeat(15));
        assert!(matches!(
            Evidence::parse(short_nonce.as_bytes()),
            Err(EvidenceError::Json(_))
        ));
        let huge = vec![b' '; MAX_EVIDENCE_BYTES + 1];
        assert!(matches!(
            Evidence::parse(&huge),
            Err(EvidenceError::TooLarge(_))
        ));
    }

    #[test]
    fn signed_report_fields() {
        let answer = serde_json::json!({
            "format": "vigil.report.v1", "verdict": "intact",
            "report": "00ff", "signature": "11".repeat(64), "public_key": "AB".repeat(32),
        });
        let signed = SignedReport::from_answer(&answer).unwrap();
        assert_eq!(signed.report, [0, 0xff]);
        assert_eq!(signed.signature, [0x11; 64]);
        assert_eq!(signed.public_key, [0xab; 32]);
        let mut short = answer.clone();
        short["signature"] = "11".repeat(63).into();
        assert_eq!(
            SignedReport::from_answer(&short),
            Err(SignedReportError::Field("signature"))
        );
        let mut odd = answer.clone();
        odd["report"] = "0".into();
        assert_eq!(
            SignedReport::from_answer(&odd),
            Err(SignedReportError::Field("report"))
        );
        let mut other = answer;
        other["format"] = "x".into();
        assert_eq!(
            SignedReport::from_answer(&other),
            Err(SignedReportError::Format)
        );
    }
}
