//! PROXY protocol across a real NAT (root, network namespaces): clients on two LANs
//! behind their own masquerading routers reach HAProxy on the "public" host, port 443
//! (TLS, PROXY v2) and 3479 (TCP, PROXY v1), which forwards to tern listening on that
//! host's loopback. Each client's Binding answer must be its own router's public
//! address, as a browser's ICE agent needs it: not HAProxy's, not the LAN address.
//!
//! ```text
//!   lan1 ── rtr1 [masq] 203.0.113.11 ─┐
//!                                      ├─ pub 203.0.113.1: HAProxy :443, :3479 → tern 127.0.0.1
//!   lan2 ── rtr2 [masq] 203.0.113.12 ─┘
//! ```

#[path = "support/certs.rs"]
mod certs;
#[path = "support/netns.rs"]
mod netns;
mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use netns::{Net, RTR1_PUB, RTR2_PUB, TERN_IP, exec_in, require_netns};
use support::{BackgroundProcess, TempDir, ensure_tool};

const TERN_TCP: &str = "127.0.0.1:3478";
const TERN_TLS: &str = "127.0.0.1:5349";

/// `tern stun --transport TRANSPORT` from inside `ns`: the mapped address, or why not.
fn stun(ns: &str, transport: &str, server: SocketAddr) -> Result<SocketAddr, String> {
    let mut cmd = exec_in(ns, env!("CARGO_BIN_EXE_tern"));
    cmd.args(["stun", "--json", "--tls-insecure", "--transport", transport])
        .arg(server.to_string());
    let out = support::run_with_timeout(&mut cmd, Duration::from_secs(10));
    if !out.success() {
        return Err(out.describe());
    }
    let json: serde_json::Value =
        serde_json::from_str(out.stdout.trim()).map_err(|e| format!("{e}: {}", out.stdout))?;
    json["mapped"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| out.describe())
}

/// Retries `stun` for up to 10 s while HAProxy and tern come up.
fn wait_stun(ns: &str, transport: &str, server: SocketAddr) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match stun(ns, transport, server) {
            Ok(mapped) => return mapped,
            Err(e) if Instant::now() >= deadline => {
                panic!("no {transport} Binding answer via {server} from {ns}: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

#[test]
fn clients_behind_nats_are_seen_with_their_public_addresses_through_haproxy() {
    require_netns();
    let haproxy = ensure_tool("haproxy");
    let net = Net::build("pp", true);
    let dir = TempDir::new("tern-proxy-netns");
    let files = certs::CertFiles::in_dir(dir.path());
    certs::TestCert::new().write(&files);
    let config = dir.write(
        "tern.toml",
        &format!(
            r#"
[server]
listen = [{{ addr = "{TERN_TCP}", proxy_protocol = true }}]
tls_listen = [{{ addr = "{TERN_TLS}", proxy_protocol = true }}]
proxy_protocol_from = ["127.0.0.1/32"]

[auth]
users = [{{ name = "{user}", password = "{pass}" }}]

[tls]
cert = "{cert}"
key = "{key}"
"#,
            user = netns::USER,
            pass = netns::PASS,
            cert = files.cert.display(),
            key = files.key.display(),
        ),
    );
    let mut tern_cmd = exec_in(&net.pub_ns, env!("CARGO_BIN_EXE_tern"));
    tern_cmd
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env_remove("TERN_SECRET")
        .env("NO_COLOR", "1");
    let mut tern = BackgroundProcess::spawn("tern", &mut tern_cmd, dir.path());
    let haproxy_config = dir.write(
        "haproxy.cfg",
        &format!(
            "global\n    maxconn 64\ndefaults\n    mode tcp\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n\
             frontend tls\n    bind {TERN_IP}:443\n    default_backend tls\nbackend tls\n    server tern {TERN_TLS} send-proxy-v2\n\
             frontend tcp\n    bind {TERN_IP}:3479\n    default_backend tcp\nbackend tcp\n    server tern {TERN_TCP} send-proxy\n"
        ),
    );
    let mut haproxy_cmd = exec_in(&net.pub_ns, haproxy);
    haproxy_cmd.arg("-db").arg("-f").arg(&haproxy_config);
    let mut proxy = BackgroundProcess::spawn("haproxy", &mut haproxy_cmd, dir.path());

    let tls = SocketAddr::from((TERN_IP, 443));
    let tcp = SocketAddr::from((TERN_IP, 3479));
    let cases = [
        (&net.lan1, "tls", tls, RTR1_PUB),
        (&net.lan2, "tls", tls, RTR2_PUB),
        (&net.lan1, "tcp", tcp, RTR1_PUB),
        (&net.lan2, "tcp", tcp, RTR2_PUB),
    ];
    for (ns, transport, via, public) in cases {
        let mapped = wait_stun(ns, transport, via);
        assert_eq!(
            mapped.ip(),
            IpAddr::from(public),
            "{transport} from {ns}: tern answered {mapped}\n{}\n{}",
            tern.logs(),
            proxy.logs()
        );
    }
    tern.assert_running();
    proxy.assert_running();
}
