"""The Prometheus endpoint each service exposes (``QW_METRICS_PORT``, 0 = off)."""

from __future__ import annotations

from dataclasses import dataclass
from threading import Thread
from wsgiref.simple_server import WSGIServer

from prometheus_client import Info, start_http_server

from quietwire import __version__

BUILD = Info("quietwire_build", "quietwire version and service")


@dataclass(slots=True)
class MetricsEndpoint:
    server: WSGIServer
    thread: Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_metrics(service: str, bind: str, port: int) -> MetricsEndpoint | None:
    BUILD.info({"version": __version__, "service": service})
    if port == 0:
        return None
    server, thread = start_http_server(port, addr=bind)
    return MetricsEndpoint(server, thread)
