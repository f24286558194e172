"""Rendezvous (highest-random-weight) hashing: which of several owners takes a key.

Each owner has a seed; a key goes to the owner whose seed, mixed with the key's hash, scores
highest. Adding or removing an owner moves only the keys that owner gains or loses, and the
answer is the same in every process and on every host (blake2b, not Python's salted hash).
Used for an agent's workers (agent/workers.py) and the collector's shards (collector/shards.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

_MASK = (1 << 64) - 1


def digest(data: bytes) -> int:
    """A stable 64-bit hash: a key's, or an owner's seed from its name."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def _mix(value: int) -> int:
    """splitmix64's finaliser: a well-spread 64-bit score from a key hash and an owner seed."""
    value = (value ^ (value >> 30)) * 0xBF58476D1CE4E5B9 & _MASK
    value = (value ^ (value >> 27)) * 0x94D049BB133111EB & _MASK
    return value ^ (value >> 31)


def owner(key: bytes, seeds: Sequence[int]) -> int:
    """The index into `seeds` of the owner that takes `key` (one hash, a mix per owner)."""
    hashed = digest(key)
    scores = [_mix(hashed ^ seed) for seed in seeds]
    return scores.index(max(scores))
