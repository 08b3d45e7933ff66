"""Stable seeds: the same integers on every machine, Python version and process.

Both seeds are the first 8 bytes (little endian) of BLAKE2b over a text,
unlike Python's ``hash``, which changes between processes. The texts differ,
and the values are part of genda's reproducibility (a member is regenerated
bit for bit from its seed), so neither may change:

* :func:`member_seed`: ``"genda-member:{window_seed}:{member}"``, 64 bits;
* :func:`stable_seed`: ``"genda:"`` and the ``repr`` of each part joined by
  ``":"``, cut to 63 bits.
"""

from __future__ import annotations

import hashlib

from genda.errors import InvalidValueError

__all__ = ["member_seed", "stable_seed"]


def _digest64(text: str) -> int:
    """The first 8 bytes of BLAKE2b over ``text`` (UTF-8), little endian."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def member_seed(window_seed: int, member: int) -> int:
    """Stable 64-bit seed of ``member`` in the window ``window_seed``.

    Independent of the batch or worker the member lands in.

    Raises:
        TypeError: ``window_seed`` or ``member`` is not an int (a bool is not).
        InvalidValueError: a negative ``member``.
    """
    for name, value in (("window_seed", window_seed), ("member", member)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")  # a caller's bug
    if member < 0:
        raise InvalidValueError(f"member index must be non-negative, got {member}")
    return _digest64(f"genda-member:{window_seed}:{member}")


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from ``parts`` (their ``repr``).

    Used for the per-step training generators, the fixed validation noise,
    the epoch shuffles and the window seeds.
    """
    return _digest64("genda:" + ":".join(repr(p) for p in parts)) & (2**63 - 1)
