"""STUN's wire format (RFC 8489 §5, §14) for the Python test clients in this folder,
written from the RFC apart from tern's code: attributes, headers, parsing, ERROR-CODE.
"""

import struct

MAGIC = 0x2112A442
ERROR_CODE = 0x0009


def attr(kind, value):
    """One attribute, padded to four bytes."""
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * (-len(value) % 4)


def header(kind, length, tid):
    return struct.pack("!HHI", kind, length, MAGIC) + tid


def parse(data):
    """(type, transaction id, [(attribute type, value, offset)]), or None for what is
    not a whole STUN message."""
    if len(data) < 20:
        return None
    kind, length, magic = struct.unpack("!HHI", data[:8])
    if magic != MAGIC or len(data) != 20 + length:
        return None
    attrs, offset = [], 20
    while offset < len(data):
        t, n = struct.unpack("!HH", data[offset:offset + 4])
        attrs.append((t, data[offset + 4:offset + 4 + n], offset))
        offset += 4 + n + (-n % 4)
    return kind, data[8:20], attrs


def first(attrs, kind):
    return next((v for t, v, _ in attrs if t == kind), None)


def error_code(attrs):
    """ERROR-CODE's class * 100 + number, None when absent."""
    v = first(attrs, ERROR_CODE)
    return None if v is None else (v[2] & 7) * 100 + v[3]
