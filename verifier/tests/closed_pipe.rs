//! `vigil-verify`'s output ends quietly when its reader goes away
//! (`vigil-verify appraise ... | head -c1`): exit status as usual, nothing
//! about the pipe on stderr, no panic. Offline: the recorded evidence in
//! tests/data.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `vigil-verify <args>` with its stdout on a pipe whose reader is
/// already closed: every write fails with EPIPE, deterministically.
fn into_closed_pipe(args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Command::new(env!("CARGO_BIN_EXE_vigil-verify"))
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data"))
        .stdout(writer)
        .output()
        .unwrap()
}

#[test]
fn a_closed_stdout_ends_every_printing_command_quietly() {
    let nonce =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/nonce"))
            .unwrap();
    let appraise = |extra: &'static str| {
        let mut args = vec![
            "appraise",
            "--evidence",
            "evidence.json",
            "--ak",
            "ak.pub",
            "--domain",
            "demo",
            "--manifest-key",
            "manifest.pub.pem",
            "--nonce",
        ];
        args.push(nonce.trim());
        if !extra.is_empty() {
            args.push(extra);
        }
        args
    };
    for (args, code) in [
        (vec!["--help"], 0),
        (vec!["check", "--help"], 0),
        (appraise(""), 0),
        (appraise("--json"), 0),
        // Another domain's evidence: not affirming, exit 1.
        (
            appraise("--json")
                .into_iter()
                .map(|a| if a == "demo" { "other" } else { a })
                .collect(),
            1,
        ),
    ] {
        let output = into_closed_pipe(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "{args:?}: {stderr}"
        );
    }
}
