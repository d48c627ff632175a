//! Step 4 of a launch: the launch event list (v2,
//! `vigil_core::v2::events`) extended into the domain's vTPM, one event-log
//! record per extend, and PCR 9 checked against the manifest's prediction.

use std::fs;
use std::path::Path;

use vigil_core::v1::eventlog::{self, Record};
use vigil_core::v1::events::{LAUNCH_PCRS, LaunchInputs};
use vigil_core::v1::manifest::{Digest, Manifest};
use vigil_core::v2::events::LaunchEvents;

use crate::error::{LaunchError, Result};
use vigil_tpm::Tpm;

/// Extends the launch events for `manifest` (its exact bytes
/// `manifest_bytes`) and the per-boot `report_public` key into the vTPM at
/// `socket`, writes the event log to `log_path`, and returns the launch
/// PCRs' values; fails if PCR 9 is not the manifest's prediction.
pub fn measure(
    socket: &Path,
    manifest: &Manifest,
    manifest_bytes: &[u8],
    report_public: &[u8; 32],
    log_path: &Path,
) -> Result<Vec<(u8, Digest)>> {
    let events = LaunchEvents::new(LaunchInputs {
        loader_sha256: manifest.loader.sha256.0,
        image_sha256: manifest.image.sha256.0,
        manifest: manifest_bytes,
        cmdline: &manifest.kernel_cmdline,
        report_key: report_public,
    });
    let mut tpm = Tpm::connect(socket);
    let mut records = Vec::new();
    for event in events.events() {
        tpm.extend(event.spec.pcr, &event.digest)?;
        records.push(Record {
            pcr: u32::from(event.spec.pcr),
            event_type: event.spec.event_type,
            sha256: event.digest,
            data: event.data,
        });
    }
    fs::write(log_path, eventlog::encode(&records))
        .map_err(LaunchError::io("writing", log_path))?;
    let mut pcrs = Vec::new();
    for pcr in LAUNCH_PCRS {
        pcrs.push((pcr, Digest(tpm.read_pcr(pcr)?)));
    }
    if pcrs[0].1 != manifest.pcr9 {
        return Err(LaunchError::Pcr9Mismatch {
            expected: manifest.pcr9.to_string(),
            actual: pcrs[0].1.to_string(),
        });
    }
    Ok(pcrs)
}
