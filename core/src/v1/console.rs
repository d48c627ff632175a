//! The lines the guest writes to its console that the host acts on.
//!
//! The guest's serial console is the one channel that works before the
//! network does and after the service has stopped, so dom0 reads it: to know
//! when the service listens, why a guest stopped, and why a boot failed.
//! Each marker is defined here once; the guest prints it and the host looks
//! for it, so neither side can drift from the other.

/// The service listens: `READY` followed by the port number.
pub const READY: &str = "vigil-service: listening on port";

/// The watchdog's `halt` reaction: `HALT` followed by the violation, then
/// the guest ends.
pub const HALT: &str = "vigil-watchdog: HALT: ";

/// The loader gave up: `LOADER_ERROR` followed by the reason.
pub const LOADER_ERROR: &str = "[loader] error: ";

/// The message after a [`HALT`] marker on a console, if there is one.
pub fn halt_message(console: &str) -> Option<&str> {
    console
        .lines()
        .find_map(|line| line.split_once(HALT).map(|(_, message)| message.trim_end()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_halt_message_is_found_after_its_marker() {
        let console = "boot\n[1.2] vigil-watchdog: HALT: region text changed \n";
        assert_eq!(halt_message(console), Some("region text changed"));
        assert_eq!(halt_message("vigil-service: listening on port 8080"), None);
    }
}
