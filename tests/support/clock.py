"""A clock that tests move by hand, for code that takes an injected ``Clock``."""

from __future__ import annotations


class FakeClock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def now(self) -> float:
        return self.t
