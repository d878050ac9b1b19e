"""NOMAD's own configuration, read the way a NOMAD distro has it, without importing nomad-lab.

Layers, later ones winning (as nomad-lab 2.0 loads its config):

1. the defaults of nomad-lab 2.0's config models (the subset the engine uses, below);
2. the YAML files named by ``NOMAD_CONFIG`` (several separated by ``os.pathsep``), default
   ``nomad.yaml`` in the working directory; a missing default file is no error;
3. environment variables ``NOMAD_<SECTION>_<FIELD>``: the name after ``NOMAD_`` is split at its
   first underscore into section and field (``NOMAD_TEMPORAL_CPU_WORKER`` -> ``temporal`` /
   ``cpu_worker``), and the value is parsed as JSON where it parses, so
   ``NOMAD_TEMPORAL_CPU_WORKER='{"healthcheck_port": 9000}'`` merges into that block.
   The engine's older names (``NOMAD_TEMPORAL_TLS``, ``NOMAD_TEMPORAL_TLS_CA_CERT``,
   ``NOMAD_TEMPORAL_TLS_SERVER_NAME``) are aliases of upstream's ``use_tls``,
   ``tls_server_root_ca_cert`` and ``tls_domain``.

``configure()`` and the CLI's flags override all of these (see :mod:`nomad_actions.config`).
Unknown keys are ignored, as upstream does; a file that is not YAML, or a value of the wrong
type, raises :class:`~nomad_actions.errors.ConfigurationError` naming the file (or variable)
and the key. Every leaf remembers where it came from, for ``nomad-actions config``.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from nomad_actions.errors import ConfigurationError

__all__ = [
    "CONFIG_ENV",
    "FsSettings",
    "NomadSettings",
    "ServicesSettings",
    "TemporalSettings",
    "WorkerSettings",
    "load_settings",
]

CONFIG_ENV = "NOMAD_CONFIG"
DEFAULT_CONFIG_FILE = "nomad.yaml"

#: The sections of NOMAD's config the engine reads; other NOMAD_* variables are not ours.
SECTIONS = ("temporal", "services", "fs")

#: The engine's older variable names -> the upstream key they stand for.
ENV_ALIASES = {
    "NOMAD_TEMPORAL_TLS": ("temporal", "use_tls"),
    "NOMAD_TEMPORAL_TLS_CA_CERT": ("temporal", "tls_server_root_ca_cert"),
    "NOMAD_TEMPORAL_TLS_SERVER_NAME": ("temporal", "tls_domain"),
}


class _Section(BaseModel):
    # Unknown keys are ignored, like upstream's config models (which only warn).
    model_config = ConfigDict(extra="ignore")


class WorkerSettings(_Section):
    """One worker block (``temporal.cpu_worker``, ``gpu_worker``, ``internal_worker``)."""

    pool_size: int = 1
    max_tasks_per_child: int | None = None
    max_concurrent_activities: int | None = None
    target_memory_usage: float = 0.8
    target_cpu_usage: float = 0.8
    activity_ramp_throttle: int = 200
    max_activity_slots: int = 20
    min_activity_slots: int | None = None
    healthcheck_enabled: bool = True
    healthcheck_host: str = "0.0.0.0"
    healthcheck_port: int = 8080

    @property
    def activity_slots_minimum(self) -> int:
        """The tuner's minimum: ``min_activity_slots``, else ``pool_size`` (as upstream)."""
        return self.min_activity_slots if self.min_activity_slots is not None else self.pool_size


class TemporalSettings(_Section):
    """The ``temporal`` section."""

    host: str = "localhost"
    port: int = 7233
    namespace: str = "default"
    graceful_shutdown_timeout: float = 1
    prometheus_bind_address: str | None = None
    api_key: SecretStr | None = None
    payload_codec_key: SecretStr | None = None
    payload_codec_key_id: str = "default"
    use_tls: bool = False
    tls_client_cert: str | None = None
    tls_client_key: SecretStr | None = None
    tls_server_root_ca_cert: str | None = None
    tls_domain: str | None = None
    internal_worker: WorkerSettings = Field(
        default_factory=lambda: WorkerSettings(max_concurrent_activities=1)
    )
    cpu_worker: WorkerSettings = Field(default_factory=lambda: WorkerSettings(pool_size=12))
    gpu_worker: WorkerSettings = Field(default_factory=lambda: WorkerSettings(pool_size=12))


class ServicesSettings(_Section):
    """The ``services`` section (what the engine uses of it)."""

    # Upstream's default is 'defaultApiSecret', refused in production mode; unset here.
    api_secret: SecretStr | None = None
    mode: Literal["production", "development"] = "production"
    actions_log_level: int | str = "INFO"


