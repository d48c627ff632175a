//! Which vCPU a thread runs on.
//!
//! Hermit 0.11 never moves a thread from the core it was started on, and
//! `std::thread::spawn` hands cores out round robin. The service places its
//! threads itself: the event loop (the main thread) stays on vCPU 0, the
//! boot core, which also takes the NIC's interrupts; the
//! watchdog gets the last vCPU when the guest has more than one, so that its
//! checks take no CPU time from requests (see `docs/watchdog.md` for the
//! measured cost either way). With one vCPU everything shares vCPU 0.
//!
//! On other systems (host tests) threads are ordinary `std` threads.

use std::io;
use std::thread::{self, JoinHandle};

/// Where a thread should run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// With the event loop, on vCPU 0.
    Service,
    /// On the last vCPU (vCPU 0 if there is only one).
    Watchdog,
}

impl Placement {
    /// The vCPU this placement means in a guest with `vcpus` vCPUs.
    pub fn vcpu(self, vcpus: usize) -> usize {
        match self {
            Self::Service => 0,
            Self::Watchdog => vcpus.saturating_sub(1),
        }
    }
}

/// The number of vCPUs the guest has (1 if it cannot tell).
pub fn count() -> usize {
    thread::available_parallelism().map_or(1, usize::from)
}

/// The vCPU a thread placed as `placement` runs on: known on Hermit only
/// (host threads go wherever the host schedules them).
pub fn placed(placement: Placement) -> Option<usize> {
    cfg!(target_os = "hermit").then(|| placement.vcpu(count()))
}

/// Starts `body` on a thread named `name` with a stack of `stack_size`
/// bytes, placed as `placement` says. Returns the handle on the host; on
/// Hermit, where the thread is started directly on its vCPU, there is none
/// (the image never joins its threads).
pub fn spawn<F>(
    name: &str,
    stack_size: usize,
    placement: Placement,
    body: F,
) -> io::Result<Option<JoinHandle<()>>>
where
    F: FnOnce() + Send + 'static,
{
    #[cfg(target_os = "hermit")]
    {
        let _ = name;
        hermit::spawn_on(placement.vcpu(count()), stack_size, Box::new(body))?;
        Ok(None)
    }
    #[cfg(not(target_os = "hermit"))]
    {
        let _ = placement;
        let handle = thread::Builder::new()
            .name(name.into())
            .stack_size(stack_size)
            .spawn(body)?;
        Ok(Some(handle))
    }
}

#[cfg(target_os = "hermit")]
mod hermit {
    //! Hermit's own spawn call, which takes the core (`std` always asks for
    //! round robin). Hand-written only in that `hermit-abi` declares the call
    //! and this module moves the closure across it.

    use std::io;

    type Body = Box<dyn FnOnce() + Send + 'static>;

    extern "C" fn start(arg: usize) {
        // SAFETY: `arg` is the pointer `spawn_on` leaked from a `Box<Body>`
        // for this thread alone; it is taken back exactly once, here.
        #[allow(unsafe_code)]
        let body = unsafe { Box::from_raw(arg as *mut Body) };
        body();
    }

    pub(super) fn spawn_on(vcpu: usize, stack_size: usize, body: Body) -> io::Result<()> {
        let selector = isize::try_from(vcpu)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "vCPU number too large"))?;
        let arg = Box::into_raw(Box::new(body));
        // SAFETY: `start` has the C ABI Hermit calls with `arg`; `vcpu` is
        // below the guest's processor count (`Placement::vcpu`); the kernel
        // takes ownership of nothing but the task it creates.
        #[allow(unsafe_code)]
        let tid = unsafe {
            hermit_abi::spawn2(
                start,
                arg as usize,
                hermit_abi::NORMAL_PRIO.into(),
                stack_size,
                selector,
            )
        };
        if tid == 0 {
            // SAFETY: the thread was not created, so `arg` was never handed
            // over; take it back to drop it.
            #[allow(unsafe_code)]
            drop(unsafe { Box::from_raw(arg) });
            return Err(io::Error::other("Hermit could not start the thread"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_takes_the_last_vcpu_and_the_service_the_first() {
        assert_eq!(Placement::Watchdog.vcpu(1), 0);
        assert_eq!(Placement::Watchdog.vcpu(2), 1);
        assert_eq!(Placement::Watchdog.vcpu(4), 3);
        assert_eq!(Placement::Service.vcpu(4), 0);
        assert_eq!(Placement::Watchdog.vcpu(0), 0);
    }

    #[test]
    fn a_spawned_thread_runs_its_body() {
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = spawn("vcpu-test", 64 << 10, Placement::Watchdog, move || {
            tx.send(7).unwrap();
        })
        .unwrap();
        assert_eq!(rx.recv().unwrap(), 7);
        handle.unwrap().join().unwrap();
        assert_eq!(
            placed(Placement::Watchdog),
            None,
            "host threads have no fixed vCPU"
        );
    }
}
