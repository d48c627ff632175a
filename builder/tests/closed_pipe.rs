//! Every printing command of `vigil-build` ends quietly when its reader goes
//! away (`vigil-build verify ... | head -c1`): exit status as usual, nothing
//! about the pipe on stderr, no panic.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `vigil-build <args>` in `dir` with its stdout on a pipe whose reader
/// is already closed: every write fails with EPIPE, deterministically.
fn into_closed_pipe(dir: &Path, args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Command::new(env!("CARGO_BIN_EXE_vigil-build"))
        .args(args)
        .current_dir(dir)
        .stdout(writer)
        .output()
        .unwrap()
}

#[test]
fn a_closed_stdout_ends_every_printing_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    // (arguments, the exit status they have with any reader)
    let cases: [(&[&str], i32); 5] = [
        (
            &[
                "keygen",
                "--private",
                "k.pem",
                "--public",
                "k.pub",
                "--json",
            ],
            0,
        ),
        (&["--help"], 0),
        (&["seal", "--help"], 0),
        // Not a bundle: the report of failed checks, then exit 8.
        (&["verify", ".", "--pubkey", "k.pub"], 8),
        (&["verify", ".", "--pubkey", "k.pub", "--json"], 8),
    ];
    for (args, code) in cases {
        let output = into_closed_pipe(dir.path(), args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "{args:?}: {stderr}"
        );
    }
}
