"""A real `quietwire up` whose services' JSON log lines a test reads back.

:func:`logged_platform` is :func:`tests.conftest.running_platform` with the
log lines in ``up.log`` beside the state directory; :func:`log_lines` reads
them. A module fixture runs one for all its tests::

    @pytest.fixture(scope="module")
    def workers(tmp_path_factory):
        with logged_platform(tmp_path_factory.mktemp("workers"), ("--signaling", "2")) as up:
            yield up
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tests.conftest import Platform, running_platform

#: The log file's name, in the directory given to :func:`logged_platform`.
LOG_NAME = "up.log"


def up_log(platform: Platform) -> Path:
    """The file a platform started by :func:`logged_platform` logs to."""
    return platform.state.parent / LOG_NAME


@contextlib.contextmanager
def logged_platform(
    directory: Path, up_args: Sequence[str] = (), **settings: str
) -> Iterator[Platform]:
    """`quietwire up` in ``directory`` (``up_args`` more of its options, ``settings``
    as QW_* environment), its log lines in :func:`up_log`; stopped after."""
    with (
        (directory / LOG_NAME).open("w") as stderr,
        running_platform(directory, stderr, up_args, **settings) as platform,
    ):
        yield platform


def log_lines(platform: Platform) -> list[dict[str, Any]]:
    """Every JSON line logged so far by ``platform`` (`up` and its services)."""
    text = up_log(platform).read_text()
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]
