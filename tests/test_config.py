"""Tests for nomad_actions.config."""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from nomad_actions import config
from nomad_actions.config import (
    ConnectionConfig,
    TaskQueue,
    TlsConfig,
    configure,
    get_config,
    reset_config,
    task_queue_name,
)

ENV_VARS = (
    "NOMAD_TEMPORAL_HOST",
    "NOMAD_TEMPORAL_PORT",
    "NOMAD_TEMPORAL_NAMESPACE",
    "NOMAD_TEMPORAL_API_KEY",
    "NOMAD_SERVICES_MODE",
)


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    reset_config()
    yield
    reset_config()


def test_task_queue_values() -> None:
    assert TaskQueue.CPU == "cpu-task-queue"
    assert TaskQueue.GPU == "gpu-task-queue"
    assert TaskQueue.NOMAD_INTERNAL_WORKFLOWS == "nomad-internal-workflows-task-queue"
    assert TaskQueue("gpu-task-queue") is TaskQueue.GPU
    assert isinstance(TaskQueue.CPU, str)


def test_task_queue_name() -> None:
    assert task_queue_name(TaskQueue.CPU) == "cpu-task-queue"
    assert task_queue_name("my-queue") == "my-queue"


def test_defaults() -> None:
    cfg = get_config()
    assert cfg.host == "localhost"
    assert cfg.port == 7233
    assert cfg.namespace == "default"
    assert cfg.api_key is None
    assert cfg.tls is None
    assert cfg.connect_timeout_millis == 5000
    assert cfg.identity == f"{os.getpid()}@{socket.gethostname()}"
    assert cfg.address == "localhost:7233"
    assert cfg.target_url == "http://localhost:7233"


def test_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOMAD_TEMPORAL_HOST", "temporal.example.org")
    monkeypatch.setenv("NOMAD_TEMPORAL_PORT", "7400")
    monkeypatch.setenv("NOMAD_TEMPORAL_NAMESPACE", "nomad")
    monkeypatch.setenv("NOMAD_TEMPORAL_API_KEY", "secret")
    cfg = get_config()
    assert (cfg.host, cfg.port, cfg.namespace, cfg.api_key) == (
        "temporal.example.org",
        7400,
        "nomad",
        "secret",
    )
    assert cfg.target_url == "https://temporal.example.org:7400"
    assert "secret" not in repr(cfg)


def test_env_read_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    assert get_config().port == 7233
    monkeypatch.setenv("NOMAD_TEMPORAL_PORT", "9999")
    assert get_config().port == 9999


def test_empty_env_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_VARS:
        monkeypatch.setenv(name, "")
    assert get_config() == ConnectionConfig()


@pytest.mark.parametrize("value", ["abc", "0", "65536", "-1", "72.3"])
def test_bad_env_port(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("NOMAD_TEMPORAL_PORT", value)
    with pytest.raises(ValueError, match="NOMAD_TEMPORAL_PORT") as info:
        get_config()
    assert repr(value) in str(info.value)


def test_configure_overrides_only_given_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOMAD_TEMPORAL_NAMESPACE", "from-env")
    cfg = configure(host="example.org", port=7300)
    assert (cfg.host, cfg.port, cfg.namespace) == ("example.org", 7300, "from-env")
    assert get_config() == cfg
    cfg = configure(namespace="other", connect_timeout=1.5)
    assert (cfg.host, cfg.port, cfg.namespace) == ("example.org", 7300, "other")
    assert cfg.connect_timeout_millis == 1500


def test_configure_wins_over_env_until_reset(monkeypatch: pytest.MonkeyPatch) -> None:
    configure(port=7300)
    monkeypatch.setenv("NOMAD_TEMPORAL_PORT", "7400")
    assert get_config().port == 7300
    reset_config()
    assert get_config().port == 7400


@pytest.mark.parametrize("port", [0, 65536, -5, True, 7.5, "x"])
def test_configure_bad_port(port: object) -> None:
    with pytest.raises(ValueError, match="port") as info:
        configure(port=port)  # type: ignore[arg-type]
    assert repr(port) in str(info.value)
    assert get_config().port == 7233


def test_configure_bad_timeout() -> None:
    with pytest.raises(ValueError, match="connect_timeout"):
        configure(connect_timeout=0)


def test_configure_api_key() -> None:
    cfg = configure(api_key="k")
    assert cfg.api_key == "k"
    assert cfg.target_url.startswith("https://")
    assert configure(api_key="").api_key is None


def test_configure_tls_true_and_false() -> None:
    cfg = configure(tls=True)
    assert cfg.tls == TlsConfig()
    assert cfg.target_url == "https://localhost:7233"
    assert configure(tls=False).tls is None


def test_configure_tls_dict_and_object() -> None:
    cfg = configure(tls={"server_root_ca_cert": "PEM", "domain": "temporal"})
    assert cfg.tls == TlsConfig(server_root_ca_cert=b"PEM", domain="temporal")
    tls = TlsConfig(client_cert=b"c", client_private_key=b"k")
    assert configure(tls=tls).tls is tls
    assert "b'k'" not in repr(tls)
    with pytest.raises(TypeError, match="bogus"):
        configure(tls={"bogus": 1})
    with pytest.raises(TypeError, match="tls"):
        configure(tls=1.5)  # type: ignore[arg-type]


def test_configure_tls_paths(tmp_path: Path) -> None:
    ca, cert, key = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca.write_bytes(b"CA")
    cert.write_bytes(b"CERT")
    key.write_bytes(b"KEY")
    cfg = configure(
        tls_server_ca_cert_path=ca,
        tls_client_cert_path=str(cert),
        tls_client_key_path=key,
        tls_server_name="temporal.internal",
    )
    assert cfg.tls == TlsConfig(
        server_root_ca_cert=b"CA",
        client_cert=b"CERT",
        client_private_key=b"KEY",
        domain="temporal.internal",
    )
    cfg = configure(tls_server_name="other")
    assert cfg.tls is not None
    assert cfg.tls.server_root_ca_cert == b"CA"
    assert cfg.tls.domain == "other"


def test_configure_tls_false_with_paths_conflicts(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"CA")
    with pytest.raises(ValueError, match="tls=False"):
        configure(tls=False, tls_server_ca_cert_path=ca)


def test_configure_missing_cert_file(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        configure(tls_server_ca_cert_path=tmp_path / "missing.pem")


def test_connection_config_validates() -> None:
    with pytest.raises(ValueError, match="port"):
        ConnectionConfig(port=70000)
    with pytest.raises(ValueError, match="connect_timeout_millis"):
        ConnectionConfig(connect_timeout_millis=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ConnectionConfig().port = 1  # type: ignore[misc]


def test_state_is_module_level() -> None:
    configure(host="h")
    assert config.get_config().host == "h"
