#!/usr/bin/env python3
"""A TURN client for dual allocations (RFC 8656 §7.1, ADDITIONAL-ADDRESS-FAMILY),
written apart from tern's own code from the RFC's text (Python's hashlib and hmac,
nothing shared), for tests/dual_stack.rs. It is its own pair of peers: UDP sockets on
127.0.0.1 and ::1, so it sees the source address the relay used for each.

    rfc8656_dual_client.py HOST PORT USER PASSWORD MODE [ARGS...]

MODE is one of:
    relay PEER4_PORT PEER6_PORT
              Allocate with ADDITIONAL-ADDRESS-FAMILY IPv6; CreatePermission for both
              peers in one request; a Send indication to each and an answer from each;
              ChannelBind to each and ChannelData both ways; then Refresh with
              REQUESTED-ADDRESS-FAMILY IPv4 and LIFETIME 0 (that family ends), the
              IPv6 peer still relayed, the IPv4 one 443; then Refresh LIFETIME 0.
    refused   Allocates RFC 8656 §7.2 refuses with 400: ADDITIONAL-ADDRESS-FAMILY
              IPv4; with REQUESTED-ADDRESS-FAMILY; with EVEN-PORT R=1; with
              RESERVATION-TOKEN.
    partial   Allocate with ADDITIONAL-ADDRESS-FAMILY IPv6 and report what it got,
              ADDRESS-ERROR-CODE included (then LIFETIME 0).
    echo PEER4_IP PEER6_IP PEER_PORT COUNT
              A dual allocation with a channel to an echo peer of each family
              elsewhere; COUNT ChannelData on each, counting the echoes that come
              back on the same channel (then LIFETIME 0).

Prints one JSON object. Loopback only; every wait is bounded.
"""

import hashlib
import hmac
import json
import os
import socket
import struct
import sys

from stun_codec import MAGIC, attr, error_code, first, header, parse

ALLOCATE, REFRESH, SEND, DATA = 0x0003, 0x0004, 0x0006, 0x0007
CREATE_PERMISSION, CHANNEL_BIND = 0x0008, 0x0009
INDICATION = 0x0010
CHANNEL_NUMBER, LIFETIME, XOR_PEER = 0x000C, 0x000D, 0x0012
USERNAME, MESSAGE_INTEGRITY = 0x0006, 0x0008
REALM, NONCE, XOR_RELAYED, DATA_ATTR = 0x0014, 0x0015, 0x0016, 0x0013
REQUESTED_FAMILY, EVEN_PORT, REQUESTED_TRANSPORT = 0x0017, 0x0018, 0x0019
RESERVATION_TOKEN = 0x0022
ADDITIONAL_FAMILY, ADDRESS_ERROR_CODE = 0x8000, 0x8001
IPV4, IPV6 = 0x01, 0x02
TIMEOUT = 1.0


def family_attr(kind, family):
    return attr(kind, bytes([family, 0, 0, 0]))


def xor_address(kind, addr, tid):
    """An XOR-PEER-ADDRESS style attribute (RFC 8489 §14.2)."""
    ip = socket.inet_pton(socket.AF_INET6 if ":" in addr[0] else socket.AF_INET, addr[0])
    mask = struct.pack("!I", MAGIC) + tid
    family = IPV6 if len(ip) == 16 else IPV4
    port = addr[1] ^ (MAGIC >> 16)
    masked = bytes(b ^ m for b, m in zip(ip, mask))
    return attr(kind, struct.pack("!BBH", 0, family, port) + masked)


def read_xor_address(value, tid):
    family, port = value[1], struct.unpack("!H", value[2:4])[0] ^ (MAGIC >> 16)
    mask = struct.pack("!I", MAGIC) + tid
    raw = bytes(b ^ m for b, m in zip(value[4:], mask))
    if family == IPV4 and len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw), port
    if family == IPV6 and len(raw) == 16:
        return socket.inet_ntop(socket.AF_INET6, raw), port
    raise ValueError("bad XOR address")


def values(attrs, kind):
    return [v for t, v, _ in attrs if t == kind]


def address_error(attrs):
    """ADDRESS-ERROR-CODE (RFC 8656 §18.12): family, 13 reserved bits, class (3 bits),
    number, reason phrase."""
    v = first(attrs, ADDRESS_ERROR_CODE)
    if v is None:
        return None
    return {"family": v[0], "code": (v[2] & 7) * 100 + v[3], "reason": v[4:].decode()}


def encoded(attrs, tid):
    """The attributes' bytes; an XOR address is given as a function of the
    transaction id it is masked with."""
    return b"".join(a(tid) if callable(a) else a for a in attrs)


def verifies(data, attrs, key):
    """Whether MESSAGE-INTEGRITY is the HMAC-SHA1 of what it covers (RFC 8489 §14.5)."""
    for t, v, offset in attrs:
        if t == MESSAGE_INTEGRITY:
            covered = data[:2] + struct.pack("!H", offset - 20 + 24) + data[4:offset]
            return hmac.compare_digest(hmac.new(key, covered, hashlib.sha1).digest(), v)
    return False


