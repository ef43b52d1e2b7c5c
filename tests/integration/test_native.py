"""The compiled SIP parser is loaded only when built from the sources as they are
(quietwire/native.py): a stale or foreign build never shadows the Python."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from quietwire.native import fresh_libraries

MODULE = "quietwire.protocols.sip.grammar"


def build(tmp: Path, source_text: str, *, cache_tag: str | None = None) -> tuple[Path, Path]:
    """A source tree with one module and a build manifest made from ``source_text``."""
    sources, native = tmp / "services", tmp / "native"
    source = sources / "quietwire/protocols/sip/grammar.py"
    source.parent.mkdir(parents=True)
    source.write_text("X = 1\n")
    library = native / "quietwire/protocols/sip/grammar.cpython-311-x86_64-linux-gnu.so"
    library.parent.mkdir(parents=True)
    library.write_bytes(b"\x7fELF")
    manifest = {
        "cache_tag": cache_tag or sys.implementation.cache_tag,
        "sources": {MODULE: hashlib.sha256(source_text.encode()).hexdigest()},
        "libraries": {MODULE: str(library.relative_to(native))},
    }
    (native / "manifest.json").write_text(json.dumps(manifest))
    return native, sources


def test_a_build_of_these_sources_is_used(tmp_path: Path) -> None:
    native, sources = build(tmp_path, "X = 1\n")
    assert list(fresh_libraries(native, sources)) == [MODULE]


def test_an_edited_source_runs_as_python(tmp_path: Path) -> None:
    native, sources = build(tmp_path, "X = 0\n")
    assert fresh_libraries(native, sources) == {}


def test_a_build_for_another_python_is_not_used(tmp_path: Path) -> None:
    native, sources = build(tmp_path, "X = 1\n", cache_tag="cpython-30")
    assert fresh_libraries(native, sources) == {}


def test_a_missing_library_or_manifest_runs_as_python(tmp_path: Path) -> None:
    native, sources = build(tmp_path, "X = 1\n")
    next(native.rglob("*.so")).unlink()
    assert fresh_libraries(native, sources) == {}
    (native / "manifest.json").unlink()
    assert fresh_libraries(native, sources) == {}
