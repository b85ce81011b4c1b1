//! tokio drivers: they own the sockets, feed the engine bytes and carry out what it
//! asks. Protocol decisions are never made here.

pub mod socket;
pub mod udp;
