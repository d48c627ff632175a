//! The evidence JSON an agent answers with, then the whole appraisal of it
//! (with a fixed AK): nothing an agent sends may panic the verifier.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_core::v1::evidence::{Evidence, SignedReport};
use vigil_core::v1::report::Nonce;
use vigil_verify::appraise::{Policy, Request, appraise};
use vigil_verify::tpm::TpmPublic;

/// An RSA-2048 AK's TPM2B_PUBLIC, as tpm2_createak made it on swtpm (its
/// modulus replaced by a fixed pattern: only its shape matters here).
fn ak() -> Option<TpmPublic> {
    let mut bytes = vec![
        0x01, 0x18, 0x00, 0x01, 0x00, 0x0b, 0x00, 0x05, 0x00, 0x72, 0x00, 0x00, 0x00, 0x10, 0x00,
        0x14, 0x00, 0x0b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00,
    ];
    bytes.extend((0..256).map(|i| (i as u8) | 0x81));
    TpmPublic::parse(&bytes).ok()
}

fuzz_target!(|data: &[u8]| {
    let Ok(evidence) = Evidence::parse(data) else {
        return;
    };
    if let Some(answer) = &evidence.runtime_report {
        let _ = SignedReport::from_answer(answer);
    }
    let Some(ak) = ak() else { return };
    let nonce: Nonce = evidence.nonce.0;
    let _ = appraise(
        &evidence,
        &Request {
            domain: "demo",
            nonce: &nonce,
            ak: &ak,
            previous: None,
        },
        &Policy::default(),
    );
});
