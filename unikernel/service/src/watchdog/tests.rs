//! The watchdog over a test memory that the tests change at will.

use std::sync::RwLock;
use std::sync::mpsc;

use vigil_core::v1::config::LogLevel;
use vigil_core::v1::refblock::{Region, RegionName, Sealed};

use super::*;

/// Where the test image is "linked".
const LINK_BASE: u64 = 0x10_0000;
/// How far it was "loaded" from there.
const OFFSET: u64 = 0x20_0000;

/// Memory holding an image at `LINK_BASE + OFFSET`.
#[derive(Clone)]
pub(crate) struct TestMemory(Arc<RwLock<Vec<u8>>>);

impl Memory for TestMemory {
    fn hash(&self, address: u64, len: usize, hasher: &mut Sha256) {
        let bytes = self.0.read().unwrap();
        let at = usize::try_from(address - LINK_BASE - OFFSET).unwrap();
        hasher.update(&bytes[at..at + len]);
    }
}

impl TestMemory {
    pub(crate) fn flip(&self, at: usize) {
        self.0.write().unwrap()[at] ^= 0x01;
    }
}

/// An image of two regions: "code" (200 KiB and a bit) then "rodata".
const CODE_LEN: usize = 200 * 1024 + 123;

pub(crate) fn image() -> (TestMemory, Sealed) {
    let code_len = CODE_LEN;
    let bytes: Vec<u8> = (0..code_len + 4096).map(|i| (i * 7 % 251) as u8).collect();
    let region = |name: &str, at: usize, len: usize| Region {
        name: RegionName::new(name).unwrap(),
        vaddr: LINK_BASE + at as u64,
        len: len as u64,
        sha256: Sha256::digest(&bytes[at..at + len]).into(),
    };
    let regions = [
        region("code", 0, code_len),
        region("rodata", code_len, 4096),
    ];
    (
        TestMemory(Arc::new(RwLock::new(bytes))),
        Sealed::new(LINK_BASE, Reaction::Log, 20, &regions).unwrap(),
    )
}

pub(crate) fn with_reaction(sealed: Sealed, reaction: Reaction) -> Sealed {
    let regions: Vec<Region> = sealed.regions().copied().collect();
    Sealed::new(sealed.link_vaddr, reaction, sealed.interval_ms, &regions).unwrap()
}

pub(crate) fn start(sealed: Sealed, memory: &TestMemory, halt: Halt) -> Watchdog {
    let log = Logger::new(LogLevel::Error);
    Watchdog::start(sealed, OFFSET, memory.clone(), log, halt).unwrap()
}

pub(crate) fn never_halt() -> Halt {
    Box::new(|message| panic!("halted: {message}"))
}

