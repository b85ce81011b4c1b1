#!/usr/bin/env python3
"""An RFC 8489 TURN client written apart from tern's own code (Python's hashlib and
hmac, nothing shared), for tests/rfc8489.rs: one Allocate with the security features
of RFC 8489 §9.2 (PASSWORD-ALGORITHMS, PASSWORD-ALGORITHM, USERHASH,
MESSAGE-INTEGRITY-SHA256), then a Refresh with LIFETIME 0 when it was granted.

    rfc8489_client.py HOST PORT USER PASSWORD MODE

MODE is one of:
    sha256           USERNAME, PASSWORD-ALGORITHM SHA-256, MESSAGE-INTEGRITY-SHA256
    userhash         the same with USERHASH instead of USERNAME
    truncated        sha256 with MESSAGE-INTEGRITY-SHA256 cut to 16 bytes (a 400)
    md5-key          PASSWORD-ALGORITHM MD5, MESSAGE-INTEGRITY-SHA256
    chosen-only      PASSWORD-ALGORITHM without PASSWORD-ALGORITHMS (a 400)
    other-list       PASSWORD-ALGORITHMS not as offered (a 400)
    classic          no algorithm attributes, MESSAGE-INTEGRITY (RFC 5389)

Against a server that offers no PASSWORD-ALGORITHMS only `classic` makes sense.

Prints one JSON object: what the challenge offered, the Allocate's answer code (null
for success), whether its integrity attribute verified with the key, and the Refresh's
code. Loopback only; every wait is bounded.
"""

import base64
import hashlib
import hmac
import json
import os
import socket
import struct
import sys

from stun_codec import attr, error_code, first, header, parse

ALLOCATE, REFRESH = 0x0003, 0x0004
USERNAME, MESSAGE_INTEGRITY = 0x0006, 0x0008
LIFETIME, REALM, NONCE, XOR_RELAYED = 0x000D, 0x0014, 0x0015, 0x0016
REQUESTED_TRANSPORT = 0x0019
MI_SHA256, PASSWORD_ALGORITHM, USERHASH = 0x001C, 0x001D, 0x001E
PASSWORD_ALGORITHMS = 0x8002
MD5, SHA256 = 1, 2


def with_integrity(kind, tid, body, key, which, size):
    """body followed by the integrity attribute `which`, its MAC over a header whose
    length already counts it (RFC 8489 §14.5, §14.6)."""
    digest = hashlib.sha256 if which == MI_SHA256 else hashlib.sha1
    covered = header(kind, len(body) + 4 + size, tid) + body
    mac = hmac.new(key, covered, digest).digest()[:size]
    return body + attr(which, mac)


def exchange(sock, kind, tid, body):
    sock.send(header(kind, len(body), tid) + body)
    for _ in range(3):
        try:
            data = sock.recv(4096)
        except socket.timeout:
            sock.send(header(kind, len(body), tid) + body)
            continue
        answer = parse(data)
        if answer is not None and answer[1] == tid:
            return data, answer
    raise SystemExit(json.dumps({"error": "no answer"}))


def verifies(data, attrs, key):
    """Whether the answer's integrity attribute is the MAC of what it covers."""
    for which, digest in ((MI_SHA256, hashlib.sha256), (MESSAGE_INTEGRITY, hashlib.sha1)):
        for t, v, offset in attrs:
            if t == which:
                length = offset - 20 + 4 + len(v)
                covered = data[:2] + struct.pack("!H", length) + data[4:offset]
                return which, hmac.compare_digest(
                    hmac.new(key, covered, digest).digest()[:len(v)], v)
    return None, False


def main():
    host, port, user, password, mode = sys.argv[1:6]
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(1.0)
    sock.connect((host, int(port)))
    transport = attr(REQUESTED_TRANSPORT, bytes([17, 0, 0, 0]))

    _, (_, _, challenge) = exchange(sock, ALLOCATE, os.urandom(12), transport)
    realm, nonce = first(challenge, REALM), first(challenge, NONCE)
    offered = first(challenge, PASSWORD_ALGORITHMS)
    features = None
    if nonce.startswith(b"obMatJos2"):
        features = int.from_bytes(base64.b64decode(nonce[9:13]), "big")
    out = {
        "challenge": error_code(challenge),
        "offered": None if offered is None else [
            struct.unpack("!H", offered[i:i + 2])[0] for i in range(0, len(offered), 4)],
        "features": features,
    }

    algorithm = MD5 if mode in ("md5-key", "classic") else SHA256
    hash_fn = hashlib.md5 if algorithm == MD5 else hashlib.sha256
    key = hash_fn(b":".join([user.encode(), realm, password.encode()])).digest()

    def signed(kind, attrs):
        tid = os.urandom(12)
        body = b"".join(attrs)
        if mode == "userhash":
            body += attr(USERHASH, hashlib.sha256(user.encode() + b":" + realm).digest())
        else:
            body += attr(USERNAME, user.encode())
        body += attr(REALM, realm) + attr(NONCE, nonce)
        if mode == "other-list":
            body += attr(PASSWORD_ALGORITHMS, struct.pack("!HH", SHA256, 0))
        elif mode != "chosen-only" and mode != "classic":
            body += attr(PASSWORD_ALGORITHMS, offered)
        if mode != "classic":
            body += attr(PASSWORD_ALGORITHM, struct.pack("!HH", algorithm, 0))
        if mode == "classic":
            body = with_integrity(kind, tid, body, key, MESSAGE_INTEGRITY, 20)
        else:
            size = 16 if mode == "truncated" else 32
            body = with_integrity(kind, tid, body, key, MI_SHA256, size)
        return exchange(sock, kind, tid, body)

    data, (_, _, attrs) = signed(ALLOCATE, [transport])
    out["allocate"] = error_code(attrs)
    which, ok = verifies(data, attrs, key)
    out["answer_integrity"] = {MI_SHA256: "sha256", MESSAGE_INTEGRITY: "sha1"}.get(which)
    out["answer_verified"] = ok
    out["relayed"] = first(attrs, XOR_RELAYED) is not None
    if out["allocate"] is None:
        data, (_, _, attrs) = signed(REFRESH, [attr(LIFETIME, struct.pack("!I", 0))])
        out["refresh"] = error_code(attrs)
        out["refresh_verified"] = verifies(data, attrs, key)[1]
    print(json.dumps(out))


main()
