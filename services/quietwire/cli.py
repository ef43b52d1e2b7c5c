"""The ``quietwire`` command.

    quietwire [--config FILE] signaling|keyagreement|relay   run one service
    quietwire [--config FILE] user add|del|list|policy       manage SIP users
    quietwire up [--state-dir DIR] [--sip-host H] [--sip-port P] [--relays N] [--signaling N]
                                             everything, locally
    quietwire pki --dir DIR [--sip-host H] [--grpc-name N]...    development certificates
    quietwire phone call URI | answer | echo --registrar ... --user ...   the softphone
    quietwire calls [CALL_ID]     active calls, their security; one call: where its logs are
    quietwire calls migrate CALL_ID [--to RELAY]   move a call's media to another relay
    quietwire drain-relay [--migrate] [--timeout S]   stop a relay taking calls; move them
                                             off it (--migrate), or wait for them to end
    quietwire health [--service NAME]        this host's service healthy? (container health checks)

Settings come from ``QW_*`` environment variables and the optional YAML file
(``--config`` or ``QW_CONFIG``). A bad setting ends the process with status 2
and a message naming it.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from quietwire.keyagreement.policy import Policy
from quietwire.keyagreement.settings import KeyAgreementSettings
from quietwire.phone import cli as phone_cli
from quietwire.relay.settings import RelaySettings
from quietwire.runtime.settings import ServiceSettings, SettingsError, load_settings
from quietwire.runtime.tls import TlsFiles
from quietwire.signaling.settings import SignalingSettings, UserAdminSettings

# Each command imports what it needs inside its handler: ``quietwire health``
# runs every few seconds in every container and must not load kubernetes,
# pyroute2 or aiortc. The settings classes stay imported here, all of them:
# one YAML file serves every service, and a key is unknown only when no
# imported class has it (``known_settings``).

T = TypeVar("T")
EXIT_USAGE = 2
EXIT_FAILURE = 1

#: A subcommand's handler: parsed arguments in, exit status out.
Handler = Callable[[argparse.Namespace], int]

#: Each service: its settings class and the ``module:Class`` that builds it from them.
SERVICES: dict[str, tuple[type[ServiceSettings], str]] = {
    "signaling": (SignalingSettings, "quietwire.signaling.service:SignalingService"),
    "keyagreement": (KeyAgreementSettings, "quietwire.keyagreement.service:KeyAgreementService"),
    "relay": (RelaySettings, "quietwire.relay.service:RelayService"),
}


def _config_file(args: argparse.Namespace) -> Path | None:
    value = args.config or os.environ.get("QW_CONFIG")
    return Path(value) if value else None


def run_service(args: argparse.Namespace) -> int:
    import uvloop

    from quietwire.runtime.logs import configure_logging
    from quietwire.runtime.service import serve

    name = args.command
    settings_cls, where = SERVICES[name]
    settings = load_settings(settings_cls, _config_file(args))
    configure_logging(name, settings.log_level, show_ips=settings.log_ips)
    module, _, factory = where.partition(":")
    service_cls: Callable[[Any], Any] = getattr(importlib.import_module(module), factory)
    return uvloop.run(serve(name, settings, service_cls))


def _failed(args: argparse.Namespace, exc: Exception) -> int:
    print(f"quietwire {args.command}: {exc}", file=sys.stderr)
    return EXIT_FAILURE


def _read_password(args: argparse.Namespace) -> str:
    import getpass

    from quietwire.signaling.users import UserError

    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise UserError("no password: pass --password-stdin, or run on a terminal to be asked")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise UserError("the passwords differ")
    return first


def run_user(args: argparse.Namespace) -> int:
    from quietwire.signaling.users import UserError

    try:
        return asyncio.run(_user_command(args))
    except UserError as exc:
        return _failed(args, exc)


async def _user_command(args: argparse.Namespace) -> int:
    import redis

    from quietwire.keyagreement.userpolicies import UserPolicies
    from quietwire.runtime.redisclient import redis_client
    from quietwire.signaling.users import UserStore

    settings = load_settings(UserAdminSettings, _config_file(args))
    client = redis_client(settings)
    try:
        store = UserStore(client, settings.sip_domain, settings.digest_algorithms)
        policies = UserPolicies(client)
        aor = f"sip:{getattr(args, 'username', '')}@{settings.sip_domain.lower()}"
        if args.user_command == "add":
            created = await store.put(args.username, _read_password(args))
            print(f"{'added' if created else 'updated'} {args.username}@{settings.sip_domain}")
        elif args.user_command == "del":
            if not await store.delete(args.username):
                print(f"no such user: {args.username}@{settings.sip_domain}", file=sys.stderr)
                return EXIT_FAILURE
            await policies.set(aor, None)
            print(f"deleted {args.username}@{settings.sip_domain}")
        elif args.user_command == "policy":
            if await store.get(args.username) is None:
                print(f"no such user: {args.username}@{settings.sip_domain}", file=sys.stderr)
                return EXIT_FAILURE
            chosen = None if args.policy == "default" else Policy(args.policy)
            await policies.set(aor, chosen)
            print(f"{args.username}@{settings.sip_domain}: media policy {args.policy}")
        else:
            for name in await store.usernames():
                print(f"{name}@{settings.sip_domain}")
        return 0
    except (redis.RedisError, OSError) as exc:
        print(f"quietwire user: cannot use Redis at QW_REDIS_URL: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        await client.aclose()


def run_up(args: argparse.Namespace) -> int:
    from quietwire.embedded.redis_server import RedisUnavailable
    from quietwire.embedded.up import UpFailed, UpOptions, up
    from quietwire.runtime.logs import configure_logging

    configure_logging("up", "info")
    options = UpOptions(
        Path(args.state_dir),
        args.sip_host,
        args.sip_port,
        relays=args.relays,
        signaling=args.signaling,
    )
    try:
        return asyncio.run(up(options))
    except (RedisUnavailable, UpFailed) as exc:
        return _failed(args, exc)


def _count(limit: str) -> Callable[[str], int]:
    """An argparse type for ``up --relays`` and ``--signaling``: a whole number from 1
    to the bound ``limit`` names in :mod:`quietwire.embedded.up` (imported only by ``up``)."""

    def count(value: str) -> int:
        from quietwire.embedded import up

        most: int = getattr(up, limit)
        try:
            number = int(value)
        except ValueError:
            number = 0
        if not 1 <= number <= most:
            raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {most}")
        return number

    return count


def run_phone(args: argparse.Namespace) -> int:
    return phone_cli.main(args)


def run_calls(args: argparse.Namespace) -> int:
    return asyncio.run(_calls(args))


async def _calls(args: argparse.Namespace) -> int:
    """Active calls and their security outcome, from keyagreement; or ``calls migrate``."""
    if args.call_id == "migrate":
        return await _migrate_call(args)
    if args.target or args.to:
        print("quietwire calls: a second argument and --to go with 'migrate'", file=sys.stderr)
        return EXIT_USAGE
    import grpc

    from quietwire.rpc.keyagreement.v1 import keyagreement_pb2 as pb
    from quietwire.rpc.keyagreement.v1 import keyagreement_pb2_grpc
    from quietwire.runtime.channels import open_channel

    outcomes = {
        pb.ZRTP_STATE_WAITING: "waiting",
        pb.ZRTP_STATE_HANDSHAKING: "handshaking",
        pb.ZRTP_STATE_SECURED: "zrtp-verified",
        pb.ZRTP_STATE_FAILED: "zrtp-failed",
        pb.ZRTP_STATE_BINDING_MISMATCH: "zrtp-mismatch",
        pb.ZRTP_STATE_CLEAR: "clear",
    }
    settings = load_settings(SignalingSettings, _config_file(args))
    async with open_channel(settings.keyagreement_target, settings.grpc_tls) as channel:
        stub = keyagreement_pb2_grpc.KeyAgreementStub(channel)
        try:
            if args.call_id:
                request = pb.GetCallSecurityRequest(call_id=args.call_id)
                calls = [await stub.GetCallSecurity(request, timeout=5)]
            else:
                listed = await stub.ListCalls(pb.ListCallsRequest(limit=args.limit), timeout=5)
                calls = list(listed.calls)
        except grpc.aio.AioRpcError as exc:
            print(f"quietwire calls: keyagreement: {exc.details()}", file=sys.stderr)
            return EXIT_FAILURE
    for call in calls:
        outcome = outcomes.get(call.zrtp_state, "not-e2e") if call.end_to_end else "not-e2e"
        mode = pb.SecurityMode.Name(call.mode).removeprefix("SECURITY_MODE_").lower()
        relay = f"relay={call.relay_id}" if call.relay_id else ""
        print(" ".join(filter(None, (call.call_id, mode, outcome, call.detail, relay))))
    if args.call_id:
        from quietwire.calllogs import where

        for line in where(args.call_id, calls[0].replica, calls[0].relay_id, _config_file(args)):
            print(line)
    return 0


async def _keyagreement(
    command: str, target: str, tls: TlsFiles | None, ask: Callable[[Any], Awaitable[T]]
) -> T | None:
    """``ask`` keyagreement (a stub in, its answer out); None, said on stderr, when
    it answered with an error."""
    import grpc

    from quietwire.rpc.keyagreement.v1 import keyagreement_pb2_grpc
    from quietwire.runtime.channels import open_channel

    async with open_channel(target, tls) as channel:
        try:
            return await ask(keyagreement_pb2_grpc.KeyAgreementStub(channel))
        except grpc.aio.AioRpcError as exc:
            print(f"quietwire {command}: keyagreement: {exc.details()}", file=sys.stderr)
            return None


async def _migrate_call(args: argparse.Namespace) -> int:
    """``quietwire calls migrate CALL_ID [--to RELAY]``: move one call's media."""
    from quietwire.rpc.keyagreement.v1 import keyagreement_pb2 as pb

    if not args.target:
        print("quietwire calls migrate: which call? (CALL_ID)", file=sys.stderr)
        return EXIT_USAGE
    settings = load_settings(SignalingSettings, _config_file(args))
    request = pb.MigrateCallRequest(call_id=args.target, to_relay=args.to or "", reason="operator")
    done = await _keyagreement(
        "calls migrate",
        settings.keyagreement_target,
        settings.grpc_tls,
        lambda stub: stub.MigrateCall(request, timeout=MIGRATE_TIMEOUT),
    )
    if done is None:
        return EXIT_FAILURE
    if done.moved:
        print(f"{args.target} moved from {done.from_relay} to {done.to_relay}")
        return 0
    outcome = "ended" if done.ended else f"still on {done.from_relay or '(unknown)'}"
    print(f"{args.target} not moved ({done.detail}): {outcome}", file=sys.stderr)
    return EXIT_FAILURE


