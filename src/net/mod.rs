//! tokio drivers: they own the sockets, feed the engine bytes and carry out what it
//! asks. Protocol decisions are never made here.

pub mod accept;
pub mod admission;
pub mod alarm;
pub mod batch;
pub mod dtls;
pub mod front;
pub mod held;
pub mod lifecycle;
pub mod outbox;
pub mod pktinfo;
pub mod proxy_protocol;
pub mod relay;
pub mod relay_ips;
pub mod socket;
pub mod stream;
pub mod tcp_relay;
pub mod tls;
pub mod udp;
pub mod worker;
