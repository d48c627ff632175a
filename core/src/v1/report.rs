//! The runtime report (v1): what the guest's watchdog signs for a remote
//! verifier.
//!
//! A verifier sends a fresh nonce to `GET /v1/attestation/report?nonce=<hex>`.
//! The guest answers with the report's bytes, as laid out below, and an
//! ed25519 signature over exactly those bytes by the per-boot report key
//! (the key dom0 generated at launch, whose public half it extended into
//! PCR 15). The verifier decodes the fields from the signed bytes, never from
//! the JSON around them.
//!
//! Feature `report` verifies reports ([`verify`]); feature `report-sign`
//! (the guest only) adds `ReportKey`, the signing half. The verifier
//! enables `report` alone, so no signing code links into it.
//!
//! # Layout (v1, little-endian, [`HEADER_BYTES`] + 48 × region count bytes)
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 8 | magic `VIGILRPT` (separates these signatures from any other use of the key) |
//! | 8 | 2 | layout version, 1 |
//! | 10 | 1 | verdict: 0 pending (no check finished yet), 1 intact, 2 violated |
//! | 11 | 1 | nonce length, [`MIN_NONCE`]..=[`MAX_NONCE`] |
//! | 12 | 4 | region count, 1..=[`MAX_REGIONS`] |
//! | 16 | 32 | nonce, zero-padded |
//! | 48 | 32 | boot id: SHA-256 of the per-boot public key |
//! | 80 | 8 | uptime when the report was made, in milliseconds |
//! | 88 | 8 | checks finished since boot |
//! | 96 | 8 | uptime at the end of the latest check, in milliseconds (0 while pending) |
//! | 104 | 8 | uptime at the first violation, in milliseconds; `u64::MAX` if none |
//! | 112 | 48 × n | per region: name (16 bytes, zero-padded) and the SHA-256 the latest check computed (zero while pending) |
//!
//! The verdict is latched: it is `violated` from the first check that found
//! any region's digest different from the sealed one until the guest stops,
//! even if a later check finds the bytes restored. The region digests are
//! those of the latest check, so a verifier can compare each one with the
//! manifest's reference value.

use core::fmt;

use super::refblock::{MAX_REGIONS, NAME_BYTES, RefBlockError, RegionName};

/// The first eight bytes of every report.
pub const MAGIC: [u8; 8] = *b"VIGILRPT";
/// The layout version this module reads and writes.
pub const VERSION: u16 = 1;
/// The shortest nonce a report carries, in bytes.
pub const MIN_NONCE: usize = 16;
/// The longest nonce a report carries, in bytes.
pub const MAX_NONCE: usize = 32;
/// Bytes before the region entries.
pub const HEADER_BYTES: usize = 112;
/// Bytes of one region entry.
pub const REGION_BYTES: usize = NAME_BYTES + 32;
/// The longest report, in bytes.
pub const MAX_BYTES: usize = HEADER_BYTES + MAX_REGIONS * REGION_BYTES;
/// Bytes of a signature.
pub const SIGNATURE_BYTES: usize = 64;

const NO_VIOLATION: u64 = u64::MAX;

/// A verifier's challenge: [`MIN_NONCE`] to [`MAX_NONCE`] bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Nonce {
    bytes: [u8; MAX_NONCE],
    len: u8,
}

impl Nonce {
    /// Checks the length of `bytes` and keeps them.
    pub fn new(bytes: &[u8]) -> Result<Self, ReportError> {
        if !(MIN_NONCE..=MAX_NONCE).contains(&bytes.len()) {
            return Err(ReportError::NonceLength(bytes.len()));
        }
        let mut stored = [0u8; MAX_NONCE];
        stored[..bytes.len()].copy_from_slice(bytes);
        Ok(Self {
            bytes: stored,
            len: bytes.len() as u8,
        })
    }

