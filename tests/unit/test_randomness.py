"""The pool of random bytes behind tags, branches and nonces: no two draws
share bytes, a block running out is refilled, a forked child draws its own."""

from __future__ import annotations

import os

from quietwire.protocols.randomness import POOL, RandomPool


def test_draws_take_fresh_bytes_and_refill() -> None:
    pool = RandomPool(block=16)
    draws = [pool.take(5) for _ in range(40)]  # 3 a block, then a new one
    assert all(len(d) == 5 for d in draws)
    assert len(set(draws)) == len(draws)
    assert len(pool.hex(8)) == 16 and int(pool.hex(8), 16) >= 0


def test_a_forked_child_draws_other_bytes() -> None:
    POOL.take(1)  # the parent holds a block
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next draw, to the parent
        os.write(write, POOL.take(16))
        os._exit(0)
    os.close(write)
    child = os.read(read, 16)
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 16 and child != POOL.take(16)
