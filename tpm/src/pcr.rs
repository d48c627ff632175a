//! PCRs of the SHA-256 bank: `TPM2_PCR_Extend` and `TPM2_PCR_Read`.

use std::fmt;

use tpm2_protocol::{
    basic::{TpmHandle, TpmUint32},
    data::{
        Tpm2bDigest, TpmAlgId, TpmlDigestValues, TpmlPcrSelection, TpmsPcrSelect, TpmsPcrSelection,
        TpmtHa, TpmuHa,
    },
    frame::{TpmPcrExtendCommand, TpmPcrExtendResponse, TpmPcrReadCommand, TpmPcrReadResponse},
};

use crate::client::{Tpm, password};
use crate::error::{CommandError, Malformation, TpmError};
use crate::transport::Transport;

/// A SHA-256 digest (one PCR value of the SHA-256 bank).
pub type Sha256Digest = [u8; 32];

/// How many PCRs a PC Client TPM (and swtpm) has per bank.
pub const PCR_COUNT: u8 = 24;

/// A set of PCRs of the SHA-256 bank (PCR 0 to 23). Displays as `9,12,15`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PcrSelection(u32);

/// A PCR number outside 0..=23.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("PCR {0} does not exist (a bank has PCRs 0 to 23)")]
pub struct InvalidPcr(pub u8);

impl PcrSelection {
    /// PCR 9, 12 and 15: the PCRs a Vigil launch extends and quotes.
    pub const LAUNCH: Self = Self((1 << 9) | (1 << 12) | (1 << 15));

    /// The set of `pcrs` (duplicates are harmless).
    pub fn new(pcrs: &[u8]) -> Result<Self, InvalidPcr> {
        let mut bits = 0u32;
        for &pcr in pcrs {
            if pcr >= PCR_COUNT {
                return Err(InvalidPcr(pcr));
            }
            bits |= 1 << pcr;
        }
        Ok(Self(bits))
    }

    /// Whether `pcr` is in the set.
    pub fn contains(self, pcr: u8) -> bool {
        pcr < PCR_COUNT && self.0 & (1 << pcr) != 0
    }

    /// The PCRs in ascending order (the order the TPM returns values in).
    pub fn iter(self) -> impl Iterator<Item = u8> {
        (0..PCR_COUNT).filter(move |&pcr| self.contains(pcr))
    }

    /// How many PCRs are in the set.
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The `pcrSelect` bitmap (3 bytes, PCR 0 = bit 0 of byte 0).
    pub fn select_bytes(self) -> [u8; 3] {
        let [a, b, c, _] = self.0.to_le_bytes();
        [a, b, c]
    }

    /// The set a `pcrSelect` bitmap names; `None` if it names a PCR above 23.
    pub fn from_select_bytes(select: &[u8]) -> Option<Self> {
        let mut bits = 0u32;
        for (i, &byte) in select.iter().enumerate() {
            if byte == 0 {
                continue;
            }
            if i >= 3 {
                return None;
            }
            bits |= u32::from(byte) << (8 * i);
        }
        Some(Self(bits))
    }

    /// `TPML_PCR_SELECTION` with one SHA-256 entry.
    pub(crate) fn to_tpml(self) -> TpmlPcrSelection {
        let mut list = TpmlPcrSelection::default();
        let entry = TpmsPcrSelection {
            hash: TpmAlgId::Sha256,
            pcr_select: TpmsPcrSelect::try_from(&self.select_bytes()[..]).unwrap_or_default(),
        };
        // One entry always fits a list of eight.
        let _ = list.try_push(entry);
        list
    }

    /// The SHA-256 set a `TPML_PCR_SELECTION` names; anything else (another
    /// bank, PCRs above 23) is a description of what was found.
    pub(crate) fn from_tpml(list: &TpmlPcrSelection) -> Result<Self, String> {
        let mut bits = 0u32;
        for entry in list.iter() {
            let select: &[u8] = &entry.pcr_select;
            if entry.hash != TpmAlgId::Sha256 {
                if select.iter().all(|&b| b == 0) {
                    continue;
                }
                return Err(format!("a selection of the {:?} bank", entry.hash));
            }
            let set = Self::from_select_bytes(select)
                .ok_or_else(|| format!("a selection beyond PCR 23: {select:02x?}"))?;
            bits |= set.0;
        }
        Ok(Self(bits))
    }
}

impl fmt::Display for PcrSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for pcr in self.iter() {
            if !first {
                f.write_str(",")?;
            }
            write!(f, "{pcr}")?;
            first = false;
        }
        if first {
            f.write_str("(none)")?;
        }
        Ok(())
    }
}

