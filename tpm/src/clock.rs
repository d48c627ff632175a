//! The TPM clock: `TPM2_ReadClock`, `TPM2_ClockSet`, and the recovery of
//! the `safe` flag after an unorderly stop.
//!
//! What was observed on swtpm 0.7.1 / libtpms 0.9.2 (`tests/swtpm.rs`,
//! `clock_safe_flag_is_lost_by_sigterm_and_restored`):
//! - a vTPM stopped after `TPM2_Shutdown` starts again with `safe = 1`;
//! - a vTPM stopped by SIGTERM without `TPM2_Shutdown` starts with
//!   `safe = 0`, `resetCount` + 1, and a clock that went back to its last
//!   NV-saved value; later orderly shutdowns do not bring `safe` back;
//! - `TPM2_ClockSet` forward by 1 s leaves `safe = 0`;
//! - `TPM2_ClockSet` to the next multiple of 2^22 ms gives `safe = 1`, and
//!   it stays 1 across later orderly restarts.
//!
//! The reason (TPM 2.0 Library, Part 4, `TimeClockUpdate`): the TPM writes
//! its clock to NV only when the clock crosses a 2^22 ms boundary
//! (`NV_CLOCK_UPDATE_INTERVAL` = 22, about 70 minutes), and that write is the
//! only thing that sets `safe` again. So a ClockSet that crosses the next
//! boundary is the smallest step that recovers; a vTPM left running also
//! recovers by itself within about 70 minutes. The cost: the TPM clock jumps
//! forward by up to 2^22 ms. It never goes backwards, so verifiers that check
//! the clock's monotonicity are not affected.

use tpm2_protocol::{
    basic::TpmUint64,
    data::TpmsClockInfo,
    frame::{TpmClockSetCommand, TpmClockSetResponse, TpmReadClockCommand, TpmReadClockResponse},
};

use crate::client::{OWNER, Tpm, password};
use crate::error::TpmError;
use crate::transport::Transport;

/// `TPMS_CLOCK_INFO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockInfo {
    /// Milliseconds the TPM has been powered, across restarts (settable
    /// forward only).
    pub clock: u64,
    /// TPM Resets (`Startup(CLEAR)` after no or a CLEAR shutdown).
    pub reset_count: u32,
    /// TPM Restarts and Resumes since the last reset.
    pub restart_count: u32,
    /// Whether `clock` has not gone back since it was last reported
    /// (0 after an unorderly stop; see the module documentation).
    pub safe: bool,
}

impl From<&TpmsClockInfo> for ClockInfo {
    fn from(info: &TpmsClockInfo) -> Self {
        Self {
            clock: info.clock.into(),
            reset_count: info.reset_count.into(),
            restart_count: info.restart_count.into(),
            safe: info.safe.into(),
        }
    }
}

/// `TPMS_TIME_INFO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeInfo {
    /// Milliseconds since the last `TPM2_Startup`.
    pub time: u64,
    /// The clock.
    pub clock_info: ClockInfo,
}

/// What [`Tpm::restore_clock_safe`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockRecovery {
    /// The clock before.
    pub before: ClockInfo,
    /// The clock value set, if one was (`None`: the clock was safe).
    pub set_to: Option<u64>,
    /// The clock after.
    pub after: ClockInfo,
}

/// `NV_CLOCK_UPDATE_INTERVAL`: the TPM saves its clock to NV, and sets
/// `safe`, each time the clock crosses a multiple of 2^22 ms.
pub const CLOCK_NV_UPDATE_MS: u64 = 1 << 22;
/// Room for the clock to advance between `TPM2_ReadClock` and
/// `TPM2_ClockSet` (ClockSet refuses a value below the current clock).
const CLOCK_SET_MARGIN_MS: u64 = 1_000;

const READ_CLOCK: &str = "TPM2_ReadClock";
const CLOCK_SET: &str = "TPM2_ClockSet";

impl<T: Transport> Tpm<T> {
    /// `TPM2_ReadClock`.
    pub fn read_clock(&mut self) -> Result<TimeInfo, TpmError> {
        let command = TpmReadClockCommand { handles: [] };
        let response = self
            .execute::<_, TpmReadClockResponse>(READ_CLOCK, &command, &[])
            .map_err(|source| TpmError::ReadClock { source })?
            .body;
        Ok(TimeInfo {
            time: response.current_time.time.into(),
            clock_info: ClockInfo::from(&response.current_time.clock_info),
        })
    }

    /// `TPM2_ClockSet` to `new_time` ms (owner authorization, empty
    /// password). The TPM refuses a value below its current clock
    /// (`TPM_RC_VALUE`).
    pub fn clock_set(&mut self, new_time: u64) -> Result<(), TpmError> {
        let command = TpmClockSetCommand {
            handles: [OWNER.into()],
            new_time: TpmUint64::from(new_time),
        };
        self.execute::<_, TpmClockSetResponse>(CLOCK_SET, &command, &[password()])
            .map(|_| ())
            .map_err(|source| TpmError::ClockSet { new_time, source })
    }

    /// Brings the clock's `safe` flag back to 1 if it is 0: sets the clock
    /// forward to the next multiple of 2^22 ms (at least 1 s ahead), which
    /// makes the TPM save its clock to NV and set `safe` (see the module
    /// documentation). Does nothing when the clock is already safe. Fails
    /// with [`TpmError::ClockNotRestored`] if `safe` is still 0 afterwards.
    pub fn restore_clock_safe(&mut self) -> Result<ClockRecovery, TpmError> {
        let before = self.read_clock()?.clock_info;
        if before.safe {
            return Ok(ClockRecovery {
                before,
                set_to: None,
                after: before,
            });
        }
        let target = next_nv_update(before.clock);
        self.clock_set(target)?;
        let after = self.read_clock()?.clock_info;
        if !after.safe {
            return Err(TpmError::ClockNotRestored {
                before_ms: before.clock,
                set_ms: target,
                after_ms: after.clock,
            });
        }
        Ok(ClockRecovery {
            before,
            set_to: Some(target),
            after,
        })
    }
}

/// The first multiple of 2^22 ms past `clock` + 1 s.
pub(crate) fn next_nv_update(clock: u64) -> u64 {
    (clock.saturating_add(CLOCK_SET_MARGIN_MS) | (CLOCK_NV_UPDATE_MS - 1)).saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recovery_target_crosses_the_next_boundary() {
        assert_eq!(next_nv_update(0), CLOCK_NV_UPDATE_MS);
        assert_eq!(next_nv_update(936), CLOCK_NV_UPDATE_MS);
        // Within a second of a boundary: the one after it.
        assert_eq!(
            next_nv_update(CLOCK_NV_UPDATE_MS - 500),
            2 * CLOCK_NV_UPDATE_MS
        );
        assert_eq!(
            next_nv_update(CLOCK_NV_UPDATE_MS + 5),
            2 * CLOCK_NV_UPDATE_MS
        );
        for clock in [0, 1, 4_194_303, 4_194_304, 123_456_789] {
            let target = next_nv_update(clock);
            assert!(target > clock + CLOCK_SET_MARGIN_MS);
            assert_eq!(target % CLOCK_NV_UPDATE_MS, 0);
            assert!(target - clock <= CLOCK_NV_UPDATE_MS + CLOCK_SET_MARGIN_MS);
        }
    }
}
