#!/usr/bin/env python3
"""An RFC 6062 TURN client written apart from tern's own code (Python's sockets,
hashlib and hmac, nothing shared), for tests/tcp_allocations.rs.

    rfc6062_client.py HOST PORT USER PASSWORD SCENARIO [ARGS...]

SCENARIO is one of:
    connect ECHO_PORT CLOSED_PORT DENIED_IP
        a TCP allocation Connects to a TCP echo peer on 127.0.0.1:ECHO_PORT, binds a
        data connection and echoes bytes through it; then the refusals: a second
        Connect to the same peer, one to a closed port, one to a denied peer, a
        ChannelBind, a ConnectionBind with an unknown id and one on the control
        connection; last, a Refresh to 0 must close the data connection.
    accept
        a peer (this script) connects to the relay address: without a permission it is
        closed and nothing is announced; with one, a ConnectionAttempt names it and the
        bound data connection carries bytes both ways.
    unbound
        a peer connects and the client never binds: the relay closes the peer's
        connection (RFC 6062: after 30 s), and a late ConnectionBind gets 400.
    rate ECHO_PORT BYTES
        Connects to the echo peer, binds, and times BYTES sent through it and back.
    udp
        a TCP Allocate over UDP (a 400).
    disabled
        a TCP Allocate over TCP to a server that does not offer it (a 442).

Prints one JSON object of what it saw. Loopback only; every wait is bounded.
"""

import hashlib
import hmac
import json
import os
import socket
import struct
import sys
import time

from stun_codec import MAGIC, attr, error_code, first, header, parse

ALLOCATE, REFRESH, CREATE_PERMISSION, CHANNEL_BIND = 0x0003, 0x0004, 0x0008, 0x0009
CONNECT, CONNECTION_BIND, CONNECTION_ATTEMPT = 0x000A, 0x000B, 0x000C
SUCCESS, ERROR, INDICATION = 0x0100, 0x0110, 0x0010
CHANNEL_NUMBER, LIFETIME, XOR_PEER, XOR_RELAYED = 0x000C, 0x000D, 0x0012, 0x0016
USERNAME, MESSAGE_INTEGRITY = 0x0006, 0x0008
REALM, NONCE, REQUESTED_TRANSPORT, CONNECTION_ID = 0x0014, 0x0015, 0x0019, 0x002A
TCP = 6
WAIT = 10.0


def xor_address(host, port):
    raw = socket.inet_aton(host)
    x = bytes(a ^ b for a, b in zip(raw, struct.pack("!I", MAGIC)))
    return struct.pack("!BBH", 0, 1, port ^ (MAGIC >> 16)) + x


def read_xor_address(value):
    port = struct.unpack("!H", value[2:4])[0] ^ (MAGIC >> 16)
    raw = bytes(a ^ b for a, b in zip(value[4:8], struct.pack("!I", MAGIC)))
    return socket.inet_ntoa(raw), port


def read_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def read_message(sock):
    head = read_exact(sock, 20)
    length = struct.unpack("!H", head[2:4])[0]
    return parse(head + read_exact(sock, length))


def closed_within(sock, seconds):
    """Whether the other side closes `sock` within `seconds` (data is read past)."""
    sock.settimeout(seconds)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            if not sock.recv(4096):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
    return False