/// What `TPM2_PCR_Read` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrValues {
    /// `pcrUpdateCounter`: changes with every extend.
    pub update_counter: u32,
    /// The PCRs the TPM answered for. A TPM answers at most 8 digests per
    /// call; compare with what was asked.
    pub selection: PcrSelection,
    /// `(pcr, value)` in ascending PCR order, one per PCR in `selection`.
    pub values: Vec<(u8, Sha256Digest)>,
}

impl PcrValues {
    /// The value of `pcr`, if the TPM answered for it.
    pub fn get(&self, pcr: u8) -> Option<&Sha256Digest> {
        self.values
            .iter()
            .find_map(|(p, value)| (*p == pcr).then_some(value))
    }
}

const PCR_EXTEND: &str = "TPM2_PCR_Extend";
const PCR_READ: &str = "TPM2_PCR_Read";

impl<T: Transport> Tpm<T> {
    /// `TPM2_PCR_Extend` of the SHA-256 bank of `pcr` with `digest`
    /// (empty-password authorization of the PCR).
    pub fn extend(&mut self, pcr: u8, digest: &Sha256Digest) -> Result<(), TpmError> {
        let fail = |source| TpmError::Extend { pcr, source };
        let mut digests = TpmlDigestValues::default();
        let value = TpmBufferDigest::try_from(&digest[..])
            .map_err(|_| fail(crate::client::too_long(PCR_EXTEND, "digest")))?;
        digests
            .try_push(TpmtHa {
                hash_alg: TpmAlgId::Sha256,
                digest: TpmuHa::Digest(value),
            })
            .map_err(|_| fail(crate::client::too_long(PCR_EXTEND, "digest list")))?;
        let command = TpmPcrExtendCommand {
            handles: [TpmHandle::from(u32::from(pcr))],
            digests,
        };
        self.execute::<_, TpmPcrExtendResponse>(PCR_EXTEND, &command, &[password()])
            .map_err(fail)?;
        Ok(())
    }

    /// `TPM2_PCR_Read` of `pcrs` in the SHA-256 bank, in one command.
    pub fn pcr_read(&mut self, pcrs: PcrSelection) -> Result<PcrValues, TpmError> {
        let fail = |source| TpmError::PcrRead { pcrs, source };
        let command = TpmPcrReadCommand {
            handles: [],
            pcr_selection_in: pcrs.to_tpml(),
        };
        let response = self
            .execute::<_, TpmPcrReadResponse>(PCR_READ, &command, &[])
            .map_err(fail)?
            .body;
        parse_pcr_read(&response).map_err(|what| {
            fail(CommandError::Malformed {
                command: PCR_READ,
                reason: Malformation::Unexpected(what),
            })
        })
    }

    /// `TPM2_PCR_Read` of one PCR's SHA-256 value.
    pub fn read_pcr(&mut self, pcr: u8) -> Result<Sha256Digest, TpmError> {
        let pcrs = PcrSelection::new(&[pcr]).map_err(|err| TpmError::PcrRead {
            pcrs: PcrSelection::default(),
            source: CommandError::Encode {
                command: PCR_READ,
                reason: err.to_string(),
            },
        })?;
        let values = self.pcr_read(pcrs)?;
        values.get(pcr).copied().ok_or_else(|| TpmError::PcrRead {
            pcrs,
            source: CommandError::Malformed {
                command: PCR_READ,
                reason: Malformation::Unexpected(format!(
                    "the TPM answered for PCRs {} only",
                    values.selection
                )),
            },
        })
    }
}

type TpmBufferDigest =
    tpm2_protocol::basic::TpmBuffer<{ tpm2_protocol::constant::MAX_DIGEST_SIZE }>;

