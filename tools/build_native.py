"""Compile the SIP parser (``quietwire.protocols.sip``) with mypyc; `make setup` runs this.

The extension modules go to ``services/quietwire/_native`` (not into git), with a
manifest of the sources they were built from. :mod:`quietwire.native` loads them
in place of those sources only while every source is still exactly that; so an
edited parser, a machine without a C compiler or ``QW_NATIVE=0`` simply runs the
pure-Python modules, which stay the reference (and what fuzzing instruments).

mypyc comes with mypy (locked in uv.lock); it needs a C compiler and the Python
headers. Without them this says so and leaves the parser pure Python.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "services"
TARGET = SOURCES / "quietwire" / "_native"
#: The modules compiled: the parser's hot path, sans I/O and mypy-strict.
MODULES = (
    "quietwire.protocols.sip.errors",
    "quietwire.protocols.sip.grammar",
    "quietwire.protocols.sip.headers",
    "quietwire.protocols.sip.uri",
    "quietwire.protocols.sip.message",
    "quietwire.protocols.sip.framing",
    "quietwire.protocols.sip.digest",
    "quietwire.protocols.sip.transaction",
)


def source(module: str) -> Path:
    return SOURCES / (module.replace(".", "/") + ".py")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def module_name(library: Path) -> str:
    """``quietwire/protocols/sip/uri.cpython-311-….so`` → ``quietwire.protocols.sip.uri``."""
    return ".".join((*library.parts[:-1], library.name.split(".")[0]))


def toolchain_missing() -> str | None:
    """Why the modules cannot be compiled here, or None."""
    if shutil.which((sysconfig.get_config_var("CC") or "cc").split()[0]) is None:
        return "no C compiler"
    if not Path(sysconfig.get_paths()["include"], "Python.h").exists():
        return "no Python headers"
    return None


def build(work: Path) -> dict[str, str]:
    """Compile into ``work``: each library built (the modules and, for each,
    its ``<module>__mypyc`` group library), by module name, relative to ``work/lib``."""
    from mypyc.build import mypycify
    from setuptools import setup  # type: ignore[import-untyped]

    paths = [str(source(m).relative_to(SOURCES)) for m in MODULES]
    cwd = Path.cwd()
    os.environ["MYPY_CACHE_DIR"] = str(work / "mypy-cache")
    os.chdir(SOURCES)  # mypyc names modules after their paths from here
    try:
        # One module per group (separate): each library is the module itself,
        # with no shared library to find at the top level of sys.path.
        extensions = mypycify(paths, opt_level="3", separate=True, target_dir=str(work / "c"))
        setup(
            name="quietwire-native",
            ext_modules=extensions,
            script_args=[
                "--quiet",
                "build_ext",
                "--build-lib",
                str(work / "lib"),
                "--build-temp",
                str(work / "tmp"),
            ],
        )
    finally:
        os.chdir(cwd)
    lib = work / "lib"
    built = {
        module_name(path.relative_to(lib)): str(path.relative_to(lib)) for path in lib.rglob("*.so")
    }
    missing = [m for m in MODULES if m not in built]
    if missing:
        raise SystemExit(f"build_native: mypyc built no {', '.join(missing)}")
    return built


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--into",
        type=Path,
        default=TARGET,
        help="where the libraries and manifest go (an installed quietwire's _native)",
    )
    parser.add_argument(
        "--require", action="store_true", help="fail without a toolchain (an image build)"
    )
    args = parser.parse_args()
    target: Path = args.into.resolve()
    why = toolchain_missing()
    if why is not None:
        if args.require:
            print(f"build_native: {why}: cannot compile the SIP parser", file=sys.stderr)
            return 1
        print(f"build_native: {why}: the SIP parser runs as pure Python", file=sys.stderr)
        return 0
    shutil.rmtree(target, ignore_errors=True)
    sources = {m: digest(source(m)) for m in MODULES}  # what is compiled, not what is after
    with tempfile.TemporaryDirectory(prefix="qw-native-") as scratch:
        work = Path(scratch)
        built = build(work)
        for library in built.values():
            (target / library).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(work / "lib" / library, target / library)
    manifest = {
        "cache_tag": sys.implementation.cache_tag,
        "sources": sources,
        "libraries": built,
    }
    (target / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"build_native: {len(MODULES)} modules compiled into {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
