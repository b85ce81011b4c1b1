//! tern: a STUN/TURN relay server (RFC 8489, RFC 8656, RFC 6156).
//!
//! Protocol decisions never touch a socket or a clock, and the compiler keeps it so:
//! they live in the `tern-core` crate (crates/tern-core), re-exported here as
//! - [`proto`], reading and writing the wire format (on top of the `stun`/`turn` codecs);
//! - [`auth`] and [`policy`], answering "who is this" and "may they reach that";
//! - [`core`], the sans-IO relay engine: allocations, permissions, channels, timers;
//! - [`net`] holds the tokio drivers that feed the core bytes and carry out what it asks;
//! - [`config`] loads and validates settings before anything is bound.

pub mod acme;
pub mod admin;
pub mod auth_webhook;
pub mod cli;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod error_text;
pub mod import;
pub mod load;
pub mod metrics;
pub mod net;
pub mod offload;
pub mod packaging;
pub mod selftest;
pub mod serve;
pub mod token;
pub mod tools;
pub mod urls;
pub mod usage;
pub mod webhook;

// The protocol core (crates/tern-core), under the paths the rest of tern uses.
pub use tern_core as core;
pub use tern_core::{auth, policy, proto};
