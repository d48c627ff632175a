//! The tpm2-tools PCR file: whatever parses re-emits to a file that parses
//! to the same selections and values (tpm2-tools may split the values into
//! lists differently than `emit`, which packs eight per list).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_core::v1::evidence::PcrFile;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = PcrFile::parse(data) {
        let emitted = file.emit().expect("a parsed file emits");
        assert_eq!(PcrFile::parse(&emitted).as_ref(), Ok(&file));
        assert!(file.values().is_ok());
    }
});
