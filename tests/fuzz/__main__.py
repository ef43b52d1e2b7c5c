"""``python -m tests.fuzz TARGET [--seconds N] [--runs N]`` (whichever comes first);
``--seed`` rebuilds the seed corpus.

Exit status 0 when the run ended without a crash; libFuzzer's (non-zero) when a
target failed, with the input in ``tests/fuzz/crashes/``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import atheris  # type: ignore[import-untyped]

HERE = Path(__file__).parent
NAMES = ("sip_message", "sip_stream", "sdp", "zrtp", "rtp_demux", "digest")
#: Longest input per target: the longest seed with room to grow (RFC 4475 longreq).
MAX_LEN = {"sip_message": 8192, "sip_stream": 12288}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    parser.add_argument("target", nargs="?", choices=NAMES)
    parser.add_argument("--seconds", type=int, help="stop after this many seconds")
    parser.add_argument("--runs", type=int, help="stop after this many inputs")
    parser.add_argument("--seed", action="store_true", help="rewrite tests/fuzz/corpus")
    parser.add_argument("--work", type=Path, help="where new inputs go (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.seed:
        from tests.fuzz.seeds import write

        for name in (args.target and [args.target]) or NAMES:
            print(f"{name}: {write(name)} seeds")
        return
    if args.target is None:
        parser.error("a target is needed")
    # atheris instruments Python bytecode: the parser must not be the compiled one
    # (quietwire/native.py), read before anything here imports quietwire.
    os.environ["QW_NATIVE"] = "0"
    with atheris.instrument_imports(include=["quietwire.protocols", "quietwire.signaling.flows"]):
        from tests.fuzz.targets import TARGETS
    work = args.work or Path(tempfile.mkdtemp(prefix=f"fuzz-{args.target}-"))
    work.mkdir(parents=True, exist_ok=True)
    crashes = HERE / "crashes"
    crashes.mkdir(exist_ok=True)
    options = [
        f"-max_len={MAX_LEN.get(args.target, 4096)}",
        f"-artifact_prefix={crashes}/{args.target}-",
        "-print_final_stats=1",
        "-rss_limit_mb=1024",
        "-timeout=10",
    ]
    if args.seconds is not None:
        options.append(f"-max_total_time={args.seconds}")
    if args.runs is not None:
        options.append(f"-runs={args.runs}")
    corpus = [str(work), str(HERE / "corpus" / args.target)]
    if (HERE / "regressions" / args.target).is_dir():
        corpus.append(str(HERE / "regressions" / args.target))
    atheris.Setup([sys.argv[0], *options, *corpus], TARGETS[args.target])
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv[1:])
