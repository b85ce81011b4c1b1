#!/usr/bin/env python3
"""The client side and the report of bench/soak.sh (python3 standard library only).

  soak.py churn  ...   allocations that come and go over UDP, TCP and TLS
  soak.py stall  ...   TLS clients that fill their connection and stop reading
  soak.py junk   ...   one burst of unauthenticated junk from many source ports
  soak.py sample ...   the server's RSS, descriptors and admin /metrics into a CSV
  soak.py report ...   the verdict (loss, growth, failures, logged warnings), an SVG plot

Each client command runs until --until (a Unix time) and writes its counts as JSON to
--out. Traffic goes to loopback addresses only. See `soak.py COMMAND --help`.
"""

import argparse
import faulthandler
import hashlib
import hmac
import json
import os
import random
import socket
import ssl
import struct
import sys
import threading
import time
import urllib.request
from collections import Counter

MAGIC = 0x2112A442
ALLOCATE, REFRESH, CHANNEL_BIND = 0x003, 0x004, 0x009
ATTR_CHANNEL, ATTR_LIFETIME, ATTR_PEER = 0x000C, 0x000D, 0x0012
ATTR_USERNAME, ATTR_INTEGRITY, ATTR_ERROR = 0x0006, 0x0008, 0x0009
ATTR_REALM, ATTR_NONCE, ATTR_TRANSPORT = 0x0014, 0x0015, 0x0019
CHANNEL = 0x4000
TIMEOUT = 3.0


def loopback(addr):
    """HOST:PORT on 127.0.0.0/8, as a (host, port) tuple; anything else is refused."""
    host, _, port = addr.rpartition(":")
    if not host.startswith("127."):
        raise argparse.ArgumentTypeError(f"{addr}: loopback (127.0.0.0/8) only")
    return host, int(port)


# ---------------------------------------------------------------------------------
# STUN/TURN messages (RFC 8489, RFC 8656): just what the clients below send and read.


def attr(kind, value):
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * (-len(value) % 4)


def xor_addr(addr):
    ip = struct.unpack("!I", socket.inet_aton(addr[0]))[0]
    return struct.pack("!BBHI", 0, 1, addr[1] ^ (MAGIC >> 16), ip ^ MAGIC)


def message(method, attrs, key=None, tid=None):
    """A request; signed with MESSAGE-INTEGRITY when `key` is given."""
    tid = tid or os.urandom(12)
    body = b"".join(attrs)
    if key is None:
        return struct.pack("!HHI", method, len(body), MAGIC) + tid + body
    head = struct.pack("!HHI", method, len(body) + 24, MAGIC) + tid
    mac = hmac.new(key, head + body, hashlib.sha1).digest()
    return head + body + attr(ATTR_INTEGRITY, mac)


def parse(data):
    """(message type, transaction id, {attribute type: value}) of a STUN message."""
    kind, length = struct.unpack("!HH", data[:4])
    attrs, pos = {}, 20
    while pos + 4 <= 20 + length:
        t, n = struct.unpack("!HH", data[pos:pos + 4])
        attrs.setdefault(t, data[pos + 4:pos + 4 + n])
        pos += 4 + n + (-n % 4)
    return kind, data[8:20], attrs


def error_code(attrs):
    value = attrs.get(ATTR_ERROR)
    return None if value is None else value[2] * 100 + value[3]


class Failed(Exception):
    """A request the server refused (its error code) or did not answer."""


