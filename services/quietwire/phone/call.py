"""A phone call end to end: SIP over TLS for signaling, ZRTP then SRTP for media.

:class:`Phone` registers once and then places (:meth:`Phone.call`) or takes
(:meth:`Phone.answer`) calls. A call is reported secure only after ZRTP
completes; then the phone prints ``SAS <string>`` and ``secure
<cipher>/<auth>/<key agreement>/<sas type>``. Any failure prints
``not secure: <reason>`` and the call ends without audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quietwire.phone.connection import SipConnection
from quietwire.phone.media import Audio, MediaSession
from quietwire.phone.sdp import NoCommonCodec, Remote, remote_of
from quietwire.phone.useragent import Dialog, UserAgent
from quietwire.phone.zidcache import FileZidCache
from quietwire.protocols.sdp.session import ParseError as SdpParseError
from quietwire.protocols.sip.message import Request
from quietwire.protocols.zrtp.algorithms import Offer
from quietwire.protocols.zrtp.errors import ErrorCode
from quietwire.protocols.zrtp.session import DEFAULT_OFFER, Failed, Secured

log = logging.getLogger(__name__)
SECURE_TIMEOUT = 20.0
#: RFC 5626 section 4.5: a failed flow is recovered after a wait that doubles
#: from about a second up to this (randomised, so phones cut off together do not
#: come back together).
RECONNECT_MAX_WAIT = 60.0
#: How long hanging up waits for a flow being recovered before giving up.
FLOW_WAIT = 15.0


@dataclass(frozen=True, slots=True)
class PhoneOptions:
    registrar: str
    port: int
    user: str
    password: str
    ca: Path | None
    domain: str
    zid_cache: Path
    play: Path | None = None
    record: Path | None = None
    duration: float = 10.0
    verified: bool = False
    media_address: str = "127.0.0.1"
    #: What the phone's ZRTP Hello offers (the key agreements can be narrowed).
    offer: Offer = DEFAULT_OFFER
    #: The user's keys during a secure call (``quietwire phone --keys``: stdin
    #: lines): ``v`` the SAS was compared and matches, ``u`` it was not, ``h`` hang up.
    keys: AsyncIterator[str] | None = None
    #: Seconds between keep-alive pings on the flow (RFC 5626 section 4.4.1
    #: suggests 95-120 s for TLS; ``--keepalive``).
    keepalive: float = 90.0


@dataclass
class CallResult:
    call_id: str = ""
    secured: Secured | None = None
    failure: str | None = None
    ended_by_peer: bool = False
    stats: dict[str, int] = field(default_factory=dict)


class Phone:
    def __init__(self, options: PhoneOptions, say: Callable[[str], None] = print) -> None:
        self.options = options
        self.say = say
        self.cache = FileZidCache(options.zid_cache)
        self.ua: UserAgent | None = None
        #: Set while the flow to the registrar works (cleared while recovering it).
        self.flow_ready = asyncio.Event()
        self._keeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        o = self.options
        connection = await self._open()
        self.ua = UserAgent(connection, o.user, o.password, o.domain, o.port)
        await self._register()
        self.say(f"registered {self.ua.aor}")
        self.flow_ready.set()
        self._keeper = asyncio.create_task(self._keep_flow())

    async def _open(self) -> SipConnection:
        o = self.options
        return await SipConnection.open(o.registrar, o.port, o.ca, o.domain)

    async def _register(self) -> None:
        assert self.ua is not None
        response = await self.ua.register()
        if response.status != 200:
            raise RuntimeError(f"registration refused: {response.status} {response.reason}")

    async def _keep_flow(self) -> None:
        """Ping the flow; when it fails (closed, or no pong), open a new one and
        register again over it (RFC 5626 sections 4.4 and 4.5)."""
        assert self.ua is not None
        while True:
            connection = self.ua.connection
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(connection.closed.wait(), self.options.keepalive)
            if not connection.closed.is_set() and await connection.alive():
                continue
            self.flow_ready.clear()
            self.say("flow lost: reconnecting")
            await self._recover()
            self.flow_ready.set()
            self.say(f"registered {self.ua.aor} (flow recovered)")

    async def _recover(self) -> None:
        assert self.ua is not None
        wait = 1.0
        while True:
            await asyncio.sleep(wait * (0.5 + secrets.randbelow(500) / 1000))
            wait = min(wait * 2, RECONNECT_MAX_WAIT)
            try:
                await self.ua.use(await self._open())
                await self._register()
                return
            except (OSError, ssl.SSLError, TimeoutError, RuntimeError) as exc:
                log.info("flow recovery failed: %s", exc)

    async def close(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        if self.ua is not None:
            with contextlib.suppress(Exception):
                await self.ua.register(expires=0)
            await self.ua.close()

    def _media(self, echo: bool = False) -> MediaSession:
        o = self.options
        audio = Audio(play=o.play, record=o.record, echo=echo)
        return MediaSession(o.media_address, self.cache, self.cache.zid, audio, offer=o.offer)

    async def call(self, uri: str) -> CallResult:
        assert self.ua is not None
        media = self._media()
        await media.open()
        offer = media.sdp.describe()
        invite = self.ua.build("INVITE", uri, body=offer, content_type="application/sdp")
        exchange = await self.ua.send(invite, timeout=60)
        final = exchange.final
        if final is None or final.status != 200:
            await media.close()
            reason = "no answer" if final is None else f"{final.status} {final.reason}"
            self.say(f"call failed: {reason}")
            return CallResult(failure=reason)
        sent = self.ua.inviting.get(invite.call_id) or invite
        dialog = self.ua.dialog_from_response(sent, final)
        await self.ua.connection.send(self.ua.in_dialog(dialog, "ACK", cseq=final.cseq.number))
        try:
            remote = remote_of(final.body)
        except (NoCommonCodec, SdpParseError) as exc:
            await self._hang_up(dialog)
            await media.close()
            return CallResult(failure=f"unusable answer: {exc}")
        return await self._talk(media, remote, dialog)

    async def answer(self, echo: bool = False, timeout: float | None = None) -> CallResult:
        """Wait for one call and take it."""
        assert self.ua is not None
        while True:
            request = await asyncio.wait_for(self.ua.requests.get(), timeout)
            if request.method == "INVITE":
                break
            await self._answer_other(request)
        try:
            remote = remote_of(request.body)
        except (NoCommonCodec, SdpParseError) as exc:
            await self.ua.connection.send(self.ua.answer(request, 488, "Not Acceptable Here"))
            return CallResult(failure=f"unusable offer: {exc}")
        media = self._media(echo)
        await media.open()
        answer = media.sdp.describe((remote.codec,))
        await self.ua.connection.send(self.ua.answer(request, 180, "Ringing"))
        ok = self.ua.answer(request, 200, "OK", body=answer)
        await self.ua.connection.send(ok)
        dialog = self.ua.dialog_from_request(request, ok)
        self.say(f"answered {request.from_.uri}")
        return await self._talk(media, remote, dialog)

    async def _talk(self, media: MediaSession, remote: Remote, dialog: Dialog) -> CallResult:
        ua = self.ua
        assert ua is not None
        result = CallResult(call_id=dialog.call_id)
        hung_up = asyncio.Event()
        watcher = asyncio.create_task(self._watch(dialog, media, hung_up))
        self.say(f"codec {remote.codec.rtpmap}")
        media.start(remote)
        try:
            outcome = await self._first(media.secured, hung_up, SECURE_TIMEOUT)
            if isinstance(outcome, Secured):
                result.secured = outcome
                self._announce(outcome, media)
                done = asyncio.ensure_future(hung_up.wait())
                keys = asyncio.ensure_future(self._keys(media))
                await asyncio.wait(
                    {done, keys}, timeout=self.options.duration, return_when=asyncio.FIRST_COMPLETED
                )
                for task in (done, keys):
                    task.cancel()
            else:
                result.failure = outcome.reason if outcome else "the peer hung up"
                self.say(f"not secure: {result.failure}")
            result.ended_by_peer = hung_up.is_set()
            if not result.ended_by_peer:
                # The watcher keeps answering meanwhile: when both ends hang up at
                # once, each answers the other's BYE while its own is pending.
                await self._hang_up(dialog)
        finally:
            ua.ended.add(dialog.call_id)  # from now on the UA answers its BYEs 481
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await media.close()
        result.stats = vars(media.stats).copy()
        self.say("call ended")
        return result

    @staticmethod
    async def _first(
        secured: asyncio.Future[Secured | Failed], hung_up: asyncio.Event, timeout: float
    ) -> Secured | Failed | None:
        """ZRTP's outcome, or None if the peer hung up first; a timeout is a failure."""
        bye = asyncio.ensure_future(hung_up.wait())
        racing: set[asyncio.Future[Any]] = {secured, bye}
        done, _ = await asyncio.wait(racing, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        bye.cancel()
        if secured in done:
            return secured.result()
        if bye in done:
            return None
        return Failed(ErrorCode.PROTOCOL_TIMEOUT, "no ZRTP answer from the peer", False)

    def _announce(self, secured: Secured, media: MediaSession) -> None:
        self.say(f"SAS {secured.sas}")
        self.say(f"secure {secured.suite}")
        if secured.sas_verified:
            self.say("SAS previously verified")
        if secured.cache_mismatch:
            self.say("WARNING: ZRTP cache mismatch: compare the SAS again")
        if self.options.verified:
            media.engine.mark_sas_verified(True)

    async def _keys(self, media: MediaSession) -> None:
        """Act on the user's keys until ``h`` (returns: hang up) or none are left."""
        if self.options.keys is None:
            await asyncio.Event().wait()  # no keys: only the peer or the duration end the call
            return
        async for key in self.options.keys:
            if key == "h":
                return
            if key in ("v", "u"):
                media.engine.mark_sas_verified(key == "v")
                self.say("SAS marked verified" if key == "v" else "SAS marked not verified")
        await asyncio.Event().wait()

    async def _watch(self, dialog: Dialog, media: MediaSession, hung_up: asyncio.Event) -> None:
        """Answer what arrives during the call; the peer's BYE sets ``hung_up``."""
        assert self.ua is not None
        while True:
            request = await self.ua.requests.get()
            if request.method == "BYE" and request.call_id == dialog.call_id:
                await self.ua.connection.send(self.ua.answer(request, 200, "OK"))
                if reason := request.headers.get("Reason"):
                    self.say(f"hung up: {reason}")
                hung_up.set()
                return
            if request.method == "INVITE" and request.call_id == dialog.call_id:
                await self._reinvited(request, media)
                continue
            await self._answer_other(request)

    async def _reinvited(self, request: Request, media: MediaSession) -> None:
        """A re-INVITE in our call (RFC 3261 section 14.2): the peer's media moved
        (the platform moving the call to another relay sends one). Accepted when
        only where to send changes: answered 200 with our SDP, and the same
        ZRTP/SRTP session goes on to the new address; else 488."""
        assert self.ua is not None
        try:
            refusal = media.move(remote_of(request.body))
        except (NoCommonCodec, SdpParseError) as exc:
            refusal = str(exc)
        if refusal is not None or media.remote is None:
            self.say(f"re-INVITE refused: {refusal}")
            await self.ua.connection.send(self.ua.answer(request, 488, "Not Acceptable Here"))
            return
        answer = media.sdp.describe((media.remote.codec,))
        await self.ua.connection.send(self.ua.answer(request, 200, "OK", body=answer))
        self.say(f"media moved to {media.remote.address}:{media.remote.port}")

    async def _answer_other(self, request: Request) -> None:
        assert self.ua is not None
        if request.method == "ACK":
            return
        if request.method in ("OPTIONS", "BYE", "CANCEL"):
            await self.ua.connection.send(self.ua.answer(request, 200, "OK"))
        else:
            await self.ua.connection.send(self.ua.answer(request, 486, "Busy Here"))

    async def _hang_up(self, dialog: Dialog) -> None:
        """Send BYE (over a recovered flow if the old one failed) and say how it went."""
        assert self.ua is not None
        try:
            await asyncio.wait_for(self.flow_ready.wait(), FLOW_WAIT)
            exchange = await self.ua.send(self.ua.in_dialog(dialog, "BYE"), timeout=5)
        except (TimeoutError, ConnectionError) as exc:
            self.say(f"BYE not answered: {type(exc).__name__}")
            return
        final = exchange.final
        self.say(f"BYE answered {final.status}" if final else "BYE not answered")
