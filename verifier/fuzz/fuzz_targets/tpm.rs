//! TPMS_ATTEST, TPMT_SIGNATURE and TPM2B_PUBLIC (tpm2-protocol under
//! Vigil's checks), and a signature check with whatever parsed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_verify::tpm::{QuoteInfo, QuoteSignature, TpmPublic, attest_header};

fuzz_target!(|data: &[u8]| {
    // The first byte splits the input between the three structures.
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let at = usize::from(split).min(rest.len());
    let (first, second) = rest.split_at(at);
    let _ = attest_header(rest);
    let _ = QuoteInfo::parse(rest);
    let signature = QuoteSignature::parse(first);
    if let Ok(public) = TpmPublic::parse(second) {
        let _ = public.name();
        let _ = public.is_attestation_key();
        if let Ok(signature) = &signature {
            let _ = public.verify(second, signature);
        }
    }
});
