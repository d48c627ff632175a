//! In-process latency of the calls dom0's agent makes on every challenge,
//! against a real swtpm, with a new connection per command and with one
//! kept connection. Prints a table (run with `--nocapture`); asserts only
//! that every call works (timings on a shared machine are not a pass/fail
//! criterion).
//!
//! `cargo test --release -p vigil-tpm --test latency -- --ignored --nocapture`

mod common;

use std::time::{Duration, Instant};

use common::{Recorder, VtpmDir};
use vigil_tpm::{AK_HANDLE, AkAlgorithm, Connection, PcrSelection, Tpm, Transport, UnixSocket};

const RUNS: usize = 100;

struct Stats {
    median: Duration,
    p90: Duration,
    exchanges: f64,
}

fn measure<T: Transport>(
    tpm: &mut Tpm<Recorder<T>>,
    mut op: impl FnMut(&mut Tpm<Recorder<T>>),
) -> Stats {
    op(tpm); // warm-up
    tpm.transport_mut().exchanges = 0;
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let started = Instant::now();
            op(tpm);
            started.elapsed()
        })
        .collect();
    times.sort();
    let exchanges = tpm.transport().exchanges as f64 / RUNS as f64;
    tpm.transport_mut().log.clear();
    Stats {
        median: times[RUNS / 2],
        p90: times[RUNS * 9 / 10],
        exchanges,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

#[test]
#[ignore = "needs swtpm and swtpm_setup; a measurement: run with --nocapture to see it"]
fn latency_of_quote_ensure_and_pcr_read() {
    let dir = VtpmDir::provisioned();
    let swtpm = dir.start();
    swtpm
        .tpm()
        .ensure_attestation_key(AkAlgorithm::RsaSsaSha256)
        .unwrap();
    println!("median and p90 over {RUNS} runs, ms (exchanges per call)");
    println!(
        "{:<40} {:>22} {:>22}",
        "call", "per-command connection", "kept connection"
    );
    type Op = fn(&mut Tpm<Recorder<UnixSocket>>);
    let ops: [(&str, Op); 4] = [
        ("quote (RSA AK, PCR 9,12,15)", |tpm| {
            tpm.quote(AK_HANDLE, &[0x5a; 32], PcrSelection::LAUNCH)
                .unwrap();
        }),
        ("ensure_attestation_key (provisioned)", |tpm| {
            tpm.ensure_attestation_key(AkAlgorithm::RsaSsaSha256)
                .unwrap();
        }),
        ("pcr_read (9,12,15)", |tpm| {
            tpm.pcr_read(PcrSelection::LAUNCH).unwrap();
        }),
        ("extend (one PCR)", |tpm| {
            tpm.extend(16, &[1; 32]).unwrap();
        }),
    ];
    for (name, op) in ops {
        let mut row = Vec::new();
        for connection in [Connection::PerCommand, Connection::Persistent] {
            let mut tpm = Tpm::new(Recorder::new(UnixSocket::new(swtpm.socket(), connection)));
            let stats = measure(&mut tpm, op);
            row.push(format!(
                "{} / {} ({:.1})",
                ms(stats.median),
                ms(stats.p90),
                stats.exchanges
            ));
        }
        println!("{name:<40} {:>22} {:>22}", row[0], row[1]);
    }
}
