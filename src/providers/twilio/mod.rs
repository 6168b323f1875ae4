//! Twilio Media Streams, webhook signatures and per-call stream tokens.
//!
//! - [`stream`]: the Media Streams wire protocol (parse what Twilio sends,
//!   write what we send back, and Twilio's side for the load generator).

pub mod stream;

pub use stream::{decode_payload, parse, ProtocolError, StreamEvent, StreamTrack};
