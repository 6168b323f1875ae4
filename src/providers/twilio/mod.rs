//! Twilio Media Streams, webhook signatures and per-call stream tokens.
//!
//! - [`stream`]: the Media Streams wire protocol (parse what Twilio sends,
//!   write what we send back, and Twilio's side for the load generator).
//! - [`signature`]: `X-Twilio-Signature` on webhooks and the stream upgrade.
//! - [`token`]: the per-call token we put in `<Stream><Parameter name="token">`
//!   and check in `start.customParameters`.

pub mod signature;
pub mod stream;
pub mod token;

pub use signature::SIGNATURE_HEADER;
pub use stream::{decode_payload, parse, ProtocolError, StreamEvent, StreamTrack};
pub use token::{StreamTokenClaims, TokenError, TOKEN_PARAMETER};
