//! Telephony provider adapters: wire frames in, media inputs out. No routes here.
pub mod twilio;