class Client:
    """One allocation's client over UDP, TCP or TLS, with long-term credentials."""

    def __init__(self, transport, server, user, password, source="127.0.0.1", avoid=()):
        """`avoid`: UDP source ports not to use (the server may still hold an allocation
        for them, and would answer an Allocate from one with 437)."""
        self.transport, self.user, self.password = transport, user, password
        self.realm = self.nonce = self.key = None
        self.pending = b""
        if transport == "udp":
            for _ in range(20):
                self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                self.sock.bind((source, 0))
                if self.sock.getsockname()[1] not in avoid:
                    break
                self.sock.close()
            self.sock.connect(server)
        else:
            sock = socket.create_connection(server, timeout=TIMEOUT, source_address=(source, 0))
            if transport == "tls":
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                sock = ctx.wrap_socket(sock)
            self.sock = sock
        self.sock.settimeout(TIMEOUT)

    def close(self, reset=False):
        """Closes the socket; `reset` sends a TCP RST instead of a FIN (a vanished client)."""
        if reset and self.transport != "udp":
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def send_raw(self, data):
        if self.transport == "udp":
            self.sock.send(data)
        else:
            self.sock.sendall(data)

    def recv_message(self):
        """The next STUN message or ChannelData from the server."""
        if self.transport == "udp":
            return self.sock.recv(65536)
        while True:
            if len(self.pending) >= 4:
                first, length = struct.unpack("!HH", self.pending[:4])
                total = 20 + length if first < 0x4000 else 4 + length + (-length % 4)
                if len(self.pending) >= total:
                    data, self.pending = self.pending[:total], self.pending[total:]
                    return data
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the server")
            self.pending += chunk

    def transact(self, method, attrs):
        """Sends a request, answering a 401 or 438 challenge; returns the answer's attributes."""
        for _ in range(3):
            signed = []
            if self.key is not None:
                signed = [attr(ATTR_USERNAME, self.user.encode()), attr(ATTR_REALM, self.realm),
                          attr(ATTR_NONCE, self.nonce)]
            request = message(method, attrs + signed, self.key)
            tid = request[8:20]
            for attempt in range(3 if self.transport == "udp" else 1):
                self.send_raw(request)
                answer = self.await_answer(tid, TIMEOUT / 3 if self.transport == "udp" else TIMEOUT)
                if answer is not None:
                    break
            else:
                raise Failed("timeout")
            kind, got = answer
            code = error_code(got)
            if kind & 0x0110 == 0x0100:
                return got
            if code in (401, 438) and ATTR_NONCE in got:
                self.nonce = got[ATTR_NONCE]
                if code == 401:
                    if self.key is not None:
                        raise Failed("401")
                    self.realm = got[ATTR_REALM]
                    self.key = hashlib.md5(b"%s:%s:%s" % (self.user.encode(), self.realm,
                                                          self.password.encode())).digest()
                continue
            raise Failed(str(code))
        raise Failed("challenge loop")

    def await_answer(self, tid, wait):
        """The answer with transaction id `tid` (ChannelData read meanwhile is skipped)."""
        deadline = time.monotonic() + wait
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.recv_message()
            except TimeoutError:
                return None
            finally:
                self.sock.settimeout(TIMEOUT)
            if len(data) >= 20 and data[0] < 0x40 and data[8:20] == tid:
                kind, _, attrs = parse(data)
                return kind, attrs

    def allocate(self):
        self.transact(ALLOCATE, [attr(ATTR_TRANSPORT, b"\x11\0\0\0")])

    def channel_bind(self, peer):
        self.transact(CHANNEL_BIND, [attr(ATTR_CHANNEL, struct.pack("!HH", CHANNEL, 0)),
                                     attr(ATTR_PEER, xor_addr(peer))])

    def refresh(self, lifetime=None):
        attrs = [] if lifetime is None else [attr(ATTR_LIFETIME, struct.pack("!I", lifetime))]
        self.transact(REFRESH, attrs)

    def channel_data(self, payload):
        pad = b"" if self.transport == "udp" else b"\0" * (-len(payload) % 4)
        self.send_raw(struct.pack("!HH", CHANNEL, len(payload)) + payload + pad)


def write_json(path, doc):
    with open(path, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)


# ---------------------------------------------------------------------------------
# churn: each worker lives one allocation after another until --until.


