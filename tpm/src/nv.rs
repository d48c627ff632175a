//! NV indices: `TPM2_NV_ReadPublic`, chunked `TPM2_NV_Read`, and the EK
//! certificate `swtpm_setup --create-ek-cert` stores.

use tpm2_protocol::{
    basic::{TpmUint16, TpmUint32},
    data::{TpmCap, TpmPt, TpmuCapabilities},
    frame::{
        TpmGetCapabilityCommand, TpmGetCapabilityResponse, TpmNvReadCommand,
        TpmNvReadPublicCommand, TpmNvReadPublicResponse, TpmNvReadResponse,
    },
};

use crate::client::{Handle, Tpm, password};
use crate::error::{CommandError, Malformation, TpmError};
use crate::transport::Transport;

/// The NV index of the RSA-2048 EK certificate (TCG EK Credential Profile;
/// where `swtpm_setup --create-ek-cert` writes it, DER).
pub const EK_CERT_NV_INDEX: Handle = Handle(0x01c0_0002);

/// The largest NV_Read chunk tpm2-protocol's `TPM2B_MAX_NV_BUFFER` holds
/// (`MAX_NV_BUFFER_SIZE`, also swtpm's `TPM_PT_NV_BUFFER_MAX`).
const MAX_CHUNK: u16 = 1024;

/// An NV index's public area (`TPMS_NV_PUBLIC`) and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvPublic {
    /// The index.
    pub index: Handle,
    /// `nameAlg` (`TPM_ALG_ID`).
    pub name_alg: u16,
    /// `TPMA_NV` bits.
    pub attributes: u32,
    /// The data size in bytes.
    pub data_size: u16,
    /// The index's name (`TPM2B_NAME` contents).
    pub name: Vec<u8>,
}

const NV_READ_PUBLIC: &str = "TPM2_NV_ReadPublic";
const NV_READ: &str = "TPM2_NV_Read";
const GET_CAPABILITY: &str = "TPM2_GetCapability";

impl<T: Transport> Tpm<T> {
    /// `TPM2_NV_ReadPublic` of `index`.
    pub fn nv_read_public(&mut self, index: Handle) -> Result<NvPublic, TpmError> {
        let command = TpmNvReadPublicCommand {
            handles: [index.into()],
        };
        let response = self
            .execute::<_, TpmNvReadPublicResponse>(NV_READ_PUBLIC, &command, &[])
            .map_err(|source| TpmError::NvRead { index, source })?
            .body;
        let public = response.nv_public.inner;
        Ok(NvPublic {
            index: Handle(public.nv_index.into()),
            name_alg: public.name_alg.value(),
            attributes: public.attributes.bits(),
            data_size: public.data_size.into(),
            name: response.nv_name.to_vec(),
        })
    }

    /// The whole contents of `index`: its size from `TPM2_NV_ReadPublic`,
    /// then `TPM2_NV_Read` in chunks of at most `TPM_PT_NV_BUFFER_MAX`
    /// bytes, authorized by the index's own (empty) password.
    pub fn nv_read(&mut self, index: Handle) -> Result<Vec<u8>, TpmError> {
        let fail = |source| TpmError::NvRead { index, source };
        let size = self.nv_read_public(index)?.data_size;
        let chunk = self.nv_buffer_max().map_err(fail)?;
        let mut data = Vec::with_capacity(usize::from(size));
        let mut offset = 0u16;
        while offset < size {
            let want = chunk.min(size - offset);
            let command = TpmNvReadCommand {
                handles: [index.into(), index.into()],
                size: TpmUint16::from(want),
                offset: TpmUint16::from(offset),
            };
            let response = self
                .execute::<_, TpmNvReadResponse>(NV_READ, &command, &[password()])
                .map_err(fail)?;
            let got: &[u8] = &response.body.data;
            if got.len() != usize::from(want) {
                return Err(fail(CommandError::Malformed {
                    command: NV_READ,
                    reason: Malformation::Unexpected(format!(
                        "{} bytes at offset {offset} where {want} were asked for",
                        got.len()
                    )),
                }));
            }
            data.extend_from_slice(got);
            offset += want;
        }
        Ok(data)
    }

    /// The RSA EK certificate (DER) at [`EK_CERT_NV_INDEX`].
    pub fn read_ek_certificate(&mut self) -> Result<Vec<u8>, TpmError> {
        self.nv_read(EK_CERT_NV_INDEX)
    }

    /// `TPM_PT_NV_BUFFER_MAX`, capped at what one response can carry here.
    fn nv_buffer_max(&mut self) -> Result<u16, CommandError> {
        let command = TpmGetCapabilityCommand {
            handles: [],
            cap: TpmCap::TpmProperties,
            property: TpmUint32::from(TpmPt::NvBufferMax.value()),
            property_count: TpmUint32::from(1),
        };
        let response = self
            .execute::<_, TpmGetCapabilityResponse>(GET_CAPABILITY, &command, &[])?
            .body;
        let value = match &response.capability_data.data {
            TpmuCapabilities::TpmProperties(list) => list
                .iter()
                .find(|p| p.property == TpmPt::NvBufferMax)
                .map(|p| u32::from(p.value)),
            _ => None,
        };
        match value {
            Some(max) if max > 0 => Ok(u16::try_from(max).unwrap_or(MAX_CHUNK).min(MAX_CHUNK)),
            _ => Err(CommandError::Malformed {
                command: GET_CAPABILITY,
                reason: Malformation::Unexpected("no TPM_PT_NV_BUFFER_MAX".to_owned()),
            }),
        }
    }
}
