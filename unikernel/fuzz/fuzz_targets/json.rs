//! Differential fuzzing of the JSON validator against serde_json.
//!
//! serde_json deserializing `IgnoredAny` checks exactly the RFC 8259 grammar
//! (strings must be UTF-8 as `from_str` takes `&str`). Both must agree on
//! every input that nests no deeper than the validator's limit; serde_json's
//! own limit (128) is higher, so it never refuses what the validator accepts.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::IgnoredAny;
use vigil_service::json::{self, JsonError};

fuzz_target!(|data: &[u8]| {
    let ours = json::validate(data);
    if ours == Err(JsonError::TooDeep) {
        return;
    }
    let reference = std::str::from_utf8(data)
        .is_ok_and(|text| serde_json::from_str::<IgnoredAny>(text).is_ok());
    assert_eq!(
        ours.is_ok(),
        reference,
        "validator says {ours:?}, serde_json says valid={reference} for {:?}",
        String::from_utf8_lossy(data)
    );
});
