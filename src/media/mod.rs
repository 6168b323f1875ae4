//! Sans-IO media core: encoded frames and time in, placed/resampled audio events out.
//!
//! Nothing in here reads a clock or touches a socket; callers pass `now` in and
//! drain events with `poll_*`. That keeps it deterministic and testable in
//! simulated time. It imports no other domain of the crate.

pub mod codec;
mod error;
pub mod placement;
pub mod resample;
pub mod session;

pub use codec::{encode_alaw, encode_mulaw, Codec};
pub use error::MediaError;
pub use placement::DropReason;
pub use resample::{Upsampler, WIDEBAND_RATE};
pub use session::{MediaEvent, MediaSession, PcmChunk, SessionConfig, TrackStats, WidebandChunk};

/// Which party of the call a track carries.
///
/// Twilio's `inbound` track is the caller (audio coming into Twilio from the
/// phone), `outbound` is the agent/application side.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Track {
    Caller,
    Agent,
}

impl Track {
    pub const ALL: [Track; 2] = [Track::Caller, Track::Agent];

    /// Dense index, for per-track arrays.
    pub fn index(self) -> usize {
        match self {
            Track::Caller => 0,
            Track::Agent => 1,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Track::Caller => "caller",
            Track::Agent => "agent",
        }
    }
}
pub mod sink;
