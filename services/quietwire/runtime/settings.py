"""Typed settings from ``QW_*`` environment variables, files, and an optional YAML file.

Precedence, highest first: environment, a directory of files named like the
variables (``QW_SECRETS_DIR``: secrets as files, e.g. mounted from a
Kubernetes Secret, rather than in the environment), YAML file, defaults. Every setting is
validated at start; a bad value raises :class:`SettingsError`, whose message
names the setting as an operator writes it (``QW_SIP_PORT``), and the process
stops. :meth:`QuietwireSettings.redacted` is what the startup log prints:
secrets and URL passwords hidden.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import Field, FilePath, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
)

from quietwire.runtime.tls import TlsFiles

ENV_PREFIX = "QW_"
#: A directory holding one file per setting, named like its variable (QW_REDIS_PASSWORD).
SECRETS_DIR_ENV = "QW_SECRETS_DIR"

Port = Annotated[int, Field(ge=1, le=65535)]
#: A listening port where 0 turns the listener off.
OptionalPort = Annotated[int, Field(ge=0, le=65535)]
#: A listening port where 0 lets the kernel pick a free one (reported through QW_READY_FD).
AnyPort = Annotated[int, Field(ge=0, le=65535)]
Seconds = Annotated[float, Field(gt=0, le=86400)]
LogLevel = Literal["debug", "info", "warning", "error"]

S = TypeVar("S", bound="QuietwireSettings")

_yaml_values: ContextVar[Mapping[str, Any] | None] = ContextVar("quietwire_yaml", default=None)


class SettingsError(Exception):
    """A setting is missing or invalid; the message names it."""


def env_name(field: str) -> str:
    """The environment variable of a setting: ``sip_port`` → ``QW_SIP_PORT``."""
    return f"{ENV_PREFIX}{field.upper()}"


class _YamlSource(PydanticBaseSettingsSource):
    """Values from the YAML file being loaded (see :func:`load_settings`)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return (_yaml_values.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        fields = self.settings_cls.model_fields
        return {k: v for k, v in (_yaml_values.get() or {}).items() if k in fields}


class QuietwireSettings(BaseSettings):
    """Base of every settings class; subclasses add their fields."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", frozen=True, validate_default=True
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        files = os.environ.get(SECRETS_DIR_ENV)
        from_files = (SecretsSettingsSource(settings_cls, secrets_dir=files),) if files else ()
        return init_settings, env_settings, *from_files, _YamlSource(settings_cls)

    def redacted(self) -> dict[str, Any]:
        """Every setting by its environment name, secrets hidden, for the startup log."""
        values = self.model_dump(mode="json")
        return {env_name(k): _redact_url(v) if isinstance(v, str) else v for k, v in values.items()}


def _redact_url(value: str) -> str:
    if "://" not in value or "@" not in value:
        return value
    parts = urlsplit(value)
    if parts.password is None:
        return value
    host = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class CommonSettings(QuietwireSettings):
    """Settings of every process, services and admin commands alike."""

    log_level: LogLevel = "info"
    #: Privacy (OSTN): IP addresses are masked in logs unless this is on.
    log_ips: bool = False
    #: redis:// or rediss:// (TLS) or unix://; with Sentinels only its scheme,
    #: database number and user count (the master's address comes from them).
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_password: SecretStr | None = None
    #: The CA that signs the Redis server's certificate (rediss://); default: the system's.
    redis_tls_ca: FilePath | None = None
    #: Redis Sentinels as host:port,host:port; they name the current master of
    #: QW_REDIS_SENTINEL_MASTER and are asked again after a failover.
    #: QW_REDIS_PASSWORD authenticates to the Sentinels too.
    redis_sentinels: str = ""
    redis_sentinel_master: Annotated[str, Field(min_length=1)] = "mymaster"
    #: Writes whose loss matters (registrations, dialogs, call records) wait
    #: until this many replicas hold them (Redis ``WAIT``) before the request is
    #: answered, so a failover cannot take back what a phone was told; 0 (a
    #: single Redis): no waiting.
    redis_wait_replicas: Annotated[int, Field(ge=0, le=16)] = 0
    #: How long such a write waits for the replicas. Past it the write stands on
    #: the master and the request is answered; the shortfall is counted
    #: (``quietwire_redis_unreplicated_writes_total``) and logged.
    redis_wait_timeout: Annotated[float, Field(gt=0, le=10)] = 0.25

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinels(cls, value: str) -> str:
        for item in filter(None, (part.strip() for part in value.split(","))):
            host, _, port = item.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{item!r} is not host:port")
        return value

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        items = filter(None, (part.strip() for part in self.redis_sentinels.split(",")))
        return [
            (host.strip("[]"), int(port)) for host, _, port in (i.rpartition(":") for i in items)
        ]


class SipDomainSettings(QuietwireSettings):
    #: The SIP domain of users' addresses of record, and the digest realm.
    sip_domain: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9.:\[\]-]+$")] = "127.0.0.1"


class ServiceSettings(CommonSettings):
    """Settings of a long-running service: its gRPC server, metrics and shutdown."""

    grpc_bind: str = "127.0.0.1"
    grpc_port: AnyPort = 50051
    #: Where other services reach this one's gRPC (default: the bind address and port).
    grpc_advertise: str | None = None
    #: Server certificate and key, and the CA that signs peers' client
    #: certificates (mutual TLS between services).
    grpc_tls_cert: FilePath | None = None
    grpc_tls_key: FilePath | None = None
    grpc_tls_ca: FilePath | None = None
    #: The DNS name every service's gRPC certificate carries. When set, peers
    #: are verified against it instead of the address they are dialled at
    #: (pods and host-network relays are reached by IP).
    grpc_tls_server_name: Annotated[str, Field(pattern=r"^[A-Za-z0-9.-]{1,253}$")] | None = None
    #: Plain-text gRPC; for tests and local debugging only.
    grpc_insecure: bool = False
    #: A plain-text port that serves only the gRPC health service, for
    #: Kubernetes' native gRPC probes (which cannot do TLS); 0 turns it off.
    health_bind: str = "127.0.0.1"
    health_port: OptionalPort = 0
    metrics_bind: str = "127.0.0.1"
    metrics_port: OptionalPort = 0
    #: An open file descriptor the service writes one JSON line to once it
    #: listens, naming its ports (``grpc_port``, ``health_port``,
    #: ``metrics_port``), then closes: readiness for a supervisor such as
    #: ``quietwire up``, like s6's notification-fd.
    ready_fd: Annotated[int, Field(ge=3)] | None = None
    #: A listening socket, already bound, to serve metrics on instead of
    #: QW_METRICS_BIND:QW_METRICS_PORT: its supervisor (``quietwire up``) binds
    #: port 0 and hands it over, so no other process can take the port meanwhile.
    metrics_fd: Annotated[int, Field(ge=3)] | None = None
    #: After SIGTERM: how long calls in progress may take to finish.
    drain_timeout: Seconds = 30.0
    #: Then how long in-flight RPCs get before the server stops.
    shutdown_grace: Seconds = 5.0

    @model_validator(mode="after")
    def _grpc_tls_complete(self) -> Self:
        if not self.grpc_insecure:
            for name in ("grpc_tls_cert", "grpc_tls_key", "grpc_tls_ca"):
                if getattr(self, name) is None:
                    raise ValueError(
                        f"{env_name(name)} is required unless {env_name('grpc_insecure')}=true"
                    )
        return self

    @field_validator("ready_fd", "metrics_fd")
    @classmethod
    def _open_fd(cls, value: int | None) -> int | None:
        if value is not None:
            try:
                os.fstat(value)
            except OSError:
                raise ValueError("not an open file descriptor") from None
        return value

    @field_validator("grpc_bind", "metrics_bind", "health_bind")
    @classmethod
    def _bind_address(cls, value: str) -> str:
        ipaddress.ip_address(value.strip("[]"))
        return value

    @property
    def grpc_tls(self) -> TlsFiles | None:
        """The mutual-TLS files, or None with ``QW_GRPC_INSECURE=true``."""
        cert, key, ca = self.grpc_tls_cert, self.grpc_tls_key, self.grpc_tls_ca
        if self.grpc_insecure or cert is None or key is None or ca is None:
            return None
        return TlsFiles(cert, key, ca, self.grpc_tls_server_name)

    @property
    def grpc_peer_address(self) -> str:
        if self.grpc_advertise:
            return self.grpc_advertise
        return host_port(_reachable(self.grpc_bind), self.grpc_port)

    @property
    def grpc_address(self) -> str:
        return host_port(self.grpc_bind, self.grpc_port)

    @property
    def health_address(self) -> str:
        return host_port(self.health_bind, self.health_port)

    @property
    def health_peer_address(self) -> str:
        """Where a process on this host asks the plain health port."""
        return host_port(_reachable(self.health_bind), self.health_port)


def _reachable(bind: str) -> str:
    """An address to reach a listener bound to ``bind`` from this host."""
    return "127.0.0.1" if bind in ("0.0.0.0", "::") else bind  # noqa: S104


def host_port(host: str, port: int) -> str:
    """``host:port`` with an IPv6 host in brackets."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def _format(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        loc = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if loc:
            shown = (
                "" if "secret" in item["type"] or "password" in loc else f" (got {item['input']!r})"
            )
            if item["type"] == "missing":
                shown = ""
            lines.append(f"invalid setting {env_name(loc)}: {message}{shown}")
        else:
            lines.append(f"invalid settings: {message}")
    return "; ".join(lines)


def known_settings() -> set[str]:
    """Names of every setting of every imported settings class.

    One YAML file may serve several services, so a key is unknown only when
    no class has it (a typo).
    """
    found: set[str] = set()
    stack: list[type[QuietwireSettings]] = [QuietwireSettings]
    while stack:
        cls = stack.pop()
        found.update(cls.model_fields)
        stack.extend(cls.__subclasses__())
    return found


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML settings file: a mapping of setting names (``sip_port: 5061``)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"cannot read config file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise SettingsError(f"config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"config file {path} must hold a mapping of setting names")
    unknown = sorted(str(k) for k in data if k not in known_settings())
    if unknown:
        raise SettingsError(f"config file {path}: unknown setting(s) {', '.join(unknown)}")
    return data


@contextmanager
def _yaml_context(values: Mapping[str, Any]) -> Iterator[None]:
    token = _yaml_values.set(values)
    try:
        yield
    finally:
        _yaml_values.reset(token)


def load_settings(cls: type[S], config_file: Path | None = None, **overrides: Any) -> S:
    """Settings of ``cls`` from the environment, ``config_file`` and ``overrides``.

    Raises :class:`SettingsError` naming the first bad setting(s).
    """
    values = read_yaml(config_file) if config_file is not None else {}
    files = os.environ.get(SECRETS_DIR_ENV)
    if files and not Path(files).is_dir():
        raise SettingsError(f"invalid setting {SECRETS_DIR_ENV}: {files} is not a directory")
    try:
        with _yaml_context(values):
            return cls(**overrides)
    except ValidationError as exc:
        raise SettingsError(_format(exc)) from None
