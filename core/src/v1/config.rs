//! The service configuration, carried on the guest's kernel command line.
//!
//! Hermit hands every word after `--` on its kernel command line to the
//! application as its arguments. Vigil's service reads its port and limits from
//! there and from nowhere else, because the command line is the one
//! configuration channel that sealing measures: what the guest obeys is what the
//! manifest records.
//!
//! # Format (v1)
//! Each setting is one word `--<name>=<value>`; [`SETTINGS`] lists the names,
//! ranges and defaults. A setting that is absent takes its default. Unknown
//! names, repeated names, malformed numbers, values out of range and
//! contradictory limits are errors: the guest refuses to start rather than guess.
//! [`ServiceConfig::write_args`] emits the canonical form (every setting, in
//! table order), so equal configurations give byte-identical command lines.

use core::fmt;

/// Everything the service can be configured with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceConfig {
    /// TCP port the HTTP service listens on inside the guest.
    pub port: u16,
    /// Connections served at once; one more is answered 503 and closed.
    pub max_connections: u32,
    /// Bytes of request line plus header fields (431 above, 414 if the request line alone is too long).
    pub max_header_bytes: u32,
    /// Bytes of the request target (414 above).
    pub max_uri_bytes: u32,
    /// Bytes of a request body (413 above).
    pub max_body_bytes: u32,
    /// A connection with no traffic for this long is closed (408 if a request was half-received).
    pub idle_timeout_ms: u32,
    /// Keys the store holds at most (507 above).
    pub max_keys: u32,
    /// Bytes of one key (400 above).
    pub max_key_bytes: u32,
    /// Bytes of keys plus values the store holds at most (507 above).
    pub store_bytes: u32,
    /// What the service logs to the serial console.
    pub log_level: LogLevel,
}

/// How much the service writes to its console.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Only failures of the service itself.
    Error,
    /// Also rejected connections and exhausted limits.
    Warn,
    /// Also start-up and shutdown.
    Info,
    /// Also one line per request (slow on a serial console).
    Debug,
}

impl LogLevel {
    /// The word used on the command line.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
        }
    }

    fn parse(word: &str) -> Option<Self> {
        [Self::Error, Self::Warn, Self::Info, Self::Debug]
            .into_iter()
            .find(|level| level.as_str() == word)
    }
}

/// One numeric setting: its name on the command line, its range and default.
#[derive(Debug)]
pub struct Setting {
    /// The `<name>` in `--<name>=<value>`.
    pub name: &'static str,
    /// One line for `--help` texts and docs.
    pub help: &'static str,
    /// Smallest accepted value.
    pub min: u32,
    /// Largest accepted value.
    pub max: u32,
    /// Value when the setting is absent.
    pub default: u32,
    get: fn(&ServiceConfig) -> u32,
    set: fn(&mut ServiceConfig, u32),
}

impl Setting {
    /// This setting's value in `config`.
    pub fn get(&self, config: &ServiceConfig) -> u32 {
        (self.get)(config)
    }
}

/// The name of the log-level setting (`--log=<level>`).
pub const LOG_SETTING: &str = "log";

