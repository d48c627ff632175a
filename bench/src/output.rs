//! Writing to standard output when nobody may be reading any more.
//!
//! `print!` panics when stdout is a pipe whose reader has gone
//! (`vigil-bench ... | head -c1`): Rust ignores SIGPIPE, so the write fails
//! with `BrokenPipe`. A reader that has seen enough is not an error: output
//! ends there, quietly, and the run goes on (its files are still written).

use std::io::{self, Write};

/// Writes `text` to stdout and flushes it. A closed pipe ends the output
/// silently; any other failure is returned.
pub fn print(text: &str) -> io::Result<()> {
    write_quietly(&mut io::stdout().lock(), text)
}

/// [`print()`] on any writer.
pub fn write_quietly(out: &mut impl Write, text: &str) -> io::Result<()> {
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Closed;

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    struct Full;

    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::StorageFull.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_pipe_is_not_an_error_but_a_full_disk_is() {
        assert!(write_quietly(&mut Closed, "report").is_ok());
        assert!(write_quietly(&mut Full, "report").is_err());
        let mut buffer = Vec::new();
        write_quietly(&mut buffer, "report").unwrap();
        assert_eq!(buffer, b"report");
    }
}