class Client:
    def __init__(self, host, port, user, password):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect((host, int(port)))
        self.user = user.encode()
        self.password = password.encode()
        self.realm = self.nonce = self.key = None
        # What arrived while waiting for something else: ChannelData and indications.
        self.pending = []

    def receive(self):
        try:
            return self.sock.recv(65536)
        except socket.timeout:
            return None

    def exchange(self, method, tid, body):
        """Sends the request (three times at most) and returns its answer."""
        message = header(method, len(body), tid) + body
        for _ in range(3):
            self.sock.send(message)
            for _ in range(20):
                data = self.receive()
                if data is None:
                    break
                answer = parse(data)
                if answer is not None and answer[1] == tid:
                    return data, answer
                self.pending.append(data)
        raise SystemExit(json.dumps({"error": "no answer to method %d" % method}))

    def request(self, method, attrs):
        """A signed request (long-term credentials, RFC 8489 §9.2), the nonce learnt
        from the first 401; returns (code, attributes, integrity verified)."""
        if self.nonce is None:
            tid = os.urandom(12)
            _, (_, _, challenge) = self.exchange(method, tid, encoded(attrs, tid))
            self.realm, self.nonce = first(challenge, REALM), first(challenge, NONCE)
            self.key = hashlib.md5(self.user + b":" + self.realm + b":" + self.password).digest()
        tid = os.urandom(12)
        body = encoded(attrs, tid)
        body += attr(USERNAME, self.user) + attr(REALM, self.realm) + attr(NONCE, self.nonce)
        covered = header(method, len(body) + 24, tid) + body
        body += attr(MESSAGE_INTEGRITY, hmac.new(self.key, covered, hashlib.sha1).digest())
        data, (kind, _, answer) = self.exchange(method, tid, body)
        return error_code(answer), answer, tid, verifies(data, answer, self.key)

    def indication(self, method, attrs):
        tid = os.urandom(12)
        body = encoded(attrs, tid)
        self.sock.send(header(method | INDICATION, len(body), tid) + body)

    def relayed(self):
        """The next relayed datagram: ("channel", number, payload) or
        ("data", peer, payload); None when nothing comes."""
        for _ in range(20):
            data = self.pending.pop(0) if self.pending else self.receive()
            if data is None:
                return None
            if 0x40 <= data[0] < 0x50:
                number, length = struct.unpack("!HH", data[:4])
                return "channel", number, data[4:4 + length]
            message = parse(data)
            if message and message[0] == DATA | INDICATION:
                _, tid, attrs = message
                peer = read_xor_address(first(attrs, XOR_PEER), tid)
                return "data", list(peer), first(attrs, DATA_ATTR)
        return None


def peer_socket(ip, port):
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.settimeout(TIMEOUT)
    sock.bind((ip, port))
    return sock


def peer_receives(sock):
    """What reached the peer: [source ip, port], payload; None when nothing did."""
    try:
        data, source = sock.recvfrom(65536)
    except socket.timeout:
        return None
    return [source[0], source[1]], data


def transport():
    return attr(REQUESTED_TRANSPORT, bytes([17, 0, 0, 0]))


def allocate_dual(client, extra=()):
    code, attrs, tid, verified = client.request(
        ALLOCATE, [transport(), family_attr(ADDITIONAL_FAMILY, IPV6), *extra])
    relays = [list(read_xor_address(v, tid)) for v in values(attrs, XOR_RELAYED)]
    return code, relays, attrs, verified