/// Every numeric setting, in canonical order. The log level (`--log=error|warn|info|debug`,
/// default `info`) comes after them.
pub const SETTINGS: &[Setting] = &[
    Setting {
        name: "port",
        help: "TCP port the service listens on inside the guest",
        min: 1,
        max: 65535,
        default: 8080,
        get: |c| u32::from(c.port),
        // The range check runs before `set`, so the value fits.
        set: |c, v| c.port = u16::try_from(v).unwrap_or(u16::MAX),
    },
    Setting {
        name: "max-connections",
        help: "connections served at once; one more gets 503 and is closed",
        min: 1,
        max: 1024,
        default: 256,
        get: |c| c.max_connections,
        set: |c, v| c.max_connections = v,
    },
    Setting {
        name: "max-header-bytes",
        help: "bytes of request line plus header fields (431 above)",
        min: 256,
        max: 65536,
        default: 8192,
        get: |c| c.max_header_bytes,
        set: |c, v| c.max_header_bytes = v,
    },
    Setting {
        name: "max-uri-bytes",
        help: "bytes of the request target (414 above); at most max-header-bytes",
        min: 64,
        max: 65536,
        default: 2048,
        get: |c| c.max_uri_bytes,
        set: |c, v| c.max_uri_bytes = v,
    },
    Setting {
        name: "max-body-bytes",
        help: "bytes of a request body (413 above); at most store-bytes",
        min: 0,
        max: 16 << 20,
        default: 64 << 10,
        get: |c| c.max_body_bytes,
        set: |c, v| c.max_body_bytes = v,
    },
    Setting {
        name: "idle-timeout-ms",
        help: "milliseconds without traffic before a connection is closed",
        min: 100,
        max: 3_600_000,
        default: 30_000,
        get: |c| c.idle_timeout_ms,
        set: |c, v| c.idle_timeout_ms = v,
    },
    Setting {
        name: "max-keys",
        help: "keys the store holds at most (507 above)",
        min: 1,
        max: 1_000_000,
        default: 4096,
        get: |c| c.max_keys,
        set: |c, v| c.max_keys = v,
    },
    Setting {
        name: "max-key-bytes",
        help: "bytes of one key (400 above); at most max-uri-bytes",
        min: 1,
        max: 1024,
        default: 128,
        get: |c| c.max_key_bytes,
        set: |c, v| c.max_key_bytes = v,
    },
    Setting {
        name: "store-bytes",
        help: "bytes of keys plus values the store holds at most (507 above)",
        min: 1024,
        max: 1 << 30,
        default: 8 << 20,
        get: |c| c.store_bytes,
        set: |c, v| c.store_bytes = v,
    },
];

/// Why a command line does not give a valid configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError<'a> {
    /// A word that is not of the form `--<name>=<value>`.
    NotASetting {
        /// The offending word.
        word: &'a str,
    },
    /// A name that is not in [`SETTINGS`] and is not `log`.
    UnknownSetting {
        /// The unknown name.
        name: &'a str,
    },
    /// The same setting given twice.
    Duplicate {
        /// The repeated setting.
        name: &'static str,
    },
    /// A value that is not a decimal number.
    NotANumber {
        /// The setting.
        name: &'static str,
        /// The value as given.
        value: &'a str,
    },
    /// A number outside the setting's range.
    OutOfRange {
        /// The setting.
        name: &'static str,
        /// The value as given.
        value: &'a str,
        /// Smallest accepted value.
        min: u32,
        /// Largest accepted value.
        max: u32,
    },
    /// A log level other than error, warn, info or debug.
    UnknownLogLevel {
        /// The value as given.
        value: &'a str,
    },
    /// Two limits that contradict each other.
    Conflict {
        /// The setting that must be the smaller one.
        smaller: &'static str,
        /// Its value.
        smaller_value: u32,
        /// The setting that bounds it.
        larger: &'static str,
        /// Its value.
        larger_value: u32,
    },
}

impl fmt::Display for ConfigError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NotASetting { word } => {
                write!(f, "`{word}` is not a setting (expected --<name>=<value>)")
            }
            Self::UnknownSetting { name } => write!(f, "unknown setting `{name}`"),
            Self::Duplicate { name } => write!(f, "setting `{name}` is given more than once"),
            Self::NotANumber { name, value } => {
                write!(f, "setting `{name}`: `{value}` is not a decimal number")
            }
            Self::OutOfRange {
                name,
                value,
                min,
                max,
            } => write!(
                f,
                "setting `{name}`: {value} is out of range (allowed: {min}..={max})"
            ),
            Self::UnknownLogLevel { value } => write!(
                f,
                "setting `{LOG_SETTING}`: `{value}` is not one of error, warn, info, debug"
            ),
            Self::Conflict {
                smaller,
                smaller_value,
                larger,
                larger_value,
            } => write!(
                f,
                "`{smaller}` ({smaller_value}) must not exceed `{larger}` ({larger_value})"
            ),
        }
    }
}

impl core::error::Error for ConfigError<'_> {}

impl Default for ServiceConfig {
    fn default() -> Self {
        let mut config = Self {
            port: 0,
            max_connections: 0,
            max_header_bytes: 0,
            max_uri_bytes: 0,
            max_body_bytes: 0,
            idle_timeout_ms: 0,
            max_keys: 0,
            max_key_bytes: 0,
            store_bytes: 0,
            log_level: LogLevel::Info,
        };
        for setting in SETTINGS {
            (setting.set)(&mut config, setting.default);
        }
        config
    }
}