    /// Parses the hexadecimal form (either case, no prefix, no separators).
    pub fn from_hex(text: &str) -> Result<Self, ReportError> {
        if text.len() > 2 * MAX_NONCE || text.len() & 1 != 0 {
            return Err(ReportError::NonceHex);
        }
        let mut bytes = [0u8; MAX_NONCE];
        for (byte, pair) in bytes.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
            *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Self::new(&bytes[..text.len() / 2])
    }

    /// The nonce's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

fn nibble(digit: u8) -> Result<u8, ReportError> {
    match digit {
        b'0'..=b'9' => Ok(digit - b'0'),
        b'a'..=b'f' => Ok(digit - b'a' + 10),
        b'A'..=b'F' => Ok(digit - b'A' + 10),
        _ => Err(ReportError::NonceHex),
    }
}

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.as_bytes() {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// The watchdog's conclusion so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// No check has finished yet.
    Pending,
    /// Every finished check found every region as sealed.
    Intact,
    /// At least one check found a region that differs from its seal.
    Violated,
}

impl Verdict {
    /// The word used in JSON and on the console.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Intact => "intact",
            Self::Violated => "violated",
        }
    }

    const fn code(self) -> u8 {
        match self {
            Self::Pending => 0,
            Self::Intact => 1,
            Self::Violated => 2,
        }
    }

    const fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Self::Pending),
            1 => Some(Self::Intact),
            2 => Some(Self::Violated),
            _ => None,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One region as the latest check found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RegionDigest {
    /// The region's name, as in the reference block and the manifest.
    pub name: RegionName,
    /// The SHA-256 the latest check computed (zero while pending).
    pub sha256: [u8; 32],
}

/// A runtime report's content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Report {
    /// The verifier's challenge.
    pub nonce: Nonce,
    /// SHA-256 of the per-boot public key.
    pub boot_id: [u8; 32],
    /// Uptime when the report was made, in milliseconds.
    pub uptime_ms: u64,
    /// Checks finished since boot.
    pub checks: u64,
    /// Uptime at the end of the latest check (0 while pending).
    pub last_check_ms: u64,
    /// Uptime at the first violation, if there was one.
    pub first_violation_ms: Option<u64>,
    /// The latched verdict.
    pub verdict: Verdict,
    regions: [Option<RegionDigest>; MAX_REGIONS],
}