def relay_mode(client, peer4_port, peer6_port):
    out = {}
    peers = {"ipv4": ("127.0.0.1", peer4_port), "ipv6": ("::1", peer6_port)}
    sockets = {name: peer_socket(*addr) for name, addr in peers.items()}
    code, relays, attrs, verified = allocate_dual(client)
    out["allocate"] = code
    out["allocate_verified"] = verified
    out["relays"] = relays
    out["address_error"] = address_error(attrs)
    if code is not None or len(relays) != 2:
        return out
    relay_of = {"ipv4": relays[0], "ipv6": relays[1]}

    # Both peers' permissions in one CreatePermission.
    out["permissions"] = client.request(
        CREATE_PERMISSION,
        [lambda tid, a=a: xor_address(XOR_PEER, a, tid) for a in peers.values()])[0]

    def round_trip(name, send, answer_kind):
        """`send` a payload towards peer `name`; the peer answers to the source it saw.
        Returns what each end saw."""
        payload = ("%s via %s" % (name, answer_kind)).encode()
        send(payload)
        got = peer_receives(sockets[name])
        seen = {"peer_saw_from": None, "peer_got": False, "client_got": None}
        if got is None:
            return seen
        source, data = got
        seen["peer_saw_from"] = source
        seen["peer_got"] = data == payload
        reply = b"echo " + data
        sockets[name].sendto(reply, tuple(source))
        relayed = client.relayed()
        if relayed is not None:
            kind, who, data = relayed
            seen["client_got"] = [kind, who, data == reply]
        seen["relay"] = relay_of[name]
        return seen

    for name, addr in peers.items():
        out["send_" + name] = round_trip(name, lambda p, a=addr: client.indication(
            SEND, [lambda tid: xor_address(XOR_PEER, a, tid), attr(DATA_ATTR, p)]), "send")

    numbers = {"ipv4": 0x4001, "ipv6": 0x4002}
    for name, addr in peers.items():
        number = numbers[name]
        code = client.request(CHANNEL_BIND, [
            attr(CHANNEL_NUMBER, struct.pack("!HH", number, 0)),
            lambda tid, a=addr: xor_address(XOR_PEER, a, tid)])[0]
        out["bind_" + name] = code

        def channel_data(payload, number=number):
            client.sock.send(struct.pack("!HH", number, len(payload)) + payload)
        out["channel_" + name] = round_trip(name, channel_data, "channel")

    # RFC 8656 §8.1: LIFETIME 0 naming IPv4 deletes that family only.
    code, attrs, _, _ = client.request(REFRESH, [
        family_attr(REQUESTED_FAMILY, IPV4), attr(LIFETIME, struct.pack("!I", 0))])
    out["refresh_ipv4_zero"] = code
    out["permission_ipv4_after"] = client.request(
        CREATE_PERMISSION, [lambda tid: xor_address(XOR_PEER, peers["ipv4"], tid)])[0]
    out["refresh_ipv4_after"] = client.request(REFRESH, [
        family_attr(REQUESTED_FAMILY, IPV4), attr(LIFETIME, struct.pack("!I", 600))])[0]
    out["channel_ipv6_after"] = round_trip("ipv6", lambda p: client.sock.send(
        struct.pack("!HH", numbers["ipv6"], len(p)) + p), "channel")
    out["delete"] = client.request(REFRESH, [attr(LIFETIME, struct.pack("!I", 0))])[0]
    return out


def refused_mode(client):
    cases = {
        "additional_ipv4": [family_attr(ADDITIONAL_FAMILY, IPV4)],
        "both_families": [family_attr(REQUESTED_FAMILY, IPV4), family_attr(ADDITIONAL_FAMILY, IPV6)],
        "even_port_reserve": [family_attr(ADDITIONAL_FAMILY, IPV6), attr(EVEN_PORT, b"\x80")],
        "reservation_token": [family_attr(ADDITIONAL_FAMILY, IPV6), attr(RESERVATION_TOKEN, os.urandom(8))],
    }
    out = {}
    for name, extra in cases.items():
        code, attrs, _, _ = client.request(ALLOCATE, [transport(), *extra])
        out[name] = {"code": code, "relays": len(values(attrs, XOR_RELAYED))}
    return out


def partial_mode(client):
    code, relays, attrs, verified = allocate_dual(client)
    out = {"allocate": code, "allocate_verified": verified, "relays": relays,
           "address_error": address_error(attrs)}
    if code is None:
        out["delete"] = client.request(REFRESH, [attr(LIFETIME, struct.pack("!I", 0))])[0]
    return out


def echo_mode(client, peer4, peer6, port, count):
    code, relays, _, _ = allocate_dual(client)
    out = {"allocate": code, "relays": relays}
    if code is not None:
        return out
    channels = {"ipv4": (0x4001, (peer4, port)), "ipv6": (0x4002, (peer6, port))}
    for name, (number, addr) in channels.items():
        out["bind_" + name] = client.request(CHANNEL_BIND, [
            attr(CHANNEL_NUMBER, struct.pack("!HH", number, 0)),
            lambda tid, a=addr: xor_address(XOR_PEER, a, tid)])[0]
    for name, (number, _) in channels.items():
        echoed = 0
        for i in range(count):
            payload = ("%s %d" % (name, i)).encode()
            client.sock.send(struct.pack("!HH", number, len(payload)) + payload)
            if client.relayed() == ("channel", number, payload):
                echoed += 1
        out["echoed_" + name] = echoed
    out["delete"] = client.request(REFRESH, [attr(LIFETIME, struct.pack("!I", 0))])[0]
    return out


def main():
    host, port, user, password, mode = sys.argv[1:6]
    client = Client(host, port, user, password)
    if mode == "relay":
        out = relay_mode(client, int(sys.argv[6]), int(sys.argv[7]))
    elif mode == "refused":
        out = refused_mode(client)
    elif mode == "echo":
        out = echo_mode(client, sys.argv[6], sys.argv[7], int(sys.argv[8]), int(sys.argv[9]))
    else:
        out = partial_mode(client)
    print(json.dumps(out))


main()
