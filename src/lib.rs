//! tern: a STUN/TURN relay server (RFC 8489, RFC 8656, RFC 6156).
//!
//! The crate is split so that protocol decisions never touch a socket or a clock:
//! - [`proto`] reads and writes the wire format (on top of the `stun`/`turn` codecs);
//! - [`auth`] and [`policy`] answer "who is this" and "may they reach that";
//! - [`core`] is the sans-IO relay engine: allocations, permissions, channels, timers;
//! - [`net`] holds the tokio drivers that feed the core bytes and carry out what it asks;
//! - [`config`] loads and validates settings before anything is bound.

pub mod admin;
pub mod auth;
pub mod cli;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod core;
pub mod import;
pub mod load;
pub mod metrics;
pub mod net;
pub mod packaging;
pub mod policy;
pub mod proto;
pub mod selftest;
pub mod serve;
pub mod tools;