impl Report {
    /// A report over `regions` (1 to [`MAX_REGIONS`]).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        nonce: Nonce,
        boot_id: [u8; 32],
        uptime_ms: u64,
        checks: u64,
        last_check_ms: u64,
        first_violation_ms: Option<u64>,
        verdict: Verdict,
        regions: &[RegionDigest],
    ) -> Result<Self, ReportError> {
        if regions.is_empty() || regions.len() > MAX_REGIONS {
            return Err(ReportError::RegionCount(regions.len()));
        }
        if first_violation_ms == Some(NO_VIOLATION) {
            return Err(ReportError::ViolationTime);
        }
        let mut slots = [None; MAX_REGIONS];
        for (slot, region) in slots.iter_mut().zip(regions) {
            *slot = Some(*region);
        }
        Ok(Self {
            nonce,
            boot_id,
            uptime_ms,
            checks,
            last_check_ms,
            first_violation_ms,
            verdict,
            regions: slots,
        })
    }

    /// The regions, in the order of the reference block.
    pub fn regions(&self) -> impl Iterator<Item = &RegionDigest> {
        self.regions.iter().flatten()
    }

    /// The number of bytes [`encode`](Self::encode) writes.
    pub fn encoded_len(&self) -> usize {
        HEADER_BYTES + self.regions().count() * REGION_BYTES
    }

    /// The bytes that are signed: the first [`encoded_len`](Self::encoded_len)
    /// bytes of the returned buffer.
    pub fn encode(&self) -> [u8; MAX_BYTES] {
        let mut out = [0u8; MAX_BYTES];
        out[..8].copy_from_slice(&MAGIC);
        out[8..10].copy_from_slice(&VERSION.to_le_bytes());
        out[10] = self.verdict.code();
        out[11] = self.nonce.len;
        let count = self.regions().count() as u32;
        out[12..16].copy_from_slice(&count.to_le_bytes());
        out[16..16 + MAX_NONCE].copy_from_slice(&self.nonce.bytes);
        out[48..80].copy_from_slice(&self.boot_id);
        out[80..88].copy_from_slice(&self.uptime_ms.to_le_bytes());
        out[88..96].copy_from_slice(&self.checks.to_le_bytes());
        out[96..104].copy_from_slice(&self.last_check_ms.to_le_bytes());
        let first = self.first_violation_ms.unwrap_or(NO_VIOLATION);
        out[104..112].copy_from_slice(&first.to_le_bytes());
        for (i, region) in self.regions().enumerate() {
            let at = HEADER_BYTES + i * REGION_BYTES;
            out[at..at + NAME_BYTES].copy_from_slice(&region.name.padded());
            out[at + NAME_BYTES..at + REGION_BYTES].copy_from_slice(&region.sha256);
        }
        out
    }

    /// Parses report bytes strictly: exact length, known version and verdict,
    /// zero padding.
    pub fn decode(bytes: &[u8]) -> Result<Self, ReportError> {
        if bytes.len() < HEADER_BYTES {
            return Err(ReportError::Length(bytes.len()));
        }
        if bytes[..8] != MAGIC {
            return Err(ReportError::BadMagic);
        }
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if version != VERSION {
            return Err(ReportError::Version(version));
        }
        let verdict = Verdict::from_code(bytes[10]).ok_or(ReportError::Verdict(bytes[10]))?;
        let count = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]) as usize;
        if count == 0 || count > MAX_REGIONS {
            return Err(ReportError::RegionCount(count));
        }
        if bytes.len() != HEADER_BYTES + count * REGION_BYTES {
            return Err(ReportError::Length(bytes.len()));
        }
        let nonce_len = usize::from(bytes[11]);
        if !(MIN_NONCE..=MAX_NONCE).contains(&nonce_len) {
            return Err(ReportError::NonceLength(nonce_len));
        }
        if let Some(i) = bytes[16 + nonce_len..48].iter().position(|&b| b != 0) {
            return Err(ReportError::NonZero(16 + nonce_len + i));
        }
        let nonce = Nonce::new(&bytes[16..16 + nonce_len])?;
        let mut regions = [None; MAX_REGIONS];
        for (i, slot) in regions.iter_mut().take(count).enumerate() {
            let at = HEADER_BYTES + i * REGION_BYTES;
            let name =
                RegionName::from_padded(&bytes[at..at + NAME_BYTES]).map_err(
                    |error| match error {
                        RefBlockError::NonZero(j) => ReportError::NonZero(at + j),
                        _ => ReportError::RegionName(at),
                    },
                )?;
            *slot = Some(RegionDigest {
                name,
                sha256: array(&bytes[at + NAME_BYTES..at + REGION_BYTES]),
            });
        }
        let first = u64::from_le_bytes(array(&bytes[104..112]));
        Ok(Self {
            nonce,
            boot_id: array(&bytes[48..80]),
            uptime_ms: u64::from_le_bytes(array(&bytes[80..88])),
            checks: u64::from_le_bytes(array(&bytes[88..96])),
            last_check_ms: u64::from_le_bytes(array(&bytes[96..104])),
            first_violation_ms: (first != NO_VIOLATION).then_some(first),
            verdict,
            regions,
        })
    }
}

/// Copies a slice whose length the caller has checked.
fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(bytes);
    out
}

/// The boot id of a per-boot public key: its SHA-256.
#[cfg(feature = "digest")]
pub fn boot_id(public_key: &[u8; 32]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(public_key).into()
}