#: Seconds ``calls migrate`` waits for keyagreement (a move re-INVITEs both phones).
MIGRATE_TIMEOUT = 30.0
DRAIN_POLL_EVERY = 2.0


class DrainSettings(RelaySettings):
    """``drain-relay``: the relay's own settings, and where keyagreement is (--migrate)."""

    keyagreement_target: str = "127.0.0.1:50052"


def run_drain_relay(args: argparse.Namespace) -> int:
    return asyncio.run(_drain_relay(args))


async def _drain_relay(args: argparse.Namespace) -> int:
    """Drain the relay these settings describe (a Kubernetes preStop hook).

    It stops taking calls at once; with ``--migrate`` keyagreement moves its
    calls to other relays (``MigrateRelay``); then this waits until no call is
    left on it or ``--timeout`` passed, printing how many are left.
    """
    import grpc

    from quietwire.rpc.relay.v1 import relay_pb2, relay_pb2_grpc
    from quietwire.runtime.channels import open_channel

    settings = load_settings(DrainSettings, _config_file(args))
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + args.timeout
    async with open_channel(settings.grpc_peer_address, settings.grpc_tls) as channel:
        stub = relay_pb2_grpc.RelayStub(channel)
        if args.migrate:
            try:
                await stub.Drain(relay_pb2.DrainRequest(), timeout=5)
                listed = await stub.ListSessions(relay_pb2.ListSessionsRequest(), timeout=5)
            except grpc.aio.AioRpcError as exc:
                print(f"quietwire drain-relay: relay: {exc.details()}", file=sys.stderr)
                return EXIT_FAILURE
            await _migrate_relay(settings, listed.relay_id, max(1.0, deadline - loop.time()))
        while True:
            try:
                reply = await stub.Drain(relay_pb2.DrainRequest(), timeout=5)
            except grpc.aio.AioRpcError as exc:
                print(f"quietwire drain-relay: relay: {exc.details()}", file=sys.stderr)
                return EXIT_FAILURE
            print(f"draining: {reply.active_calls} calls left", flush=True)
            if reply.active_calls == 0:
                print(f"drained in {loop.time() - started:.1f} s", flush=True)
                return 0
            if loop.time() >= deadline:
                return EXIT_FAILURE
            await asyncio.sleep(min(DRAIN_POLL_EVERY, max(0.0, deadline - loop.time())))


