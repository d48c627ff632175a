//! Where the service listens.
//!
//! Under Hermit the service listens on every address of the guest: the guest
//! has one NIC, and its settings come only from the sealed kernel command
//! line (`vigil_core::v1::config`), which has no address setting.
//!
//! Everywhere else (the host build, for tests and benchmarks) it listens on
//! loopback only, unless the environment variable [`ADDRESS_VAR`] names
//! another IPv4 address: the benchmark's Linux guest sets it to `0.0.0.0`,
//! so that the same service code answers on the guest's NIC. The variable is
//! read only off Hermit, so it cannot change what a sealed image does.

use std::fmt;
use std::net::Ipv4Addr;

/// The environment variable that sets the listening address off Hermit.
pub const ADDRESS_VAR: &str = "VIGIL_SERVICE_ADDRESS";

/// A value of [`ADDRESS_VAR`] that is not an IPv4 address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadAddress(pub String);

impl fmt::Display for BadAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{ADDRESS_VAR}={:?} is not an IPv4 address (e.g. 0.0.0.0 or 127.0.0.1)",
            self.0
        )
    }
}

impl std::error::Error for BadAddress {}

/// The address to listen on, given the value of [`ADDRESS_VAR`] (if set)
/// and whether this is the Hermit build.
pub fn address(variable: Option<&str>, hermit: bool) -> Result<Ipv4Addr, BadAddress> {
    if hermit {
        return Ok(Ipv4Addr::UNSPECIFIED);
    }
    match variable {
        None => Ok(Ipv4Addr::LOCALHOST),
        Some(text) => text.parse().map_err(|_| BadAddress(text.to_owned())),
    }
}

/// The address for this build: [`address`] with the environment read only
/// off Hermit.
pub fn from_environment() -> Result<Ipv4Addr, BadAddress> {
    let hermit = cfg!(target_os = "hermit");
    let variable = if hermit {
        None
    } else {
        std::env::var_os(ADDRESS_VAR).map(|v| v.to_string_lossy().into_owned())
    };
    address(variable.as_deref(), hermit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_by_default_off_hermit_every_address_on_it() {
        assert_eq!(address(None, false), Ok(Ipv4Addr::LOCALHOST));
        assert_eq!(address(None, true), Ok(Ipv4Addr::UNSPECIFIED));
    }

    #[test]
    fn the_variable_counts_only_off_hermit() {
        assert_eq!(address(Some("0.0.0.0"), false), Ok(Ipv4Addr::UNSPECIFIED));
        assert_eq!(
            address(Some("127.0.0.2"), false),
            Ok(Ipv4Addr::new(127, 0, 0, 2))
        );
        assert_eq!(address(Some("127.0.0.2"), true), Ok(Ipv4Addr::UNSPECIFIED));
    }

    #[test]
    fn a_bad_value_is_named() {
        let err = address(Some("everywhere"), false).unwrap_err();
        assert_eq!(err, BadAddress("everywhere".into()));
        assert!(
            err.to_string()
                .contains("VIGIL_SERVICE_ADDRESS=\"everywhere\"")
        );
        assert!(address(Some("::"), false).is_err());
    }
}
