//! Wake-ups for the event loop: its deadlines, and requests to stop.
//!
//! Two Hermit 0.11 bugs shape this module:
//! - `poll(2)` does not time out: its blocking helper computes an absolute
//!   wake-up time and hands it to a futex wait as a relative one, which puts
//!   it decades away. So the loop always waits without a timeout, and this
//!   thread (whose sleep is a plain futex wait with a relative timeout, which
//!   works) wakes it when the earliest deadline is due.
//! - The eventfd behind `mio::Waker` keeps the waker of every past `poll`
//!   call in a queue and wakes only the oldest per write, so one `wake` often
//!   reaches a stale waker. The thread therefore repeats `wake` (yielding in
//!   between) until the loop reports that a `poll` returned. Elsewhere the
//!   first `wake` does it.
//!
//! The same code runs on every system, so the host tests cover it.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Instant;

use mio::Waker;

/// Stack of the alarm thread: it only sleeps and wakes.
const STACK_SIZE: usize = 64 << 10;

/// `wake` calls per ring at most (one stale waker each on Hermit; a handful
/// to a few hundred are seen in practice).
const MAX_WAKES: u32 = 10_000;

/// The event loop's side of the alarm. Dropping it ends the thread.
#[derive(Debug)]
pub(super) struct Alarm {
    shared: Arc<Shared>,
}

/// Rings the alarm from any thread.
#[derive(Clone, Debug)]
pub(super) struct Ringer {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    /// `poll` calls that returned, as the loop reports them.
    polls: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    deadline: Option<Instant>,
    /// Ring as soon as possible, whatever the deadline.
    now: bool,
    /// The loop is gone: end the thread.
    stop: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The lock is only held around plain assignments: no panics there.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Alarm {
    /// Starts the alarm thread, which wakes the loop through `waker`.
    pub(super) fn start(waker: Waker) -> io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let ringing = Arc::clone(&shared);
        thread::Builder::new()
            .name("vigil-alarm".into())
            .stack_size(STACK_SIZE)
            .spawn(move || ring_on_time(&ringing, &waker))?;
        Ok(Self { shared })
    }

    /// Asks for a wake-up at `deadline` (replacing the previous one); `None`
    /// for none.
    pub(super) fn set(&self, deadline: Option<Instant>) {
        let mut state = self.shared.lock();
        let sooner = match (deadline, state.deadline) {
            (Some(new), Some(old)) => new < old,
            (new, _) => new.is_some(),
        };
        state.deadline = deadline;
        drop(state);
        // A later deadline needs no notice: the thread wakes up at the old
        // one, finds it moved, and sleeps again.
        if sooner {
            self.shared.changed.notify_one();
        }
    }

    /// Reports that a `poll` call returned.
    pub(super) fn polled(&self) {
        self.shared.polls.fetch_add(1, Ordering::Release);
    }

    /// A handle that wakes the loop from other threads.
    pub(super) fn ringer(&self) -> Ringer {
        Ringer {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl Drop for Alarm {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.changed.notify_one();
    }
}

impl Ringer {
    /// Wakes the loop as soon as possible.
    pub(super) fn ring(&self) {
        self.shared.lock().now = true;
        self.shared.changed.notify_one();
    }
}

/// The alarm thread: sleeps until the deadline (or a ring), wakes the loop.
fn ring_on_time(shared: &Shared, waker: &Waker) {
    let mut state = shared.lock();
    while !state.stop {
        let now = Instant::now();
        let due = state.now || state.deadline.is_some_and(|deadline| deadline <= now);
        if due {
            state.now = false;
            state.deadline = None;
            drop(state);
            wake_loop(shared, waker);
            state = shared.lock();
            continue;
        }
        state = match state.deadline {
            Some(deadline) => {
                shared
                    .changed
                    .wait_timeout(state, deadline - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
            None => shared
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner),
        };
    }
}

/// Calls `wake` until the loop reports a returned `poll` (see the module docs).
fn wake_loop(shared: &Shared, waker: &Waker) {
    let polls = shared.polls.load(Ordering::Acquire);
    for _ in 0..MAX_WAKES {
        if waker.wake().is_err() {
            return;
        }
        thread::yield_now();
        if shared.polls.load(Ordering::Acquire) != polls {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mio::{Events, Poll, Token};

    use super::*;

    fn poll_once(poll: &mut Poll, alarm: &Alarm) -> Duration {
        let mut events = Events::with_capacity(4);
        let started = Instant::now();
        poll.poll(&mut events, Some(Duration::from_secs(10)))
            .unwrap();
        alarm.polled();
        assert!(events.iter().any(|event| event.token() == Token(7)));
        started.elapsed()
    }

    #[test]
    fn wakes_the_loop_at_the_deadline() {
        let mut poll = Poll::new().unwrap();
        let alarm = Alarm::start(Waker::new(poll.registry(), Token(7)).unwrap()).unwrap();
        let started = Instant::now();
        alarm.set(Some(started + Duration::from_secs(3600)));
        alarm.set(Some(started + Duration::from_millis(50)));
        let waited = poll_once(&mut poll, &alarm);
        assert!(waited >= Duration::from_millis(40), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
    }

    #[test]
    fn rings_on_request() {
        let mut poll = Poll::new().unwrap();
        let alarm = Alarm::start(Waker::new(poll.registry(), Token(7)).unwrap()).unwrap();
        alarm.set(Some(Instant::now() + Duration::from_secs(3600)));
        alarm.ringer().ring();
        assert!(poll_once(&mut poll, &alarm) < Duration::from_secs(5));
    }
}
