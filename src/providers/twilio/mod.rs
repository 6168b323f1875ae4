//! Twilio: Media Streams, webhook signatures and normalisation, per-call
//! stream tokens, TwiML, and the REST API client.
//!
//! - [`stream`]: the Media Streams wire protocol (parse what Twilio sends,
//!   write what we send back, and Twilio's side for the load generator).
//! - [`signature`]: `X-Twilio-Signature` on webhooks and the stream upgrade.
//! - [`token`]: the per-call token we put in `<Stream><Parameter name="token">`
//!   and check in `start.customParameters`.
//! - [`rest`]: [`TwilioProvider`], the REST API client implementing
//!   [`TelephonyProvider`](crate::providers::TelephonyProvider).
//! - [`twiml`]: the TwiML documents we answer calls with.
//! - [`webhook`]: webhook verification and normalisation.

pub mod rest;
pub mod signature;
pub mod stream;
pub mod token;
pub mod twiml;
pub mod validate;
pub mod webhook;

pub use rest::TwilioProvider;
pub use signature::SIGNATURE_HEADER;
pub use stream::{decode_payload, parse, ProtocolError, StreamEvent, StreamTrack};
pub use token::{StreamTokenClaims, TokenError, TOKEN_PARAMETER};
