"""Instructions per operation of quietwire signaling, counted by callgrind.

CPU time per operation moves with whatever else a shared machine runs (caches,
frequency); the instructions a process executes hardly do. So this is how to
tell whether a change made signaling cheaper: ``python -m bench.instructions``
runs the signaling service under ``valgrind --tool=callgrind`` with counting
off, then, for each load of :mod:`bench.signaling` (REGISTER with digest; a
call: INVITE with digest, 200, ACK, BYE), warms it up, counts ``--seconds`` of
that load at a low rate (valgrind runs the process tens of times slower) and
prints the instructions (callgrind's Ir) per operation that succeeded. Only
the signaling process is counted, not its Redis. Run it on two revisions with
the same arguments and compare.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.signaling import (
    CALL,
    CALLEE,
    CALLEE_PASSWORD,
    PASSWORD,
    REGISTER,
    USER,
    Quietwire,
    callee,
    sipp_load,
    tunnel,
)


def instructions(dump: Path) -> int:
    """The total Ir of a callgrind dump: its closing ``totals:`` line (the
    ``summary:`` at the top goes wrong after instrumentation was switched)."""
    for line in reversed(dump.read_text(encoding="utf-8", errors="replace").splitlines()):
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {dump}")


def control(pid: str, *command: str) -> None:
    """``callgrind_control`` on the running service."""
    subprocess.run(["callgrind_control", *command, pid], check=True, capture_output=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=20.0, help="REGISTERs per second")
    parser.add_argument("--call-rate", type=float, default=5.0, help="calls per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each count")
    parser.add_argument(
        "--dumps", type=Path, help="keep each load's callgrind dump here (for callgrind_annotate)"
    )
    args = parser.parse_args()
    missing = [
        b for b in ("valgrind", "callgrind_control", "sipp", "stunnel4") if not shutil.which(b)
    ]
    if missing:
        print(f"bench.instructions: missing {', '.join(missing)}", file=sys.stderr)
        return 1
    users = [(USER, PASSWORD), (CALLEE, CALLEE_PASSWORD)]
    with tempfile.TemporaryDirectory(prefix="qw-instructions-") as scratch:
        work = Path(scratch)
        (work / "qw").mkdir()
        valgrind = (
            *("valgrind", "--tool=callgrind", "--instr-atstart=no"),
            f"--callgrind-out-file={work / 'callgrind.%p'}",
        )
        server = Quietwire(work / "qw", users, wrapper=valgrind, start_timeout=300.0)
        with server.running(), tunnel(work, server.port, server.pki.ca) as via:
            pid = str(server.pids()[1])  # taskset and valgrind exec: the service's pid
            for load, rate in ((REGISTER, args.rate), (CALL, args.call_rate)):
                with callee(via, work) if load is CALL else contextlib.nullcontext():
                    sipp_load(server, via, work, load, rate, 2.0)  # warm-up, not counted
                    # Counted from "on" to the dump (which zeroes the counts again).
                    control(pid, "-i", "on")
                    result = sipp_load(server, via, work, load, rate, args.seconds)
                    control(pid, "-d")
                    control(pid, "-i", "off")
                dump = max(work.glob(f"callgrind.{pid}.*"), key=lambda p: p.stat().st_mtime)
                per_op = instructions(dump) / result.ok if result.ok else float("nan")
                if args.dumps is not None:
                    args.dumps.mkdir(parents=True, exist_ok=True)
                    shutil.copy(dump, args.dumps / f"callgrind.{load.name}")
                print(
                    f"{load.name}: {per_op / 1e6:.2f} M instructions per operation"
                    f" ({result.ok} ok, {result.failed} failed, {rate:g}/s for {args.seconds:g} s)",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
