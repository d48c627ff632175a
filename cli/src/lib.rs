//! What Vigil's command-line tools share.
//!
//! - [`print()`] and [`println()`]: standard output that a closed pipe ends
//!   quietly. `vigil-dom0 status demo | grep -q running` closes the pipe at
//!   the first match; `println!` would then panic ("failed printing to
//!   stdout: Broken pipe") and the tool would fail. Like ripgrep, Vigil's
//!   tools treat a closed pipe as the reader having seen enough: the rest of
//!   the output is dropped and the exit status is unchanged.
//! - [`error_chain`]: an error and all its sources on one line, the way every
//!   tool prints its final error.

use std::fmt::Display;
use std::io::{self, Write};

/// Writes `text` to standard output and flushes it. A closed pipe is not an
/// error (see the crate docs); any other write error is returned.
pub fn print(text: impl Display) -> io::Result<()> {
    let mut out = io::stdout().lock();
    quiet_on_closed_pipe(write!(out, "{text}").and_then(|()| out.flush()))
}

/// [`print()`] followed by a newline.
pub fn println(text: impl Display) -> io::Result<()> {
    print(format_args!("{text}\n"))
}

/// `Ok` for a write that failed only because the reader went away.
fn quiet_on_closed_pipe(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// `error: cause: cause of the cause ...`, on one line.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_pipe_is_quiet_and_other_errors_are_not() {
        assert!(quiet_on_closed_pipe(Err(io::ErrorKind::BrokenPipe.into())).is_ok());
        assert!(quiet_on_closed_pipe(Err(io::ErrorKind::StorageFull.into())).is_err());
    }

    #[test]
    fn error_chains_read_on_one_line() {
        #[derive(Debug)]
        struct Outer(io::Error);
        impl Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("reading key.pem")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let err = Outer(io::Error::other("permission denied"));
        assert_eq!(error_chain(&err), "reading key.pem: permission denied");
    }
}
