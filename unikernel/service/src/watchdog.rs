//! The watchdog: dynamic measurement of the running image.
//!
//! A thread that, every interval of the sealed reference block, hashes each
//! measured region (the image's code and read-only data; kernel and service
//! are one binary) where it lies in memory now, and compares the digest with
//! the sealed one. It reads the memory that executes: each region's runtime
//! address is its link-time address plus the load offset (the reference
//! block's runtime address minus its link-time one, [`reference::load_offset`]).
//!
//! A check does not stall requests. With more than one vCPU (vigil-dom0's
//! default is two), the watchdog thread runs alone on the last one
//! ([`crate::vcpu`]) and the event loop on vCPU 0 never waits for it. With
//! one vCPU, the watchdog thread has the event loop's priority: Hermit
//! reschedules after every device interrupt, so the packet that brings a
//! request makes the event loop, now ready, take the CPU from a check in
//! progress (round robin among equal priorities). The check goes on when the
//! loop waits again or at the next interrupt. Yielding between slices of a
//! region was tried and dropped: under saturating load a check then took
//! 2.4 s instead of 60 ms (the loop is always ready, so each yield gave it
//! the CPU until the next interrupt) and throughput was no better.
//!
//! What happens on a mismatch is the sealed [`Reaction`]: every reaction
//! records it (counters, the first violation, the console); `degrade` also
//! latches [`Shared::degraded`], which makes the service answer 503; `halt`
//! prints the violation and ends the guest.
//!
//! The regions are also write-protected ([`crate::protect`]): a write to
//! them from inside the guest faults, and the kernel stops it, ends the task
//! that made it and records it. Each check also reads that record
//! ([`Faults`]); a write stopped since the last check is a violation like a
//! changed region, with the same reaction (the region itself is unchanged).
//!
//! [`reference::load_offset`]: crate::reference::load_offset

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use vigil_core::v1::config::LogLevel;
use vigil_core::v1::refblock::{MAX_REGIONS, Reaction, Region, RegionName, Sealed};
use vigil_core::v1::report::{RegionDigest, Verdict};

use crate::console_line;
use crate::log::Logger;
use crate::protect::{Faults, PAGE, WriteFaults};
use crate::vcpu::{self, Placement};

/// When the first check starts (or after one interval, if that is shorter):
/// after the service is up, so that the boot does not wait for it.
pub const FIRST_CHECK_AFTER: Duration = Duration::from_millis(500);

/// Memory the watchdog reads regions from.
pub trait Memory: Send + Sync + 'static {
    /// Feeds `len` bytes at runtime address `address` to `hasher`.
    fn hash(&self, address: u64, len: usize, hasher: &mut Sha256);
}

/// The guest's own memory: the bytes that execute.
#[derive(Debug, Clone, Copy)]
pub struct LiveMemory;

impl Memory for LiveMemory {
    fn hash(&self, address: u64, len: usize, hasher: &mut Sha256) {
        // SAFETY: `address..address + len` lies inside a region of this very
        // image (its code or read-only data, moved by the load offset), as
        // recorded by sealing in the reference block, which the image digest
        // covers and the loader loaded unchanged. Those pages stay mapped
        // and readable for the guest's whole life; nothing in the guest
        // writes them (a write is exactly what the watchdog looks for, and
        // reading bytes while something else changes them only changes the
        // digest).
        #[allow(unsafe_code)]
        let bytes = unsafe { std::slice::from_raw_parts(address as usize as *const u8, len) };
        hasher.update(bytes);
    }
}

/// What happens when a check finds a violation and the reaction is `halt`.
pub type Halt = Box<dyn Fn(&str) + Send + Sync>;

/// The default [`Halt`]: the message on the console, then the guest ends
/// (on Hermit, exiting the service shuts the guest down).
pub fn halt_guest() -> Halt {
    Box::new(|message| {
        console_line!("{}{message}", vigil_core::v1::console::HALT);
        std::process::exit(HALT_EXIT_STATUS);
    })
}

/// The service's exit status after a `halt` reaction.
pub const HALT_EXIT_STATUS: i32 = 86;

/// One region as the watchdog sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watched {
    /// The sealed region.
    pub sealed: Region,
    /// Where it lies at run time.
    pub address: u64,
}

/// The result of one finished check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Check {
    /// Its number, from 1.
    pub number: u64,
    /// Uptime when it ended.
    pub ended: Duration,
    /// Wall-clock time when it ended, in ms since the Unix epoch, if known.
    pub ended_unix_ms: Option<u64>,
    /// How long it took.
    pub duration: Duration,
    /// Per region, in sealed order: the digest it computed.
    pub actual: [[u8; 32]; MAX_REGIONS],
    /// Whether every region matched.
    pub intact: bool,
}

