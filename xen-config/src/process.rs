//! The processes dom0 starts and finds again later: QEMU and swtpm outlive
//! the `vigil-dom0 launch` that started them, so later commands know them
//! only by pid (and by their command line, which names the domain's
//! directory: a recycled pid does not match it).
//!
//! One way to read `/proc/<pid>/stat`, one way to end a process (SIGTERM,
//! a grace period, then SIGKILL), one way to let a detached child run on.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

/// How long a process gets to exit after SIGTERM before it is killed.
pub const TERM_GRACE: Duration = Duration::from_secs(5);

/// Whether `pid` is alive (a zombie counts as gone) and its command line
/// mentions `marker`.
pub fn alive(pid: u32, marker: &Path) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"));
    let marker = marker.as_os_str().as_encoded_bytes();
    cmdline.is_ok_and(|cmdline| {
        !marker.is_empty() && cmdline.windows(marker.len()).any(|w| w == marker)
    }) && !is_zombie(pid)
}

/// Whether `pid` has exited and waits to be reaped.
pub fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat_field(&stat, 3) == Some("Z"))
}

/// Field `n` (1-based, as proc(5) numbers them) of a `/proc/<pid>/stat`
/// line. The command name (field 2) is in parentheses and may hold spaces
/// and parentheses itself, so the fields after it are counted from the
/// last `)`; field 2 itself is not returned.
pub fn stat_field(stat: &str, n: usize) -> Option<&str> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(n.checked_sub(3)?)
}

/// Ends `pid`, if it is alive and its command line mentions `marker`:
/// SIGTERM, up to `grace` for it to exit, then SIGKILL.
pub fn terminate(pid: u32, marker: &Path, grace: Duration) {
    let Some(target) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return;
    };
    if !alive(pid, marker) {
        return;
    }
    let _ = kill_process(target, Signal::TERM);
    let started = Instant::now();
    while started.elapsed() < grace {
        if !alive(pid, marker) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = kill_process(target, Signal::KILL);
}

/// Ends a child of this process the same way as [`terminate`], and reaps it.
pub fn terminate_child(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if let Some(pid) = i32::try_from(child.id()).ok().and_then(Pid::from_raw) {
        let _ = kill_process(pid, Signal::TERM);
    }
    let started = Instant::now();
    while started.elapsed() < grace {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Lets a detached child run on, and reaps it when it ends: a waiting
/// thread, so that a long-running caller (the benchmark, the tests, the
/// agent) does not keep it as a zombie. A short-lived caller (the CLI) exits
/// first, and the child is reparented as usual. Returns its pid.
pub fn reap_when_done(mut child: Child) -> u32 {
    let pid = child.id();
    let waiter = std::thread::Builder::new()
        .name(format!("reap-{pid}"))
        .spawn(move || child.wait());
    // Without a thread the child is still detached; it only stays a zombie
    // until this process exits.
    drop(waiter);
    pid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let mut fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        fields[0] = "S".into();
        fields[41 - 3] = "5".into();
        let line = format!("1234 (qemu) (x y) {}\n", fields.join(" "));
        assert_eq!(stat_field(&line, 3), Some("S"));
        assert_eq!(stat_field(&line, 41), Some("5"));
        assert_eq!(stat_field(&line, 60), None);
        assert_eq!(stat_field(&line, 2), None);
        assert_eq!(stat_field("no parenthesis", 3), None);
    }

    /// `sleep 30`, once its command line shows (right after `spawn` it can
    /// still be empty: the exec has not happened yet).
    fn sleeper() -> Child {
        let child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let started = Instant::now();
        while !alive(child.id(), Path::new("sleep")) {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "sleep did not start"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        child
    }

    #[test]
    fn a_child_is_terminated_and_reaped() {
        let mut child = sleeper();
        let pid = child.id();
        terminate_child(&mut child, Duration::from_secs(2));
        assert!(!alive(pid, Path::new("sleep")));
        assert!(child.try_wait().unwrap().is_some());
    }

    #[test]
    fn only_a_process_whose_command_line_matches_is_touched() {
        let mut child = sleeper();
        let pid = child.id();
        terminate(pid, Path::new("/some/other/domain"), Duration::from_secs(1));
        assert!(child.try_wait().unwrap().is_none(), "the wrong process");
        terminate(pid, Path::new("30"), Duration::from_secs(2));
        assert!(child.wait().is_ok());
    }
}
