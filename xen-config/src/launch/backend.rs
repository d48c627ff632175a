//! The seam between the launch sequence and the hypervisors: each backend
//! creates its guest without running it, lets it run once it has been
//! measured, waits for it to come up, and says how it runs for the record.
//! The sequence itself (verify → key → create paused → measure → resume →
//! wait → record) is [`super::launch`]'s, and the same for every backend.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::domain::Runtime;
use crate::error::Result;

/// A guest that came up.
#[derive(Clone, Debug, PartialEq)]
pub struct Up {
    /// Where its service answers, seen from this host (empty without a network).
    pub url: String,
    /// From the guest's start to its first sign of service.
    pub boot: Duration,
}

/// One hypervisor's part of a measured launch. Dropping a backend whose
/// guest has not been [detached](Boot::detach) destroys the guest.
pub trait Boot {
    /// Makes the guest from the per-boot `initrd` without letting it run
    /// (QEMU: `-S`; Xen: its configuration, created at [`Boot::resume`]).
    fn create_paused(&mut self, initrd: &Path) -> Result<()>;

    /// Lets the measured guest run. The per-boot initrd (it carries the
    /// report key's seed) is deleted as soon as the hypervisor has loaded
    /// it, by here at the latest.
    fn resume(&mut self, initrd: &Path) -> Result<()>;

    /// Waits until the guest's service is up, the guest fails, the time runs
    /// out, or `cancel` is set.
    fn wait_up(&mut self, cancel: &AtomicBool) -> Result<Up>;

    /// How the guest runs, for its record.
    fn runtime(&self) -> Runtime;

    /// Leaves the guest running after this value is dropped.
    fn detach(self: Box<Self>);
}