def churn(args):
    """Lives: allocate, bind a channel to the peer, relay a little, refresh, relay, and
    end one of three ways: delete (Refresh 0), vanish mid-call (close, a TCP RST, no
    delete), or go quiet and let the allocation expire (a stream is kept open until
    then). Counts every outcome and every failed request by its cause."""
    counts, failures, lock = Counter(), Counter(), threading.Lock()
    parked = []  # (close at, client): stream clients left to expire
    abandoned = {}  # UDP source port: until when the server may hold its allocation

    def close_parked(everything=False):
        with lock:
            due = [c for t, c in parked if everything or t <= time.time()]
            parked[:] = [(t, c) for t, c in parked if not (everything or t <= time.time())]
        for c in due:
            c.close()

    def life(rng):
        transport = rng.choice(["udp", "udp", "tcp", "tls"])
        end = rng.choices(["delete", "vanish", "expire"], weights=[5, 3, 2])[0]
        step = "connect"
        with lock:
            avoid = {port for port, until in abandoned.items() if until > time.time()}
        try:
            c = Client(transport, args.server if transport != "tls" else args.tls_server,
                       args.user, args.password, args.source, avoid)
        except OSError as e:
            with lock:
                failures[f"{transport} connect: {e}"] += 1
            return
        try:
            step = "allocate"
            c.allocate()
            step = "channel bind"
            c.channel_bind(args.peer)
            step = "relay"
            for _ in range(rng.randint(5, 30)):
                c.channel_data(os.urandom(rng.randint(20, 600)))
                time.sleep(0.02)
            step = "refresh"
            c.refresh()
            step = "relay"
            for _ in range(rng.randint(5, 30)):
                c.channel_data(os.urandom(rng.randint(20, 600)))
                time.sleep(0.02)
            if end == "delete":
                step = "delete"
                c.refresh(0)
                c.close()
            elif transport == "udp":
                pass  # closed below, its port set aside
            elif end == "vanish":
                c.close(reset=True)
            else:
                with lock:
                    parked.append((time.time() + args.lifetime + 5, c))
            with lock:
                counts[f"{transport} {end}"] += 1
        except (Failed, OSError) as e:
            with lock:
                failures[f"{transport} {step}: {e}"] += 1
            end = "failed"
        if end == "failed" or (transport == "udp" and end != "delete"):
            if transport == "udp":
                with lock:
                    abandoned[c.sock.getsockname()[1]] = time.time() + args.lifetime + 5
            c.close()

    def worker(seed):
        rng = random.Random(seed)
        while time.time() < args.until:
            close_parked()
            life(rng)
            time.sleep(rng.uniform(0, args.pause))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    close_parked(everything=True)
    write_json(args.out, {"lives": dict(counts), "failures": dict(failures)})


# ---------------------------------------------------------------------------------
# stall: TLS clients that stop reading.


TCP_ESTABLISHED = 1


