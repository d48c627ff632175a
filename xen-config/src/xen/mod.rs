//! Xen: a domain's xl.cfg rendered from the templates in
//! `xen-config/templates/` ([`config`]), and the `xl` commands that create,
//! find and destroy domains ([`xl`]).
//!
//! A [`XenConfig`] holds typed values only. [`render`] checks every one of
//! them and writes each as a complete xl.cfg value (a quoted, escaped string
//! or a decimal number) in place of its `@PLACEHOLDER@`, so no setting can
//! add a key, end a string or start a comment: the templates alone decide
//! which keys a domain gets. The keys are xl.cfg(5) of Xen 4.17.
//!
//! The vTPM is never attached (no `vtpm` key): dom0 owns the domain's swtpm,
//! extends it before boot and quotes on request. PVH has no device model,
//! and Debian's HVM device model (`qemu-system-xen`) has no TPM support.
//!
//! Both templates destroy the domain on power-off, reboot and crash: every
//! boot must be a measured launch, never a restart behind dom0's back.

use std::path::{Path, PathBuf};

pub mod config;
pub mod xl;

pub use config::{
    GuestKind, HVM_TEMPLATE, HvmDevices, MAX_CMDLINE_BYTES, MEMORY_MIB, MacAddress, PVH_TEMPLATE,
    VCPUS, XenConfig, render, write,
};
pub use xl::{XL_PACKAGE, check_xen_host, create, destroy, dmesg, domid, exists};

/// What can go wrong with a Xen domain's configuration or its creation.
#[derive(Debug, thiserror::Error)]
pub enum XenError {
    /// A domain name that is not allowed.
    #[error(
        "domain name {name:?} is not allowed: use 1 to 32 of a-z, 0-9 and '-', not starting with '-'"
    )]
    BadName {
        /// The name.
        name: String,
    },
    /// A path that cannot go into an xl.cfg.
    #[error("the {what} path {path:?} cannot be used in an xl.cfg: {problem}")]
    BadPath {
        /// Which path (`kernel`, `ramdisk`, `serial log`, ...).
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A kernel command line that cannot go into an xl.cfg.
    #[error("the kernel command line cannot be used in an xl.cfg: {problem}")]
    BadCmdline {
        /// What is wrong with it.
        problem: String,
    },
    /// A number outside what the domain may have.
    #[error("{what} is {value}; it must be {min} to {max}")]
    OutOfRange {
        /// Which setting.
        what: &'static str,
        /// Its value.
        value: u32,
        /// The lowest allowed.
        min: u32,
        /// The highest allowed.
        max: u32,
    },
    /// A bridge name that is not a Linux interface name.
    #[error(
        "bridge {bridge:?} is not allowed: use 1 to 15 of A-Z, a-z, 0-9, '.', '_' and '-' (a Linux interface name)"
    )]
    BadBridge {
        /// The name.
        bridge: String,
    },
    /// A MAC address that is malformed, multicast or all zeros.
    #[error("MAC address {mac:?} is not allowed: use six hex pairs, xx:xx:xx:xx:xx:xx, unicast")]
    BadMac {
        /// The address as given.
        mac: String,
    },
    /// A template and the renderer disagree (a bug in vigil-dom0).
    #[error("xl.cfg template {template}: {problem}")]
    Template {
        /// Which template.
        template: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// `xl` is not installed.
    #[error(
        "`xl` was not found on PATH: install the Debian package `{package}` on a Xen 4.17 dom0 (see docs/xen.md)"
    )]
    MissingXl {
        /// The package that provides it.
        package: &'static str,
    },
    /// This host does not run Xen, or is not Xen's control domain.
    #[error("this host cannot create Xen domains: {reason} (see docs/xen.md)")]
    NotXenHost {
        /// Why.
        reason: String,
    },
    /// `xl create` failed.
    #[error("`xl create {config}` failed ({status}): {stderr}")]
    CreateFailed {
        /// The configuration file.
        config: PathBuf,
        /// How `xl` ended.
        status: String,
        /// What it said.
        stderr: String,
    },
    /// The domain went away while it booted (it powered off or crashed;
    /// both destroy it).
    #[error("the Xen domain {name} stopped while it booted{}", tail(.console))]
    GuestStopped {
        /// The domain.
        name: String,
        /// The last lines of its console.
        console: String,
    },
    /// The guest's console reported a failure (a kernel panic, a loader
    /// error); the domain was destroyed.
    #[error("the Xen domain {name} failed to boot: {failure}{}", tail(.console))]
    GuestFailed {
        /// The domain.
        name: String,
        /// The console line that says so.
        failure: String,
        /// The last lines of its console.
        console: String,
    },
    /// The guest gave no sign of a working service in time; the domain was
    /// destroyed.
    #[error("the Xen domain {name} did not come up within {seconds} s: {waiting_for}{}", tail(.console))]
    BootTimeout {
        /// The domain.
        name: String,
        /// The time limit.
        seconds: u64,
        /// What was still missing.
        waiting_for: String,
        /// The last lines of its console.
        console: String,
    },
    /// Reading, writing or running something failed.
    #[error("{action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

impl XenError {
    pub(crate) fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}

fn tail(console: &str) -> String {
    if console.trim().is_empty() {
        "; its console is empty".into()
    } else {
        format!("; last console lines:\n{console}")
    }
}
