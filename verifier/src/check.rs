//! One attestation round (a fresh nonce → evidence → appraisal → EAR), and
//! the watch loop's bookkeeping.

use std::time::{SystemTime, UNIX_EPOCH};

use rand_core::{CryptoRng, RngCore};
use vigil_core::v1::report::{MAX_NONCE, Nonce};

use crate::agent::{Agent, AgentError};
use crate::appraise::{Appraisal, Policy, Request, appraise};
use crate::ear::Ear;
use crate::enroll::{Store, StoreError};
use crate::tpm::{ClockInfo, TpmParseError};

/// The result of one round.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The nonce sent.
    pub nonce: Nonce,
    /// The appraisal.
    pub appraisal: Appraisal,
    /// The EAR.
    pub ear: Ear,
    /// The TPM's counters before this round (from the enrollment state).
    pub previous: Option<ClockInfo>,
}

/// Why a round did not reach an appraisal.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The state cannot be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The domain is not enrolled with this agent.
    #[error(
        "{domain} is not enrolled with the agent at {agent}: run `vigil-verify enroll {domain}` first"
    )]
    NotEnrolled {
        /// The agent.
        agent: String,
        /// The domain.
        domain: String,
    },
    /// The enrolled AK does not parse.
    #[error("the enrolled AK of {domain} is not usable")]
    EnrolledAk {
        /// The domain.
        domain: String,
        /// Why.
        #[source]
        source: TpmParseError,
    },
    /// The agent failed.
    #[error(transparent)]
    Agent(#[from] AgentError),
}

/// A fresh nonce of [`MAX_NONCE`] random bytes.
pub fn fresh_nonce(rng: &mut (impl RngCore + CryptoRng)) -> Nonce {
    let mut bytes = [0u8; MAX_NONCE];
    rng.fill_bytes(&mut bytes);
    // MAX_NONCE bytes are always a valid nonce.
    Nonce::new(&bytes).unwrap_or_else(|_| unreachable!("a {MAX_NONCE}-byte nonce is valid"))
}

/// Seconds since the epoch.
pub fn unix_now(now: SystemTime) -> i64 {
    now.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Challenges `domain` with a fresh nonce and appraises its evidence; records
/// the TPM's counters when the quote verified and they did not go back.
pub fn check(
    agent: &dyn Agent,
    store: &Store,
    domain: &str,
    policy: &Policy,
    now: SystemTime,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<Outcome, CheckError> {
    let mut enrollment =
        store
            .load(&agent.id(), domain)?
            .ok_or_else(|| CheckError::NotEnrolled {
                agent: agent.id(),
                domain: domain.into(),
            })?;
    let ak = enrollment.ak().map_err(|source| CheckError::EnrolledAk {
        domain: domain.into(),
        source,
    })?;
    let nonce = fresh_nonce(rng);
    let evidence = agent.evidence(domain, &nonce)?;
    let previous = enrollment.counters;
    let appraisal = appraise(
        &evidence,
        &Request {
            domain,
            nonce: &nonce,
            ak: &ak,
            previous,
        },
        policy,
    );
    let counters_ok = appraisal
        .claims
        .iter()
        .any(|c| c.name == "tpm-counters" && c.passed());
    if let (Some(clock), true) = (appraisal.clock, counters_ok)
        && worth_recording(enrollment.counters, clock)
    {
        enrollment.counters = Some(clock);
        store.save(&enrollment)?;
    }
    let ear = Ear::new(&appraisal, nonce.as_bytes(), unix_now(now));
    Ok(Outcome {
        nonce,
        appraisal,
        ear,
        previous,
    })
}

/// How far the TPM clock may run ahead of the recorded one before the
/// record is brought up to date even though no counter changed.
pub const CLOCK_RECORD_STEP_MS: u64 = 60_000;

/// Whether the counters a quote carried are worth writing to the state (a
/// synced file): whenever a reset or restart count or the safe flag changed,
/// and otherwise once the clock has moved [`CLOCK_RECORD_STEP_MS`] past the
/// recorded value. A rollback is judged against the recorded values, so a
/// clock set back by less than that step since the last record goes
/// unnoticed by the clock comparison; the reset and restart counts, which a
/// rolled-back state carries too, are recorded at every change.
fn worth_recording(recorded: Option<ClockInfo>, now: ClockInfo) -> bool {
    match recorded {
        None => true,
        Some(old) => {
            old.reset_count != now.reset_count
                || old.restart_count != now.restart_count
                || old.safe != now.safe
                || now.clock.saturating_sub(old.clock) >= CLOCK_RECORD_STEP_MS
        }
    }
}

/// What the watch loop saw in one round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    /// An appraisal with this status and TPM reset count.
    Status {
        /// The EAR status.
        status: String,
        /// The TPM's reset count, if the quote verified.
        reset_count: Option<u32>,
    },
    /// The agent did not answer or answered an error.
    AgentDown(String),
}

/// Something worth telling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The status changed (also from or to "unreachable").
    Changed {
        /// The previous status, if any.
        from: Option<String>,
        /// The new one.
        to: String,
    },
    /// The agent came back after failing.
    AgentBack,
    /// The TPM was reset since the last round: the domain was relaunched.
    Relaunched {
        /// Reset count before.
        from: u32,
        /// Reset count now.
        to: u32,
    },
}

