//! Static checks of the deployment templates under `deploy/`: the systemd unit goes
//! through `systemd-analyze verify`, the firewall rules through each tool's check mode
//! (`nft -c`, `iptables-restore --test`), and the firewalld service, ufw profile,
//! Dockerfile and Kubernetes manifests through small parsers and structural checks.
//!
//! Nothing here changes the host: no unit is installed or started, no firewall rule is
//! loaded. A missing tool is a failure naming `scripts/install-deploy-deps.sh`, never a
//! skipped test. The iptables checks need root (as CI runs).

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use support::TempDir;

const INSTALL_HINT: &str = "run scripts/install-deploy-deps.sh (as root) to install it";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Finds `name` on PATH or in the sbin directories (often not on a user's PATH).
fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{name}` is not installed: {INSTALL_HINT}"))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn describe(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `program args...` with `input` on standard input.
fn run_with_stdin(program: &Path, args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("writing stdin");
    child.wait_with_output().expect("waiting for child")
}

/// Lines that are neither blank nor comments (`#` in the first column after spaces).
fn active_lines(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

// ------------------------------------------------------------------ systemd

/// (section, key, value) for every assignment of a unit file.
fn unit_entries(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut entries = Vec::new();
    for line in active_lines(text) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
        } else if let Some((key, value)) = line.split_once('=') {
            entries.push((section.clone(), key.to_string(), value.to_string()));
        } else {
            panic!("tern.service: not an assignment or a section: {line:?}");
        }
    }
    entries
}

#[test]
fn systemd_unit_has_the_required_directives() {
    let text = read("deploy/systemd/tern.service");
    let entries = unit_entries(&text);
    let has = |section: &str, key: &str, value: &str| {
        entries
            .iter()
            .any(|(s, k, v)| s == section && k == key && v == value)
    };
    let required = [
        ("Service", "Type", "notify"),
        (
            "Service",
            "ExecStart",
            "/usr/bin/tern serve --config /etc/tern/tern.toml",
        ),
        ("Service", "ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Service", "Restart", "on-failure"),
        ("Service", "DynamicUser", "yes"),
        ("Service", "StateDirectory", "tern"),
        ("Service", "ConfigurationDirectory", "tern"),
        ("Service", "AmbientCapabilities", "CAP_NET_BIND_SERVICE"),
        ("Service", "CapabilityBoundingSet", "CAP_NET_BIND_SERVICE"),
        ("Service", "NoNewPrivileges", "yes"),
        ("Service", "ProtectSystem", "strict"),
        ("Service", "ProtectHome", "yes"),
        ("Service", "PrivateTmp", "yes"),
        ("Service", "PrivateDevices", "yes"),
        ("Service", "ProtectKernelTunables", "yes"),
        ("Service", "ProtectControlGroups", "yes"),
        (
            "Service",
            "RestrictAddressFamilies",
            "AF_INET AF_INET6 AF_UNIX AF_NETLINK",
        ),
        ("Service", "LimitNOFILE", "1048576"),
        ("Service", "EnvironmentFile", "-/etc/tern/tern.env"),
        ("Service", "KillSignal", "SIGTERM"),
        ("Service", "TimeoutStopSec", "60"),
        ("Install", "WantedBy", "multi-user.target"),
    ];
    for (section, key, value) in required {
        assert!(
            has(section, key, value),
            "tern.service lacks [{section}] {key}={value}"
        );
    }
    assert!(
        text.contains("LoadCredential="),
        "tern.service should document the LoadCredential= alternative"
    );
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let analyze = tool("systemd-analyze");
    let dir = TempDir::new("tern-deploy-systemd");
    let binary = env!("CARGO_BIN_EXE_tern");
    let text = read("deploy/systemd/tern.service");
    assert!(
        text.contains("/usr/bin/tern "),
        "ExecStart should use /usr/bin/tern"
    );
    // verify checks that ExecStart= points at an executable: use the built binary.
    let unit = dir.join("tern.service");
    std::fs::write(&unit, text.replace("/usr/bin/tern", binary)).expect("writing unit");

    let verify = |unit: &Path| {
        let out = run(Command::new(&analyze)
            .args(["verify", "--man=no"])
            .arg(unit));
        // verify exits 0 even for unknown keys and unparsable values, which it only
        // prints: every line naming the file is a finding.
        let name = unit.file_name().unwrap().to_string_lossy().into_owned();
        let findings: Vec<String> = String::from_utf8_lossy(&out.stderr)
            .lines()
            .chain(String::from_utf8_lossy(&out.stdout).lines())
            .filter(|l| l.contains(&name))
            .map(str::to_string)
            .collect();
        (out, findings)
    };

    let (out, findings) = verify(&unit);
    assert!(
        out.status.success() && findings.is_empty(),
        "systemd-analyze verify found problems in tern.service:\n{}",
        describe(&out)
    );

    // The check is not vacuous: a mistyped directive is reported.
    let bad = dir.join("tern-bad.service");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&unit)
            .unwrap()
            .replace("ProtectSystem=strict", "ProtectSystem=strcit\nNoSuchKey=1"),
    )
    .unwrap();
    let (out, findings) = verify(&bad);
    assert!(
        findings.iter().any(|l| l.contains("NoSuchKey"))
            && findings.iter().any(|l| l.contains("strcit")),
        "systemd-analyze verify did not report a broken copy of the unit:\n{}",
        describe(&out)
    );
}

