"""gRPC client channels to other quietwire services."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from quietwire.runtime.interceptors import CallIdClientInterceptor
from quietwire.runtime.tls import TlsFiles, channel_credentials

Options = tuple[tuple[str, int | str], ...]
#: Keepalive: a client pings this often so a dead peer is noticed within
#: seconds, not at the next call, and not never on an idle event stream.
KEEPALIVE_MS = 20_000
#: Reconnect backoff: grpc's default grows to 120 s, so a peer restarted on the
#: same address (a relay or keyagreement pod coming back) went unused for many
#: seconds after it was SERVING. Capped at a second: a peer away for long costs
#: one connection attempt a second per channel.
RECONNECT_BACKOFF_MS = (250, 1_000)


def channel_options(keepalive_ms: int = KEEPALIVE_MS) -> Options:
    """Client keepalive: a ping every ``keepalive_ms``, answered within half that,
    with or without calls and however long no data flowed (grpc's default stops
    after two pings without data: an idle stream to a dead peer would hang); and
    reconnection within a second of a peer's return (:data:`RECONNECT_BACKOFF_MS`)."""
    first, most = RECONNECT_BACKOFF_MS
    return (
        ("grpc.keepalive_time_ms", keepalive_ms),
        ("grpc.keepalive_timeout_ms", keepalive_ms // 2),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.initial_reconnect_backoff_ms", first),
        ("grpc.min_reconnect_backoff_ms", first),
        ("grpc.max_reconnect_backoff_ms", most),
    )


def server_options(keepalive_ms: int = KEEPALIVE_MS) -> Options:
    """What a server must allow for clients with :func:`channel_options`: their
    pings, with or without calls, as often as twice per period (grpc's default
    allows one per five minutes and answers more with GOAWAY ``too_many_pings``,
    which breaks every stream on the connection); and its own pings, so a
    subscriber that died stops holding a stream."""
    return (
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", keepalive_ms // 2),
        ("grpc.keepalive_time_ms", keepalive_ms),
        ("grpc.keepalive_timeout_ms", keepalive_ms // 2),
    )


CHANNEL_OPTIONS = channel_options()


def open_channel(target: str, tls: TlsFiles | None) -> grpc.aio.Channel:
    """A channel to ``target`` (host:port) with mutual TLS, or plain text when ``tls`` is None."""
    interceptors: Sequence[Any] = [CallIdClientInterceptor()]
    if tls is None:
        return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS, interceptors=interceptors)
    options = CHANNEL_OPTIONS
    if tls.server_name is not None:
        options = (*options, ("grpc.ssl_target_name_override", tls.server_name))
    return grpc.aio.secure_channel(
        target, channel_credentials(tls), options=options, interceptors=interceptors
    )


class ChannelPool:
    """One channel per address, opened on first use, all closed together."""

    def __init__(self, tls: TlsFiles | None) -> None:
        self.tls = tls
        self._channels: dict[str, grpc.aio.Channel] = {}

    def channel(self, address: str) -> grpc.aio.Channel:
        if address not in self._channels:
            self._channels[address] = open_channel(address, self.tls)
        return self._channels[address]

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close(None)
        self._channels.clear()
