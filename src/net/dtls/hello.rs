//! Letting a new client in: OpenSSL's stateless cookie exchange (`DTLSv1_listen`) on
//! a connection made for its one datagram and dropped unless the cookie checks out.
//!
//! The `openssl` crate does not wrap `DTLSv1_listen`, so it is declared here; libssl
//! (which the crate links) has it since 1.1.0.

use std::net::SocketAddr;

use foreign_types::ForeignTypeRef;
use openssl::ssl::{SslContext, SslStream};

use super::context;
use super::datagrams::Datagrams;

/// Bytes OpenSSL may put in one datagram of a handshake flight: small enough for any
/// path (IPv6's minimum MTU is 1280), so certificates are cut into records that fit.
const MTU: u32 = 1200;

/// What became of a datagram from an unknown client.
pub enum Hello {
    /// A ClientHello without a valid cookie: these datagrams (the HelloVerifyRequest)
    /// go back, and nothing is kept.
    Verify(Vec<Vec<u8>>),
    /// A ClientHello with a valid cookie: the connection, ready to go on with the
    /// handshake (the ClientHello is buffered in it).
    Admitted(SslStream<Datagrams>),
    /// Anything else (not a ClientHello, malformed, fragmented): dropped.
    Ignored,
}

mod ffi {
    use openssl_sys::SSL;
    use std::os::raw::c_int;

    /// `BIO_ADDR`, opaque.
    #[repr(C)]
    pub struct BioAddr {
        _private: [u8; 0],
    }

    unsafe extern "C" {
        pub fn DTLSv1_listen(ssl: *mut SSL, client: *mut BioAddr) -> c_int;
        pub fn BIO_ADDR_new() -> *mut BioAddr;
        pub fn BIO_ADDR_free(addr: *mut BioAddr);
    }
}

/// Runs the cookie exchange on `datagram` from `client` with the current `context`.
pub fn admit(context: &SslContext, client: SocketAddr, datagram: &[u8]) -> Hello {
    let Ok(ssl) = context::connection(context, client, MTU) else {
        return Hello::Ignored;
    };
    let Ok(mut stream) = SslStream::new(ssl, Datagrams::with(datagram)) else {
        return Hello::Ignored;
    };
    match listen(&stream) {
        1 => Hello::Admitted(stream),
        0 => {
            let reply = stream.get_mut().take_written();
            if reply.is_empty() {
                Hello::Ignored
            } else {
                Hello::Verify(reply)
            }
        }
        _ => Hello::Ignored,
    }
}

/// `DTLSv1_listen` on `stream`'s connection: 1 when the datagram was a ClientHello with
/// a valid cookie, 0 when it was answered or dropped, negative on an error.
fn listen(stream: &SslStream<Datagrams>) -> i32 {
    // SAFETY: BIO_ADDR_new returns an owned address or NULL, which is checked; it is
    // freed below and nothing else keeps it.
    let addr = unsafe { ffi::BIO_ADDR_new() };
    if addr.is_null() {
        return -1;
    }
    // SAFETY: the connection is live (owned by `stream`, which outlives the call) and
    // has both BIOs set (`SslStream::new`); DTLSv1_listen reads and writes through them
    // (the `Datagrams` above) and writes the client's address into `addr` (left clear:
    // that BIO has no address to give).
    let rc = unsafe { ffi::DTLSv1_listen(stream.ssl().as_ptr(), addr) };
    // SAFETY: `addr` came from BIO_ADDR_new and is freed once.
    unsafe { ffi::BIO_ADDR_free(addr) };
    rc
}
