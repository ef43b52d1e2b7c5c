"""Check that a hash-pinned requirements file was compiled from its ``.in`` file.

``tools/uv.txt`` and ``tools/deploy-downloads.txt`` are written by ``make lock``
(``uv pip compile --generate-hashes``) from exact ``name==version`` pins. Fresh
means: the same pins on both sides, each with at least one hash.

    python tools/check_pins.py tools/uv.in tools/uv.txt ...
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


def normalise(name: str) -> str:
    """PEP 503 names: runs of ``-_.`` are one ``-``, lower case."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        match = PIN.match(line.strip())
        if match:
            found[normalise(match[1])] = match[2]
    return found


def stale(source: Path, compiled: Path) -> str | None:
    """Why ``compiled`` is not the compilation of ``source``, or None."""
    if not compiled.exists():
        return f"{compiled} is missing"
    if pins(source) != pins(compiled):
        return f"{compiled} does not pin what {source} asks for"
    text = compiled.read_text()
    if text.count("--hash=sha256:") < len(pins(compiled)):
        return f"{compiled} has pins without hashes"
    return None


def main(paths: list[str]) -> int:
    if not paths or len(paths) % 2:
        print("usage: check_pins.py SOURCE.in COMPILED.txt [...]", file=sys.stderr)
        return 2
    problems = [
        problem
        for source, compiled in zip(paths[::2], paths[1::2], strict=True)
        if (problem := stale(Path(source), Path(compiled)))
    ]
    for problem in problems:
        print(f"{problem}: run `make lock` and commit the result", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
