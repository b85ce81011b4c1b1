//! The OpenSSL server context of the DTLS listeners: DTLS 1.2 only, the served
//! certificate, no client authentication, and the cookie exchange with
//! [`cookie`](super::cookie)'s stateless cookies.
//!
//! It is built from the chain and key the TLS listeners were built from (see
//! [`crate::net::tls`]), at the same moments: at start, on SIGHUP, when the files change
//! and after an ACME renewal. A handshake uses the context current when its client was
//! let in; a reload never touches sessions already running.

use std::net::SocketAddr;
use std::sync::OnceLock;

use openssl::error::ErrorStack;
use openssl::ex_data::Index;
use openssl::pkey::PKey;
use openssl::ssl::{
    Ssl, SslContext, SslContextBuilder, SslMethod, SslOptions, SslRef, SslSessionCacheMode,
    SslVersion,
};
use openssl::x509::X509;

use super::cookie::{self, COOKIE_LEN};

/// ECDHE key exchange with AEAD ciphers only (forward secrecy, no CBC): what current
/// DTLS 1.2 clients offer, coturn's `turnutils_uclient` and browsers included.
const CIPHERS: &str = "ECDHE+AESGCM:ECDHE+CHACHA20";

/// Where a handshake's client address is kept for the cookie callbacks, which only
/// see the connection.
fn client_index() -> Index<Ssl, SocketAddr> {
    static INDEX: OnceLock<Index<Ssl, SocketAddr>> = OnceLock::new();
    *INDEX.get_or_init(|| Ssl::new_ex_index().expect("OpenSSL has room for an ex_data index"))
}

/// The server context for `chain` (DER, end-entity first) and `key` (DER: PKCS#8,
/// PKCS#1 or SEC1). Fails when OpenSSL cannot use the pair.
pub fn build(chain: &[&[u8]], key: &[u8]) -> Result<SslContext, ErrorStack> {
    let mut builder = SslContextBuilder::new(SslMethod::dtls())?;
    builder.set_min_proto_version(Some(SslVersion::DTLS1_2))?;
    builder.set_max_proto_version(Some(SslVersion::DTLS1_2))?;
    builder.set_cipher_list(CIPHERS)?;
    // No session cache (its memory would grow with clients) and no tickets: a DTLS
    // session lasts as long as its allocation, and resuming saves a TURN client little.
    builder.set_session_cache_mode(SslSessionCacheMode::OFF);
    // The record size comes from `hello::MTU`, not from asking the "socket".
    builder.set_options(
        SslOptions::COOKIE_EXCHANGE
            | SslOptions::NO_TICKET
            | SslOptions::NO_RENEGOTIATION
            | SslOptions::NO_QUERY_MTU,
    );
    builder.set_cookie_generate_cb(generate_cookie);
    builder.set_cookie_verify_cb(verify_cookie);
    let (end_entity, intermediates) = chain.split_first().ok_or_else(ErrorStack::get)?;
    builder.set_certificate(X509::from_der(end_entity)?.as_ref())?;
    for cert in intermediates {
        builder.add_extra_chain_cert(X509::from_der(cert)?)?;
    }
    builder.set_private_key(PKey::private_key_from_der(key)?.as_ref())?;
    builder.check_private_key()?;
    Ok(builder.build())
}

/// A connection of `context` for a datagram from `client`, ready for the cookie
/// exchange, putting at most `mtu` bytes in a datagram.
pub fn connection(context: &SslContext, client: SocketAddr, mtu: u32) -> Result<Ssl, ErrorStack> {
    let mut ssl = Ssl::new(context)?;
    ssl.set_mtu(mtu)?;
    ssl.set_ex_data(client_index(), client);
    Ok(ssl)
}

fn generate_cookie(ssl: &mut SslRef, out: &mut [u8]) -> Result<usize, ErrorStack> {
    let client = ssl.ex_data(client_index()).ok_or_else(ErrorStack::get)?;
    let cookie = cookie::key().cookie(*client, crate::clock::unix_now());
    let out = out.get_mut(..COOKIE_LEN).ok_or_else(ErrorStack::get)?;
    out.copy_from_slice(&cookie);
    Ok(COOKIE_LEN)
}

fn verify_cookie(ssl: &mut SslRef, cookie: &[u8]) -> bool {
    ssl.ex_data(client_index())
        .is_some_and(|client| cookie::key().verify(*client, crate::clock::unix_now(), cookie))
}