/// What a check found wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The region's digest does not match the sealed one.
    Changed,
    /// A write to the (write-protected) region was stopped by the kernel.
    Written {
        /// The address written to.
        address: u64,
        /// The address of the instruction that wrote.
        ip: u64,
    },
}

impl Cause {
    /// The word `/v1/integrity` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Changed => "changed",
            Self::Written { .. } => "written",
        }
    }
}

/// The first check that found a violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Uptime when that check ended.
    pub at: Duration,
    /// Wall-clock time then, in ms since the Unix epoch, if known.
    pub at_unix_ms: Option<u64>,
    /// The first region that did not match, or that was written to.
    pub region: RegionName,
    /// The number of that check.
    pub check: u64,
    /// What happened to the region.
    pub cause: Cause,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.cause {
            Cause::Changed => write!(
                f,
                "integrity violation: region `{}` does not match its sealed digest",
                self.region.as_str(),
            )?,
            Cause::Written { address, ip } => write!(
                f,
                "integrity violation: a write to region `{}` at {address:#x} (instruction at {ip:#x}) was stopped",
                self.region.as_str(),
            )?,
        }
        write!(
            f,
            " (check {}, {:.3} s after start)",
            self.check,
            self.at.as_secs_f64()
        )
    }
}

/// A consistent copy of the watchdog's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Checks finished.
    pub checks: u64,
    /// Checks that found at least one region changed.
    pub violations: u64,
    /// The latest finished check.
    pub last: Option<Check>,
    /// The first violation since boot.
    pub first_violation: Option<Violation>,
    /// Writes to protected memory the kernel stopped, as of the latest check.
    pub write_faults: u64,
}

impl Snapshot {
    /// The latched verdict.
    pub fn verdict(&self) -> Verdict {
        match (self.first_violation, self.last) {
            (Some(_), _) => Verdict::Violated,
            (None, Some(_)) => Verdict::Intact,
            (None, None) => Verdict::Pending,
        }
    }
}

/// The state the watchdog thread shares with the service.
pub struct Shared {
    sealed: Sealed,
    regions: [Option<Watched>; MAX_REGIONS],
    load_offset: u64,
    started: Instant,
    state: Mutex<Snapshot>,
    degraded: AtomicBool,
    stop: AtomicBool,
    busy_ns: AtomicU64,
    /// Set while a check hashes (from its first byte to its last).
    checking: AtomicBool,
    /// Responses the service sent while `checking` was set.
    answered_during_checks: AtomicU64,
    /// The vCPU the watchdog thread runs on, where known (in the image).
    vcpu: Option<usize>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("sealed", &self.sealed)
            .field("load_offset", &self.load_offset)
            .field("state", &self.snapshot())
            .field("degraded", &self.degraded())
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// The sealed content of the reference block.
    pub fn sealed(&self) -> &Sealed {
        &self.sealed
    }

    /// The watched regions, in sealed order.
    pub fn regions(&self) -> impl Iterator<Item = &Watched> {
        self.regions.iter().flatten()
    }

    /// The load offset the regions were moved by.
    pub fn load_offset(&self) -> u64 {
        self.load_offset
    }

    /// The vCPU the watchdog thread runs on (known in the image only).
    pub fn vcpu(&self) -> Option<usize> {
        self.vcpu
    }

    /// Time since the watchdog started (with the service).
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// A copy of the state.
    pub fn snapshot(&self) -> Snapshot {
        *self.lock()
    }

    /// Whether the `degrade` reaction has fired: latched until reboot.
    pub fn degraded(&self) -> bool {
        self.degraded.load(Ordering::Acquire)
    }

    /// The digests of the latest check, for a report (zero while pending).
    pub fn report_regions(&self, snapshot: &Snapshot) -> Vec<RegionDigest> {
        self.regions()
            .enumerate()
            .map(|(i, watched)| RegionDigest {
                name: watched.sealed.name,
                sha256: snapshot.last.map_or([0; 32], |check| check.actual[i]),
            })
            .collect()
    }

    /// Total time spent hashing since start.
    pub fn busy(&self) -> Duration {
        Duration::from_nanos(self.busy_ns.load(Ordering::Relaxed))
    }