/// Waits (up to 10 s) until `done` holds for the state.
pub(crate) fn wait_for(shared: &Shared, what: &str, done: impl Fn(&Snapshot) -> bool) -> Snapshot {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let snapshot = shared.snapshot();
        if done(&snapshot) {
            return snapshot;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {snapshot:?}"
        );
        thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn an_untouched_image_stays_intact() {
    let (memory, sealed) = image();
    let watchdog = start(sealed, &memory, never_halt());
    let shared = watchdog.shared();
    assert_eq!(shared.load_offset(), OFFSET);
    let addresses: Vec<u64> = shared.regions().map(|w| w.address).collect();
    assert_eq!(
        addresses,
        [LINK_BASE + OFFSET, LINK_BASE + OFFSET + CODE_LEN as u64]
    );
    let snapshot = wait_for(&shared, "3 checks", |s| s.checks >= 3);
    assert_eq!(snapshot.violations, 0);
    assert_eq!(snapshot.first_violation, None);
    assert_eq!(snapshot.verdict(), Verdict::Intact);
    let last = snapshot.last.unwrap();
    assert!(last.intact);
    for (i, region) in sealed.regions().enumerate() {
        assert_eq!(last.actual[i], region.sha256, "{:?}", region.name);
    }
    let digests = shared.report_regions(&snapshot);
    assert_eq!(digests.len(), 2);
    assert_eq!(digests[1].sha256, sealed.regions().nth(1).unwrap().sha256);
    assert!(!shared.degraded());
}

#[test]
fn pending_until_the_first_check() {
    let (memory, sealed) = image();
    // An hour's interval: the first check runs after FIRST_CHECK_AFTER,
    // then none for long.
    let regions: Vec<Region> = sealed.regions().copied().collect();
    let slow = Sealed::new(LINK_BASE, Reaction::Log, 3_600_000, &regions).unwrap();
    let watchdog = start(slow, &memory, never_halt());
    let shared = watchdog.shared();
    let early = shared.snapshot();
    if shared.uptime() < FIRST_CHECK_AFTER {
        assert_eq!(early.checks, 0);
    }
    if early.checks == 0 {
        assert_eq!(early.verdict(), Verdict::Pending);
        assert_eq!(shared.report_regions(&early)[0].sha256, [0; 32]);
    }
    let snapshot = wait_for(&shared, "the first check", |s| s.checks == 1);
    assert!(shared.uptime() >= FIRST_CHECK_AFTER);
    assert_eq!(snapshot.verdict(), Verdict::Intact);
}

#[test]
fn a_changed_byte_anywhere_is_found_and_the_verdict_stays_violated() {
    for at in [0, 1, CODE_LEN / 2, CODE_LEN - 1] {
        let (memory, sealed) = image();
        let watchdog = start(sealed, &memory, never_halt());
        let shared = watchdog.shared();
        wait_for(&shared, "a first check", |s| s.checks >= 1);
        memory.flip(at);
        let found = wait_for(&shared, "the violation", |s| s.violations > 0);
        let violation = found.first_violation.unwrap();
        assert_eq!(violation.region.as_str(), "code", "byte {at}");
        assert!(!found.last.unwrap().intact);
        assert_eq!(found.verdict(), Verdict::Violated);
        assert!(!shared.degraded(), "log only records");

        memory.flip(at);
        let restored = wait_for(&shared, "an intact check", |s| {
            s.last.is_some_and(|c| c.intact)
        });
        assert_eq!(restored.verdict(), Verdict::Violated, "latched");
        assert_eq!(restored.first_violation, Some(violation));
    }
}

#[test]
fn read_only_data_is_watched_too() {
    let (memory, sealed) = image();
    let watchdog = start(sealed, &memory, never_halt());
    let shared = watchdog.shared();
    memory.flip(CODE_LEN + 4095);
    let found = wait_for(&shared, "the violation", |s| s.violations > 0);
    assert_eq!(found.first_violation.unwrap().region.as_str(), "rodata");
    let last = found.last.unwrap();
    assert_eq!(last.actual[0], sealed.regions().next().unwrap().sha256);
    assert_ne!(last.actual[1], sealed.regions().nth(1).unwrap().sha256);
}

#[test]
fn degrade_latches() {
    let (memory, sealed) = image();
    let watchdog = start(
        with_reaction(sealed, Reaction::Degrade),
        &memory,
        never_halt(),
    );
    let shared = watchdog.shared();
    wait_for(&shared, "a first check", |s| s.checks >= 1);
    assert!(!shared.degraded());
    memory.flip(10);
    wait_for(&shared, "the violation", |s| s.violations > 0);
    assert!(shared.degraded());
    memory.flip(10);
    wait_for(&shared, "an intact check", |s| {
        s.last.is_some_and(|c| c.intact)
    });
    assert!(shared.degraded(), "until reboot");
}

#[test]
fn halt_calls_the_halt_action_with_the_violation() {
    let (memory, sealed) = image();
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let halt: Halt = Box::new(move |message| {
        tx.lock().unwrap().send(message.to_owned()).unwrap();
    });
    let watchdog = start(with_reaction(sealed, Reaction::Halt), &memory, halt);
    wait_for(&watchdog.shared(), "a first check", |s| s.checks >= 1);
    assert!(rx.try_recv().is_err(), "no halt while intact");
    memory.flip(5000);
    let message = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        message.starts_with("integrity violation: region `code`"),
        "{message}"
    );
    assert!(!watchdog.shared().degraded());
}

/// Memory that counts a response (as the service would) each time a region
/// is hashed, that is while a check is in progress.
struct AnsweringMemory {
    memory: TestMemory,
    shared: Arc<std::sync::OnceLock<Arc<Shared>>>,
}

impl Memory for AnsweringMemory {
    fn hash(&self, address: u64, len: usize, hasher: &mut Sha256) {
        if let Some(shared) = self.shared.get() {
            shared.count_response();
        }
        self.memory.hash(address, len, hasher);
    }
}

