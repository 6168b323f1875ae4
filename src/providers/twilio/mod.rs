//! Twilio Media Streams, webhook signatures and per-call stream tokens.
