"""Task queues and the Temporal connection settings.

The dataclasses here mirror the Rust ``FromPyObject`` structs: only flat values and bytes
cross into Rust, so certificate files are read here and durations carry a ``_millis`` suffix.

The current connection settings come from :func:`configure` when it was called, else from
NOMAD's configuration as a distro has it (:mod:`nomad_actions.settings`: ``nomad.yaml`` or the
files in ``NOMAD_CONFIG``, overridden by ``NOMAD_TEMPORAL_HOST``, ``NOMAD_TEMPORAL_PORT``, ...),
read each time :func:`get_config` is called (cached while nothing changed).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from nomad_actions.errors import ConfigurationError
from nomad_actions.settings import NomadSettings, load_settings, read_pem

__all__ = [
    "ConnectionConfig",
    "TaskQueue",
    "actions_dir",
    "TlsConfig",
    "configure",
    "get_config",
    "reset_config",
    "task_queue_name",
]

DEFAULT_HOST = "localhost"
DEFAULT_PORT = 7233
DEFAULT_NAMESPACE = "default"
DEFAULT_CONNECT_TIMEOUT_MILLIS = 5000
#: How long a client call (start, describe, signal, list, ...) may wait for its answer.
DEFAULT_RPC_TIMEOUT_MILLIS = 10_000

ENV_HOST = "NOMAD_TEMPORAL_HOST"
ENV_PORT = "NOMAD_TEMPORAL_PORT"
ENV_NAMESPACE = "NOMAD_TEMPORAL_NAMESPACE"
ENV_API_KEY = "NOMAD_TEMPORAL_API_KEY"
ENV_TLS = "NOMAD_TEMPORAL_TLS"
ENV_TLS_CA = "NOMAD_TEMPORAL_TLS_CA_CERT"
ENV_TLS_CERT = "NOMAD_TEMPORAL_TLS_CLIENT_CERT"
ENV_TLS_KEY = "NOMAD_TEMPORAL_TLS_CLIENT_KEY"
ENV_TLS_SERVER_NAME = "NOMAD_TEMPORAL_TLS_SERVER_NAME"
ENV_API_SECRET = "NOMAD_SERVICES_API_SECRET"
ENV_MODE = "NOMAD_SERVICES_MODE"
#: nomad-lab's default API secret, which it refuses in production mode.
UPSTREAM_DEFAULT_API_SECRET = "defaultApiSecret"
DEFAULT_PAYLOAD_CODEC_KEY_ID = "default"
#: gRPC compression modes; ``auto`` compresses unless the server is on a loopback address.
GRPC_COMPRESSION_MODES = ("auto", "gzip", "none")
#: The variable that sets ``grpc_compression`` when :func:`configure` does not.
GRPC_COMPRESSION_ENV = "NOMAD_ACTIONS_GRPC_COMPRESSION"
#: Upstream's variable for `fs.actions` (read through nomad_actions.settings).
ENV_FS_ACTIONS = "NOMAD_FS_ACTIONS"


class TaskQueue(str, Enum):
    """The task queues NOMAD workers listen on."""

    CPU = "cpu-task-queue"
    GPU = "gpu-task-queue"
    NOMAD_INTERNAL_WORKFLOWS = "nomad-internal-workflows-task-queue"


def task_queue_name(task_queue: TaskQueue | str) -> str:
    """Returns the plain queue name of a ``TaskQueue`` member or a string.

    ``str(TaskQueue.CPU)`` is ``'TaskQueue.CPU'`` on some Python versions, so use this
    wherever the name is sent to Temporal.

    Args:
        task_queue: A ``TaskQueue`` member or a queue name.

    Returns:
        The queue name, e.g. ``'cpu-task-queue'``.
    """
    if isinstance(task_queue, Enum):
        return str(task_queue.value)
    return str(task_queue)


@dataclass(frozen=True)
class TlsConfig:
    """TLS settings for the Temporal connection.

    Holds the certificate contents as bytes: :func:`configure` reads the file paths it is given,
    and Rust only ever gets bytes. Fields left None use the system roots / no client auth.

    Attributes:
        server_root_ca_cert: PEM of the CA that signed the server certificate.
        client_cert: PEM of the client certificate (mTLS).
        client_private_key: PEM of the client private key (mTLS).
        domain: Server name to verify instead of the host.
    """

    server_root_ca_cert: bytes | None = None
    client_cert: bytes | None = None
    client_private_key: bytes | None = field(default=None, repr=False)
    domain: str | None = None


def _default_identity() -> str:
    return f"{os.getpid()}@{socket.gethostname()}"


def _check_port(value: Any, source: str) -> int:
    """Returns ``value`` as a port number, or raises ValueError naming ``source``."""
    port: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        port = value
    elif isinstance(value, str) and value.strip().isdigit():
        port = int(value.strip())
    if port is None or not 1 <= port <= 65535:
        raise ValueError(f"{source} must be an integer from 1 to 65535, got {value!r}")
    return port


@dataclass(frozen=True)
class ConnectionConfig:
    """How to reach the Temporal server.

    Attributes:
        host: Server host name.
        port: Server port (1 to 65535).
        namespace: Temporal namespace.
        api_key: API key sent as a bearer token (``authorization: Bearer <key>``), or None.
        tls: TLS settings, or None for a plain connection. With an ``api_key`` it is never
            None: a key alone means TLS with the system roots.
        connect_timeout_millis: Connection timeout in milliseconds.
        identity: Client/worker identity shown in Temporal, ``pid@hostname`` by default.
        api_secret: NOMAD API secret; payloads are encrypted with it (upstream NOMAD's
            Fernet codec) unless ``development`` is set.
        development: NOMAD development mode: payloads travel as plain JSON.
        rpc_timeout_millis: How long a client call may wait for the server's answer before
            it fails with ``TemporalConnectionError`` (a stalled connection, a partition);
            waiting for a result is bounded by its own ``timeout`` instead.
        payload_codec_key: upstream 2.0's ``temporal.payload_codec_key``: when set, payloads
            are encrypted with it (also in development mode) and carry
            ``payload_codec_key_id`` in their ``encryption-key-id`` metadata.
        payload_codec_key_id: the id written with, and expected on, payloads encrypted
            with ``payload_codec_key``.
        grpc_compression: gRPC body compression, ``gzip``, ``none`` or ``auto`` (the
            default: ``none`` when ``host`` is ``localhost``, 127.0.0.0/8 or ``::1``, where
            compressing saves no bandwidth and costs CPU on both ends; ``gzip`` otherwise,
            temporalio's default). The server may always answer uncompressed.
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    namespace: str = DEFAULT_NAMESPACE
    api_key: str | None = field(default=None, repr=False)
    tls: TlsConfig | None = None
    connect_timeout_millis: int = DEFAULT_CONNECT_TIMEOUT_MILLIS
    identity: str = field(default_factory=_default_identity)
    api_secret: str | None = field(default=None, repr=False)
    development: bool = False
    rpc_timeout_millis: int = DEFAULT_RPC_TIMEOUT_MILLIS
    payload_codec_key: str | None = field(default=None, repr=False)
    payload_codec_key_id: str = DEFAULT_PAYLOAD_CODEC_KEY_ID
    grpc_compression: str = "auto"

    @property
    def payload_secret(self) -> str | None:
        """The API secret the payload codec keys with, or None.

        Outside development mode payloads are encrypted with it (or with
        ``payload_codec_key`` when set), as upstream NOMAD. In development mode it is None
        unless a ``payload_codec_key`` turns the codec on, where it still decrypts payloads
        written without a key id.
        """
        if not self.api_secret or (self.development and not self.payload_codec_key):
            return None
        return self.api_secret

    def __post_init__(self) -> None:
        if self.api_key and self.tls is None:
            # An API key only travels over TLS (``https``); as in temporalio, a key alone
            # means TLS with the system roots. Without this, the connection could never open.
            object.__setattr__(self, "tls", TlsConfig())
        _check_port(self.port, "port")
        if not self.host:
            raise ValueError("host must not be empty")
        if not self.namespace:
            raise ValueError("namespace must not be empty")
        if self.connect_timeout_millis <= 0:
            raise ValueError(
                f"connect_timeout_millis must be positive, got {self.connect_timeout_millis!r}"
            )
        if self.rpc_timeout_millis <= 0:
            raise ValueError(
                f"rpc_timeout_millis must be positive, got {self.rpc_timeout_millis!r}"
            )
        _check_compression(self.grpc_compression, "grpc_compression")

    def require_payload_security(self) -> None:
        """Refuses to run with plain payloads outside development mode, as upstream NOMAD does.

        Raises:
            ConfigurationError: Not in development mode and no API secret is set (or it is
                upstream's placeholder ``defaultApiSecret``); the message names the settings.
        """
        if self.development:
            return
        if not self.api_secret or self.api_secret == UPSTREAM_DEFAULT_API_SECRET:
            what = (
                "no API secret is set"
                if not self.api_secret
                else "the API secret is NOMAD's default"
            )
            raise ConfigurationError(
                f"Outside NOMAD's development mode payloads must be encrypted, but {what}: set "
                "services.api_secret in nomad.yaml (or NOMAD_SERVICES_API_SECRET, or "
                "configure(api_secret=...)), or run in development mode (services.mode: "
                "development, NOMAD_SERVICES_MODE=development)",
                key="services.api_secret",
            )

    @property
    def target_url(self) -> str:
        """``http://host:port``, or ``https://host:port`` when TLS or an API key is set."""
        scheme = "https" if self.tls is not None or self.api_key else "http"
        return f"{scheme}://{self.address}"

    @property
    def address(self) -> str:
        """``host:port``."""
        return f"{self.host}:{self.port}"


_lock = threading.Lock()
_configured: ConnectionConfig | None = None


def _tls_from_settings(settings: NomadSettings) -> TlsConfig | None:
    """TLS as upstream decides it: on when ``use_tls`` or any certificate/domain is set."""
    temporal = settings.temporal
    values: dict[str, Any] = {}
    for key, value in (
        ("tls_server_root_ca_cert", temporal.tls_server_root_ca_cert),
        ("tls_client_cert", temporal.tls_client_cert),
        (
            "tls_client_key",
            temporal.tls_client_key.get_secret_value() if temporal.tls_client_key else None,
        ),
    ):
        if value:
            values[_TLS_FIELDS[key]] = read_pem(value, _setting_name(settings, f"temporal.{key}"))
    if temporal.tls_domain:
        values["domain"] = temporal.tls_domain
    use_tls_set = "temporal.use_tls" in settings.sources
    if use_tls_set and not temporal.use_tls and values:
        raise ConfigurationError(
            f"{_setting_name(settings, 'temporal.use_tls')}=false conflicts with the TLS "
            "certificate settings",
            key="temporal.use_tls",
        )
    if values or temporal.use_tls:
        return TlsConfig(**values)
    return None


_TLS_FIELDS = {
    "tls_server_root_ca_cert": "server_root_ca_cert",
    "tls_client_cert": "client_cert",
    "tls_client_key": "client_private_key",
}


def _setting_name(settings: NomadSettings, key: str) -> str:
    """How to name a setting in an error: the variable or file it came from, and the key."""
    source = settings.source(key)
    if source.startswith("env "):
        return source.removeprefix("env ")
    return f"{source}: {key}" if source != "default" else key


def _check_compression(value: object, name: str) -> str:
    if value not in GRPC_COMPRESSION_MODES:
        raise ValueError(
            f"{name} must be one of {', '.join(GRPC_COMPRESSION_MODES)}; got {value!r}"
        )
    return value  # type: ignore[return-value]


def _compression_from_env() -> str:
    value = os.environ.get(GRPC_COMPRESSION_ENV, "auto").strip().lower() or "auto"
    try:
        return _check_compression(value, GRPC_COMPRESSION_ENV)
    except ValueError as err:
        raise ConfigurationError(str(err), key=GRPC_COMPRESSION_ENV) from None


def _config_from_settings(settings: NomadSettings) -> ConnectionConfig:
    temporal = settings.temporal
    port_source = settings.source("temporal.port")
    port_value: Any = temporal.port
    if port_source.startswith("env "):
        # The variable's own text, so the error shows what the operator wrote.
        port_value = os.environ.get(port_source.removeprefix("env "), temporal.port)
    port = _check_port(port_value, _setting_name(settings, "temporal.port"))
    secret = settings.services.api_secret
    codec_key = temporal.payload_codec_key
    return ConnectionConfig(
        host=temporal.host or DEFAULT_HOST,
        port=port,
        namespace=temporal.namespace or DEFAULT_NAMESPACE,
        api_key=temporal.api_key.get_secret_value() if temporal.api_key else None,
        tls=_tls_from_settings(settings),
        api_secret=secret.get_secret_value() if secret else None,
        development=settings.development,
        payload_codec_key=codec_key.get_secret_value() if codec_key else None,
        payload_codec_key_id=temporal.payload_codec_key_id or DEFAULT_PAYLOAD_CODEC_KEY_ID,
        grpc_compression=_compression_from_env(),
    )


def settings() -> NomadSettings:
    """NOMAD's configuration (nomad.yaml + ``NOMAD_*`` variables); see
    :func:`nomad_actions.settings.load_settings`."""
    return load_settings()


def actions_dir() -> Path:
    """Returns upstream NOMAD's ``fs.actions`` directory, where action runs keep their files.

    From NOMAD's configuration (``fs.actions`` in nomad.yaml, ``NOMAD_FS_ACTIONS``), read each
    call; default ``.volumes/fs/actions`` (relative to the working directory, as upstream).
    Not created here.

    Returns:
        The directory as an absolute path.
    """
    return Path(load_settings().fs.actions).expanduser().absolute()


def get_config() -> ConnectionConfig:
    """Returns the current connection settings.

    Returns:
        The settings from the last :func:`configure` call, or, if there was none (or
        :func:`reset_config` dropped it), settings read from the environment now.

    Raises:
        ValueError: ``NOMAD_TEMPORAL_PORT`` is not a port number.
    """
    with _lock:
        configured = _configured
    return configured if configured is not None else _config_from_settings(load_settings())


def reset_config() -> None:
    """Drops the settings made by :func:`configure`, going back to the environment."""
    global _configured
    with _lock:
        _configured = None


def _read(path: str | os.PathLike[str]) -> bytes:
    return Path(path).read_bytes()


def _tls_from_arg(tls: bool | TlsConfig | Mapping[str, Any] | None) -> TlsConfig | None:
    if tls is None or tls is False:
        return None
    if tls is True:
        return TlsConfig()
    if isinstance(tls, TlsConfig):
        return tls
    if isinstance(tls, Mapping):
        known = {f.name for f in dataclasses.fields(TlsConfig)}
        unknown = sorted(set(tls) - known)
        if unknown:
            raise TypeError(
                f"tls got unknown keys {', '.join(unknown)}; expected some of "
                f"{', '.join(sorted(known))}"
            )
        values = {
            k: v.encode() if isinstance(v, str) and k != "domain" else v for k, v in tls.items()
        }
        return TlsConfig(**values)
    raise TypeError(f"tls must be a bool, TlsConfig, dict or None, got {type(tls).__name__}")


def configure(
    *,
    host: str | None = None,
    port: int | None = None,
    namespace: str | None = None,
    api_key: str | None = None,
    tls: bool | TlsConfig | Mapping[str, Any] | None = None,
    connect_timeout: float | None = None,
    tls_server_ca_cert_path: str | os.PathLike[str] | None = None,
    tls_client_cert_path: str | os.PathLike[str] | None = None,
    tls_client_key_path: str | os.PathLike[str] | None = None,
    tls_server_name: str | None = None,
    api_secret: str | None = None,
    development: bool | None = None,
    rpc_timeout: float | None = None,
    payload_codec_key: str | None = None,
    payload_codec_key_id: str | None = None,
    grpc_compression: str | None = None,
) -> ConnectionConfig:
    """Changes the connection settings used from now on.

    Only the arguments given (not None) change; the rest keep their current values
    (see :func:`get_config`). The result stays in effect until :func:`reset_config`.

    Args:
        host: Server host name.
        port: Server port, 1 to 65535.
        namespace: Temporal namespace.
        api_key: API key, sent as a bearer token; implies TLS (with the system roots unless
            TLS is configured otherwise). An empty string removes it.
        tls: True for TLS with system roots, False for no TLS, or a ``TlsConfig`` or a dict of
            its fields (PEM strings are encoded to bytes).
        connect_timeout: Connection timeout in seconds.
        tls_server_ca_cert_path: File with the server CA certificate (PEM); implies TLS.
        tls_client_cert_path: File with the client certificate (PEM); implies TLS.
        tls_client_key_path: File with the client private key (PEM); implies TLS.
        tls_server_name: Server name to verify; implies TLS.
        api_secret: NOMAD API secret for payload encryption; an empty string removes it.
        development: True for NOMAD development mode (no payload encryption).
        rpc_timeout: Seconds a client call may wait for the server's answer (default 10).
        payload_codec_key: upstream 2.0's payload codec key (encrypts payloads, also in
            development mode); an empty string removes it.
        payload_codec_key_id: the key id written with payloads encrypted with it.
        grpc_compression: ``auto``, ``gzip`` or ``none`` (see
            :class:`ConnectionConfig`; default from ``NOMAD_ACTIONS_GRPC_COMPRESSION``,
            else ``auto``).

    Returns:
        The new settings.

    Raises:
        ValueError: A value is out of range (the message names the argument).
        TypeError: ``tls`` has the wrong type or unknown keys.
        OSError: A certificate file cannot be read.
    """
    global _configured
    changes: dict[str, Any] = {}
    if host is not None:
        changes["host"] = host
    if port is not None:
        changes["port"] = _check_port(port, "port")
    if namespace is not None:
        changes["namespace"] = namespace
    if api_key is not None:
        changes["api_key"] = api_key or None
    if api_secret is not None:
        changes["api_secret"] = api_secret or None
    if development is not None:
        changes["development"] = bool(development)
    if payload_codec_key is not None:
        changes["payload_codec_key"] = payload_codec_key or None
    if payload_codec_key_id is not None:
        if not payload_codec_key_id:
            raise ValueError("payload_codec_key_id must not be empty")
        changes["payload_codec_key_id"] = payload_codec_key_id
    if grpc_compression is not None:
        changes["grpc_compression"] = _check_compression(grpc_compression, "grpc_compression")
    if connect_timeout is not None:
        if not connect_timeout > 0:
            raise ValueError(f"connect_timeout must be positive seconds, got {connect_timeout!r}")
        changes["connect_timeout_millis"] = max(1, round(connect_timeout * 1000))
    if rpc_timeout is not None:
        if not rpc_timeout > 0:
            raise ValueError(f"rpc_timeout must be positive seconds, got {rpc_timeout!r}")
        changes["rpc_timeout_millis"] = max(1, round(rpc_timeout * 1000))

    tls_changes: dict[str, Any] = {}
    if tls_server_ca_cert_path is not None:
        tls_changes["server_root_ca_cert"] = _read(tls_server_ca_cert_path)
    if tls_client_cert_path is not None:
        tls_changes["client_cert"] = _read(tls_client_cert_path)
    if tls_client_key_path is not None:
        tls_changes["client_private_key"] = _read(tls_client_key_path)
    if tls_server_name is not None:
        tls_changes["domain"] = tls_server_name

    current = get_config()

    if tls is not None:
        changes["tls"] = _tls_from_arg(tls)
    elif api_key == "" and not tls_changes and current.api_key and current.tls == TlsConfig():
        # Removing the key also removes the TLS it implied (pass tls=True to keep it).
        changes["tls"] = None
    if tls_changes:
        if changes.get("tls") is None and tls is False:
            raise ValueError("tls=False conflicts with the tls_* certificate arguments")
        base = changes.get("tls") or current.tls or TlsConfig()
        changes["tls"] = dataclasses.replace(base, **tls_changes)

    new = dataclasses.replace(current, **changes)
    with _lock:
        _configured = new
    return new
