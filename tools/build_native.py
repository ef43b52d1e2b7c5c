"""Compile the signaling hot path (:data:`MODULES`) with mypyc; `make setup` runs this.

Which modules and why: :data:`MODULES`, the SIP parser and every module a
REGISTER or a call's messages run through in the signaling service (issue 14:
interpreted bytecode was most of its CPU per operation). The extension modules
go to ``services/quietwire/_native`` (not into git), with a manifest of the
sources they were built from. :mod:`quietwire.native` loads them in place of
those sources only while every one of them is still exactly that; so one edited
module, a machine without a C compiler or ``QW_NATIVE=0`` simply runs all of
them as Python, which stays the reference (and what fuzzing instruments).

Compiled classes cannot be subclassed, monkeypatched or given new attributes by
Python code, and compiled coroutines must not await while they handle an
exception (quietwire/runtime/aio.py; tests/unit/test_native_sources.py checks).

mypyc comes with mypy (locked in uv.lock); it needs a C compiler and the Python
headers. Without them this says so and leaves those modules pure Python.
`--sources` prints the source files (the Makefile's prerequisites).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import shutil
import sys
import sysconfig
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "services"
TARGET = SOURCES / "quietwire" / "_native"
#: The modules compiled: every module a REGISTER or a call's messages run through
#: in the signaling service, from a flow's bytes to Redis and back (issue 14:
#: interpreted bytecode was most of its CPU per operation). All are mypy-strict.
#: What runs once (settings, service start, gRPC servicers), in the background
#: (heartbeats) or per moved call (migration) stays Python.
MODULES = (
    # The SIP parser and transactions: sans I/O.
    "quietwire.protocols.clock",
    "quietwire.protocols.hmac_sha256",
    "quietwire.protocols.randomness",
    "quietwire.protocols.sip.errors",
    "quietwire.protocols.sip.grammar",
    "quietwire.protocols.sip.headers",
    "quietwire.protocols.sip.uri",
    "quietwire.protocols.sip.message",
    "quietwire.protocols.sip.framing",
    "quietwire.protocols.sip.digest",
    "quietwire.protocols.sip.nonces",
    "quietwire.protocols.sip.transaction",
    "quietwire.protocols.sip.extensions",
    # Redis: the multiplexed connection and the Lua scripts on it.
    "quietwire.runtime.aio",
    "quietwire.runtime.metrics",
    "quietwire.runtime.redismux",
    "quietwire.runtime.redisclient",
    # Signaling: flows, limits, digest, registrar, proxy, dialogs.
    "quietwire.signaling.admission",
    "quietwire.signaling.limits",
    "quietwire.signaling.lockout",
    "quietwire.signaling.flows",
    "quietwire.signaling.tokens",
    "quietwire.signaling.media",
    "quietwire.signaling.builders",
    "quietwire.signaling.dialogs",
    "quietwire.signaling.early",
    "quietwire.signaling.targets",
    "quietwire.signaling.contexts",
    "quietwire.signaling.routing",
    "quietwire.signaling.ackcopies",
    "quietwire.signaling.failures",
    "quietwire.signaling.answers",
    "quietwire.signaling.transactions",
    "quietwire.signaling.uac",
    "quietwire.signaling.users",
    "quietwire.signaling.locations",
    "quietwire.signaling.locator",
    "quietwire.signaling.auth",
    "quietwire.signaling.registrar",
    "quietwire.signaling.proxy",
    "quietwire.signaling.core",
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


#: The one library all of :data:`MODULES` are compiled into (each module is then a
#: small library that loads its part of it). One library, not one per module:
#: mypyc's runtime (its lib-rt helpers, called for every string, dict and list
#: operation) is linked in once instead of 40 times, and the modules call each
#: other directly. The code is 3.5 MB instead of 8.8 MB, and what a message runs
#: through is in one place: signaling spent about 10 % less CPU per REGISTER and
#: call for 2 % fewer instructions (2026-12-07, README (f)). Not dotted: mypyc
#: writes a dotted group's header where its multi-file C cannot include it.
GROUP = "quietwire_hotpath"


def compile_side_by_side(
    compiler: Any,
    sources: list[str],
    output_dir: str | None = None,
    macros: Any = None,
    include_dirs: Any = None,
    debug: bool = False,
    extra_preargs: Any = None,
    extra_postargs: Any = None,
    depends: Any = None,
) -> list[str]:
    """``CCompiler.compile`` (setuptools' distutils, as its own body does it), the
    object files compiled one per core: setuptools compiles one extension's C
    files one after another, and :data:`GROUP`'s library has one per module."""
    macros, objects, extra_postargs, pp_opts, todo = compiler._setup_compile(
        output_dir, macros, include_dirs, sources, depends, extra_postargs
    )
    cc_args = compiler._get_cc_args(pp_opts, debug, extra_preargs)

    def one(obj: str) -> None:
        src, ext = todo[obj]
        compiler._compile(obj, src, ext, cc_args, extra_postargs, pp_opts)

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(one, [obj for obj in objects if obj in todo]))
    return list(objects)


def build(work: Path) -> dict[str, str]:
    """Compile into ``work``: each library built (the modules and :data:`GROUP`'s
    ``__mypyc`` library), by module name, relative to ``work/lib``."""
    from mypyc.build import mypycify
    from setuptools import setup  # type: ignore[import-untyped]
    from setuptools.command.build_ext import build_ext  # type: ignore[import-untyped]

    class BuildSideBySide(build_ext):  # type: ignore[misc]
        def build_extensions(self) -> None:
            self.compiler.compile = functools.partial(compile_side_by_side, self.compiler)
            super().build_extensions()

    paths = [str(source(m).relative_to(SOURCES)) for m in MODULES]
    cwd = Path.cwd()
    os.environ["MYPY_CACHE_DIR"] = str(work / "mypy-cache")
    os.chdir(SOURCES)  # mypyc names modules after their paths from here
    try:
        # One C file per module (multi_file), all linked into GROUP's library.
        extensions = mypycify(
            paths, opt_level="3", multi_file=True, group_name=GROUP, target_dir=str(work / "c")
        )
        setup(
            name="quietwire-native",
            ext_modules=extensions,
            cmdclass={"build_ext": BuildSideBySide},
            script_args=[
                "--quiet",
                "build_ext",
                "--build-lib",
                str(work / "lib"),
                "--build-temp",
                str(work / "tmp"),
                # The libraries side by side too (a small one per module).
                "--parallel",
                str(os.cpu_count() or 1),
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
    parser.add_argument(
        "--sources", action="store_true", help="print the compiled source files and stop"
    )
    args = parser.parse_args()
    if args.sources:
        print(" ".join(str(source(m).relative_to(ROOT)) for m in MODULES))
        return 0
    target: Path = args.into.resolve()
    why = toolchain_missing()
    if why is not None:
        if args.require:
            print(f"build_native: {why}: cannot compile the hot path", file=sys.stderr)
            return 1
        print(f"build_native: {why}: the hot path runs as pure Python", file=sys.stderr)
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
