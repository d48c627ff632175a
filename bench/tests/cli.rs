//! The command line itself: documented exit codes, and output into a pipe
//! that its reader has closed.

use std::path::Path;
use std::process::{Command, Output, Stdio};

const BENCH: &str = env!("CARGO_BIN_EXE_vigil-bench");
const SUBCOMMANDS: [&str; 4] = ["http", "seal", "launch", "watchdog"];

fn run(args: &[&str]) -> Output {
    Command::new(BENCH).args(args).output().unwrap()
}

/// Runs `vigil-bench args` with stdout a pipe whose read end is already
/// closed, as after `vigil-bench ... | head -c0`.
fn into_closed_pipe(args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Command::new(BENCH)
        .args(args)
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn help_lists_the_exit_codes_of_every_command() {
    for args in [vec!["--help"]]
        .into_iter()
        .chain(SUBCOMMANDS.iter().map(|sub| vec![*sub, "--help"]))
    {
        let output = run(&args);
        assert!(output.status.success(), "{args:?}");
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(help.contains("Exit codes:"), "{args:?}:\n{help}");
        for line in [
            "  0    success",
            "  2    bad command-line usage",
            "  3    a prerequisite is missing",
            "  6    a guest did not come up",
            "  7    a measurement failed",
            "  130  interrupted (Ctrl-C or SIGTERM)",
        ] {
            assert!(help.contains(line), "{args:?} lacks {line:?}:\n{help}");
        }
    }
}

#[test]
fn failures_exit_with_their_documented_code() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-image");
    let missing = missing.to_str().unwrap();

    let usage = run(&["launch", "--rounds", "many"]);
    assert_eq!(usage.status.code(), Some(2));

    // No built image: a missing prerequisite, named with its remedy.
    let out = dir.path().join("launch.md");
    let output = run(&[
        "launch",
        "--image-dir",
        missing,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("vigil-build build"), "{stderr}");
    assert!(!out.exists(), "nothing is written after a failure");

    // An option out of range.
    let output = run(&["launch", "--rounds", "0", "--image-dir", missing]);
    assert_eq!(output.status.code(), Some(4), "{output:?}");

    // A file that is not a report.
    let bogus = dir.path().join("bogus.json");
    std::fs::write(&bogus, "{}").unwrap();
    let output = run(&[
        "watchdog",
        "--render",
        bogus.to_str().unwrap(),
        "--out",
        dir.path().join("w.md").to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(4), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a watchdog report"));
}

#[test]
fn a_closed_stdout_ends_the_output_quietly() {
    // --help goes through clap.
    let output = into_closed_pipe(&["--help"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");

    // A report printed after it is written: the files are written all the
    // same, and the run succeeds.
    let saved = Path::new(env!("CARGO_MANIFEST_DIR")).join("results/watchdog.json");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("watchdog.md");
    let output = into_closed_pipe(&[
        "watchdog",
        "--render",
        saved.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        std::fs::read_to_string(&out)
            .unwrap()
            .starts_with("# Watchdog")
    );
}
