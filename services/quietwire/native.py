"""The signaling hot path compiled with mypyc, used only when built from these very sources.

``tools/build_native.py`` (run by `make setup`) compiles its ``MODULES`` (the
SIP parser, the signaling modules a REGISTER or a call runs through, the Redis
client under them: most of signaling's CPU per operation was interpreted
bytecode) into ``_native/`` beside this file, with a manifest of each source's
SHA-256 and of the libraries built (a small one per module, and the one they
all load their code from: ``GROUP`` in tools/build_native.py). :func:`install`
(at ``import quietwire``) puts a finder first on ``sys.meta_path`` that loads
those libraries instead of the sources, if and only if every source still
hashes as the manifest says and the Python is the one they were built for.
Otherwise nothing changes: all of them run as Python (one edited module is
never shadowed by a stale build, nor mixed with the others' compiled code).
``QW_NATIVE=0`` turns it off (fuzzing instruments Python bytecode, not compiled
code).
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

PACKAGE = Path(__file__).resolve().parent
NATIVE = PACKAGE / "_native"


class NativeFinder:
    """Finds the compiled library of each module it was given (a meta path finder)."""

    def __init__(self, libraries: dict[str, Path]) -> None:
        self.libraries = libraries

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        library = self.libraries.get(fullname)
        if library is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(library))
        return importlib.util.spec_from_file_location(fullname, library, loader=loader)


def fresh_libraries(native: Path = NATIVE, sources: Path = PACKAGE.parent) -> dict[str, Path]:
    """Module name → compiled library, for all of the build or for none of it."""
    try:
        manifest = json.loads((native / "manifest.json").read_text(encoding="utf-8"))
        if manifest["cache_tag"] != sys.implementation.cache_tag:
            return {}
        for module, sha256 in manifest["sources"].items():
            source = sources / (module.replace(".", "/") + ".py")
            if hashlib.sha256(source.read_bytes()).hexdigest() != sha256:
                return {}
        libraries = {module: native / path for module, path in manifest["libraries"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}
    if not all(library.is_file() for library in libraries.values()):
        return {}
    return libraries


def install() -> bool:
    """Load the compiled modules from now on, when they are fresh; whether they are."""
    if os.environ.get("QW_NATIVE", "1") == "0":
        return False
    libraries = fresh_libraries()
    if libraries and not any(isinstance(f, NativeFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, NativeFinder(libraries))
    return bool(libraries)


#: Whether this process runs the compiled modules.
ACTIVE = install()
