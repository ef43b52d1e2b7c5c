"""The ZRTP protocol state machine (RFC 6189 section 4), sans-I/O.

Feed it datagrams (:meth:`ZrtpEngine.receive`) and time (:meth:`poll`, with an
injected :class:`Clock`); take datagrams from :attr:`outbox` and
:class:`Secured` / :class:`Failed` from :attr:`events`. Media is secure only
after a :class:`Secured` event; any failure is a :class:`Failed` with the
reason a user can read, never silent plaintext.

    initiator: DISCOVERY ─► COMMIT_SENT ─DHPart1─► DHPART2_SENT ─Confirm1─► CONFIRM2_SENT
                   ─Conf2ACK─► SECURE
    responder: DISCOVERY ─Commit─► WAITING_DHPART2 ─DHPart2─► CONFIRM1_SENT ─Confirm2─► SECURE
    (both may send Commit: the higher hvi wins and the other becomes responder, 4.2)
    Multistream (4.4.3): Commit(Mult) ─► Confirm1 ─► Confirm2 ─► Conf2ACK, no DHParts.

Retransmission follows section 6: Hello on T1 (50 ms doubling to 200 ms, 20
times), Commit/DHPart2/Confirm2 on T2 (150 ms doubling to 1200 ms, 10 times);
the responder only answers retransmissions.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import os
import secrets
from dataclasses import dataclass, field, replace

from quietwire.protocols.clock import Clock
from quietwire.protocols.zrtp import kdf
from quietwire.protocols.zrtp.algorithms import (
    KeyAgreementType,
    NoCommonAlgorithm,
    Suite,
    negotiate,
)
from quietwire.protocols.zrtp.cache import CacheEntry, ZidCache
from quietwire.protocols.zrtp.errors import ErrorCode, ParseError
from quietwire.protocols.zrtp.keyagreement import BadPublicValue, KeyPair, generate
from quietwire.protocols.zrtp.messages import (
    Commit,
    Conf2ACK,
    Confirm1,
    Confirm2,
    ConfirmPlaintext,
    DHPart1,
    DHPart2,
    Error,
    ErrorACK,
    GoClear,
    Hello,
    HelloACK,
    Message,
    Ping,
    PingACK,
    parse_message,
)
from quietwire.protocols.zrtp.negotiation import (
    NO_COMMON_CODE,
    Unsupported,
    commit_wins,
    offer_of,
    suite_of,
)
from quietwire.protocols.zrtp.packet import ZrtpPacket
from quietwire.protocols.zrtp.sas import render
from quietwire.protocols.zrtp.session import (
    EngineConfig,
    Event,
    Failed,
    MultistreamSession,
    Role,
    Secured,
    SrtpKeys,
)

log = logging.getLogger(__name__)

# Section 6: retransmission timers.
T1_INITIAL, T1_CAP, T1_MAX_RETRANSMISSIONS = 0.050, 0.200, 20
T2_INITIAL, T2_CAP, T2_MAX_RETRANSMISSIONS = 0.150, 1.200, 10


class State(enum.Enum):
    START = "start"
    DISCOVERY = "discovery"
    COMMIT_SENT = "commit-sent"
    WAITING_DHPART2 = "waiting-dhpart2"
    DHPART2_SENT = "dhpart2-sent"
    CONFIRM1_SENT = "confirm1-sent"
    CONFIRM2_SENT = "confirm2-sent"
    SECURE = "secure"
    FAILED = "failed"


_TRANSITIONS: dict[State, frozenset[State]] = {
    State.START: frozenset({State.DISCOVERY}),
    State.DISCOVERY: frozenset(
        {State.COMMIT_SENT, State.WAITING_DHPART2, State.CONFIRM1_SENT, State.FAILED}
    ),
    State.COMMIT_SENT: frozenset(
        {
            State.WAITING_DHPART2,
            State.CONFIRM1_SENT,
            State.DHPART2_SENT,
            State.CONFIRM2_SENT,
            State.FAILED,
        }
    ),
    State.WAITING_DHPART2: frozenset({State.CONFIRM1_SENT, State.FAILED}),
    State.DHPART2_SENT: frozenset({State.CONFIRM2_SENT, State.FAILED}),
    State.CONFIRM1_SENT: frozenset({State.SECURE, State.FAILED}),
    State.CONFIRM2_SENT: frozenset({State.SECURE, State.FAILED}),
    State.SECURE: frozenset(),
    State.FAILED: frozenset(),
}


@dataclass(slots=True)
class _Retransmit:
    message: bytes
    interval: float
    cap: float
    left: int
    deadline: float


@dataclass(slots=True)
class _Handshake:
    """What one exchange accumulates; discarded at the end."""

    peer_hello: Hello | None = None
    peer_hello_raw: bytes = b""
    hello_acked: bool = False
    suite: Suite | None = None
    commit: Commit | None = None
    commit_raw: bytes = b""
    key_pair: KeyPair | None = field(default=None, repr=False)
    own_dhpart: bytes = b""
    peer_dhpart: DHPart1 | DHPart2 | None = None
    keys: kdf.SessionKeys | None = None
    s1_matched: bool = False
    peer_verified: bool = False
    confirm_reply: bytes = b""


class ZrtpEngine:
    """One ZRTP stream of one call."""

    def __init__(
        self,
        config: EngineConfig,
        clock: Clock,
        ssrc: int,
        cache: ZidCache,
        session: MultistreamSession | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.ssrc = ssrc
        self.cache = cache
        self.session = session
        self.chain = kdf.HashChain.generate()
        self.offer = config.offer.with_mandatory()
        self.hello = Hello(
            client_id=config.client_id.ljust(16)[:16],
            h3=self.chain.h3,
            zid=config.zid,
            hashes=self.offer.hashes,
            ciphers=self.offer.ciphers,
            auth_tags=self.offer.auth_tags,
            key_agreements=self.offer.key_agreements,
            sas_types=self.offer.sas_types,
        )
        self.hello = replace(self.hello, mac=kdf.message_mac(self.chain.h2, self.hello.mac_input))
        self.hello_raw = self.hello.serialize()
        self.state = State.START
        self.role: Role | None = None
        self.outbox: list[bytes] = []
        self.events: list[Event] = []
        self.dropped = 0
        self.srtp: SrtpKeys | None = None
        self.secured: Secured | None = None
        self._peer_hello_hash: str | None = None
        self._sequence = secrets.randbelow(0x8000)
        self._timer: _Retransmit | None = None
        self._hs = _Handshake()

    # -- what the endpoint sees ------------------------------------------------

    @property
    def hello_hash(self) -> str:
        """Our ``a=zrtp-hash`` for the SDP (section 8.1)."""
        return kdf.zrtp_hash(self.hello_raw)

    def set_peer_hello_hash(self, value: str) -> None:
        """The peer's ``a=zrtp-hash`` from its SDP; checked against its Hello."""
        self._peer_hello_hash = value.strip().lower()
        if self._hs.peer_hello is not None:
            self._check_binding()

    @property
    def next_timer(self) -> float | None:
        return None if self._timer is None else self._timer.deadline

    def multistream_session(self) -> MultistreamSession:
        """For further streams of this call, once secured in DH mode."""
        keys, suite, secured = self._hs.keys, self._hs.suite, self.secured
        if keys is None or suite is None or secured is None or self.session is not None:
            raise RuntimeError("multistream needs a DH stream that is secure")
        return MultistreamSession(keys.zrtp_session, suite, secured.sas, secured.sas_verified)

    def start(self) -> None:
        self._set_state(State.DISCOVERY)
        self._send(self.hello_raw, T1_INITIAL, T1_CAP, T1_MAX_RETRANSMISSIONS)

    def poll(self) -> None:
        """Run due timers: retransmit, or give up after the last retransmission."""
        timer = self._timer
        if timer is None or self.clock.now() < timer.deadline:
            return
        if timer.left == 0:
            self._timer = None
            self._fail(ErrorCode.PROTOCOL_TIMEOUT, f"no answer from the peer ({self.state.value})")
            return
        timer.left -= 1
        timer.interval = min(timer.interval * 2, timer.cap)
        timer.deadline = self.clock.now() + timer.interval
        self._emit(timer.message)

    def receive(self, datagram: bytes) -> None:
        """One ZRTP packet from the peer; malformed ones are counted and dropped."""
        try:
            message = parse_message(ZrtpPacket.parse(datagram).message)
        except ParseError:
            self.dropped += 1
            return
        if self.state is State.FAILED:
            if not isinstance(message, ErrorACK | Error):
                self.dropped += 1
            return
        handler = _HANDLERS.get(type(message))
        if handler is None:
            self.dropped += 1
            return
        handler(self, message)

    # -- discovery --------------------------------------------------------------

    def _on_hello(self, hello: Message) -> None:
        assert isinstance(hello, Hello)
        if self.state in (State.DISCOVERY, State.COMMIT_SENT):
            self._emit(HelloACK().serialize())
        if self._hs.peer_hello is not None:
            return
        if not hello.version.startswith(b"1.1"):
            self._fail(ErrorCode.UNSUPPORTED_VERSION, "peer speaks another ZRTP version")
            return
        if hello.zid == self.config.zid:
            self._fail(ErrorCode.EQUAL_ZIDS, "the peer uses our ZID")
            return
        self._hs.peer_hello, self._hs.peer_hello_raw = hello, hello.serialize()
        if self._peer_hello_hash is not None and not self._check_binding():
            return
        self._maybe_commit()

    def _check_binding(self) -> bool:
        """RFC 6189 section 8.1: the Hello must hash to the a=zrtp-hash of the SDP."""
        if kdf.zrtp_hash(self._hs.peer_hello_raw) == self._peer_hello_hash:
            return True
        if self.config.binding_mismatch_fatal:
            self._fail(
                ErrorCode.CRITICAL_SOFTWARE_ERROR,
                "peer's ZRTP Hello does not match the a=zrtp-hash of its SDP"
                " (man in the middle on the media path?)",
                send_error=False,
            )
        return False

    def _on_hello_ack(self, _: Message) -> None:
        if self.state is State.DISCOVERY and not self._hs.hello_acked:
            self._hs.hello_acked = True
            self._timer = None
            self._maybe_commit()

    def _maybe_commit(self) -> None:
        hs = self._hs
        if not (self.state is State.DISCOVERY and hs.hello_acked and hs.peer_hello):
            return
        if not self.config.initiate:
            return
        peer = offer_of(hs.peer_hello)
        try:
            suite = (
                replace(self.session.suite, key_agreement=KeyAgreementType.Mult)
                if self.session is not None
                else negotiate(self.offer, peer)
            )
        except NoCommonAlgorithm as exc:
            self._fail(NO_COMMON_CODE[exc.kind], str(exc))
            return
        hs.suite = suite
        commit = Commit(
            h2=self.chain.h2,
            zid=self.config.zid,
            hash=suite.hash.value,
            cipher=suite.cipher.value,
            auth_tag=suite.auth_tag.value,
            key_agreement=suite.key_agreement.value,
            sas=suite.sas.value,
        )
        if self.session is not None:
            commit = replace(commit, nonce=os.urandom(16))
        else:
            hs.key_pair = generate(suite.key_agreement, 2 * suite.cipher.key_length * 8)
            dhpart2 = self._dhpart(DHPart2, Role.INITIATOR, hs.key_pair)
            hs.own_dhpart = dhpart2.serialize()
            commit = replace(commit, hvi=kdf.hvi(suite.hash, hs.own_dhpart, hs.peer_hello_raw))
        commit = replace(commit, mac=kdf.message_mac(self.chain.h1, commit.mac_input))
        hs.commit, hs.commit_raw = commit, commit.serialize()
        self.role = Role.INITIATOR
        self._set_state(State.COMMIT_SENT)
        self._send(hs.commit_raw, T2_INITIAL, T2_CAP, T2_MAX_RETRANSMISSIONS)

    def _dhpart(
        self, cls: type[DHPart1] | type[DHPart2], role: Role, pair: KeyPair
    ) -> DHPart1 | DHPart2:
        entry = self._cache_entry()
        assert self._hs.suite is not None
        hash_type = self._hs.suite.hash

        def ident(secret: bytes | None) -> bytes:
            return kdf.secret_id(hash_type, secret, role.value) if secret else os.urandom(8)

        part = cls(
            h1=self.chain.h1,
            rs1_id=ident(entry.rs1),
            rs2_id=ident(entry.rs2),
            aux_id=os.urandom(8),
            pbx_id=os.urandom(8),
            pv=pair.public_value,
        )
        return replace(part, mac=kdf.message_mac(self.chain.h0, part.mac_input))

    # -- commit, as the responder ------------------------------------------------

    def _on_commit(self, message: Message) -> None:
        assert isinstance(message, Commit)
        hs = self._hs
        if self.state in (State.WAITING_DHPART2, State.CONFIRM1_SENT):
            if message.serialize() == hs.commit_raw and self.role is Role.RESPONDER:
                self._emit(hs.confirm_reply or hs.own_dhpart)
            return
        if self.state not in (State.DISCOVERY, State.COMMIT_SENT) or hs.peer_hello is None:
            self.dropped += 1
            return
        if kdf.next_image(message.h2) != hs.peer_hello.h3:
            self.dropped += 1
            return
        if not kdf.mac_ok(message.h2, hs.peer_hello.mac_input, hs.peer_hello.mac):
            self._fail(ErrorCode.MALFORMED_PACKET, "peer's Hello MAC does not verify")
            return
        if (
            self.state is State.COMMIT_SENT
            and hs.commit is not None
            and commit_wins(hs.commit, message)
        ):
            return  # contention (4.2): ours wins, the peer becomes responder
        try:
            suite = suite_of(message)
        except Unsupported as exc:
            self._fail(exc.code, f"peer chose an algorithm we do not support ({exc.block!r})")
            return
        self._timer = None
        self.role = Role.RESPONDER
        hs.suite, hs.commit, hs.commit_raw = suite, message, message.serialize()
        if not message.is_dh_mode:
            if self.session is None or suite.key_agreement is not KeyAgreementType.Mult:
                self._fail(ErrorCode.NO_SHARED_SECRET, "Multistream without a secured stream")
                return
            self._derive_multistream()
            self._send_confirm(Confirm1, State.CONFIRM1_SENT)
            return
        hs.key_pair = generate(suite.key_agreement, 2 * suite.cipher.key_length * 8)
        hs.own_dhpart = self._dhpart(DHPart1, Role.RESPONDER, hs.key_pair).serialize()
        self._set_state(State.WAITING_DHPART2)
        self._emit(hs.own_dhpart)

    # -- DH exchange ---------------------------------------------------------------

    def _on_dhpart1(self, message: Message) -> None:
        assert isinstance(message, DHPart1)
        hs = self._hs
        if self.state is State.DHPART2_SENT:
            return  # our DHPart2 is on T2 already
        if self.state is not State.COMMIT_SENT or hs.peer_hello is None or hs.commit is None:
            self.dropped += 1
            return
        h2 = kdf.next_image(message.h1)
        if kdf.next_image(h2) != hs.peer_hello.h3:
            self.dropped += 1
            return
        if not kdf.mac_ok(h2, hs.peer_hello.mac_input, hs.peer_hello.mac):
            self._fail(ErrorCode.MALFORMED_PACKET, "peer's Hello MAC does not verify")
            return
        hs.peer_dhpart = message
        if not self._agree(
            message,
            Role.RESPONDER,
            [hs.peer_hello_raw, hs.commit_raw, message.serialize(), hs.own_dhpart],
        ):
            return
        self._set_state(State.DHPART2_SENT)
        self._send(hs.own_dhpart, T2_INITIAL, T2_CAP, T2_MAX_RETRANSMISSIONS)

    def _on_dhpart2(self, message: Message) -> None:
        assert isinstance(message, DHPart2)
        hs = self._hs
        if self.state is State.CONFIRM1_SENT:
            if hs.peer_dhpart is not None and message.serialize() == hs.peer_dhpart.serialize():
                self._emit(hs.confirm_reply)
            return
        if self.state is not State.WAITING_DHPART2 or hs.commit is None or hs.suite is None:
            self.dropped += 1
            return
        if kdf.next_image(message.h1) != hs.commit.h2:
            self.dropped += 1
            return
        if not kdf.mac_ok(message.h1, hs.commit.mac_input, hs.commit.mac):
            self._fail(ErrorCode.MALFORMED_PACKET, "peer's Commit MAC does not verify")
            return
        raw = message.serialize()
        if kdf.hvi(hs.suite.hash, raw, self.hello_raw) != hs.commit.hvi:
            self._fail(ErrorCode.HVI_MISMATCH, ErrorCode.HVI_MISMATCH.reason)
            return
        hs.peer_dhpart = message
        if not self._agree(
            message, Role.INITIATOR, [self.hello_raw, hs.commit_raw, hs.own_dhpart, raw]
        ):
            return
        self._send_confirm(Confirm1, State.CONFIRM1_SENT)

    def _agree(self, peer: DHPart1 | DHPart2, peer_role: Role, transcript: list[bytes]) -> bool:
        """DHResult, s1 from the retained secrets, s0 and the session keys (4.4.1.4)."""
        hs = self._hs
        assert hs.suite is not None and hs.key_pair is not None and hs.peer_hello is not None
        if len(peer.pv) != hs.suite.key_agreement.public_value_length:
            self._fail(ErrorCode.BAD_PUBLIC_VALUE, ErrorCode.BAD_PUBLIC_VALUE.reason)
            return False
        try:
            dh_result = hs.key_pair.agree(peer.pv)
        except BadPublicValue:
            self._fail(ErrorCode.BAD_PUBLIC_VALUE, ErrorCode.BAD_PUBLIC_VALUE.reason)
            return False
        hs.key_pair = None
        s1 = self._matching_secret(peer, peer_role)
        hs.s1_matched = s1 is not None
        zidi, zidr = self._zids()
        total = kdf.total_hash(hs.suite.hash, *transcript)
        s0 = kdf.s0_dh_mode(hs.suite.hash, dh_result, zidi, zidr, total, s1, None, None)
        hs.keys = kdf.derive(hs.suite.hash, hs.suite.cipher, s0, zidi + zidr + total)
        return True

    def _matching_secret(self, peer: DHPart1 | DHPart2, peer_role: Role) -> bytes | None:
        """s1 (section 4.3.1): our rs1 or rs2 whose ID the peer also sent, rs1 first."""
        assert self._hs.suite is not None
        entry = self._cache_entry()
        for their_id in (peer.rs1_id, peer.rs2_id):
            for ours in (entry.rs1, entry.rs2):
                if ours and kdf.secret_id(self._hs.suite.hash, ours, peer_role.value) == their_id:
                    return ours
        return None

    def _derive_multistream(self) -> None:
        hs = self._hs
        assert self.session is not None and hs.suite is not None and hs.peer_hello is not None
        responder_hello = self.hello_raw if self.role is Role.RESPONDER else hs.peer_hello_raw
        zidi, zidr = self._zids()
        total = kdf.total_hash(hs.suite.hash, responder_hello, hs.commit_raw)
        context = zidi + zidr + total
        s0 = kdf.multistream_s0(hs.suite.hash, self.session.zrtp_session, context)
        hs.keys = kdf.derive(hs.suite.hash, hs.suite.cipher, s0, context)

    # -- confirmation ----------------------------------------------------------------

    def _own_keys(self) -> tuple[bytes, bytes]:
        keys = self._hs.keys
        assert keys is not None
        if self.role is Role.INITIATOR:
            return keys.zrtp_key_i, keys.mac_key_i
        return keys.zrtp_key_r, keys.mac_key_r

    def _peer_keys(self) -> tuple[bytes, bytes]:
        keys = self._hs.keys
        assert keys is not None
        if self.role is Role.INITIATOR:
            return keys.zrtp_key_r, keys.mac_key_r
        return keys.zrtp_key_i, keys.mac_key_i

    def _send_confirm(self, cls: type[Confirm1] | type[Confirm2], state: State) -> None:
        assert self._hs.suite is not None
        zrtp_key, mac_key = self._own_keys()
        verified = self.session.sas_verified if self.session else self._cache_entry().sas_verified
        plain = ConfirmPlaintext(
            h0=self.chain.h0, sas_verified=verified, cache_expiration=self.config.cache_expiration
        )
        iv = os.urandom(16)
        encrypted = kdf.cfb_encrypt(zrtp_key, iv, plain.serialize())
        confirm = cls(kdf.confirm_mac(self._hs.suite.hash, mac_key, encrypted), iv, encrypted)
        self._hs.confirm_reply = confirm.serialize()
        self._set_state(state)
        if cls is Confirm1:
            self._emit(self._hs.confirm_reply)
        else:
            self._send(self._hs.confirm_reply, T2_INITIAL, T2_CAP, T2_MAX_RETRANSMISSIONS)

    def _open_confirm(self, confirm: Confirm1 | Confirm2) -> ConfirmPlaintext | None:
        assert self._hs.suite is not None
        zrtp_key, mac_key = self._peer_keys()
        if not kdf.confirm_mac_ok(
            self._hs.suite.hash, mac_key, confirm.encrypted, confirm.confirm_mac
        ):
            self._fail(ErrorCode.BAD_CONFIRM_MAC, ErrorCode.BAD_CONFIRM_MAC.reason)
            return None
        try:
            return ConfirmPlaintext.parse(
                kdf.cfb_decrypt(zrtp_key, confirm.cfb_iv, confirm.encrypted)
            )
        except ParseError:
            self._fail(ErrorCode.MALFORMED_PACKET, "Confirm does not decrypt")
            return None

    def _on_confirm1(self, message: Message) -> None:
        assert isinstance(message, Confirm1)
        hs = self._hs
        if self.state is State.CONFIRM2_SENT:
            return
        multistream = self.state is State.COMMIT_SENT and self.session is not None
        if not (self.state is State.DHPART2_SENT or multistream) or hs.peer_hello is None:
            self.dropped += 1
            return
        if multistream:
            self._derive_multistream()
        plain = self._open_confirm(message)
        if plain is None:
            return
        h1 = kdf.next_image(plain.h0)
        if multistream:
            h2 = kdf.next_image(h1)
            ok = kdf.next_image(h2) == hs.peer_hello.h3 and kdf.mac_ok(
                h2, hs.peer_hello.mac_input, hs.peer_hello.mac
            )
        else:
            ok = self._dhpart_chain_ok(plain.h0, h1)
        if not ok:
            self._fail(ErrorCode.BAD_CONFIRM_MAC, "peer's hash chain does not verify")
            return
        hs.peer_verified = plain.sas_verified
        self._send_confirm(Confirm2, State.CONFIRM2_SENT)

    def _dhpart_chain_ok(self, h0: bytes, h1: bytes) -> bool:
        """The peer's H0 (from its Confirm) opens its DHPart: H1 and the DHPart MAC
        (RFC 6189 section 9)."""
        part = self._hs.peer_dhpart
        return part is not None and h1 == part.h1 and kdf.mac_ok(h0, part.mac_input, part.mac)

    def _on_confirm2(self, message: Message) -> None:
        assert isinstance(message, Confirm2)
        hs = self._hs
        if self.state is State.SECURE:
            if message.serialize() == hs.confirm_reply:
                return
            self._emit(Conf2ACK().serialize())
            return
        if self.state is not State.CONFIRM1_SENT or hs.commit is None:
            self.dropped += 1
            return
        plain = self._open_confirm(message)
        if plain is None:
            return
        h1 = kdf.next_image(plain.h0)
        if self.session is not None:
            ok = kdf.next_image(h1) == hs.commit.h2 and kdf.mac_ok(
                h1, hs.commit.mac_input, hs.commit.mac
            )
        else:
            ok = self._dhpart_chain_ok(plain.h0, h1)
        if not ok:
            self._fail(ErrorCode.BAD_CONFIRM_MAC, "peer's hash chain does not verify")
            return
        hs.peer_verified = plain.sas_verified
        self._emit(Conf2ACK().serialize())
        self._secure()

    def _on_conf2ack(self, _: Message) -> None:
        if self.state is State.CONFIRM2_SENT:
            self._timer = None
            self._secure()

    def _secure(self) -> None:
        hs = self._hs
        assert hs.keys is not None and hs.suite is not None and hs.peer_hello is not None
        keys, suite = hs.keys, hs.suite
        initiator = self.role is Role.INITIATOR
        self.srtp = SrtpKeys(
            cipher=suite.cipher,
            auth_tag=suite.auth_tag,
            send_key=keys.srtp_key_i if initiator else keys.srtp_key_r,
            send_salt=keys.srtp_salt_i if initiator else keys.srtp_salt_r,
            receive_key=keys.srtp_key_r if initiator else keys.srtp_key_i,
            receive_salt=keys.srtp_salt_r if initiator else keys.srtp_salt_i,
        )
        if self.session is not None:
            secured = Secured(
                self.session.sas,
                suite.sas,
                suite,
                self.session.sas_verified,
                cache_mismatch=False,
                multistream=True,
            )
        else:
            entry = self._cache_entry()
            mismatch = (entry.rs1 is not None or entry.rs2 is not None) and not hs.s1_matched
            verified = entry.sas_verified and hs.s1_matched and hs.peer_verified
            self.cache.put(
                hs.peer_hello.zid,
                replace(
                    entry.rotated(keys.new_rs1), sas_verified=entry.sas_verified and not mismatch
                ),
            )
            secured = Secured(
                render(suite.sas, keys.sas_value), suite.sas, suite, verified, mismatch
            )
        self.secured = secured
        self._set_state(State.SECURE)
        self.events.append(secured)

    def mark_sas_verified(self, verified: bool = True) -> None:
        """The user compared the SAS aloud (or withdrew that): remembered for this peer."""
        peer = self._hs.peer_hello
        if peer is None or self.state is not State.SECURE:
            raise RuntimeError("no secured peer to mark")
        self.cache.put(peer.zid, replace(self._cache_entry(), sas_verified=verified))

    # -- errors and the rest ---------------------------------------------------------

    def _on_error(self, message: Message) -> None:
        assert isinstance(message, Error)
        self._emit(ErrorACK().serialize())
        try:
            code = ErrorCode(message.code)
            reason = code.reason
        except ValueError:
            code, reason = ErrorCode.CRITICAL_SOFTWARE_ERROR, f"peer error 0x{message.code:x}"
        self._fail(code, f"peer: {reason}", send_error=False, by_peer=True)

    def _on_goclear(self, _: Message) -> None:
        # We never allow clear media (the A flag is never set): refuse (section 5.11).
        self._emit(Error(ErrorCode.GOCLEAR_NOT_ALLOWED).serialize())

    def _on_ping(self, message: Message) -> None:
        assert isinstance(message, Ping)
        own = hashlib.sha256(self.config.zid).digest()[:8]
        self._emit(PingACK(own, message.endpoint_hash, self.ssrc).serialize())

    def _ignore(self, _: Message) -> None:
        return

    def _fail(
        self, code: ErrorCode, reason: str, *, send_error: bool = True, by_peer: bool = False
    ) -> None:
        if self.state in (State.FAILED, State.SECURE):
            return
        self._timer = None
        self._hs.key_pair = None
        if send_error:
            self._emit(Error(code).serialize())
        self._set_state(State.FAILED)
        self.events.append(Failed(code, reason, by_peer))

    # -- plumbing ---------------------------------------------------------------------

    def _cache_entry(self) -> CacheEntry:
        peer = self._hs.peer_hello
        return (self.cache.get(peer.zid) if peer else None) or CacheEntry()

    def _zids(self) -> tuple[bytes, bytes]:
        peer = self._hs.peer_hello
        assert peer is not None
        if self.role is Role.INITIATOR:
            return self.config.zid, peer.zid
        return peer.zid, self.config.zid

    def _set_state(self, new: State) -> None:
        if new not in _TRANSITIONS[self.state]:
            raise RuntimeError(f"ZRTP transition {self.state.value} -> {new.value}")
        log.debug("zrtp %s -> %s", self.state.value, new.value)
        self.state = new

    def _emit(self, message: bytes) -> None:
        self._sequence = (self._sequence + 1) & 0xFFFF
        self.outbox.append(ZrtpPacket(self._sequence, self.ssrc, message).serialize())

    def _send(self, message: bytes, initial: float, cap: float, retransmissions: int) -> None:
        self._timer = _Retransmit(
            message, initial, cap, retransmissions, self.clock.now() + initial
        )
        self._emit(message)


_HANDLERS = {
    Hello: ZrtpEngine._on_hello,
    HelloACK: ZrtpEngine._on_hello_ack,
    Commit: ZrtpEngine._on_commit,
    DHPart1: ZrtpEngine._on_dhpart1,
    DHPart2: ZrtpEngine._on_dhpart2,
    Confirm1: ZrtpEngine._on_confirm1,
    Confirm2: ZrtpEngine._on_confirm2,
    Conf2ACK: ZrtpEngine._on_conf2ack,
    Error: ZrtpEngine._on_error,
    ErrorACK: ZrtpEngine._ignore,
    GoClear: ZrtpEngine._on_goclear,
    Ping: ZrtpEngine._on_ping,
}
