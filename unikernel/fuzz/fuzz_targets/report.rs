//! The runtime report decoder (what a verifier runs on a guest's answer):
//! `Report::decode` on arbitrary bytes.
//!
//! Whatever arrives, decoding must not panic. What it accepts must be
//! exactly one encoding: encoding the decoded report gives back the input
//! (the bytes the signature covers).

#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_core::v1::report::Report;

fuzz_target!(|data: &[u8]| {
    let Ok(report) = Report::decode(data) else {
        return;
    };
    let encoded = report.encode();
    assert_eq!(
        &encoded[..report.encoded_len()],
        data,
        "accepted a non-canonical report"
    );
});