/// The drop-in that lets tern load its kernel fast path adds exactly the three
/// capabilities and the bpf() system call, and still verifies as part of the unit
/// (tests/offload.rs runs tern with the capabilities it lists).
#[test]
fn systemd_offload_drop_in_grants_only_what_the_fast_path_needs() {
    let drop_in = read("deploy/systemd/offload.conf");
    let entries = unit_entries(&drop_in);
    let value = |key: &str| {
        entries
            .iter()
            .find(|(s, k, _)| s == "Service" && k == key)
            .map(|(_, _, v)| v.as_str())
    };
    let caps = "CAP_NET_BIND_SERVICE CAP_BPF CAP_PERFMON CAP_NET_ADMIN";
    assert_eq!(value("AmbientCapabilities"), Some(caps));
    assert_eq!(value("CapabilityBoundingSet"), Some(caps));
    assert_eq!(value("SystemCallFilter"), Some("bpf"));
    assert_eq!(
        entries.len(),
        3,
        "the drop-in should change nothing else: {entries:?}"
    );

    // A drop-in's sections extend the unit's: checked as one file.
    let analyze = tool("systemd-analyze");
    let dir = TempDir::new("tern-deploy-offload");
    let unit = dir.join("tern.service");
    let text =
        read("deploy/systemd/tern.service").replace("/usr/bin/tern", env!("CARGO_BIN_EXE_tern"));
    std::fs::write(&unit, format!("{text}\n{drop_in}")).expect("writing unit");
    let out = run(Command::new(&analyze)
        .args(["verify", "--man=no"])
        .arg(&unit));
    let findings: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .chain(String::from_utf8_lossy(&out.stdout).lines())
        .filter(|l| l.contains("tern.service"))
        .map(str::to_string)
        .collect();
    assert!(
        out.status.success() && findings.is_empty(),
        "systemd-analyze verify found problems with the drop-in:\n{}",
        describe(&out)
    );
}

// ------------------------------------------------------------------ firewall

/// The ports every firewall file must open, as (protocol, port or MIN-MAX).
const OPEN: [(&str, &str); 4] = [
    ("udp", "3478"),
    ("tcp", "3478"),
    ("tcp", "5349"),
    ("udp", "49152-65535"),
];