#[test]
fn responses_are_counted_during_checks_only() {
    let (memory, sealed) = image();
    let cell = Arc::new(std::sync::OnceLock::new());
    let answering = AnsweringMemory {
        memory,
        shared: Arc::clone(&cell),
    };
    let log = Logger::new(LogLevel::Error);
    let watchdog = Watchdog::start(sealed, OFFSET, answering, log, never_halt()).unwrap();
    let shared = watchdog.shared();
    // Between checks (and before the first): not counted.
    shared.count_response();
    assert_eq!(shared.answered_during_checks(), 0);
    cell.set(Arc::clone(&shared)).unwrap();
    let before = shared.snapshot().checks;
    wait_for(&shared, "three more checks", |s| s.checks >= before + 3);
    drop(watchdog);
    let checks = shared.snapshot().checks - before;
    // Two regions hashed per check, one response counted during each; the
    // check under way when the cell was set (if one was) counted 0 to 2.
    let counted = shared.answered_during_checks();
    assert!(
        (2 * checks - 2..=2 * checks).contains(&counted),
        "{counted} responses counted in {checks} checks"
    );
    shared.count_response();
    assert_eq!(shared.answered_during_checks(), counted);
}

#[test]
fn hex_is_lowercase_and_complete() {
    assert_eq!(Hex(&[0x00, 0xab, 0x0f]).to_string(), "00ab0f");
}

/// A kernel record of stopped writes that a test sets.
#[derive(Clone, Default)]
struct TestFaults(Arc<Mutex<WriteFaults>>);

impl Faults for TestFaults {
    fn read(&self) -> WriteFaults {
        *self.0.lock().unwrap()
    }
}

impl TestFaults {
    fn stop_write(&self, address: u64, ip: u64) {
        let mut record = self.0.lock().unwrap();
        if record.count == 0 {
            record.first_address = address;
            record.first_ip = ip;
        }
        record.count += 1;
    }
}

fn start_with_faults(
    sealed: Sealed,
    memory: &TestMemory,
    faults: &TestFaults,
    halt: Halt,
) -> Watchdog {
    let log = Logger::new(LogLevel::Error);
    Watchdog::start_with_faults(sealed, OFFSET, memory.clone(), faults.clone(), log, halt).unwrap()
}

#[test]
fn a_stopped_write_is_a_violation_of_the_region_written_to() {
    let (memory, sealed) = image();
    let faults = TestFaults::default();
    let watchdog = start_with_faults(
        with_reaction(sealed, Reaction::Degrade),
        &memory,
        &faults,
        never_halt(),
    );
    let shared = watchdog.shared();
    wait_for(&shared, "a first check", |s| s.checks >= 1);
    assert_eq!(shared.snapshot().verdict(), Verdict::Intact);
    // A write into the page after the code region's last byte: still its page.
    let rodata = LINK_BASE + OFFSET + CODE_LEN as u64 + 100;
    faults.stop_write(rodata, 0x1234);
    let found = wait_for(&shared, "the violation", |s| s.violations > 0);
    let violation = found.first_violation.unwrap();
    assert_eq!(violation.region.as_str(), "code");
    assert_eq!(
        violation.cause,
        Cause::Written {
            address: rodata,
            ip: 0x1234
        }
    );
    assert!(
        violation.to_string().contains("a write to region `code`"),
        "{violation}"
    );
    assert_eq!(found.write_faults, 1);
    assert!(found.last.unwrap().intact, "the bytes did not change");
    assert_eq!(found.verdict(), Verdict::Violated);
    assert!(shared.degraded());
    // One violation per new write, not per check.
    let later = wait_for(&shared, "two more checks", |s| s.checks >= found.checks + 2);
    assert_eq!(later.violations, 1);
    faults.stop_write(0x10, 0x20);
    let again = wait_for(&shared, "the second write", |s| s.write_faults == 2);
    assert_eq!(again.violations, 2);
    assert_eq!(again.first_violation, Some(violation), "the first stays");
    assert_eq!(shared.region_at(0x10).unwrap().as_str(), "unknown");
}

#[test]
fn a_stopped_write_halts_when_sealed_so() {
    let (memory, sealed) = image();
    let faults = TestFaults::default();
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let halt: Halt = Box::new(move |message| {
        tx.lock().unwrap().send(message.to_owned()).unwrap();
    });
    let watchdog = start_with_faults(
        with_reaction(sealed, Reaction::Halt),
        &memory,
        &faults,
        halt,
    );
    wait_for(&watchdog.shared(), "a first check", |s| s.checks >= 1);
    faults.stop_write(LINK_BASE + OFFSET + 8, 0x99);
    let message = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        message.starts_with("integrity violation: a write to region `code` at 0x300008"),
        "{message}"
    );
}