/// The per-boot report key, from the secret seed dom0 provisions.
#[cfg(feature = "report-sign")]
#[derive(Clone)]
pub struct ReportKey(ed25519_dalek::SigningKey);

#[cfg(feature = "report-sign")]
impl ReportKey {
    /// The key whose secret seed is `seed` (RFC 8032's 32-byte private key).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(seed))
    }

    /// The public half (the one dom0 extended into PCR 15).
    pub fn public_key(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    /// SHA-256 of the public half.
    pub fn boot_id(&self) -> [u8; 32] {
        boot_id(&self.public_key())
    }

    /// Signs a report's bytes ([`Report::encode`], cut to its length).
    pub fn sign(&self, report: &[u8]) -> [u8; SIGNATURE_BYTES] {
        use ed25519_dalek::Signer as _;
        self.0.sign(report).to_bytes()
    }
}

#[cfg(feature = "report-sign")]
impl fmt::Debug for ReportKey {
    /// Shows the public half only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReportKey")
            .field("public_key", &self.public_key())
            .finish()
    }
}

/// Checks `signature` over `bytes` with `public_key`, then decodes the
/// report and checks that its boot id is that key's.
#[cfg(feature = "report")]
pub fn verify(
    public_key: &[u8; 32],
    bytes: &[u8],
    signature: &[u8; SIGNATURE_BYTES],
) -> Result<Report, ReportError> {
    let key = ed25519_dalek::VerifyingKey::from_bytes(public_key)
        .map_err(|_| ReportError::BadPublicKey)?;
    let signature = ed25519_dalek::Signature::from_bytes(signature);
    key.verify_strict(bytes, &signature)
        .map_err(|_| ReportError::BadSignature)?;
    let report = Report::decode(bytes)?;
    if report.boot_id != boot_id(public_key) {
        return Err(ReportError::BootId);
    }
    Ok(report)
}

/// Why a nonce or report bytes are not valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReportError {
    /// A nonce that is not hexadecimal, has an odd number of digits or more
    /// than [`MAX_NONCE`] bytes' worth.
    NonceHex,
    /// A nonce outside [`MIN_NONCE`]..=[`MAX_NONCE`] bytes.
    NonceLength(usize),
    /// Report bytes of a length no region count gives.
    Length(usize),
    /// The first eight bytes are not [`MAGIC`].
    BadMagic,
    /// A layout version this module does not know.
    Version(u16),
    /// An unknown verdict code.
    Verdict(u8),
    /// No regions, or more than [`MAX_REGIONS`].
    RegionCount(usize),
    /// The region name at this offset is not valid.
    RegionName(usize),
    /// A padding byte at this offset is not zero.
    NonZero(usize),
    /// A first violation at `u64::MAX` ms, which the layout reserves for "none".
    ViolationTime,
    /// The public key is not a valid ed25519 point.
    BadPublicKey,
    /// The signature does not verify with the public key.
    BadSignature,
    /// The report's boot id is not the SHA-256 of the key that signed it.
    BootId,
}

impl fmt::Display for ReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NonceHex => write!(
                f,
                "nonce must be an even number of hex digits, at most {}",
                2 * MAX_NONCE
            ),
            Self::NonceLength(len) => write!(
                f,
                "nonce is {len} bytes; it must be {MIN_NONCE} to {MAX_NONCE} bytes"
            ),
            Self::Length(len) => write!(f, "report is {len} bytes, which no region count gives"),
            Self::BadMagic => f.write_str("report does not start with VIGILRPT"),
            Self::Version(v) => write!(f, "report layout version {v}, expected {VERSION}"),
            Self::Verdict(code) => write!(f, "unknown report verdict code {code}"),
            Self::RegionCount(n) => {
                write!(f, "{n} regions; a report holds 1 to {MAX_REGIONS}")
            }
            Self::RegionName(at) => write!(f, "invalid region name at report byte {at}"),
            Self::NonZero(at) => write!(f, "report byte {at} must be zero"),
            Self::ViolationTime => f.write_str("first violation time is out of range"),
            Self::BadPublicKey => f.write_str("the report key is not a valid ed25519 public key"),
            Self::BadSignature => f.write_str("the report's signature does not verify"),
            Self::BootId => f.write_str("the report's boot id is not the SHA-256 of its key"),
        }
    }
}