class Client:
    """One TCP connection to the server speaking STUN with long-term credentials."""

    def __init__(self, host, port, user, password):
        self.sock = socket.create_connection((host, port), timeout=WAIT)
        self.user, self.password = user.encode(), password
        self.realm = self.nonce = None
        self.attempts = []

    def key(self):
        return hashlib.md5(self.user + b":" + self.realm + b":" + self.password.encode()).digest()

    def message(self, method, body, signed):
        tid = os.urandom(12)
        if signed:
            body += attr(USERNAME, self.user) + attr(REALM, self.realm) + attr(NONCE, self.nonce)
            head = header(method, len(body) + 24, tid)
            mac = hmac.new(self.key(), head + body, hashlib.sha1).digest()
            body += attr(MESSAGE_INTEGRITY, mac)
        return header(method, len(body), tid) + body

    def request(self, method, body=b""):
        """Sends a request (signed once a challenge gave realm and nonce, again after a
        401/438) and returns (error code or None, attributes) of its answer."""
        for _ in range(3):
            self.sock.sendall(self.message(method, body, self.nonce is not None))
            kind, _, attrs = self.answer(method)
            code = error_code(attrs) if kind == method | ERROR else None
            if code in (401, 438) and first(attrs, NONCE):
                self.realm = first(attrs, REALM) or self.realm
                self.nonce = first(attrs, NONCE)
                continue
            return code, attrs
        raise RuntimeError("challenged three times")

    def answer(self, method):
        """The next answer to `method`; indications on the way are kept."""
        while True:
            kind, tid, attrs = read_message(self.sock)
            if kind == CONNECTION_ATTEMPT | INDICATION:
                self.attempts.append(attrs)
                continue
            return kind, tid, attrs

    def allocate_tcp(self):
        code, attrs = self.request(ALLOCATE, attr(REQUESTED_TRANSPORT, bytes([TCP, 0, 0, 0])))
        assert code is None, f"Allocate failed: {code}"
        return read_xor_address(first(attrs, XOR_RELAYED))


def data_connection(host, port, user, password, connection_id):
    """A new connection that binds to `connection_id`: (socket, error code or None)."""
    data = Client(host, port, user, password)
    code, _ = data.request(CONNECTION_BIND, attr(CONNECTION_ID, connection_id))
    return data.sock, code


def echo_through(sock, size):
    """Sends `size` bytes and reads as many back; whether they came back unchanged."""
    payload = os.urandom(size)
    sock.sendall(payload)
    sock.settimeout(WAIT)
    return read_exact(sock, size) == payload


def scenario_connect(host, port, user, password, echo_port, closed_port, denied_ip):
    control = Client(host, port, user, password)
    relay = control.allocate_tcp()
    report = {"relay": list(relay)}
    code, attrs = control.request(CONNECT, attr(XOR_PEER, xor_address("127.0.0.1", echo_port)))
    report["connect"] = code
    data, report["bind"] = data_connection(host, port, user, password, first(attrs, CONNECTION_ID))
    report["echoed"] = echo_through(data, 100_000)
    again, _ = control.request(CONNECT, attr(XOR_PEER, xor_address("127.0.0.1", echo_port)))
    report["connect_again"] = again
    report["connect_closed_port"], _ = control.request(
        CONNECT, attr(XOR_PEER, xor_address("127.0.0.1", closed_port)))
    report["connect_denied"], _ = control.request(
        CONNECT, attr(XOR_PEER, xor_address(denied_ip, echo_port)))
    channel = attr(CHANNEL_NUMBER, struct.pack("!HH", 0x4000, 0))
    report["channel_bind"], _ = control.request(
        CHANNEL_BIND, channel + attr(XOR_PEER, xor_address("127.0.0.1", echo_port)))
    _, report["bind_unknown_id"] = data_connection(
        host, port, user, password, struct.pack("!I", 0x0BADBEEF ^ struct.unpack("!I", first(attrs, CONNECTION_ID))[0]))
    report["bind_on_control"], _ = control.request(CONNECTION_BIND, attr(CONNECTION_ID, first(attrs, CONNECTION_ID)))
    report["refresh"], _ = control.request(REFRESH, attr(LIFETIME, struct.pack("!I", 0)))
    report["data_closed_after_refresh"] = closed_within(data, WAIT)
    return report