/// Which settings a parse has seen, to catch repeats. Bit `i` is `SETTINGS[i]`;
/// the bit after the last is the log level.
#[derive(Default)]
struct Seen(u32);

impl Seen {
    fn mark(&mut self, index: usize, name: &'static str) -> Result<(), ConfigError<'static>> {
        let bit = 1u32 << index;
        if self.0 & bit != 0 {
            return Err(ConfigError::Duplicate { name });
        }
        self.0 |= bit;
        Ok(())
    }
}

impl ServiceConfig {
    /// Parses the application arguments (without `argv[0]`), then checks the
    /// limits against each other.
    pub fn from_args<'a, I>(args: I) -> Result<Self, ConfigError<'a>>
    where
        I: IntoIterator<Item = &'a str>,
    {
        let mut config = Self::default();
        let mut seen = Seen::default();
        for word in args {
            let (name, value) = word
                .strip_prefix("--")
                .and_then(|setting| setting.split_once('='))
                .ok_or(ConfigError::NotASetting { word })?;
            let index = config.set(name, value)?;
            seen.mark(index, SETTINGS.get(index).map_or(LOG_SETTING, |s| s.name))?;
        }
        config.validate()?;
        Ok(config)
    }

    /// Sets one setting by name. Returns the setting's index (`SETTINGS.len()`
    /// for the log level). Does not check limits against each other: call
    /// [`validate`](Self::validate) when done.
    pub fn set<'a>(&mut self, name: &'a str, value: &'a str) -> Result<usize, ConfigError<'a>> {
        if name == LOG_SETTING {
            self.log_level =
                LogLevel::parse(value).ok_or(ConfigError::UnknownLogLevel { value })?;
            return Ok(SETTINGS.len());
        }
        let (index, setting) = SETTINGS
            .iter()
            .enumerate()
            .find(|(_, setting)| setting.name == name)
            .ok_or(ConfigError::UnknownSetting { name })?;
        let number = parse_decimal(value).ok_or(ConfigError::NotANumber {
            name: setting.name,
            value,
        })?;
        let number = u32::try_from(number)
            .ok()
            .filter(|n| (setting.min..=setting.max).contains(n))
            .ok_or(ConfigError::OutOfRange {
                name: setting.name,
                value,
                min: setting.min,
                max: setting.max,
            })?;
        (setting.set)(self, number);
        Ok(index)
    }

    /// Checks the limits against each other.
    pub fn validate(&self) -> Result<(), ConfigError<'static>> {
        let pairs = [
            (
                "max-uri-bytes",
                self.max_uri_bytes,
                "max-header-bytes",
                self.max_header_bytes,
            ),
            (
                "max-key-bytes",
                self.max_key_bytes,
                "max-uri-bytes",
                self.max_uri_bytes,
            ),
            (
                "max-body-bytes",
                self.max_body_bytes,
                "store-bytes",
                self.store_bytes,
            ),
        ];
        for (smaller, smaller_value, larger, larger_value) in pairs {
            if smaller_value > larger_value {
                return Err(ConfigError::Conflict {
                    smaller,
                    smaller_value,
                    larger,
                    larger_value,
                });
            }
        }
        Ok(())
    }

    /// Writes the canonical argument list: every setting, in table order,
    /// separated by single spaces.
    pub fn write_args(&self, w: &mut impl fmt::Write) -> fmt::Result {
        for setting in SETTINGS {
            write!(w, "--{}={} ", setting.name, setting.get(self))?;
        }
        write!(w, "--{LOG_SETTING}={}", self.log_level.as_str())
    }

    /// The kernel command line that hands this configuration to the service:
    /// Hermit gives every word after `--` to the application. This exact
    /// string is what the manifest records and dom0 measures.
    #[cfg(feature = "manifest")]
    pub fn kernel_cmdline(&self) -> alloc::string::String {
        let mut line = alloc::string::String::from("-- ");
        // Writing to a String cannot fail.
        let _ = self.write_args(&mut line);
        line
    }
}

