"""Random bytes for tags, branches and nonces, from ``os.urandom`` a block at a time.

Every SIP message we make takes a few random bytes (a To tag, a Via branch, a
nonce's random part): as ``secrets.token_hex`` each was a system call and
interpreted frames. Here the operating system's generator fills a block, and
each draw takes the next bytes of it, never twice. None of these values is a
secret; what matters is that they are unpredictable and unique, which the
source's bytes are. A forked child starts on a block of its own (two workers
drawing the same tags would collide).
"""

from __future__ import annotations

import os
from typing import Final

#: Bytes read from the operating system at once.
BLOCK: Final = 4096


class RandomPool:
    def __init__(self, block: int = BLOCK) -> None:
        self.block = block
        self._bytes = b""
        self._at = 0

    def take(self, n: int) -> bytes:
        """``n`` random bytes (``n`` at most :attr:`block`) none other draw gets."""
        at = self._at
        if at + n > len(self._bytes):
            self._bytes, at = os.urandom(self.block), 0
        self._at = at + n
        return self._bytes[at : at + n]

    def hex(self, n: int) -> str:
        """:meth:`take`'s bytes in hex, as ``secrets.token_hex(n)``."""
        return self.take(n).hex()

    def forget(self) -> None:
        """Drop what is left of the block (in a child after a fork)."""
        self._bytes, self._at = b"", 0


#: The process's pool.
POOL: Final = RandomPool()
os.register_at_fork(after_in_child=POOL.forget)
