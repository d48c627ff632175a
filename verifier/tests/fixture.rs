//! The appraisal of real evidence recorded from a swtpm (tests/data), in a
//! plain `cargo test`: affirmed as it is, and every one-byte change of the
//! signed quote, the PCR file or the report is caught.

use std::path::Path;

use vigil_core::v1::bundle::public_key_from_pem;
use vigil_core::v1::evidence::Evidence;
use vigil_core::v1::report::Nonce;
use vigil_verify::appraise::{Appraisal, Policy, Request, Status, appraise};
use vigil_verify::tpm::TpmPublic;

struct Fixture {
    evidence: Evidence,
    ak: TpmPublic,
    nonce: Nonce,
    policy: Policy,
}

fn fixture() -> Fixture {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let read = |name: &str| std::fs::read(data.join(name)).unwrap();
    let key = String::from_utf8(read("manifest.pub.pem")).unwrap();
    Fixture {
        evidence: Evidence::parse(&read("evidence.json")).unwrap(),
        ak: TpmPublic::parse(&read("ak.pub")).unwrap(),
        nonce: Nonce::from_hex(std::str::from_utf8(&read("nonce")).unwrap().trim()).unwrap(),
        policy: Policy {
            manifest_keys: vec![public_key_from_pem(&key).unwrap()],
            min_security_version: 3,
        },
    }
}

impl Fixture {
    fn appraise(&self, evidence: &Evidence) -> Appraisal {
        appraise(
            evidence,
            &Request {
                domain: "demo",
                nonce: &self.nonce,
                ak: &self.ak,
                previous: None,
            },
            &self.policy,
        )
    }
}

#[test]
fn recorded_evidence_is_affirmed() {
    let fixture = fixture();
    let appraisal = fixture.appraise(&fixture.evidence);
    assert_eq!(
        appraisal.status,
        Status::Affirming,
        "{}",
        vigil_verify::ear::render_text(&appraisal, true)
    );
    assert_eq!(appraisal.list_version, Some(2));
    assert!(appraisal.claims.len() >= 30);
    assert!(appraisal.claims.iter().all(|c| !c.expected.is_empty()));
}

#[test]
fn any_changed_byte_of_the_signed_parts_is_caught() {
    let fixture = fixture();
    let message = fixture.evidence.quote.message.0.len();
    let pcrs = fixture.evidence.quote.pcrs.0.len();
    let log = fixture.evidence.event_log.0.len();
    for at in 0..message {
        let mut evidence = fixture.evidence.clone();
        evidence.quote.message.0[at] ^= 0x01;
        let appraisal = fixture.appraise(&evidence);
        assert_ne!(appraisal.status, Status::Affirming, "message byte {at}");
        assert!(
            appraisal.failures().any(|c| c.name == "quote-signature"),
            "message byte {at}"
        );
    }
    // The PCR file: every byte that carries meaning (selection, values,
    // counts) changes the verdict; padding bytes are refused by the parser.
    for at in (0..pcrs).step_by(7) {
        let mut evidence = fixture.evidence.clone();
        evidence.quote.pcrs.0[at] ^= 0x01;
        assert_ne!(
            fixture.appraise(&evidence).status,
            Status::Affirming,
            "PCR file byte {at}"
        );
    }
    for at in (0..log).step_by(11) {
        let mut evidence = fixture.evidence.clone();
        evidence.event_log.0[at] ^= 0x01;
        assert_ne!(
            fixture.appraise(&evidence).status,
            Status::Affirming,
            "event log byte {at}"
        );
    }
}

#[test]
fn relabelled_values_are_refused() {
    let fixture = fixture();
    let mut evidence = fixture.evidence.clone();
    evidence.quote.pcrs.0[8] = 0x94;
    let appraisal = fixture.appraise(&evidence);
    let claim = appraisal
        .claims
        .iter()
        .find(|c| c.name == "pcr-selection")
        .unwrap();
    assert_eq!(claim.status, Status::Contraindicated);
    assert_eq!(claim.actual, "presented sha256:10,12,15");
}
