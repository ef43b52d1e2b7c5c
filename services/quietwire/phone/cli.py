"""``quietwire phone call URI | answer | echo``: the softphone on the command line.

Prints ``SAS <string>`` and ``secure <cipher>/<auth>/<key agreement>/<sas type>``
once the call is end-to-end secure; exits 0 for a secure call, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from quietwire.protocols.sip.errors import ParseError
from quietwire.protocols.sip.uri import SipUri
from quietwire.protocols.zrtp.algorithms import Offer
from quietwire.protocols.zrtp.session import DEFAULT_OFFER

if TYPE_CHECKING:  # the phone (aiortc's codecs) loads only to run it, not for `quietwire --help`
    from quietwire.phone.call import PhoneOptions

MULTISTREAM = b"Mult"

DEFAULT_PORT = 5061


class _RefusePassword(argparse.Action):
    """``--password`` is refused: every user of the machine would read it in the process
    list (``ps``). The error does not repeat the value."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        parser.error(
            "--password would show the password in the process list:"
            " use --password-stdin or $QW_PHONE_PASSWORD"
        )


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    phone = commands.add_parser("phone", help="the ZRTP softphone (call, answer, echo test)")
    actions = phone.add_subparsers(dest="phone_command", required=True)
    call = actions.add_parser("call", help="call a SIP URI")
    call.add_argument("uri")
    actions.add_parser("answer", help="wait for one call and take it")
    actions.add_parser("echo", help="answer every call and send the audio back")
    for sub in actions.choices.values():
        sub.add_argument(
            "--registrar",
            required=True,
            help="sip:host:port;transport=tls, or host[:port] (port 5061)",
        )
        sub.add_argument("--user", required=True)
        sub.add_argument("--password", action=_RefusePassword, help=argparse.SUPPRESS)
        sub.add_argument("--password-stdin", action="store_true", help="or $QW_PHONE_PASSWORD")
        sub.add_argument("--domain", help="SIP domain (default: the registrar's host)")
        sub.add_argument("--ca", help="CA file to verify the registrar's certificate")
        sub.add_argument("--play", help="WAV file sent (looped) once the call is secure")
        sub.add_argument("--record", help="WAV file for what the other side sends")
        sub.add_argument("--duration", type=float, default=30.0, help="seconds (default 30)")
        sub.add_argument("--verified", action="store_true", help="mark the SAS as verified")
        sub.add_argument(
            "--keys",
            action="store_true",
            help="read keys from stdin during a secure call: v (the SAS matches: verified),"
            " u (not verified), h (hang up)",
        )
        sub.add_argument("--zid-cache", help="ZRTP cache file (default ~/.quietwire/zid-USER.json)")
        sub.add_argument("--media-address", default="127.0.0.1", help="address for RTP")
        sub.add_argument(
            "--keepalive",
            type=float,
            default=90.0,
            help="seconds between keep-alive pings to the registrar (default 90); a failed"
            " flow is reopened and registered again (RFC 5626)",
        )
        sub.add_argument(
            "--key-agreement",
            help="ZRTP key agreements offered, preferred first (default: "
            + ",".join(k.decode() for k in DEFAULT_OFFER.key_agreements if k != MULTISTREAM)
            + "); Mult is always added",
        )


def _registrar(value: str) -> tuple[str, int]:
    if value.lower().startswith("sip"):
        uri = SipUri.parse(value)
        return uri.host_key, uri.port or DEFAULT_PORT
    host, _, port = value.partition(":")
    return host, int(port) if port else DEFAULT_PORT


def options(args: argparse.Namespace) -> PhoneOptions:
    from quietwire.phone.call import PhoneOptions

    password = os.environ.get("QW_PHONE_PASSWORD")
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise ValueError("no password: --password-stdin or $QW_PHONE_PASSWORD")
    try:
        host, port = _registrar(args.registrar)
    except (ParseError, ValueError) as exc:
        raise ValueError(f"bad --registrar {args.registrar!r}") from exc
    cache = (
        Path(args.zid_cache)
        if args.zid_cache
        else (Path.home() / ".quietwire" / f"zid-{args.user}.json")
    )
    return PhoneOptions(
        registrar=host,
        port=port,
        user=args.user,
        password=password,
        ca=Path(args.ca) if args.ca else None,
        domain=args.domain or host,
        zid_cache=cache,
        play=Path(args.play) if args.play else None,
        record=Path(args.record) if args.record else None,
        duration=args.duration,
        verified=args.verified,
        media_address=args.media_address,
        offer=_offer(args.key_agreement),
        keys=_stdin_keys() if args.keys else None,
        keepalive=args.keepalive,
    )


async def _stdin_keys() -> AsyncIterator[str]:
    """Lines typed on stdin (a terminal or a pipe; a plain file is read at once), one key a line."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    except ValueError:  # a regular file: reading it never blocks
        for text in sys.stdin:
            yield text.strip().lower()
        return
    while line := await reader.readline():
        yield line.decode(errors="replace").strip().lower()


def _offer(key_agreements: str | None) -> Offer:
    if not key_agreements:
        return DEFAULT_OFFER
    chosen = [name.strip().encode().ljust(4) for name in key_agreements.split(",") if name.strip()]
    known = set(DEFAULT_OFFER.key_agreements) - {MULTISTREAM}
    unknown = [c.decode().strip() for c in chosen if c not in known]
    if unknown or not chosen:
        names = ", ".join(sorted(k.decode() for k in known))
        raise ValueError(f"bad --key-agreement {key_agreements!r}: choose from {names}")
    return dataclasses.replace(DEFAULT_OFFER, key_agreements=(*chosen, MULTISTREAM))


async def run(args: argparse.Namespace) -> int:
    from quietwire.phone.call import Phone

    phone = Phone(options(args), lambda line: print(line, flush=True))
    await phone.start()
    # What start-up made (modules, codecs) lives as long as the phone: out of the
    # collector's sight, so that a full collection cannot stall a handshake for
    # tens of milliseconds (it did, at Confirm2, in every call).
    gc.freeze()
    try:
        if args.phone_command == "call":
            result = await phone.call(args.uri)
            return 0 if result.secured else 1
        if args.phone_command == "answer":
            result = await phone.answer()
            return 0 if result.secured else 1
        while True:  # echo: until stopped
            await phone.answer(echo=True)
    finally:
        with contextlib.suppress(Exception):
            await phone.close()


def main(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(run(args))
    except ValueError as exc:
        print(f"quietwire phone: {exc}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError) as exc:
        print(f"quietwire phone: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 1
