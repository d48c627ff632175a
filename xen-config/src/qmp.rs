//! A minimal client for the QEMU Machine Protocol: JSON lines over a Unix socket.
//!
//! Only what the launcher needs: the capabilities handshake, `query-status`,
//! `cont` and `quit`. Asynchronous events are skipped while waiting for a reply.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::error::{LaunchError, Result};

/// A connected QMP session.
#[derive(Debug)]
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

fn qmp_error(what: &str, err: impl std::fmt::Display) -> LaunchError {
    LaunchError::Qmp(format!("{what}: {err}"))
}

impl Qmp {
    /// Connects to the socket, reads the greeting and leaves negotiation mode.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self> {
        let stream = UnixStream::connect(path)
            .map_err(|err| qmp_error(&format!("connecting to {}", path.display()), err))?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(|err| qmp_error("setting a timeout", err))?;
        let writer = stream
            .try_clone()
            .map_err(|err| qmp_error("cloning the socket", err))?;
        let mut qmp = Self {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = qmp.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(LaunchError::Qmp(format!("unexpected greeting {greeting}")));
        }
        qmp.execute("qmp_capabilities")?;
        Ok(qmp)
    }

    fn read_message(&mut self) -> Result<Value> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .map_err(|err| qmp_error("reading", err))?;
        if n == 0 {
            return Err(LaunchError::Qmp("QEMU closed the monitor".into()));
        }
        serde_json::from_str(&line).map_err(|err| qmp_error("parsing a reply", err))
    }

    /// Runs a command without arguments and returns its `return` value.
    pub fn execute(&mut self, command: &str) -> Result<Value> {
        self.execute_with(command, json!({}))
    }

    /// A human-monitor command (`info usernet`, ...) and its text output.
    pub fn human(&mut self, command_line: &str) -> Result<String> {
        let value = self.execute_with(
            "human-monitor-command",
            json!({ "command-line": command_line }),
        )?;
        value
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| LaunchError::Qmp(format!("{command_line} returned {value}")))
    }

    /// Runs a command with arguments and returns its `return` value.
    fn execute_with(&mut self, command: &str, arguments: Value) -> Result<Value> {
        let mut request = json!({ "execute": command, "arguments": arguments }).to_string();
        request.push('\n');
        self.writer
            .write_all(request.as_bytes())
            .map_err(|err| qmp_error(&format!("sending {command}"), err))?;
        loop {
            let message = self.read_message()?;
            if let Some(value) = message.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = message.get("error") {
                return Err(LaunchError::Qmp(format!("{command} failed: {error}")));
            }
            // An asynchronous event (e.g. SHUTDOWN, STOP): keep waiting.
        }
    }

    /// The VM's run state (`running`, `paused`, `internal-error`, `shutdown`, ...).
    pub fn status(&mut self) -> Result<String> {
        let value = self.execute("query-status")?;
        value["status"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| LaunchError::Qmp(format!("query-status returned {value}")))
    }
}
