"""Fixtures of the attack tier, taken from the tiers that define them (not copied)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Platform, running_platform
from tests.integration.conftest import one, pki

__all__ = ["one", "pki", "platform"]


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """`quietwire up` (signaling, keyagreement, relay, Redis), shared by a module's tests."""
    with running_platform(tmp_path_factory.mktemp("platform")) as up:
        yield up
