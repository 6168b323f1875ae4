//! Twilio Media Streams, webhook signatures and per-call stream tokens.
//!
//! - [`stream`]: the Media Streams wire protocol (parse what Twilio sends,
//!   write what we send back, and Twilio's side for the load generator).
//! - [`signature`]: `X-Twilio-Signature` on webhooks and the stream upgrade.

pub mod signature;
pub mod stream;

pub use signature::SIGNATURE_HEADER;
pub use stream::{decode_payload, parse, ProtocolError, StreamEvent, StreamTrack};