#[test]
fn nftables_ruleset_passes_nft_check() {
    let nft = tool("nft");
    let path = repo().join("deploy/firewall/tern.nft");
    let out = run(Command::new(&nft).arg("-c").arg("-f").arg(&path));
    assert!(
        out.status.success(),
        "`nft -c -f deploy/firewall/tern.nft` failed (needs root or CAP_NET_ADMIN):\n{}",
        describe(&out)
    );

    let text = read("deploy/firewall/tern.nft");
    let active = active_lines(&text).join("\n");
    for needle in [
        "table inet tern_filter {",
        "type filter hook input priority filter; policy drop;",
        "define TERN_PORT = 3478",
        "define TERN_TLS_PORT = 5349",
        "define TERN_RELAY_PORTS = 49152-65535",
        "define TERN_ADMIN_PORT = 9641",
        "udp dport $TERN_PORT accept",
        "tcp dport $TERN_PORT accept",
        "tcp dport $TERN_TLS_PORT accept",
        "udp dport $TERN_RELAY_PORTS accept",
        "iif != \"lo\" meta l4proto { tcp, udp } th dport $TERN_ADMIN_PORT drop",
        "tcp dport 22 accept",
    ] {
        assert!(active.contains(needle), "tern.nft lacks `{needle}`");
    }
    // 443 is optional: present, but commented out.
    assert!(text.contains("# tcp dport 443 accept"));
    assert!(!active.contains("dport 443"));
    // The admin drop comes before anything that could accept it.
    let drop = active.find("$TERN_ADMIN_PORT drop").unwrap();
    let first_port_accept = active.find("tcp dport 22 accept").unwrap();
    assert!(drop < first_port_accept && drop < active.find("iif \"lo\" accept").unwrap());
}

/// Checks an iptables-restore file's contents: the tern ports accepted, 9641 dropped
/// off loopback before any accept of it, 443 only in a comment.
fn check_iptables_rules(name: &str, text: &str, icmp: &str) {
    let active = active_lines(text);
    assert_eq!(
        active.first(),
        Some(&"*filter"),
        "{name}: starts with *filter"
    );
    assert_eq!(active.last(), Some(&"COMMIT"), "{name}: ends with COMMIT");
    assert!(
        active.contains(&":INPUT DROP [0:0]"),
        "{name}: INPUT policy DROP"
    );
    let rule = |r: &str| active.iter().position(|l| *l == r);
    for (proto, port) in OPEN {
        let r = format!(
            "-A INPUT -p {proto} --dport {} -j ACCEPT",
            port.replace('-', ":")
        );
        assert!(rule(&r).is_some(), "{name} lacks `{r}`");
    }
    let icmp_rule = format!("-A INPUT -p {icmp} -j ACCEPT");
    assert!(rule(&icmp_rule).is_some(), "{name} lacks `{icmp_rule}`");
    let drop_tcp = rule("-A INPUT ! -i lo -p tcp --dport 9641 -j DROP")
        .unwrap_or_else(|| panic!("{name}: 9641/tcp is not dropped off loopback"));
    let drop_udp = rule("-A INPUT ! -i lo -p udp --dport 9641 -j DROP")
        .unwrap_or_else(|| panic!("{name}: 9641/udp is not dropped off loopback"));
    let lo = rule("-A INPUT -i lo -j ACCEPT").expect("loopback accepted");
    assert!(
        drop_tcp < lo && drop_udp < lo,
        "{name}: 9641 drop must come first"
    );
    assert!(text.contains("#-A INPUT -p tcp --dport 443 -j ACCEPT"));
    assert!(!active.iter().any(|l| l.contains("--dport 443")));
}

