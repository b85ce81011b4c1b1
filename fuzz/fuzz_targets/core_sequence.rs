//! The sans-IO engine fed a script decoded from the input: datagrams and signed
//! requests from several 5-tuples (UDP and TCP, IPv4 and IPv6, one at a relay
//! address), peer datagrams to bound relays, and time passing; the script's driver
//! checks the engine's invariants after every step (tests/support/core_script.rs).
//! The first byte picks the limiter on answers to unauthenticated sources: off, or 1/s
//! with a burst of 4.
#![no_main]

#[path = "../../tests/support/core_script.rs"]
mod core_script;

use core_script::{Driver, decode, sans_io};
use libfuzzer_sys::fuzz_target;
use tern::auth::UnauthorizedLimiter;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, script)) = data.split_first() else {
        return;
    };
    let limiter = match mode & 1 {
        0 => sans_io::no_limit(),
        _ => UnauthorizedLimiter::new(1, 4, 64, 0x5eed),
    };
    Driver::run(limiter, &decode(script));
});
