//! callstream: a real-time media gateway for a multi-tenant contact center.
#![forbid(unsafe_code)]

pub mod media;
pub mod providers;
pub mod config;
pub mod secret;
pub mod store;