async def _migrate_relay(settings: DrainSettings, relay_id: str, timeout: float) -> None:
    """Ask keyagreement to move every call off ``relay_id``; say what it did. A call
    it could not move stays, and the drain waits for it like any other."""
    from quietwire.rpc.keyagreement.v1 import keyagreement_pb2 as pb

    request = pb.MigrateRelayRequest(relay_id=relay_id, reason="drain")
    done = await _keyagreement(
        "drain-relay",
        settings.keyagreement_target,
        settings.grpc_tls,
        lambda stub: stub.MigrateRelay(request, timeout=timeout),
    )
    if done is None:
        return
    print(f"migrated: {done.moved} moved, {done.ended} ended, {done.failed} not moved", flush=True)


def run_health(args: argparse.Namespace) -> int:
    return asyncio.run(_health(args))


async def _health(args: argparse.Namespace) -> int:
    """Exit 0 when the service these settings describe answers SERVING.

    Asks the plain health port (``QW_HEALTH_PORT``) when there is one, else the
    mutual-TLS gRPC port.
    """
    from grpc_health.v1 import health_pb2

    from quietwire.runtime.channels import open_channel
    from quietwire.runtime.health import serving_status

    settings = load_settings(ServiceSettings, _config_file(args))
    if settings.health_port:
        target, tls = settings.health_peer_address, None
    else:
        target, tls = settings.grpc_peer_address, settings.grpc_tls
    async with open_channel(target, tls) as channel:
        status = await serving_status(channel, args.service)
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
    print(name.lower())
    return 0 if status == health_pb2.HealthCheckResponse.SERVING else EXIT_FAILURE