def scenario_rate(host, port, user, password, echo_port, size):
    control = Client(host, port, user, password)
    control.allocate_tcp()
    _, attrs = control.request(CONNECT, attr(XOR_PEER, xor_address("127.0.0.1", echo_port)))
    data, _ = data_connection(host, port, user, password, first(attrs, CONNECTION_ID))
    started = time.monotonic()
    payload = os.urandom(size)
    data.settimeout(60)
    received = bytearray()
    # Send and read in turns so neither side's buffers fill and stall the other.
    for offset in range(0, size, 16384):
        data.sendall(payload[offset:offset + 16384])
        while len(received) < min(size, offset + 16384) - 65536:
            received += data.recv(65536)
    while len(received) < size:
        chunk = data.recv(65536)
        if not chunk:
            break
        received += chunk
    return {"echoed": bytes(received) == payload, "seconds": time.monotonic() - started}


def scenario_accept(host, port, user, password):
    control = Client(host, port, user, password)
    relay = control.allocate_tcp()
    report = {}
    stranger = socket.create_connection(relay, timeout=WAIT)
    report["unpermitted_closed"] = closed_within(stranger, WAIT)
    code, _ = control.request(CREATE_PERMISSION, attr(XOR_PEER, xor_address("127.0.0.1", 9)))
    report["permission"] = code
    report["announced_unpermitted"] = len(control.attempts)
    peer = socket.create_connection(relay, timeout=WAIT)
    control.sock.settimeout(WAIT)
    kind, _, attrs = read_message(control.sock)
    report["indication"] = kind == CONNECTION_ATTEMPT | INDICATION
    report["announced_peer_is_it"] = read_xor_address(first(attrs, XOR_PEER)) == peer.getsockname()
    data, report["bind"] = data_connection(host, port, user, password, first(attrs, CONNECTION_ID))
    payload = os.urandom(50_000)
    peer.sendall(payload)
    data.settimeout(WAIT)
    report["peer_to_client"] = read_exact(data, len(payload)) == payload
    reply = os.urandom(70_000)
    data.sendall(reply)
    peer.settimeout(WAIT)
    report["client_to_peer"] = read_exact(peer, len(reply)) == reply
    data.close()
    report["peer_closed_with_client"] = closed_within(peer, WAIT)
    return report


def scenario_unbound(host, port, user, password):
    control = Client(host, port, user, password)
    relay = control.allocate_tcp()
    control.request(CREATE_PERMISSION, attr(XOR_PEER, xor_address("127.0.0.1", 9)))
    peer = socket.create_connection(relay, timeout=WAIT)
    control.sock.settimeout(WAIT)
    _, _, attrs = read_message(control.sock)
    started = time.monotonic()
    closed = closed_within(peer, 45)
    report = {"closed": closed, "waited_at_least_30s": time.monotonic() - started >= 29}
    _, report["late_bind"] = data_connection(host, port, user, password, first(attrs, CONNECTION_ID))
    return report


def scenario_udp(host, port, user, password):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(WAIT)
    client = Client.__new__(Client)
    client.user, client.password, client.realm, client.nonce = user.encode(), password, None, None
    client.attempts = []
    body = attr(REQUESTED_TRANSPORT, bytes([TCP, 0, 0, 0]))
    for _ in range(2):
        sock.sendto(client.message(ALLOCATE, body, client.nonce is not None), (host, port))
        _, _, attrs = parse(sock.recv(2048))
        code = error_code(attrs)
        if code == 401:
            client.realm, client.nonce = first(attrs, REALM), first(attrs, NONCE)
            continue
        return {"allocate": code}
    return {"allocate": 401}


def scenario_disabled(host, port, user, password):
    control = Client(host, port, user, password)
    code, _ = control.request(ALLOCATE, attr(REQUESTED_TRANSPORT, bytes([TCP, 0, 0, 0])))
    return {"allocate": code}


def main():
    host, port, user, password, scenario, *rest = sys.argv[1:]
    port = int(port)
    if scenario == "connect":
        report = scenario_connect(host, port, user, password, int(rest[0]), int(rest[1]), rest[2])
    elif scenario == "rate":
        report = scenario_rate(host, port, user, password, int(rest[0]), int(rest[1]))
    else:
        report = globals()["scenario_" + scenario](host, port, user, password)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
