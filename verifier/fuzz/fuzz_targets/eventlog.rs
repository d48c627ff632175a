//! The TCG event log: parse, tell the list version, read the report key,
//! replay; whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_core::v1::eventlog;
use vigil_core::v2::events::list_version;

fuzz_target!(|data: &[u8]| {
    let Ok(records) = eventlog::parse(data) else {
        return;
    };
    // A parsed log re-encodes to the same bytes.
    assert_eq!(eventlog::encode(&records), data);
    if let Some(version) = list_version(&records) {
        for record in records.iter().filter(|r| r.pcr == 15) {
            let _ = version.report_key(record.data);
        }
    }
    for pcr in [9, 12, 15] {
        let _ = eventlog::replay(&records, pcr);
    }
});