/// The watch loop's memory: the last status, reachability and reset count.
#[derive(Clone, Debug, Default)]
pub struct Watcher {
    last: Option<String>,
    down: bool,
    reset_count: Option<u32>,
}

/// The status the watch loop reports while the agent fails.
pub const UNREACHABLE: &str = "unreachable";

impl Watcher {
    /// Folds one round in; the events to report, each once.
    pub fn observe(&mut self, observation: Observation) -> Vec<Event> {
        let mut events = Vec::new();
        let status = match observation {
            Observation::AgentDown(_) => {
                self.down = true;
                UNREACHABLE.to_string()
            }
            Observation::Status {
                status,
                reset_count,
            } => {
                if std::mem::take(&mut self.down) {
                    events.push(Event::AgentBack);
                }
                if let (Some(from), Some(to)) = (self.reset_count, reset_count)
                    && to != from
                {
                    events.push(Event::Relaunched { from, to });
                }
                if reset_count.is_some() {
                    self.reset_count = reset_count;
                }
                status
            }
        };
        if self.last.as_deref() != Some(status.as_str()) {
            events.push(Event::Changed {
                from: self.last.replace(status.clone()),
                to: status,
            });
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_recorded_when_they_change_and_the_clock_every_step() {
        let at = |clock, reset_count, restart_count| ClockInfo {
            clock,
            reset_count,
            restart_count,
            safe: true,
        };
        assert!(worth_recording(None, at(5, 1, 0)));
        let recorded = Some(at(1_000, 1, 0));
        assert!(!worth_recording(recorded, at(1_500, 1, 0)));
        assert!(worth_recording(recorded, at(1_500, 2, 0)));
        assert!(worth_recording(recorded, at(1_500, 1, 1)));
        assert!(worth_recording(
            recorded,
            at(1_000 + CLOCK_RECORD_STEP_MS, 1, 0)
        ));
        assert!(worth_recording(
            recorded,
            ClockInfo {
                safe: false,
                ..at(1_500, 1, 0)
            }
        ));
    }

    fn status(status: &str, reset: u32) -> Observation {
        Observation::Status {
            status: status.into(),
            reset_count: Some(reset),
        }
    }

    #[test]
    fn one_event_per_change() {
        let mut watcher = Watcher::default();
        assert_eq!(
            watcher.observe(status("affirming", 1)),
            [Event::Changed {
                from: None,
                to: "affirming".into()
            }]
        );
        assert_eq!(watcher.observe(status("affirming", 1)), []);
        assert_eq!(
            watcher.observe(Observation::AgentDown("refused".into())),
            [Event::Changed {
                from: Some("affirming".into()),
                to: UNREACHABLE.into()
            }]
        );
        assert_eq!(
            watcher.observe(Observation::AgentDown("refused".into())),
            []
        );
        assert_eq!(
            watcher.observe(status("affirming", 2)),
            [
                Event::AgentBack,
                Event::Relaunched { from: 1, to: 2 },
                Event::Changed {
                    from: Some(UNREACHABLE.into()),
                    to: "affirming".into()
                }
            ]
        );
        assert_eq!(
            watcher.observe(status("contraindicated", 2)),
            [Event::Changed {
                from: Some("affirming".into()),
                to: "contraindicated".into()
            }]
        );
    }
}
