//! The manifest parser: `Manifest::parse` on arbitrary bytes.
//!
//! Whatever arrives, parsing must not panic. What it accepts must be in
//! canonical form: emitting the parsed manifest gives back exactly the input
//! (the bytes a signature covers), and those bytes parse again to an equal
//! value that passes `validate`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_core::v1::manifest::Manifest;

fuzz_target!(|data: &[u8]| {
    let Ok(manifest) = Manifest::parse(data) else {
        return;
    };
    let emitted = manifest.emit();
    assert!(
        emitted == data,
        "accepted a non-canonical manifest:\n{}\nits canonical form:\n{}",
        String::from_utf8_lossy(data),
        String::from_utf8_lossy(&emitted)
    );
    let again = Manifest::parse(&emitted).expect("the canonical form parses");
    assert_eq!(again, manifest);
    manifest.validate().expect("a parsed manifest is valid");
});
