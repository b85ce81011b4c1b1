//! Compiles the kernel fast path for channels (src/offload/channel.bpf.c) into BPF
//! bytecode that the binary carries.
//!
//! Only clang is needed (and the kernel's UAPI headers from linux-libc-dev). Without
//! clang the binary is built without the fast path: `relay.offload = "auto"` then says
//! so at start and relays in user space, and `"on"` refuses to start.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const SOURCE: &str = "src/offload/channel.bpf.c";

fn main() {
    println!("cargo::rerun-if-changed={SOURCE}");
    println!("cargo::rerun-if-env-changed=CLANG");
    println!("cargo::rustc-check-cfg=cfg(tern_offload)");
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("channel.bpf.o");
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets the target arch");
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    let status = Command::new(&clang)
        .args(["-O2", "-target", "bpf", "-Wall", "-Werror"])
        // <asm/types.h>, which the UAPI headers include, lives under the target triple.
        .arg(format!("-I/usr/include/{arch}-linux-gnu"))
        .args(["-c", SOURCE, "-o"])
        .arg(&out)
        .status();
    match status {
        Ok(status) if status.success() => println!("cargo::rustc-cfg=tern_offload"),
        Ok(status) => panic!("{clang} failed to compile {SOURCE} ({status})"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => println!(
            "cargo::warning={clang} not found: built without the kernel fast path (relay.offload)"
        ),
        Err(e) => panic!("running {clang}: {e}"),
    }
}