class FsSettings(_Section):
    """The ``fs`` section (what the engine uses of it)."""

    actions: str = ".volumes/fs/actions"


class _Root(_Section):
    temporal: TemporalSettings = Field(default_factory=TemporalSettings)
    services: ServicesSettings = Field(default_factory=ServicesSettings)
    fs: FsSettings = Field(default_factory=FsSettings)


@dataclass(frozen=True)
class NomadSettings:
    """The effective NOMAD settings and where each came from.

    Attributes:
        temporal: The ``temporal`` section.
        services: The ``services`` section.
        fs: The ``fs`` section.
        files: The YAML files read, in merge order.
        sources: Dotted key (``temporal.port``) -> where its value came from: a file's path
            or ``env NAME``; keys not listed have their default.
    """

    temporal: TemporalSettings
    services: ServicesSettings
    fs: FsSettings
    files: tuple[str, ...]
    sources: Mapping[str, str]

    @property
    def development(self) -> bool:
        """NOMAD's development mode (``services.mode: development``)."""
        return self.services.mode == "development"

    def source(self, key: str) -> str:
        """Where the dotted ``key`` came from: a file, ``env NAME`` or ``default``."""
        return self.sources.get(key, "default")

    def worker_key(self, task_queue: str) -> str:
        """The worker block a queue's worker reads: ``cpu_worker`` for the CPU queue (and any
        queue of a plugin's own), ``gpu_worker`` for the GPU queue, ``internal_worker`` for
        NOMAD's internal one."""
        return {
            "gpu-task-queue": "gpu_worker",
            "nomad-internal-workflows-task-queue": "internal_worker",
        }.get(task_queue, "cpu_worker")

    def worker(self, task_queue: str) -> WorkerSettings:
        """The worker block for ``task_queue`` (see :meth:`worker_key`)."""
        block: WorkerSettings = getattr(self.temporal, self.worker_key(task_queue))
        return block

    def items(self) -> list[tuple[str, Any, str]]:
        """Every setting as (dotted key, value, source), secrets masked as ``'********'``."""
        rows: list[tuple[str, Any, str]] = []

        def walk(model: BaseModel, prefix: str) -> None:
            for name in type(model).model_fields:
                value = getattr(model, name)
                key = f"{prefix}{name}"
                if isinstance(value, BaseModel):
                    walk(value, key + ".")
                    continue
                if isinstance(value, SecretStr):
                    value = "********"
                rows.append((key, value, self.source(key)))

        for section in SECTIONS:
            walk(getattr(self, section), section + ".")
        return rows


def config_files(environ: Mapping[str, str]) -> list[str]:
    """The YAML files to read, in merge order (``NOMAD_CONFIG``, else ``./nomad.yaml``).

    Raises:
        ConfigurationError: A file named in ``NOMAD_CONFIG`` does not exist.
    """
    explicit = CONFIG_ENV in environ
    names = environ.get(CONFIG_ENV, DEFAULT_CONFIG_FILE).split(os.pathsep)
    files = []
    for name in (n.strip() for n in names):
        if not name:
            continue
        if os.path.exists(name):
            files.append(name)
        elif explicit:
            # Upstream only warns; a worker that silently runs on defaults (localhost) when the
            # operator named a file is the failure this module exists to prevent.
            raise ConfigurationError(
                f"{CONFIG_ENV} names {name!r}, which does not exist", key=CONFIG_ENV
            )
    return files