#[test]
fn iptables_rules_pass_restore_test() {
    let v4 = read("deploy/firewall/tern.rules");
    let v6 = read("deploy/firewall/tern6.rules");
    check_iptables_rules("tern.rules", &v4, "icmp");
    check_iptables_rules("tern6.rules", &v6, "ipv6-icmp");

    for (program, file, text) in [
        ("iptables-restore", "tern.rules", &v4),
        ("ip6tables-restore", "tern6.rules", &v6),
    ] {
        let exe = tool(program);
        assert!(
            is_root(),
            "`{program} --test` needs root (CI runs as root): run this test as root"
        );
        let out = run_with_stdin(&exe, &["--test"], text);
        assert!(
            out.status.success(),
            "`{program} --test < deploy/firewall/{file}` failed:\n{}",
            describe(&out)
        );
    }
}

/// A tiny XML reader: checks well-formedness (balanced tags, no `--` inside comments,
/// no stray `<`) and returns each element's name with its attributes, comments left
/// out. Enough for firewalld's flat service files.
fn xml_elements(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut elements = Vec::new();
    let mut stack: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('<') {
        let before = &rest[..start];
        assert!(!before.contains('>'), "stray `>` in text: {before:?}");
        if stack.is_empty() {
            assert!(
                before.trim().is_empty(),
                "text outside the root: {before:?}"
            );
        }
        rest = &rest[start..];
        if let Some(body) = rest.strip_prefix("<!--") {
            let end = body.find("-->").expect("unterminated comment");
            assert!(
                !body[..end].contains("--"),
                "`--` inside an XML comment is not well-formed: {:?}",
                &body[..end]
            );
            rest = &body[end + 3..];
            continue;
        }
        let end = rest.find('>').expect("unterminated tag");
        let tag = &rest[1..end];
        rest = &rest[end + 1..];
        assert!(!tag.contains('<'), "`<` inside a tag: {tag:?}");
        if tag.starts_with('?') {
            assert!(tag.ends_with('?') && elements.is_empty(), "bad declaration");
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack.pop().unwrap_or_else(|| panic!("unopened </{name}>"));
            assert_eq!(open, name.trim(), "mismatched closing tag");
            continue;
        }
        let self_closing = tag.ends_with('/');
        let tag = tag.trim_end_matches('/');
        let (name, mut attrs_text) = tag.split_once(char::is_whitespace).unwrap_or((tag, ""));
        assert!(
            !stack.is_empty() || elements.is_empty(),
            "second root <{name}>"
        );
        let mut attrs = Vec::new();
        loop {
            attrs_text = attrs_text.trim_start();
            if attrs_text.is_empty() {
                break;
            }
            let (key, value) = attrs_text
                .split_once("=\"")
                .unwrap_or_else(|| panic!("bad attribute in <{name}>: {attrs_text:?}"));
            let (value, after) = value.split_once('"').expect("unterminated attribute");
            attrs.push((key.trim().to_string(), value.to_string()));
            attrs_text = after;
        }
        elements.push((name.to_string(), attrs));
        if !self_closing {
            stack.push(name.to_string());
        }
    }
    assert!(rest.trim().is_empty(), "text after the root: {rest:?}");
    assert!(stack.is_empty(), "unclosed elements: {stack:?}");
    elements
}

