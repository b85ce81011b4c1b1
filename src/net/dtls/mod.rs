//! STUN and TURN over DTLS (RFC 7350; RFC 8656 §3.1 names TLS-over-TCP and DTLS-over-UDP
//! as the secure transports), as coturn serves them: a DTLS 1.2 server on UDP, clients
//! told apart by their address, each STUN message or ChannelData in a record of its own.
//! Relaying stays UDP on the peer side.
//!
//! The certificate is the TLS listeners' one ([`crate::net::tls`] builds the OpenSSL
//! context beside the rustls configuration, and swaps both on reload). The DTLS
//! implementation is the system's libssl: the pure-Rust DTLS crates keep state for
//! every ClientHello before its cookie is checked, which would let spoofed ClientHellos
//! fill memory; OpenSSL's `DTLSv1_listen` checks the cookie with nothing kept.
//!
//! Bounds: a session only after the stateless cookie exchange ([`hello`]); at most
//! `limits.max_dtls_handshakes` handshakes in progress, each within
//! `tls.handshake_timeout`; sessions count as connections (`limits.max_connections`,
//! `limits.max_connections_per_ip`) and close like them after
//! `limits.connection_idle_timeout` without an allocation; bounded queues everywhere.
//!
//! `listener` owns the socket and lets clients in, `session` drives one client,
//! `handshakes` counts the handshakes in progress, `context` builds the OpenSSL context, `cookie` makes and checks cookies, `hello`
//! runs the cookie exchange, `datagrams` is what OpenSSL reads and writes.

mod context;
mod cookie;
mod datagrams;
mod handshakes;
mod hello;
mod listener;
mod session;

pub use context::build as build_context;
pub use handshakes::Handshakes;
pub use listener::{DtlsListener, Sessions, bind, serve};
