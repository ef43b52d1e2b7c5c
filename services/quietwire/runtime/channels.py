"""gRPC client channels to other quietwire services."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from quietwire.runtime.interceptors import CallIdClientInterceptor
from quietwire.runtime.tls import TlsFiles, channel_credentials

#: Keepalive so a dead peer is noticed within seconds, not at the next call.
CHANNEL_OPTIONS: tuple[tuple[str, int | str], ...] = (
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
)


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