/// Parses a plain decimal number: ASCII digits only, no sign, no spaces, at
/// most 10 digits (enough for any `u32`).
fn parse_decimal(value: &str) -> Option<u64> {
    if value.is_empty() || value.len() > 10 {
        return None;
    }
    value.bytes().try_fold(0u64, |acc, byte| {
        byte.is_ascii_digit()
            .then(|| acc * 10 + u64::from(byte - b'0'))
    })
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::String;
    use std::vec::Vec;

    use super::*;

    fn args(line: &str) -> Vec<&str> {
        line.split_whitespace().collect()
    }

    #[test]
    fn empty_command_line_gives_defaults() {
        let config = ServiceConfig::from_args([]).unwrap();
        assert_eq!(config, ServiceConfig::default());
        assert_eq!(config.port, 8080);
        assert_eq!(config.log_level, LogLevel::Info);
    }

    #[test]
    fn canonical_args_round_trip() {
        let mut config = ServiceConfig::default();
        config.set("port", "9000").unwrap();
        config.set("max-body-bytes", "0").unwrap();
        config.set("log", "debug").unwrap();
        let mut line = String::new();
        config.write_args(&mut line).unwrap();
        assert!(line.starts_with("--port=9000 --max-connections=256 "));
        assert!(line.ends_with(" --log=debug"));
        assert_eq!(ServiceConfig::from_args(args(&line)).unwrap(), config);
    }

    #[test]
    fn every_setting_appears_in_canonical_form() {
        let mut line = String::new();
        ServiceConfig::default().write_args(&mut line).unwrap();
        for setting in SETTINGS {
            assert!(line.contains(&std::format!("--{}=", setting.name)));
        }
        assert_eq!(line.split(' ').count(), SETTINGS.len() + 1);
    }

    #[test]
    fn bad_words_are_named() {
        let cases: &[(&str, ConfigError<'_>)] = &[
            ("port=1", ConfigError::NotASetting { word: "port=1" }),
            ("--port", ConfigError::NotASetting { word: "--port" }),
            (
                "--colour=red",
                ConfigError::UnknownSetting { name: "colour" },
            ),
            (
                "--port=80x",
                ConfigError::NotANumber {
                    name: "port",
                    value: "80x",
                },
            ),
            (
                "--port=-1",
                ConfigError::NotANumber {
                    name: "port",
                    value: "-1",
                },
            ),
            (
                "--port=",
                ConfigError::NotANumber {
                    name: "port",
                    value: "",
                },
            ),
            (
                "--port=0",
                ConfigError::OutOfRange {
                    name: "port",
                    value: "0",
                    min: 1,
                    max: 65535,
                },
            ),
            (
                "--port=65536",
                ConfigError::OutOfRange {
                    name: "port",
                    value: "65536",
                    min: 1,
                    max: 65535,
                },
            ),
            (
                "--max-keys=99999999999",
                ConfigError::NotANumber {
                    name: "max-keys",
                    value: "99999999999",
                },
            ),
            ("--log=loud", ConfigError::UnknownLogLevel { value: "loud" }),
            ("--port=1 --port=2", ConfigError::Duplicate { name: "port" }),
            (
                "--log=info --log=warn",
                ConfigError::Duplicate { name: "log" },
            ),
            (
                "--max-header-bytes=1024 --max-uri-bytes=2048",
                ConfigError::Conflict {
                    smaller: "max-uri-bytes",
                    smaller_value: 2048,
                    larger: "max-header-bytes",
                    larger_value: 1024,
                },
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(
                ServiceConfig::from_args(args(line)).unwrap_err(),
                *expected,
                "{line}"
            );
        }
    }

    #[test]
    fn errors_read_well() {
        let err = ServiceConfig::from_args(["--port=0"]).unwrap_err();
        assert_eq!(
            std::format!("{err}"),
            "setting `port`: 0 is out of range (allowed: 1..=65535)"
        );
    }

    #[test]
    fn defaults_are_in_range_and_consistent() {
        for setting in SETTINGS {
            assert!(
                (setting.min..=setting.max).contains(&setting.default),
                "{}",
                setting.name
            );
        }
        ServiceConfig::default().validate().unwrap();
        assert!(SETTINGS.len() < 31, "Seen uses one u32 bit per setting");
    }
}