def _read_yaml(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as stream:
            data = yaml.safe_load(stream)
    except yaml.YAMLError as err:
        raise ConfigurationError(f"{path}: not valid YAML: {err}", key=path) from None
    except OSError as err:
        raise ConfigurationError(f"{path}: cannot read: {err.strerror}", key=path) from None
    if data is None:
        return {}
    if isinstance(data, dict):
        # A section whose keys are all commented out reads as null: an empty section.
        data = {k: v for k, v in data.items() if v is not None}
    if not isinstance(data, dict):
        raise ConfigurationError(
            f"{path}: the top level must be a mapping of sections, got {type(data).__name__}",
            key=path,
        )
    return data


def _leaves(data: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            keys.extend(_leaves(value, dotted + "."))
        else:
            keys.append(dotted)
    return keys


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Upstream's merge: dicts combine key by key, anything else is replaced."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(merged.get(key), dict) and isinstance(value, Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _env_layer(
    environ: Mapping[str, str],
) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """The environment as config data (upstream's rule), each leaf's variable, and the raw
    strings of the values that were parsed as JSON (a field typed ``str`` gets those back)."""
    data: dict[str, Any] = {}
    origin: dict[str, str] = {}
    raw: dict[str, str] = {}

    def put(section: str, field: str, name: str, text: str) -> None:
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        data.setdefault(section, {})
        if not isinstance(data[section], dict):
            data[section] = {}
        data[section][field] = value
        if isinstance(value, Mapping):
            for leaf in _leaves(value, f"{section}.{field}."):
                origin[leaf] = f"env {name}"
        else:
            origin[f"{section}.{field}"] = f"env {name}"
            if not isinstance(value, str):
                raw[f"{section}.{field}"] = text

    for name, text in sorted(environ.items()):
        if not name.startswith("NOMAD_") or name == CONFIG_ENV or not text:
            continue
        if name in ENV_ALIASES:
            continue
        section, _, field = name[len("NOMAD_") :].lower().partition("_")
        if section in SECTIONS and field:
            put(section, field, name, text)
    for name, (section, field) in ENV_ALIASES.items():
        text = environ.get(name)
        if text and f"{section}.{field}" not in origin:
            put(section, field, name, text)
    return data, origin, raw


def _error_key(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if not isinstance(p, int))


def _validate(data: dict[str, Any], origin: Mapping[str, str], raw: Mapping[str, str]) -> _Root:
    for _ in range(len(raw) + 1):
        try:
            return _Root.model_validate(data)
        except pydantic.ValidationError as err:
            retried = False
            for error in err.errors():
                key = _error_key(error["loc"])
                if key in raw and error["type"] == "string_type":
                    # NOMAD_TEMPORAL_HOST=1234 parses as a number; the field wants the text.
                    section, field = key.split(".", 1)
                    data[section][field] = raw[key]
                    retried = True
            if retried:
                continue
            error = err.errors()[0]
            key = _error_key(error["loc"])
            where = next(
                (origin[k] for k in (key, *_prefixes(key)) if k in origin),
                "the defaults",
            )
            shown = f"{where}={raw[key]!r}" if where.startswith("env ") and key in raw else where
            raise ConfigurationError(
                f"{shown.removeprefix('env ')}: {key}: {error['msg']} (got {error.get('input')!r})",
                key=key,
            ) from None
    raise AssertionError("unreachable")  # pragma: no cover


def _prefixes(key: str) -> list[str]:
    parts = key.split(".")
    return [".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]


_cache_lock = threading.Lock()
_cache: tuple[Any, NomadSettings] | None = None


def load_settings(environ: Mapping[str, str] | None = None) -> NomadSettings:
    """Reads NOMAD's configuration: defaults, then the YAML files, then the environment.

    The result is cached until a file's modification time or a ``NOMAD_*`` variable changes,
    so calling it for every client call costs a few ``stat`` calls.

    Args:
        environ: The environment to read; default ``os.environ``.

    Returns:
        The effective settings and where each came from.

    Raises:
        ConfigurationError: A file is missing (when named in ``NOMAD_CONFIG``), is not YAML,
            or a value has the wrong type; the message names the file or variable and the key.
    """
    global _cache
    env = os.environ if environ is None else environ
    nomad_env = tuple(sorted((k, v) for k, v in env.items() if k.startswith("NOMAD_")))
    files = config_files(env)
    stamp = (nomad_env, tuple((f, _mtime(f)) for f in files), os.getcwd())
    with _cache_lock:
        if _cache is not None and _cache[0] == stamp:
            return _cache[1]

    data: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for path in files:
        layer = _read_yaml(path)
        data = _merge(data, layer)
        for key in _leaves(layer):
            origin[key] = path
    env_data, env_origin, raw = _env_layer(env)
    data = _merge(data, env_data)
    origin.update(env_origin)
    root = _validate(data, origin, raw)
    known = {k: v for k, v in origin.items() if k.split(".", 1)[0] in SECTIONS}
    settings = NomadSettings(
        temporal=root.temporal,
        services=root.services,
        fs=root.fs,
        files=tuple(files),
        sources=known,
    )
    with _cache_lock:
        _cache = (stamp, settings)
    return settings


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return -1.0


def read_pem(value: str, key: str) -> bytes:
    """A certificate or key given as upstream accepts it: a file's path, or the PEM text.

    Raises:
        ConfigurationError: ``value`` is neither an existing file nor PEM text.
    """
    if "-----BEGIN" in value:
        return value.encode()
    try:
        return Path(value).read_bytes()
    except OSError as err:
        raise ConfigurationError(
            f"{key}: cannot read {value}: {err.strerror} (give a file's path or the PEM text)",
            key=key,
        ) from None
