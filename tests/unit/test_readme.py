"""The README's settings table names every setting there is."""

from __future__ import annotations

from pathlib import Path

import quietwire.cli  # noqa: F401 - imports every settings class
from quietwire.runtime.settings import env_name, known_settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_documented() -> None:
    text = README.read_text(encoding="utf-8")
    missing = sorted(env_name(name) for name in known_settings() if env_name(name) not in text)
    assert missing == []
