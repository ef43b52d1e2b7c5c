"""A phone that answers digest challenges the way a test (or an attacker) chooses:
another algorithm, another uri, a credential header written by hand."""

from __future__ import annotations

import asyncio
import secrets
import ssl
from pathlib import Path

from quietwire.phone.connection import SipConnection
from quietwire.phone.useragent import UserAgent
from quietwire.protocols.sip.digest import (
    Challenge,
    DigestAlgorithm,
    client_credentials,
    format_credentials,
    parse_challenge,
)
from quietwire.protocols.sip.message import Request, Response


async def connect_from(address: str, port: int, ca: Path) -> SipConnection:
    """A TLS connection to the listener on 127.0.0.1 from another loopback ``address``
    (a distinct source to the server)."""
    context = ssl.create_default_context(cafile=str(ca))
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1", local_addr=(address, 0)
    )
    return SipConnection(reader, writer)


async def challenges(ua: UserAgent, request: Request) -> list[Challenge]:
    """Send ``request`` without credentials; the challenges of its 401/407."""
    exchange = await ua._send_once(request, 10)
    final = exchange.final
    assert final is not None and final.status in (401, 407), final
    header = "WWW-Authenticate" if final.status == 401 else "Proxy-Authenticate"
    return [parse_challenge(v) for v in final.headers.get_all(header)]


def credential(
    challenge: Challenge,
    ua: UserAgent,
    request: Request,
    *,
    password: str | None = None,
    algorithm: DigestAlgorithm | None = None,
    uri: str | None = None,
) -> str:
    """A well-formed answer to ``challenge``, maybe with another algorithm or uri."""
    if algorithm is not None:
        challenge = Challenge(challenge.realm, challenge.nonce, algorithm)
    answer = client_credentials(
        challenge,
        ua.user,
        password if password is not None else ua.password,
        request.method,
        uri if uri is not None else request.uri,
        1,
        secrets.token_hex(8),
    )
    return format_credentials(answer)


async def send_with(
    ua: UserAgent, request: Request, value: str, *, timeout: float = 10
) -> Response | None:
    """Send ``request`` again (new Via branch and CSeq) carrying the credential ``value``;
    its final response, None if none came within ``timeout``."""
    retry = request.copy()
    retry.headers.pop_first("Via")
    retry.headers.add("Via", ua._via(), first=True)
    ua._cseq += 1
    retry.headers.set("CSeq", f"{ua._cseq} {request.method}")
    header = "Authorization" if request.method == "REGISTER" else "Proxy-Authorization"
    retry.headers.set(header, value)
    try:
        return (await ua._send_once(retry, timeout)).final
    except TimeoutError:
        return None


async def attempt(
    ua: UserAgent,
    request: Request,
    *,
    password: str | None = None,
    algorithm: DigestAlgorithm | None = None,
    uri: str | None = None,
) -> Response | None:
    """Challenge, then answer the first challenge as asked; the final response."""
    first = (await challenges(ua, request))[0]
    value = credential(first, ua, request, password=password, algorithm=algorithm, uri=uri)
    return await send_with(ua, request, value)