impl core::error::Error for ReportError {}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::vec::Vec;

    use super::*;

    fn name(text: &str) -> RegionName {
        RegionName::new(text).unwrap()
    }

    fn sample(verdict: Verdict, first: Option<u64>) -> Report {
        Report::new(
            Nonce::from_hex("00112233445566778899aabbccddeeff").unwrap(),
            [7; 32],
            12_345,
            12,
            12_000,
            first,
            verdict,
            &[
                RegionDigest {
                    name: name("rodata"),
                    sha256: [1; 32],
                },
                RegionDigest {
                    name: name("code"),
                    sha256: [2; 32],
                },
            ],
        )
        .unwrap()
    }

    fn encoded(report: &Report) -> Vec<u8> {
        report.encode()[..report.encoded_len()].to_vec()
    }

    #[test]
    fn nonce_hex_and_lengths() {
        assert_eq!(
            Nonce::from_hex(&"ab".repeat(16)).unwrap().as_bytes(),
            [0xab; 16]
        );
        assert_eq!(
            Nonce::from_hex(&"AB".repeat(32)).unwrap().as_bytes(),
            [0xab; 32]
        );
        assert_eq!(
            Nonce::from_hex(&"00".repeat(15)),
            Err(ReportError::NonceLength(15))
        );
        assert_eq!(
            Nonce::from_hex(&"00".repeat(33)),
            Err(ReportError::NonceHex)
        );
        assert_eq!(Nonce::from_hex(""), Err(ReportError::NonceLength(0)));
        assert_eq!(Nonce::from_hex(&"0".repeat(33)), Err(ReportError::NonceHex));
        assert_eq!(
            Nonce::from_hex(&"zz".repeat(16)),
            Err(ReportError::NonceHex)
        );
        assert_eq!(
            Nonce::from_hex(&"+1".repeat(16)),
            Err(ReportError::NonceHex)
        );
        assert_eq!(
            Nonce::from_hex("é0".repeat(16).as_str()),
            Err(ReportError::NonceHex)
        );
    }

    #[test]
    fn layout_is_as_documented() {
        let report = sample(Verdict::Violated, Some(11_000));
        let bytes = encoded(&report);
        assert_eq!(bytes.len(), HEADER_BYTES + 2 * REGION_BYTES);
        assert_eq!(&bytes[..8], b"VIGILRPT");
        assert_eq!(&bytes[8..10], &[1, 0]);
        assert_eq!(bytes[10], 2);
        assert_eq!(bytes[11], 16);
        assert_eq!(&bytes[12..16], &[2, 0, 0, 0]);
        assert_eq!(bytes[16], 0x00);
        assert_eq!(bytes[31], 0xff);
        assert_eq!(&bytes[32..48], &[0; 16]);
        assert_eq!(&bytes[48..80], &[7; 32]);
        assert_eq!(&bytes[80..88], &12_345u64.to_le_bytes());
        assert_eq!(&bytes[88..96], &12u64.to_le_bytes());
        assert_eq!(&bytes[96..104], &12_000u64.to_le_bytes());
        assert_eq!(&bytes[104..112], &11_000u64.to_le_bytes());
        assert_eq!(&bytes[112..118], b"rodata");
        assert_eq!(&bytes[118..128], &[0; 10]);
        assert_eq!(&bytes[128..160], &[1; 32]);
        assert_eq!(&bytes[160..164], b"code");
        assert_eq!(&bytes[176..208], &[2; 32]);
        let none = sample(Verdict::Intact, None);
        assert_eq!(&encoded(&none)[104..112], &[0xff; 8]);
    }

    #[test]
    fn decode_round_trips() {
        for report in [
            sample(Verdict::Pending, None),
            sample(Verdict::Intact, None),
            sample(Verdict::Violated, Some(0)),
        ] {
            assert_eq!(Report::decode(&encoded(&report)), Ok(report));
        }
    }

    #[test]
    fn decode_refuses_malformed_bytes() {
        let good = encoded(&sample(Verdict::Intact, None));
        let with = |at: usize, value: u8| {
            let mut bytes = good.clone();
            bytes[at] = value;
            Report::decode(&bytes)
        };
        assert_eq!(Report::decode(&good[..100]), Err(ReportError::Length(100)));
        assert_eq!(
            Report::decode(&good[..good.len() - 1]),
            Err(ReportError::Length(good.len() - 1))
        );
        assert_eq!(with(0, b'X'), Err(ReportError::BadMagic));
        assert_eq!(with(8, 2), Err(ReportError::Version(2)));
        assert_eq!(with(10, 3), Err(ReportError::Verdict(3)));
        assert_eq!(with(11, 15), Err(ReportError::NonceLength(15)));
        assert_eq!(with(11, 33), Err(ReportError::NonceLength(33)));
        assert_eq!(with(12, 0), Err(ReportError::RegionCount(0)));
        assert_eq!(with(12, 9), Err(ReportError::RegionCount(9)));
        assert_eq!(with(12, 1), Err(ReportError::Length(good.len())));
        assert_eq!(with(40, 1), Err(ReportError::NonZero(40)));
        assert_eq!(with(120, 1), Err(ReportError::NonZero(120)));
        assert_eq!(with(112, b' '), Err(ReportError::RegionName(112)));
        assert_eq!(with(112, 0), Err(ReportError::NonZero(113)));
    }

    #[test]
    fn new_refuses_bad_region_counts_and_times() {
        let nonce = Nonce::new(&[0; 16]).unwrap();
        let many = [RegionDigest {
            name: name("code"),
            sha256: [0; 32],
        }; MAX_REGIONS + 1];
        for regions in [&[][..], &many[..]] {
            let made = Report::new(nonce, [0; 32], 0, 0, 0, None, Verdict::Pending, regions);
            assert_eq!(made, Err(ReportError::RegionCount(regions.len())));
        }
        let made = Report::new(
            nonce,
            [0; 32],
            0,
            0,
            0,
            Some(u64::MAX),
            Verdict::Violated,
            &many[..1],
        );
        assert_eq!(made, Err(ReportError::ViolationTime));
    }

    #[cfg(feature = "report-sign")]
    #[test]
    fn signed_reports_verify_and_tampered_ones_do_not() {
        let key = ReportKey::from_seed(&[9; 32]);
        let mut report = sample(Verdict::Intact, None);
        report.boot_id = key.boot_id();
        let bytes = encoded(&report);
        let signature = key.sign(&bytes);
        let public = key.public_key();
        assert_eq!(verify(&public, &bytes, &signature), Ok(report));

        let mut flipped = bytes.clone();
        flipped[10] = 2;
        assert_eq!(
            verify(&public, &flipped, &signature),
            Err(ReportError::BadSignature)
        );
        let other = ReportKey::from_seed(&[8; 32]);
        assert_eq!(
            verify(&other.public_key(), &bytes, &signature),
            Err(ReportError::BadSignature)
        );
        // Correctly signed, but naming another key's boot.
        let mut foreign = sample(Verdict::Intact, None);
        foreign.boot_id = other.boot_id();
        let foreign = encoded(&foreign);
        assert_eq!(
            verify(&public, &foreign, &key.sign(&foreign)),
            Err(ReportError::BootId)
        );
        assert!(!std::format!("{key:?}").contains("9, 9, 9"));
    }
}