def server_let_go(sock):
    """Whether the server closed the TCP connection (its FIN or RST arrived), seen
    without reading anything: the first byte of Linux's tcp_info is the state."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] != TCP_ESTABLISHED


def stall(args):
    """Each client: a TLS connection with a small receive buffer, an allocation and a
    channel to the echo peer, then ChannelData at --rate frames/s for --hold seconds
    without ever reading the echoes. The server's buffers for it fill, a write to it
    blocks, and the server must close the connection (limits.frame_timeout) without
    holding anyone else up. Still without reading, the client then gives the server
    --grace seconds to let go, watching the TCP state (reading would unblock the
    server): "closed by the server", or "still open". Then it starts over."""
    counts, lock = Counter(), threading.Lock()

    def one():
        c = Client("tls", args.tls_server, args.user, args.password)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            c.allocate()
            c.channel_bind(args.peer)
            payload = os.urandom(1000)
            stop = min(time.time() + args.hold, args.until)
            while time.time() < stop:
                try:
                    c.channel_data(payload)
                except TimeoutError:
                    break  # the server is not reading us either now
                except OSError:
                    return "closed by the server"
                time.sleep(1 / args.rate)
            full = time.time() + args.grace <= args.until
            give_up = min(time.time() + args.grace, args.until)
            while time.time() < give_up:
                if server_let_go(c.sock):
                    return "closed by the server"
                time.sleep(0.2)
            if server_let_go(c.sock):
                return "closed by the server"
            return "still open" if full else "cut short by the end of the run"
        finally:
            c.close()

    def worker():
        while time.time() < args.until:
            try:
                outcome = one()
            except (Failed, OSError) as e:
                outcome = f"failed: {e}"
            with lock:
                counts[outcome] += 1

    threads = [threading.Thread(target=worker) for _ in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    write_json(args.out, {"stalled": dict(counts)})


# ---------------------------------------------------------------------------------
# junk: one burst.


def junk(args):
    """From --sources UDP sockets on other loopback addresses (127.0.1.x, so the 401
    limiter budget of the clients' 127.0.0.1 is not the one spent): unsigned Allocates,
    random bytes, truncated STUN headers, ChannelData on unbound channels; then TCP and
    TLS connections that send garbage or an unsigned Allocate and close."""
    rng = random.Random(1)
    socks, sent, answers = [], 0, Counter()
    for i in range(args.sources):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((f"127.0.1.{1 + i % 50}", 0))
        s.setblocking(False)
        socks.append(s)
    kinds = [
        lambda: message(ALLOCATE, [attr(ATTR_TRANSPORT, b"\x11\0\0\0")]),
        lambda: os.urandom(rng.randint(1, 1500)),
        lambda: message(ALLOCATE, [])[:rng.randint(1, 19)],
        lambda: struct.pack("!HH", CHANNEL + rng.randint(0, 100), 100) + os.urandom(100),
        lambda: message(REFRESH, [attr(ATTR_USERNAME, b"nobody"), attr(ATTR_INTEGRITY, os.urandom(20))]),
    ]
    for _ in range(args.rounds):
        for s in socks:
            try:
                s.sendto(rng.choice(kinds)(), args.server)
                sent += 1
            except BlockingIOError:
                answers["send buffer full"] += 1
        time.sleep(0.01)
    time.sleep(0.5)
    for s in socks:
        while True:
            try:
                data = s.recv(65536)
            except BlockingIOError:
                break
            code = error_code(parse(data)[2]) if len(data) >= 20 else None
            answers[f"answer {code}" if code else "answer"] += 1
        s.close()
    streams = Counter()
    for i in range(args.connections):
        target = args.tls_server if i % 2 else args.server
        try:
            c = socket.create_connection(target, timeout=2, source_address=(f"127.0.1.{1 + i % 50}", 0))
            c.sendall(rng.choice(kinds)() if i % 3 else message(ALLOCATE, []))
            c.close()
            streams["connections"] += 1
        except OSError as e:
            streams[f"connect failed: {e}"] += 1
    write_json(args.out, {"datagrams": sent, "sources": args.sources, "udp": dict(answers),
                          "streams": dict(streams)})


# ---------------------------------------------------------------------------------
# sample: one CSV row every --interval seconds.

COLUMNS = ["t", "phase", "rss_kb", "fds", "relay_ports", "allocations", "connections",
           "permissions", "channels"]


def metrics(admin):
    """The admin /metrics gauges the soak follows (allocations summed over labels)."""
    with urllib.request.urlopen(f"http://{admin[0]}:{admin[1]}/metrics", timeout=2) as r:
        text = r.read().decode()
    wanted = {"tern_relay_ports_in_use": "relay_ports", "tern_allocations": "allocations",
              "tern_connections": "connections", "tern_permissions": "permissions",
              "tern_channels": "channels", "tern_reloads_total": "reloads"}
    out = Counter()
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, value = line.rsplit(" ", 1)
        base = name.split("{", 1)[0]
        if base == "tern_reloads_total":
            out["reloads " + name.split('result="', 1)[1].split('"', 1)[0]] += float(value)
        elif base in wanted:
            out[wanted[base]] += float(value)
    return out


def sample_row(args, start):
    with open(f"/proc/{args.pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    fds = len(os.listdir(f"/proc/{args.pid}/fd"))
    m = metrics(args.admin)
    phase = args.phase or (open(args.phase_file).read().strip() if os.path.exists(args.phase_file) else "")
    return [f"{time.time() - start:.1f}", phase, rss, fds] + [int(m[c]) for c in COLUMNS[4:]]


def sample(args):
    """Appends rows until --until, or once with --once. The time column counts from
    --start (a Unix time)."""
    new = not os.path.exists(args.csv)
    with open(args.csv, "a") as f:
        if new:
            f.write(",".join(COLUMNS) + "\n")
        while True:
            try:
                f.write(",".join(map(str, sample_row(args, args.start))) + "\n")
                f.flush()
            except (OSError, StopIteration) as e:
                print(f"soak.py sample: {e}", file=sys.stderr)
            if args.once or time.time() + args.interval > args.until:
                return
            time.sleep(args.interval)


def wait_idle(args):
    """Waits (up to --timeout s) until the server holds no allocation and no connection."""
    deadline = time.time() + args.timeout
    while time.time() < deadline:
        m = metrics(args.admin)
        if m["allocations"] == 0 and m["connections"] == 0 and m["relay_ports"] == 0:
            return 0
        time.sleep(1)
    m = metrics(args.admin)
    print(f"still {int(m['allocations'])} allocations, {int(m['connections'])} connections, "
          f"{int(m['relay_ports'])} relay ports after {args.timeout} s", file=sys.stderr)
    return 1


# ---------------------------------------------------------------------------------
# report.


def read_csv(path):
    with open(path) as f:
        head = f.readline().strip().split(",")
        rows = []
        for line in f:
            cells = line.strip().split(",")
            row = dict(zip(head, cells))
            for k in head:
                if k != "phase":
                    row[k] = float(row[k])
            rows.append(row)
    return rows


def healthy_totals(paths):
    """Sums the `tern load --json` results (one per line) of the healthy clients."""
    t = Counter()
    for path in paths:
        transport = os.path.basename(path).split(".")[0].removeprefix("healthy-")
        for line in open(path):
            if not line.strip():
                continue
            doc = json.loads(line)
            t["runs"] += 1
            if "error" in doc:
                t["runs without a report"] += 1
                continue
            t[f"{transport} allocations"] += doc["allocations_ok"]
            t["allocations failed"] += doc["allocations"] - doc["allocations_ok"]
            t["sent"] += doc["packets_sent"] or 0
            t["received"] += doc["packets_received"] or 0
            t["links failed"] += doc["links_failed"] or 0
            t["peer dropped"] += doc["peer_dropped"] or 0
    return t


def log_problems(path):
    """Every WARN or ERROR line of the server's JSON log, shortened to one line each."""
    lines = []
    for line in open(path, errors="replace"):
        try:
            doc = json.loads(line)
        except ValueError:
            lines.append(line.rstrip())  # not from the logger: a panic, say
            continue
        if doc.get("level") in ("WARN", "ERROR"):
            fields = dict(doc.get("fields", {}))
            msg = fields.pop("message", "")
            extra = " ".join(f"{k}={v}" for k, v in fields.items())
            lines.append(f"{doc.get('timestamp', '')} {doc['level']} {doc.get('target', '')}: {msg} {extra}".rstrip())
    return lines


def svg_plot(rows, title):
    """Three stacked panels over time: RSS; descriptors and relay ports; allocations and
    connections. The warm-up and the soak are shaded; the baseline and final samples are
    marked."""
    width, left, right, panel_h, gap, top = 900, 70, 150, 150, 40, 40
    plot_w = width - left - right
    panels = [("RSS (MiB)", [("rss_kb", 1 / 1024, "#c0392b", "RSS")]),
              ("count", [("fds", 1, "#2c3e50", "open fds"), ("relay_ports", 1, "#27ae60", "relay ports")]),
              ("count", [("allocations", 1, "#2980b9", "allocations"), ("connections", 1, "#8e44ad", "connections")])]
    height = top + len(panels) * (panel_h + gap) + 10
    t_max = max(r["t"] for r in rows) or 1
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="22" font-size="15">{title}</text>']
    for i, (unit, series) in enumerate(panels):
        y0 = top + i * (panel_h + gap)
        v_max = max(max(r[k] * s for r in rows) for k, s, _, _ in series) * 1.1 or 1
        for frac in (0, 0.5, 1):
            y = y0 + panel_h * (1 - frac)
            out.append(f'<text x="{left - 6}" y="{y + 4:.0f}" text-anchor="end">{v_max * frac:.0f}</text>')
        out.append(f'<text x="14" y="{y0 + panel_h / 2:.0f}" transform="rotate(-90 14 {y0 + panel_h / 2:.0f})" '
                   f'text-anchor="middle">{unit}</text>')
        for phase, label in (("warmup", "warm-up"), ("soak", "soak")):
            times = [r["t"] for r in rows if r["phase"] == phase]
            if times:
                x0, x1 = (left + plot_w * t / t_max for t in (times[0], times[-1]))
                out.append(f'<rect x="{x0:.1f}" y="{y0}" width="{x1 - x0:.1f}" height="{panel_h}" fill="#f1f1f1"/>')
                if i == 0:  # the soak's name in its middle, clear of the short warm-up's
                    x = x0 + 4 if phase == "warmup" else (x0 + x1) / 2
                    out.append(f'<text x="{x:.1f}" y="{y0 + 14}" fill="#666">{label}</text>')
        for r in rows:
            if r["phase"] in ("baseline", "final"):
                x = left + plot_w * r["t"] / t_max
                out.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y0 + panel_h}" stroke="#999" stroke-dasharray="4 3"/>')
                if i == 0:  # at the bottom, clear of the phase names
                    out.append(f'<text x="{x - 3:.1f}" y="{y0 + panel_h - 6}" fill="#666" text-anchor="end">{r["phase"]}</text>')
        out.append(f'<rect x="{left}" y="{y0}" width="{plot_w}" height="{panel_h}" fill="none" stroke="#999"/>')
        for j, (key, scale, color, name) in enumerate(series):
            points = " ".join(f"{left + plot_w * r['t'] / t_max:.1f},{y0 + panel_h * (1 - r[key] * scale / v_max):.1f}"
                              for r in rows)
            out.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="1.5"/>')
            out.append(f'<text x="{left + plot_w + 10}" y="{y0 + 16 + 16 * j}" fill="{color}">{name}</text>')
        out.append(f'<text x="{left + plot_w}" y="{y0 + panel_h + 16}" text-anchor="end">{t_max:.0f} s</text>')
        out.append(f'<text x="{left}" y="{y0 + panel_h + 16}">0 s</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def plot(args):
    """Draws the samples of --csv as an SVG (report does it too; this redraws one from a
    kept run)."""
    with open(args.svg, "w") as f:
        f.write(svg_plot(read_csv(args.csv), args.title))


def report(args):
    """Prints the figures and the verdict, writes the plot; exit status 1 when loss on
    the healthy allocations, failed requests or growth beyond a bound were found."""
    rows = read_csv(args.csv)
    base = next(r for r in rows if r["phase"] == "baseline")
    final = next(r for r in rows if r["phase"] == "final")
    soak = [r for r in rows if r["phase"] == "soak"]
    problems = []
    out = []

    h = healthy_totals(args.healthy)
    lost = h["sent"] - h["received"]
    loss = lost / h["sent"] if h["sent"] else 1.0
    out.append(f"healthy allocations: {h['udp allocations']:.0f} UDP, {h['tcp allocations']:.0f} TCP, "
               f"{h['tls allocations']:.0f} TLS over {h['runs']:.0f} `tern load` runs; "
               f"{h['sent']:.0f} probes, {lost:.0f} lost ({loss:.4%})"
               f"{', ' + str(h['peer dropped']) + ' dropped by the echo peer itself' if h['peer dropped'] else ''}")
    if not h["sent"]:
        problems.append("no healthy traffic was measured")
    elif lost:
        problems.append(f"loss on healthy allocations: {lost:.0f} of {h['sent']:.0f} probes")
    for key in ("allocations failed", "links failed", "runs without a report"):
        if h[key]:
            problems.append(f"healthy clients: {key}: {h[key]:.0f}")

    lives, failed, stalled = Counter(), Counter(), Counter()
    for path in args.churn + args.stall + args.junk:
        if not os.path.exists(path):
            problems.append(f"{os.path.basename(path)} missing: that client did not finish "
                            f"(its stderr: {path.removesuffix('.json')}.err)")
    for path in filter(os.path.exists, args.churn):
        doc = json.load(open(path))
        lives.update(doc["lives"])
        failed.update(doc["failures"])
    for path in filter(os.path.exists, args.stall):
        stalled.update(json.load(open(path))["stalled"])
    out.append(f"churn: {sum(lives.values())} allocations lived out: "
               + ", ".join(f"{k} {v}" for k, v in sorted(lives.items())))
    if failed:
        out.append("churn failures: " + ", ".join(f"{k} ×{v}" for k, v in sorted(failed.items())))
        problems.append(f"churn: {sum(failed.values())} requests failed")
    out.append("stalled TLS clients: " + ", ".join(f"{k} ×{v}" for k, v in sorted(stalled.items())))
    if any(k not in ("closed by the server", "cut short by the end of the run") for k in stalled):
        problems.append("stalled TLS clients: not every one was closed by the server")
    bursts, datagrams, sources, udp, streams = 0, 0, 0, Counter(), Counter()
    for path in filter(os.path.exists, args.junk):
        j = json.load(open(path))
        bursts += 1
        datagrams += j["datagrams"]
        sources = max(sources, j["sources"])
        udp.update(j["udp"])
        streams.update(j["streams"])
    out.append(f"junk: {bursts} bursts, {datagrams} datagrams in all, from {sources} source ports "
               f"a burst ({', '.join(f'{k} {v}' for k, v in sorted(udp.items())) or 'no answer'}); "
               f"stream junk: {', '.join(f'{k} {v}' for k, v in sorted(streams.items()))}")
    reloads = metrics(args.admin)
    out.append(f"SIGHUP: {args.sighups} sent; reloads {reloads['reloads ok']:.0f} ok, "
               f"{reloads['reloads error']:.0f} failed")
    if reloads["reloads error"] or reloads["reloads ok"] != args.sighups:
        problems.append(f"{args.sighups} SIGHUPs sent, {reloads['reloads ok']:.0f} reloads done")

    peak = {k: max(r[k] for r in soak) for k in ("rss_kb", "fds", "relay_ports", "allocations", "connections")}
    out.append(f"during the soak ({len(soak)} samples): peak {peak['allocations']:.0f} allocations, "
               f"{peak['connections']:.0f} connections, {peak['relay_ports']:.0f} relay ports, "
               f"{peak['fds']:.0f} fds, RSS {peak['rss_kb'] / 1024:.1f} MiB")
    if len(soak) >= 8:
        q = len(soak) // 4
        first = sorted(r["rss_kb"] for r in soak[:q])[q // 2]
        last = sorted(r["rss_kb"] for r in soak[-q:])[q // 2]
        out.append(f"RSS median over the first quarter of the soak {first / 1024:.1f} MiB, "
                   f"last quarter {last / 1024:.1f} MiB")
    bounds = [("rss_kb", args.rss_bound_kb, "RSS", "KiB"), ("fds", args.fd_bound, "open fds", ""),
              ("relay_ports", 0, "relay ports", "")]
    out.append(f"idle before the soak → idle after it (population back to {final['allocations']:.0f} "
               f"allocations, {final['connections']:.0f} connections):")
    for key, bound, name, unit in bounds:
        growth = final[key] - base[key]
        ok = growth <= bound
        out.append(f"  {name}: {base[key]:.0f} → {final[key]:.0f} {unit} (growth {growth:+.0f}, bound {bound}) "
                   f"{'ok' if ok else 'BEYOND THE BOUND'}")
        if not ok:
            problems.append(f"{name} grew by {growth:.0f} {unit} (bound {bound})".rstrip())
    if final["allocations"] or final["connections"]:
        problems.append("the server did not return to zero allocations and connections")

    logged = log_problems(args.log)
    out.append(f"server log: {len(logged)} WARN/ERROR lines" + (":" if logged else ""))
    out.extend(f"  {line}" for line in logged[:args.max_log_lines])
    if len(logged) > args.max_log_lines:
        out.append(f"  … {len(logged) - args.max_log_lines} more in {args.log}")

    if args.svg:
        plot(args)
        out.append(f"plot: {args.svg}")
    print("\n".join(out))
    if problems:
        print("FAILED: " + "; ".join(problems))
        return 1
    print("PASSED")
    return 0


# ---------------------------------------------------------------------------------


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    def clients(name, fn, help_text):
        c = sub.add_parser(name, help=help_text, description=fn.__doc__)
        c.add_argument("--server", type=loopback, required=True, help="UDP/TCP listener HOST:PORT")
        c.add_argument("--tls-server", type=loopback, required=True, help="TLS listener HOST:PORT")
        c.add_argument("--out", required=True, help="JSON counts go here")
        c.set_defaults(fn=fn)
        return c

    c = clients("churn", churn, "allocations coming and going")
    c.add_argument("--user", required=True)
    c.add_argument("--password", required=True)
    c.add_argument("--peer", type=loopback, required=True, help="UDP echo peer HOST:PORT")
    c.add_argument("--until", type=float, required=True, help="stop at this Unix time")
    c.add_argument("--workers", type=int, default=8)
    c.add_argument("--source", default="127.0.0.2",
                   help="loopback address the clients send from (not the healthy clients')")
    c.add_argument("--pause", type=float, default=0.5, help="most seconds between two lives")
    c.add_argument("--lifetime", type=int, required=True, help="the server's allocation lifetime")
    c = clients("stall", stall, "TLS clients that stop reading")
    c.add_argument("--user", required=True)
    c.add_argument("--password", required=True)
    c.add_argument("--peer", type=loopback, required=True)
    c.add_argument("--until", type=float, required=True)
    c.add_argument("--clients", type=int, default=3)
    c.add_argument("--rate", type=float, default=500, help="1000-byte frames per second")
    c.add_argument("--hold", type=float, default=30, help="seconds of sending without reading")
    c.add_argument("--grace", type=float, default=25,
                   help="seconds the server then gets to close the connection")
    c = clients("junk", junk, "one burst of junk")
    c.add_argument("--sources", type=int, default=200, help="UDP source ports")
    c.add_argument("--rounds", type=int, default=20, help="datagrams per source")
    c.add_argument("--connections", type=int, default=40, help="TCP and TLS junk connections")

    for name, fn in (("sample", sample), ("wait-idle", wait_idle)):
        s = sub.add_parser(name, description=fn.__doc__)
        s.add_argument("--admin", type=loopback, required=True, help="admin listener HOST:PORT")
        s.set_defaults(fn=fn)
        if fn is sample:
            s.add_argument("--pid", type=int, required=True)
            s.add_argument("--csv", required=True)
            s.add_argument("--phase-file", required=True, help="holds the phase name for each row")
            s.add_argument("--phase", help="this phase name instead of the file's")
            s.add_argument("--start", type=float, required=True)
            s.add_argument("--interval", type=float, default=5)
            s.add_argument("--until", type=float, default=0)
            s.add_argument("--once", action="store_true")
        else:
            s.add_argument("--timeout", type=int, required=True)

    r = sub.add_parser("report", description=report.__doc__)
    r.add_argument("--csv", required=True)
    r.add_argument("--healthy", nargs="+", required=True, help="healthy-TRANSPORT.jsonl files")
    r.add_argument("--churn", nargs="+", required=True, help="churn JSON files")
    r.add_argument("--stall", nargs="+", required=True, help="stall JSON files")
    r.add_argument("--sighups", type=int, required=True, help="SIGHUPs sent to the server")
    r.add_argument("--junk", nargs="*", default=[])
    r.add_argument("--log", required=True, help="the server's JSON log")
    r.add_argument("--admin", type=loopback, required=True, help="read the reload counters here")
    r.add_argument("--rss-bound-kb", type=int, required=True)
    r.add_argument("--fd-bound", type=int, required=True)
    r.add_argument("--max-log-lines", type=int, default=50)
    r.add_argument("--svg", help="write the plot here")
    r.add_argument("--title", default="tern soak")
    r.set_defaults(fn=report)

    g = sub.add_parser("plot", description=plot.__doc__)
    g.add_argument("--csv", required=True)
    g.add_argument("--svg", required=True)
    g.add_argument("--title", default="tern soak")
    g.set_defaults(fn=plot)

    args = p.parse_args()
    if getattr(args, "until", 0) > 0:
        # A client stuck past its end shows where (every thread's stack) and exits.
        faulthandler.dump_traceback_later(args.until - time.time() + 30, exit=True)
    sys.exit(args.fn(args))


if __name__ == "__main__":
    main()