#[test]
fn firewalld_service_lists_the_ports() {
    let text = read("deploy/firewall/tern.xml");
    let elements = xml_elements(&text);
    assert_eq!(elements.first().map(|e| e.0.as_str()), Some("service"));
    for name in ["short", "description"] {
        assert!(
            elements.iter().any(|e| e.0 == name),
            "tern.xml lacks <{name}>"
        );
    }
    let ports: BTreeSet<(String, String)> = elements
        .iter()
        .filter(|e| e.0 == "port")
        .map(|(_, attrs)| {
            let get = |k: &str| {
                attrs
                    .iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_else(|| panic!("<port> without {k}: {attrs:?}"))
            };
            (get("protocol"), get("port"))
        })
        .collect();
    let expected: BTreeSet<(String, String)> = OPEN
        .iter()
        .map(|(p, n)| (p.to_string(), n.to_string()))
        .collect();
    assert_eq!(ports, expected, "tern.xml opens exactly tern's ports");
    // 443 documented (in a comment), and never the admin port.
    assert!(text.contains(r#"<port protocol="tcp" port="443"/>"#));
    assert!(!text.contains("9641\""));
}

/// Checks one ufw port spec (`3478/udp`, `49152:65535/udp`, `80,443/tcp`, `22`).
fn check_ufw_ports(spec: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for item in spec.split('|') {
        let (ports, proto) = match item.split_once('/') {
            Some((ports, proto)) => {
                assert!(proto == "tcp" || proto == "udp", "bad protocol in {item:?}");
                (ports, Some(proto))
            }
            None => (item, None),
        };
        for port in ports.split(',') {
            let number = |s: &str| -> u16 {
                let n: u16 = s
                    .parse()
                    .unwrap_or_else(|_| panic!("bad port {s:?} in {item:?}"));
                assert!(n > 0, "port 0 in {item:?}");
                n
            };
            let canonical = match port.split_once(':') {
                Some((lo, hi)) => {
                    assert!(number(lo) < number(hi), "empty range in {item:?}");
                    assert!(
                        proto.is_some(),
                        "ufw needs a protocol with a range: {item:?}"
                    );
                    format!("{lo}-{hi}")
                }
                None => {
                    number(port);
                    port.to_string()
                }
            };
            for p in proto.map_or(vec!["tcp", "udp"], |p| vec![p]) {
                out.insert((p.to_string(), canonical.clone()));
            }
        }
    }
    out
}

#[test]
fn ufw_profile_parses() {
    let text = read("deploy/firewall/tern");
    let mut sections: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for line in active_lines(&text) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            sections.push((name.to_string(), Vec::new()));
        } else {
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("ufw profile: not key=value: {line:?}"));
            let section = sections
                .last_mut()
                .unwrap_or_else(|| panic!("ufw profile: {line:?} before any [section]"));
            section
                .1
                .push((key.trim().to_string(), value.trim().to_string()));
        }
    }
    assert!(!sections.is_empty(), "ufw profile has no application");
    let mut by_name = std::collections::BTreeMap::new();
    for (name, entries) in &sections {
        let keys: BTreeSet<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            BTreeSet::from(["title", "description", "ports"]),
            "[{name}] must have exactly title, description and ports"
        );
        assert_eq!(keys.len(), entries.len(), "[{name}] repeats a key");
        for (key, value) in entries {
            assert!(!value.is_empty(), "[{name}] {key} is empty");
        }
        let ports = &entries.iter().find(|(k, _)| k == "ports").unwrap().1;
        by_name.insert(name.as_str(), check_ufw_ports(ports));
    }
    let expected: BTreeSet<(String, String)> = OPEN
        .iter()
        .map(|(p, n)| (p.to_string(), n.to_string()))
        .collect();
    assert_eq!(
        by_name.get("tern"),
        Some(&expected),
        "[tern] opens tern's ports"
    );
    assert_eq!(
        by_name.get("tern-tls443"),
        Some(&BTreeSet::from([("tcp".to_string(), "443".to_string())]))
    );
    assert!(!text.contains("9641/") && !text.contains("9641|"));
}

// ------------------------------------------------------------------ containers