def run_pki(args: argparse.Namespace) -> int:
    from quietwire.embedded.pki import ensure_pki

    pki = ensure_pki(Path(args.dir), args.sip_host, tuple(args.grpc_name))
    for path in (pki.ca, pki.sip_cert, pki.sip_key, pki.grpc_cert, pki.grpc_key):
        print(path)
    return 0


def parser() -> argparse.ArgumentParser:
    """The command line; each subcommand names its handler (``func``)."""
    root = argparse.ArgumentParser(prog="quietwire", description="Secure VoIP hosting platform.")
    root.add_argument("--config", help="YAML settings file (default: $QW_CONFIG)")
    commands = root.add_subparsers(dest="command", required=True)
    for name in SERVICES:
        commands.add_parser(name, help=f"run the {name} service").set_defaults(func=run_service)
    user = commands.add_parser("user", help="manage SIP users")
    user.set_defaults(func=run_user)
    user_commands = user.add_subparsers(dest="user_command", required=True)
    add = user_commands.add_parser("add", help="create or update a user (asks for the password)")
    add.add_argument("username")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    delete = user_commands.add_parser("del", help="delete a user")
    delete.add_argument("username")
    user_commands.add_parser("list", help="list users")
    policy = user_commands.add_parser(
        "policy", help="a user's media policy (a call follows the stricter of its two users)"
    )
    policy.add_argument("username")
    policy.add_argument("policy", choices=[*(p.value for p in Policy), "default"])
    embedded = commands.add_parser("up", help="run the whole platform locally (development)")
    embedded.set_defaults(func=run_up)
    embedded.add_argument("--state-dir", default=".quietwire", help="default: ./.quietwire")
    embedded.add_argument("--sip-host", default="127.0.0.1", help="host phones register to")
    embedded.add_argument("--sip-port", type=int, default=5061, help="SIP over TLS port")
    embedded.add_argument(
        "--relays", type=_count("MAX_RELAYS"), default=1, help="relays to run (1..16, default 1)"
    )
    embedded.add_argument(
        "--signaling",
        type=_count("MAX_SIGNALING"),
        default=1,
        help="signaling workers sharing the SIP port, one per core (1..16, default 1)",
    )
    phone_cli.add_parser(commands)
    commands.choices["phone"].set_defaults(func=run_phone)
    calls = commands.add_parser("calls", help="active calls and their media security")
    calls.set_defaults(func=run_calls)
    calls.add_argument(
        "call_id",
        nargs="?",
        help="one call (also for a minute after it ended), and where its log lines are;"
        " or 'migrate' followed by the call to move to another relay",
    )
    calls.add_argument("target", nargs="?", metavar="CALL_ID", help="(migrate) the call to move")
    calls.add_argument("--to", metavar="RELAY", help="(migrate) the relay id to move it to")
    calls.add_argument("--limit", type=int, default=100)
    drain = commands.add_parser(
        "drain-relay",
        help="stop the relay taking calls; move them to other relays (--migrate) and"
        " wait until none is left",
    )
    drain.set_defaults(func=run_drain_relay)
    drain.add_argument(
        "--migrate",
        action="store_true",
        help="ask keyagreement (QW_KEYAGREEMENT_TARGET) to move its calls to other relays",
    )
    drain.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait at most")
    health = commands.add_parser("health", help="exit 0 when the service here is SERVING")
    health.set_defaults(func=run_health)
    health.add_argument("--service", default="", help="'' (readiness, default) or 'liveness'")
    pki = commands.add_parser("pki", help="create or reuse development certificates")
    pki.set_defaults(func=run_pki)
    pki.add_argument("--dir", required=True, help="where the CA and certificates go")
    pki.add_argument("--sip-host", default="127.0.0.1", help="name in the SIP certificate")
    pki.add_argument(
        "--grpc-name", action="append", default=[], help="extra name for the gRPC certificate"
    )
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    handler: Handler = args.func
    try:
        return handler(args)
    except SettingsError as exc:
        print(f"quietwire {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        logging.getLogger(__name__).info("interrupted")
        return EXIT_FAILURE