fn parse_pcr_read(response: &TpmPcrReadResponse) -> Result<PcrValues, String> {
    let selection = PcrSelection::from_tpml(&response.pcr_selection_out)?;
    let digests: &[Tpm2bDigest] = &response.pcr_values;
    if digests.len() != selection.len() {
        return Err(format!(
            "{} digests for the {} PCRs {selection}",
            digests.len(),
            selection.len()
        ));
    }
    let mut values = Vec::with_capacity(digests.len());
    for (pcr, digest) in selection.iter().zip(digests) {
        let value: Sha256Digest = digest
            .as_ref()
            .try_into()
            .map_err(|_| format!("PCR {pcr}: a {}-byte SHA-256 value", digest.len()))?;
        values.push((pcr, value));
    }
    Ok(PcrValues {
        update_counter: TpmUint32::into(response.pcr_update_counter),
        selection,
        values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Replay;

    fn unhex(s: &str) -> Vec<u8> {
        crate::test_util::unhex(s)
    }

    #[test]
    fn selections_round_trip_and_print() {
        let launch = PcrSelection::new(&[15, 9, 12, 9]).unwrap();
        assert_eq!(launch, PcrSelection::LAUNCH);
        assert_eq!(launch.select_bytes(), [0x00, 0x92, 0x00]);
        assert_eq!(launch.to_string(), "9,12,15");
        assert_eq!(launch.iter().collect::<Vec<_>>(), [9, 12, 15]);
        assert_eq!(
            PcrSelection::from_select_bytes(&launch.select_bytes()),
            Some(launch)
        );
        assert_eq!(PcrSelection::new(&[24]), Err(InvalidPcr(24)));
        assert_eq!(PcrSelection::from_select_bytes(&[0, 0, 0, 1]), None);
        assert_eq!(
            PcrSelection::from_select_bytes(&[1, 0, 0, 0]),
            Some(PcrSelection(1))
        );
        assert_eq!(PcrSelection::default().to_string(), "(none)");
    }

    /// The bytes dom0's hand-written client sent for an extend of PCR 9
    /// with 32 bytes of 0x11 (`xen-config/src/tpm.rs` before this crate).
    #[test]
    fn extend_sends_the_bytes_dom0_sent() {
        let mut expected =
            unhex("80020000004100000182000000090000000940000009000000000000000001000b");
        expected.extend_from_slice(&[0x11; 32]);
        let ok = unhex("80020000001300000000000000000000010000");
        let mut tpm = Tpm::new(Replay::new([(expected, ok)]));
        tpm.extend(9, &[0x11; 32]).unwrap();
        assert!(tpm.transport().is_done());
    }

    /// An answer for PCR 9, 12, 15 laid out after Part 3 (`TPM2_PCR_Read`):
    /// update counter, TPML_PCR_SELECTION, TPML_DIGEST.
    #[test]
    fn pcr_read_parses_an_answer() {
        let command = unhex("8001000000140000017e00000001000b03009200");
        let mut body = unhex("0000000500000001000b0300920000000003");
        for byte in [0x9a, 0x12, 0x00] {
            body.extend_from_slice(&[0, 32]);
            body.extend_from_slice(&[byte; 32]);
        }
        let response = crate::test_util::response(&body);
        let mut tpm = Tpm::new(Replay::new([(command, response)]));
        let values = tpm.pcr_read(PcrSelection::LAUNCH).unwrap();
        assert_eq!(values.update_counter, 5);
        assert_eq!(values.selection, PcrSelection::LAUNCH);
        assert_eq!(values.get(9), Some(&[0x9a; 32]));
        assert_eq!(values.get(12), Some(&[0x12; 32]));
        assert_eq!(values.get(15), Some(&[0; 32]));
    }

    #[test]
    fn pcr_read_rejects_answers_that_do_not_add_up() {
        let command = unhex("8001000000140000017e00000001000b03009200");
        // Three PCRs selected, two digests.
        let mut body = unhex("0000000500000001000b0300920000000002");
        for _ in 0..2 {
            body.extend_from_slice(&[0, 32]);
            body.extend_from_slice(&[0; 32]);
        }
        let response = crate::test_util::response(&body);
        let mut tpm = Tpm::new(Replay::new([(command.clone(), response)]));
        let err = tpm.pcr_read(PcrSelection::LAUNCH).unwrap_err();
        assert!(err.to_string().contains("9,12,15"), "{err}");
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert!(source.contains("2 digests for the 3 PCRs"), "{source}");
        // Truncated frame: size field says more than there is.
        let mut tpm = Tpm::new(Replay::new([(command, unhex("80010000005c0000000000"))]));
        assert!(tpm.pcr_read(PcrSelection::LAUNCH).is_err());
    }

    #[test]
    fn refusals_carry_the_decoded_code() {
        let command = unhex("8001000000140000017e00000001000b03009200");
        let mut tpm = Tpm::new(Replay::new([(command, unhex("80010000000a00000101"))]));
        let err = tpm.pcr_read(PcrSelection::LAUNCH).unwrap_err();
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert_eq!(
            source,
            "TPM2_PCR_Read: the TPM refused with TPM_RC_FAILURE (0x101)"
        );
    }
}