#[test]
fn dockerfile_is_multi_stage_non_root_with_healthcheck() {
    let text = read("deploy/docker/Dockerfile");
    // Instructions, with backslash continuations joined.
    let joined = text.replace("\\\n", " ");
    let instructions = active_lines(&joined);
    let find = |prefix: &str| instructions.iter().position(|l| l.starts_with(prefix));

    let builder = find("FROM rust:bookworm AS builder").expect("builder stage");
    let runtime = find("FROM debian:bookworm-slim").expect("runtime stage");
    assert!(builder < runtime);
    let user = find("USER ").expect("a USER instruction");
    let user_name = instructions[user]["USER ".len()..].trim();
    assert!(
        user > runtime && !["root", "0", "0:0"].contains(&user_name),
        "the runtime stage must run as a non-root user, not {user_name:?}"
    );
    let entry = find("ENTRYPOINT").expect("ENTRYPOINT");
    assert!(user < entry, "USER must come before ENTRYPOINT");
    let expose = &instructions[find("EXPOSE ").expect("EXPOSE")];
    for port in ["3478/udp", "3478/tcp", "5349/tcp", "49152-65535/udp"] {
        assert!(expose.contains(port), "EXPOSE lacks {port}");
    }
    assert!(
        text.contains("--network host"),
        "the Dockerfile should say that host networking is the way to run it"
    );
    let health = &instructions[find("HEALTHCHECK").expect("HEALTHCHECK")];
    assert!(
        health.contains(r#"CMD ["/usr/bin/tern", "stun", "127.0.0.1:3478"]"#),
        "HEALTHCHECK should run `tern stun 127.0.0.1:3478`: {health}"
    );
    assert!(
        instructions
            .iter()
            .any(|l| l.starts_with("COPY --from=builder ") && l.ends_with(" /usr/bin/tern"))
    );
    assert!(joined.contains(r#"CMD ["serve", "--config", "/etc/tern/tern.toml"]"#));
    // What the build stage copies from the repository exists.
    for line in &instructions {
        if let Some(args) = line.strip_prefix("COPY ")
            && !args.starts_with("--from")
        {
            let parts: Vec<&str> = args.split_whitespace().collect();
            for source in &parts[..parts.len() - 1] {
                assert!(
                    repo().join(source).exists(),
                    "Dockerfile copies {source}, which is not in the repository"
                );
            }
        }
    }
    assert!(
        read("deploy/docker/Dockerfile.dockerignore")
            .lines()
            .any(|l| l.trim() == "target"),
        "the build context must leave target/ out"
    );
}

/// The `tern.toml: |` block of the ConfigMap, dedented.
fn configmap_toml(yaml: &str) -> String {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != "tern.toml: |");
    let header = lines.next().expect("ConfigMap has no `tern.toml: |` block");
    let key_indent = header.len() - header.trim_start().len();
    let body: Vec<&str> = lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > key_indent)
        .collect();
    let indent = body
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .expect("empty tern.toml block");
    body.iter()
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Checks shared by the Kubernetes manifests: the needles are there, the YAML is
/// tidy (spaces, even indentation), it parses and passes `checks` (Python over the
/// documents `docs`) when PyYAML is installed, and its ConfigMap's tern.toml passes
/// `tern check-config`.
fn check_manifest(rel: &str, needles: &[&str], checks: &str) {
    let path = repo().join(rel);
    let text = read(rel);
    for needle in needles {
        assert!(text.contains(needle), "{rel} lacks `{needle}`");
    }
    assert!(!text.contains('\t'), "YAML must not contain tabs");
    for (n, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start().len();
        assert!(
            line.trim().is_empty() || line.trim_start().starts_with('#') || indent % 2 == 0,
            "{rel}:{}: odd indentation",
            n + 1
        );
        assert!(line == line.trim_end(), "{rel}:{}: trailing space", n + 1);
    }

    // Full parse when PyYAML is there (no packages are installed for it).
    let has_pyyaml = Command::new("python3")
        .args(["-c", "import yaml"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if has_pyyaml {
        let script = format!(
            "import sys, yaml\ndocs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]\n{checks}\nprint('ok')\n"
        );
        let out = run(Command::new("python3").args(["-c", &script]).arg(&path));
        assert!(
            out.status.success(),
            "{rel} failed the PyYAML check:\n{}",
            describe(&out)
        );
    }

    // The ConfigMap's tern.toml is a valid config.
    let dir = TempDir::new("tern-deploy-k8s");
    let toml = dir.join("tern.toml");
    std::fs::write(&toml, configmap_toml(&text)).unwrap();
    let out = run(Command::new(env!("CARGO_BIN_EXE_tern"))
        .arg("check-config")
        .arg(&toml));
    assert!(
        out.status.success(),
        "the ConfigMap's tern.toml in {rel} fails `tern check-config`:\n{}",
        describe(&out)
    );
}

#[test]
fn kubernetes_daemonset_is_valid() {
    let needles = [
        "kind: DaemonSet",
        "kind: Secret",
        "kind: ConfigMap",
        "hostNetwork: true",
        "dnsPolicy: ClusterFirstWithHostNet",
        "runAsNonRoot: true",
        "name: tern-secret",
        "TERN_SECRET:",
        "tern.toml: |",
        r#"command: ["/usr/bin/tern", "stun", "127.0.0.1:3478"]"#,
        "preStop",
        "mountPath: /etc/tern",
    ];
    let checks = r#"
kinds = sorted(d["kind"] for d in docs)
assert kinds == ["ConfigMap", "DaemonSet", "Secret"], kinds
ds = next(d for d in docs if d["kind"] == "DaemonSet")
spec = ds["spec"]["template"]["spec"]
assert spec["hostNetwork"] is True
assert ds["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()
c = spec["containers"][0]
assert c["readinessProbe"]["exec"]["command"] == ["/usr/bin/tern", "stun", "127.0.0.1:3478"]
assert c["envFrom"][0]["secretRef"]["name"] == "tern-secret"
cm = next(d for d in docs if d["kind"] == "ConfigMap")
assert spec["volumes"][0]["configMap"]["name"] == cm["metadata"]["name"]
"#;
    check_manifest("deploy/kubernetes/daemonset.yaml", &needles, checks);
}

#[test]
fn kubernetes_fleet_is_valid() {
    let needles = [
        "kind: DaemonSet",
        "kind: Deployment",
        "kind: Service",
        "hostNetwork: true",
        "dnsPolicy: ClusterFirstWithHostNet",
        "TERN_REDIS_URL",
        "[cluster]",
        "path: /readyz",
        r#"command: ["/usr/bin/tern", "drain", "on", "--admin", "127.0.0.1:9641"]"#,
    ];
    let checks = r#"
kinds = sorted(d["kind"] for d in docs)
assert kinds == ["ConfigMap", "DaemonSet", "Deployment", "Secret", "Service"], kinds
ds = next(d for d in docs if d["kind"] == "DaemonSet")
spec = ds["spec"]["template"]["spec"]
assert spec["hostNetwork"] is True
c = spec["containers"][0]
assert c["readinessProbe"]["httpGet"] == {"host": "127.0.0.1", "path": "/readyz", "port": 9641}
assert c["lifecycle"]["preStop"]["exec"]["command"][1:3] == ["drain", "on"]
env = {e["name"]: e for e in c["env"]}
assert env["TERN_REDIS_URL"]["value"].startswith("redis://:$(REDIS_PASSWORD)@tern-redis.")
redis = next(d for d in docs if d["kind"] == "Deployment")
service = next(d for d in docs if d["kind"] == "Service")
assert service["spec"]["selector"] == redis["spec"]["selector"]["matchLabels"]
cm = next(d for d in docs if d["kind"] == "ConfigMap")
assert spec["volumes"][0]["configMap"]["name"] == cm["metadata"]["name"]
assert spec["terminationGracePeriodSeconds"] > 120, "above drain_timeout"
"#;
    check_manifest("deploy/kubernetes/fleet.yaml", &needles, checks);
}

#[test]
fn deploy_readme_names_every_template() {
    let text = read("deploy/README.md");
    for file in [
        "systemd/tern.service",
        "firewall/",
        "docker/Dockerfile",
        "kubernetes/daemonset.yaml",
        "kubernetes/fleet.yaml",
        "scripts/install-deploy-deps.sh",
    ] {
        assert!(
            text.contains(file),
            "deploy/README.md does not mention {file}"
        );
    }
}
