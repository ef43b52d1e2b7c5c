"""A bzrtp ZRTP endpoint in-process through ctypes: Linphone's ZRTP engine as a test peer.

Only what the handshake tests need: create a context with chosen algorithms,
start it, feed it packets and time, collect what it sends, its SAS and keys.
Test-only: libbzrtp is GPL and never linked by quietwire.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools
from dataclasses import dataclass, field

_lib_path = ctypes.util.find_library("bzrtp")
lib = ctypes.CDLL(_lib_path) if _lib_path else None

FAMILIES = {"hash": 0x01, "cipher": 0x02, "auth": 0x04, "key_agreement": 0x08, "sas": 0x10}

STATUS = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_void_p, ctypes.c_uint8, ctypes.c_uint8, ctypes.c_char_p
)
SEND = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint8), ctypes.c_uint16
)
SECRETS = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint8)
START = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32)


class SrtpSecrets(ctypes.Structure):
    _fields_ = [
        ("self_key", ctypes.POINTER(ctypes.c_uint8)),
        ("self_key_length", ctypes.c_uint8),
        ("self_salt", ctypes.POINTER(ctypes.c_uint8)),
        ("self_salt_length", ctypes.c_uint8),
        ("peer_key", ctypes.POINTER(ctypes.c_uint8)),
        ("peer_key_length", ctypes.c_uint8),
        ("peer_salt", ctypes.POINTER(ctypes.c_uint8)),
        ("peer_salt_length", ctypes.c_uint8),
        ("cipher", ctypes.c_uint8),
        ("cipher_key_length", ctypes.c_uint8),
        ("auth_tag", ctypes.c_uint8),
        ("sas", ctypes.c_char_p),
        ("sas_length", ctypes.c_uint8),
    ]


class Callbacks(ctypes.Structure):
    _fields_ = [
        ("status", STATUS),
        ("level", ctypes.c_int),
        ("send", SEND),
        ("secrets", SECRETS),
        ("start", START),
        ("exported_keys", ctypes.c_void_p),
    ]


if lib is not None:
    lib.bzrtp_createBzrtpContext.restype = ctypes.c_void_p
    lib.bzrtp_initBzrtpContext.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.bzrtp_setCallbacks.argtypes = [ctypes.c_void_p, ctypes.POINTER(Callbacks)]
    lib.bzrtp_setClientData.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p]
    lib.bzrtp_startChannelEngine.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.bzrtp_iterate.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint64]
    lib.bzrtp_processMessage.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_char_p,
        ctypes.c_uint16,
    ]
    lib.bzrtp_destroyBzrtpContext.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.bzrtp_setSupportedCryptoTypes.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint8,
        ctypes.POINTER(ctypes.c_uint8),
        ctypes.c_uint8,
    ]
    lib.bzrtp_cryptoAlgoTypeStringToInt.restype = ctypes.c_uint8
    lib.bzrtp_cryptoAlgoTypeStringToInt.argtypes = [ctypes.c_char_p, ctypes.c_uint8]
    lib.bzrtp_getSelfHelloHash.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_char_p,
        ctypes.c_size_t,
    ]
    lib.bzrtp_setPeerHelloHash.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_char_p,
        ctypes.c_size_t,
    ]

_peers: dict[int, BzrtpPeer] = {}
_ids = itertools.count(1)


def _bytes(pointer: ctypes._Pointer[ctypes.c_uint8], length: int) -> bytes:
    return ctypes.string_at(pointer, length)


@STATUS
def _on_status(client: int | None, level: int, message_id: int, text: bytes | None) -> int:
    _peers[client or 0].status.append((level, message_id, (text or b"").decode(errors="replace")))
    return 0


@SEND
def _on_send(client: int | None, packet: ctypes._Pointer[ctypes.c_uint8], length: int) -> int:
    _peers[client or 0].outbox.append(_bytes(packet, length))
    return 0


@SECRETS
def _on_secrets(client: int | None, secrets: int | None, part: int) -> int:
    return 0


@START
def _on_start(client: int | None, secrets: int | None, verified: int) -> int:
    s = SrtpSecrets.from_address(secrets or 0)
    peer = _peers[client or 0]
    peer.sas = (s.sas or b"").decode()
    peer.verified = bool(verified)
    peer.send_key = _bytes(s.self_key, s.self_key_length)
    peer.send_salt = _bytes(s.self_salt, s.self_salt_length)
    peer.receive_key = _bytes(s.peer_key, s.peer_key_length)
    peer.receive_salt = _bytes(s.peer_salt, s.peer_salt_length)
    return 0


_CALLBACKS = Callbacks(_on_status, 3, _on_send, _on_secrets, _on_start, None)


@dataclass
class BzrtpPeer:
    """One bzrtp context with one channel (SSRC)."""

    ssrc: int
    algorithms: dict[str, list[bytes]] = field(default_factory=dict)
    outbox: list[bytes] = field(default_factory=list)
    status: list[tuple[int, int, str]] = field(default_factory=list)
    sas: str | None = None
    verified: bool = False
    send_key: bytes = b""
    send_salt: bytes = b""
    receive_key: bytes = b""
    receive_salt: bytes = b""

    def __post_init__(self) -> None:
        assert lib is not None
        self.id = next(_ids)
        _peers[self.id] = self
        self.context = lib.bzrtp_createBzrtpContext()
        for family, names in self.algorithms.items():
            ids = (ctypes.c_uint8 * 7)(
                *(lib.bzrtp_cryptoAlgoTypeStringToInt(n, FAMILIES[family]) for n in names)
            )
            lib.bzrtp_setSupportedCryptoTypes(self.context, FAMILIES[family], ids, len(names))
        assert lib.bzrtp_setCallbacks(self.context, ctypes.byref(_CALLBACKS)) == 0
        assert lib.bzrtp_initBzrtpContext(self.context, self.ssrc) == 0
        assert lib.bzrtp_setClientData(self.context, self.ssrc, self.id) == 0

    @property
    def hello_hash(self) -> str:
        assert lib is not None
        out = ctypes.create_string_buffer(70)
        assert lib.bzrtp_getSelfHelloHash(self.context, self.ssrc, out, 70) == 0
        return out.value.decode()

    def set_peer_hello_hash(self, value: str) -> int:
        assert lib is not None
        raw = value.encode()
        return int(lib.bzrtp_setPeerHelloHash(self.context, self.ssrc, raw, len(raw)))

    def start(self) -> None:
        assert lib is not None
        assert lib.bzrtp_startChannelEngine(self.context, self.ssrc) == 0

    def receive(self, packet: bytes) -> int:
        assert lib is not None
        return int(lib.bzrtp_processMessage(self.context, self.ssrc, packet, len(packet)))

    def iterate(self, now_ms: int) -> None:
        assert lib is not None
        lib.bzrtp_iterate(self.context, self.ssrc, now_ms)

    def close(self) -> None:
        assert lib is not None
        lib.bzrtp_destroyBzrtpContext(self.context, self.ssrc)
        _peers.pop(self.id, None)
