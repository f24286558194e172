"""The body of an agent's MQTT message: line protocol, plain or gzip-compressed.

A plain payload is UTF-8 line protocol, one line per `\\n`. A compressed one is that same text
as one gzip member (RFC 1952); it says so by its first two bytes, the gzip magic 1f 8b, which
plain line protocol never starts with (0x1f is a control character no measurement name may hold).
So the payload describes itself wherever it goes: over MQTT, in the agent's spool, and in a
dead-letter file.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Sequence
from typing import Literal

GZIP_MAGIC = b"\x1f\x8b"
Compression = Literal["none", "gzip"]
# Level 1: line protocol's repeated tags compress ~8x even so, at a fraction of level 6's CPU.
GZIP_LEVEL = 1


class PayloadError(ValueError):
    """A compressed payload that cannot be read, or that would inflate past the limit."""


def encode_lines(lines: Sequence[str], compression: Compression = "none") -> bytes:
    payload = ("\n".join(lines) + "\n").encode()
    if compression == "gzip":
        return gzip.compress(payload, compresslevel=GZIP_LEVEL, mtime=0)
    return payload


def is_compressed(payload: bytes) -> bool:
    return payload[:2] == GZIP_MAGIC


def decode(payload: bytes, max_bytes: int) -> bytes:
    """The line protocol a payload carries; a plain one is returned as is.

    Inflating stops at `max_bytes` (a small message must not become gigabytes in memory)."""
    if not is_compressed(payload):
        return payload
    inflater = zlib.decompressobj(wbits=31)  # gzip framing
    try:
        text = inflater.decompress(payload, max_bytes)
        if inflater.unconsumed_tail:
            raise PayloadError(f"inflates past max_message_bytes {max_bytes}")
        if not inflater.eof:
            raise PayloadError("gzip stream cut short")
    except zlib.error as exc:
        raise PayloadError(f"not valid gzip: {exc}") from None
    if inflater.unused_data:
        raise PayloadError(f"{len(inflater.unused_data)} bytes after the gzip stream")
    return text


def count_lines(payload: bytes) -> int:
    """Lines in a payload made by `encode_lines` (each ends in a newline)."""
    return decode(payload, 1 << 62).count(b"\n")