    /// Counts one response the service sent, if it was sent while a check
    /// was hashing. Set against [`busy`](Self::busy) and the responses sent
    /// in all, this shows whether checks slow the service down while they
    /// run: the rate of responses during checks beside the rate outside
    /// them, in one guest and one run (`vigil-bench watchdog`).
    pub fn count_response(&self) {
        if self.checking.load(Ordering::Relaxed) {
            self.answered_during_checks.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Responses counted by [`count_response`](Self::count_response) while
    /// a check was hashing.
    pub fn answered_during_checks(&self) -> u64 {
        self.answered_during_checks.load(Ordering::Relaxed)
    }

    /// The region whose pages hold runtime address `address` (regions are
    /// protected in whole pages), or `unknown` if none does.
    pub fn region_at(&self, address: u64) -> Option<RegionName> {
        self.regions()
            .find(|w| {
                let start = w.address / PAGE * PAGE;
                let end = w.address.saturating_add(w.sealed.len).div_ceil(PAGE) * PAGE;
                (start..end).contains(&address)
            })
            .map(|w| w.sealed.name)
            .or_else(|| RegionName::new("unknown").ok())
    }

    fn lock(&self) -> MutexGuard<'_, Snapshot> {
        // A panicking watchdog aborts the guest (panic = "abort"), so the
        // lock is never poisoned in the image; in tests, take the data anyway.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The running watchdog.
#[derive(Debug)]
pub struct Watchdog {
    shared: Arc<Shared>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Watchdog {
    /// Starts checking `sealed`'s regions, moved by `load_offset`, in `memory`
    /// (with no record of stopped writes: see [`start_with_faults`](Self::start_with_faults)).
    pub fn start(
        sealed: Sealed,
        load_offset: u64,
        memory: impl Memory,
        log: Logger,
        halt: Halt,
    ) -> std::io::Result<Self> {
        Self::start_with_faults(sealed, load_offset, memory, NoFaults, log, halt)
    }

    /// Starts checking `sealed`'s regions, moved by `load_offset`, in
    /// `memory`, and the kernel's record of stopped writes in `faults`.
    pub fn start_with_faults(
        sealed: Sealed,
        load_offset: u64,
        memory: impl Memory,
        faults: impl Faults,
        log: Logger,
        halt: Halt,
    ) -> std::io::Result<Self> {
        let mut regions = [None; MAX_REGIONS];
        for (slot, region) in regions.iter_mut().zip(sealed.regions()) {
            *slot = Some(Watched {
                sealed: *region,
                address: region.vaddr.wrapping_add(load_offset),
            });
        }
        let shared = Arc::new(Shared {
            sealed,
            regions,
            load_offset,
            started: Instant::now(),
            state: Mutex::new(Snapshot {
                checks: 0,
                violations: 0,
                last: None,
                first_violation: None,
                write_faults: 0,
            }),
            degraded: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            busy_ns: AtomicU64::new(0),
            checking: AtomicBool::new(false),
            answered_during_checks: AtomicU64::new(0),
            vcpu: vcpu::placed(Placement::Watchdog),
        });
        let worker = Worker {
            shared: Arc::clone(&shared),
            memory,
            faults: Box::new(faults),
            seen_faults: 0,
            log,
            halt,
            reported: None,
        };
        let thread = vcpu::spawn("vigil-watchdog", 64 << 10, Placement::Watchdog, move || {
            worker.run();
        })?;
        Ok(Self { shared, thread })
    }

    /// The state shared with the service.
    pub fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }
}

impl Drop for Watchdog {
    /// Stops the thread (tests; in the image the watchdog runs until the end).
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// No record of stopped writes (host tests, images without protection).
#[derive(Debug, Clone, Copy)]
pub struct NoFaults;

impl Faults for NoFaults {
    fn read(&self) -> WriteFaults {
        WriteFaults::default()
    }
}

struct Worker<M> {
    shared: Arc<Shared>,
    memory: M,
    faults: Box<dyn Faults>,
    /// Stopped writes already seen by a check.
    seen_faults: u64,
    log: Logger,
    halt: Halt,
    /// The mismatching regions (a bit per region) last written to the
    /// console, so a lasting change is reported once, not every interval.
    reported: Option<u8>,
}

impl<M: Memory> Worker<M> {
    fn run(mut self) {
        let interval = Duration::from_millis(self.shared.sealed.interval_ms.into());
        // The launch measurement covers the image until the first check;
        // waiting a little keeps the first check out of the boot.
        let mut next = Instant::now() + interval.min(FIRST_CHECK_AFTER);
        while !self.shared.stop.load(Ordering::Acquire) {
            let now = Instant::now();
            if now < next {
                // Parked, not slept: `Drop` unparks to stop at once.
                thread::park_timeout(next - now);
                continue;
            }
            self.check();
            // A check that overran its interval starts the next one at once,
            // without trying to catch up.
            next = (next + interval).max(Instant::now());
        }
    }

    fn check(&mut self) {
        self.shared.checking.store(true, Ordering::Relaxed);
        let began = Instant::now();
        let mut actual = [[0u8; 32]; MAX_REGIONS];
        let mut mismatched = 0u8;
        for (i, watched) in self.shared.regions().enumerate() {
            let mut hasher = Sha256::new();
            let len = usize::try_from(watched.sealed.len).unwrap_or(usize::MAX);
            self.memory.hash(watched.address, len, &mut hasher);
            actual[i] = hasher.finalize().into();
            if actual[i] != watched.sealed.sha256 {
                mismatched |= 1 << i;
            }
        }
        let faults = self.faults.read();
        let new_faults = faults.count > self.seen_faults;
        self.seen_faults = self.seen_faults.max(faults.count);
        let ended = Instant::now();
        self.shared.checking.store(false, Ordering::Relaxed);
        let duration = ended - began;
        self.shared.busy_ns.fetch_add(
            u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let ended_unix_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()
            .and_then(|t| u64::try_from(t.as_millis()).ok());
        let uptime = ended - self.shared.started;
        let (number, violation) = {
            let mut state = self.shared.lock();
            state.checks += 1;
            let number = state.checks;
            state.last = Some(Check {
                number,
                ended: uptime,
                ended_unix_ms,
                duration,
                actual,
                intact: mismatched == 0,
            });
            state.write_faults = faults.count;
            if mismatched != 0 || new_faults {
                state.violations += 1;
                if self.shared.sealed.reaction == Reaction::Degrade {
                    // Before the state is visible: whoever sees the
                    // violation also sees the service degraded.
                    self.shared.degraded.store(true, Ordering::Release);
                }
                let first = if mismatched != 0 {
                    self.shared
                        .regions()
                        .nth(mismatched.trailing_zeros() as usize)
                        .map(|w| (w.sealed.name, Cause::Changed))
                } else {
                    self.shared.region_at(faults.first_address).map(|region| {
                        let cause = Cause::Written {
                            address: faults.first_address,
                            ip: faults.first_ip,
                        };
                        (region, cause)
                    })
                };
                if let (None, Some((region, cause))) = (state.first_violation, first) {
                    state.first_violation = Some(Violation {
                        at: uptime,
                        at_unix_ms: ended_unix_ms,
                        region,
                        check: number,
                        cause,
                    });
                }
            }
            (number, state.first_violation)
        };
        if number == 1 && mismatched == 0 {
            self.log.log(
                LogLevel::Info,
                format_args!(
                    "watchdog: first check: {} regions match their seal ({} us); checking every {} ms, reaction {}",
                    self.shared.regions().count(),
                    duration.as_micros(),
                    self.shared.sealed.interval_ms,
                    self.shared.sealed.reaction,
                ),
            );
        }
        if new_faults {
            console_line!(
                "vigil-watchdog: {} write(s) to protected memory stopped by the kernel; the first at {:#x} in region `{}` (instruction at {:#x})",
                faults.count,
                faults.first_address,
                self.shared
                    .region_at(faults.first_address)
                    .as_ref()
                    .map_or("unknown", RegionName::as_str),
                faults.first_ip,
            );
            if mismatched == 0 || self.reported == Some(mismatched) {
                // Not reported below: react here.
                self.reaction(violation);
            }
        }
        self.react(mismatched, &actual, violation);
    }

    fn reaction(&self, first: Option<Violation>) {
        let Some(violation) = first else { return };
        match self.shared.sealed.reaction {
            Reaction::Log => console_line!("vigil-watchdog: {violation}; reaction: log"),
            Reaction::Degrade => {
                console_line!("vigil-watchdog: {violation}; reaction: degrade (503 until reboot)");
            }
            Reaction::Halt => (self.halt)(&violation.to_string()),
        }
    }

    fn react(
        &mut self,
        mismatched: u8,
        actual: &[[u8; 32]; MAX_REGIONS],
        first: Option<Violation>,
    ) {
        if self.reported == Some(mismatched) || (self.reported.is_none() && mismatched == 0) {
            return;
        }
        self.reported = Some(mismatched);
        if mismatched == 0 {
            self.log.log(
                LogLevel::Warn,
                format_args!(
                    "watchdog: every region matches its seal again (the violation stays on record)"
                ),
            );
            return;
        }
        for (i, watched) in self.shared.regions().enumerate() {
            if mismatched & (1 << i) != 0 {
                console_line!(
                    "vigil-watchdog: region `{}` at {:#x} ({} bytes) does not match its seal: sha256 {} (sealed {})",
                    watched.sealed.name.as_str(),
                    watched.address,
                    watched.sealed.len,
                    Hex(&actual[i]),
                    Hex(&watched.sealed.sha256),
                );
            }
        }
        self.reaction(first);
    }
}

/// Lowercase hex of bytes.
#[derive(Debug, Clone, Copy)]
pub struct Hex<'a>(pub &'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

#[cfg(test)]
pub(crate) mod tests;
