"""NOMAD's configuration as a distro has it (nomad_actions.settings): nomad.yaml, NOMAD_CONFIG,
NOMAD_<SECTION>_<FIELD> variables, the older names as aliases, clear errors, production safety,
and `nomad-actions config`. The end-to-end proof (a worker configured by nomad.yaml alone runs
an action) is in test_distro_worker.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import nomad_actions
from nomad_actions import ConfigurationError, configure, get_config
from nomad_actions.config import reset_config
from nomad_actions.settings import load_settings


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No NOMAD_* variable of the session, a working directory of the test's own."""
    for name in list(os.environ):
        if name.startswith("NOMAD_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    reset_config()
    yield
    reset_config()


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_are_upstreams(tmp_path: Path) -> None:
    settings = load_settings()
    assert settings.files == ()
    assert (settings.temporal.host, settings.temporal.port) == ("localhost", 7233)
    assert settings.temporal.payload_codec_key_id == "default"
    assert settings.temporal.cpu_worker.pool_size == 12
    assert settings.temporal.internal_worker.max_concurrent_activities == 1
    assert settings.temporal.cpu_worker.healthcheck_port == 8080
    assert settings.temporal.cpu_worker.activity_slots_minimum == 12
    assert settings.services.mode == "production"
    assert settings.fs.actions == ".volumes/fs/actions"
    assert settings.source("temporal.host") == "default"


def test_nomad_yaml_in_the_working_directory(tmp_path: Path) -> None:
    write(
        tmp_path / "nomad.yaml",
        "temporal:\n  host: temporal.example.org\n  port: 7400\n  namespace: nomad\n"
        "  cpu_worker:\n    healthcheck_port: 9001\n"
        "services:\n  api_secret: s3cret\n"
        "fs:\n  actions: /data/actions\n"
        "keycloak:\n  realm_name: ignored\n",  # sections the engine does not read
    )
    config = get_config()
    assert (config.host, config.port, config.namespace) == ("temporal.example.org", 7400, "nomad")
    assert config.api_secret == "s3cret" and not config.development
    settings = load_settings()
    assert settings.temporal.cpu_worker.healthcheck_port == 9001
    # As upstream: a block that is given is validated on its own, so its other fields take
    # WorkerConfig's defaults (pool_size 1), not those of the default block (12).
    assert settings.temporal.cpu_worker.pool_size == 1
    assert settings.temporal.gpu_worker.pool_size == 12
    assert settings.fs.actions == "/data/actions"
    assert settings.source("temporal.port") == "nomad.yaml"


def test_nomad_config_names_files_merged_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = write(tmp_path / "base.yaml", "temporal:\n  host: a.example\n  port: 7001\n")
    override = write(tmp_path / "prod.yaml", "temporal:\n  port: 7002\n")
    monkeypatch.setenv("NOMAD_CONFIG", os.pathsep.join([str(base), str(override)]))
    config = get_config()
    assert (config.host, config.port) == ("a.example", 7002)
    assert load_settings().source("temporal.port") == str(override)


def test_environment_overrides_the_file_with_upstreams_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(
        tmp_path / "nomad.yaml",
        "temporal:\n  host: file.example\n  cpu_worker:\n    pool_size: 3\n",
    )
    monkeypatch.setenv("NOMAD_TEMPORAL_HOST", "env.example")
    monkeypatch.setenv("NOMAD_TEMPORAL_CPU_WORKER", '{"healthcheck_port": 9000}')
    monkeypatch.setenv("NOMAD_TEMPORAL_GRACEFUL_SHUTDOWN_TIMEOUT", "30")
    monkeypatch.setenv("NOMAD_SERVICES_MODE", "development")
    monkeypatch.setenv("NOMAD_UNRELATED_THING", "x")  # not a section the engine reads
    settings = load_settings()
    assert settings.temporal.host == "env.example"
    assert settings.source("temporal.host") == "env NOMAD_TEMPORAL_HOST"
    # A JSON object merges into the file's block, as upstream merges it.
    block = settings.temporal.cpu_worker
    assert (block.healthcheck_port, block.pool_size) == (9000, 3)
    assert settings.temporal.graceful_shutdown_timeout == 30
    assert settings.development
    # configure() wins over both.
    assert configure(host="flag.example").host == "flag.example"


def test_a_number_given_for_a_text_setting_stays_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOMAD_TEMPORAL_NAMESPACE", "2024")
    monkeypatch.setenv("NOMAD_SERVICES_API_SECRET", "12345678")
    config = get_config()
    assert config.namespace == "2024"
    assert config.api_secret == "12345678"


def test_malformed_yaml_names_the_file(tmp_path: Path) -> None:
    write(tmp_path / "nomad.yaml", "temporal:\n  host: [unclosed\n")
    with pytest.raises(ConfigurationError, match=r"nomad\.yaml: not valid YAML") as info:
        get_config()
    assert info.value.key == "nomad.yaml"
    assert isinstance(info.value, ValueError), "existing `except ValueError` keeps working"


def test_wrong_type_names_the_file_and_the_key(tmp_path: Path) -> None:
    write(tmp_path / "nomad.yaml", "temporal:\n  cpu_worker:\n    max_activity_slots: many\n")
    with pytest.raises(ConfigurationError) as info:
        get_config()
    message = str(info.value)
    assert "nomad.yaml" in message and "temporal.cpu_worker.max_activity_slots" in message
    assert "'many'" in message
    assert info.value.key == "temporal.cpu_worker.max_activity_slots"


def test_wrong_type_in_the_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NOMAD_TEMPORAL_USE_TLS", "perhaps")
    with pytest.raises(ConfigurationError, match="NOMAD_TEMPORAL_USE_TLS") as info:
        get_config()
    assert "temporal.use_tls" in str(info.value)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    write(tmp_path / "nomad.yaml", "- a\n- b\n")
    with pytest.raises(ConfigurationError, match="top level must be a mapping"):
        get_config()


def test_a_named_file_that_is_missing_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOMAD_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigurationError, match=r"NOMAD_CONFIG names .*missing\.yaml"):
        get_config()


def test_changes_to_the_file_are_seen(tmp_path: Path) -> None:
    path = write(tmp_path / "nomad.yaml", "temporal:\n  port: 7001\n")
    assert get_config().port == 7001
    write(path, "temporal:\n  port: 7002\n")
    os.utime(path, (1, 1))  # a different mtime even within the file system's resolution
    assert get_config().port == 7002


def test_upstream_tls_names_take_a_path_or_pem_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    ca_file = write(tmp_path / "ca.pem", pem)
    monkeypatch.setenv("NOMAD_TEMPORAL_TLS_SERVER_ROOT_CA_CERT", str(ca_file))
    monkeypatch.setenv("NOMAD_TEMPORAL_TLS_CLIENT_CERT", pem)  # PEM text, as upstream allows
    monkeypatch.setenv("NOMAD_TEMPORAL_TLS_DOMAIN", "temporal.internal")
    tls = get_config().tls
    assert tls is not None
    assert tls.server_root_ca_cert == pem.encode()
    assert tls.client_cert == pem.encode()
    assert tls.domain == "temporal.internal"
    assert get_config().target_url.startswith("https://")


def test_use_tls_alone_means_system_roots(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOMAD_TEMPORAL_USE_TLS", "true")
    config = get_config()
    assert config.tls == nomad_actions.TlsConfig()


def test_older_names_are_aliases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca_file = write(tmp_path / "ca.pem", "-----BEGIN CERTIFICATE-----\nMIIC\n")
    monkeypatch.setenv("NOMAD_TEMPORAL_TLS", "1")
    monkeypatch.setenv("NOMAD_TEMPORAL_TLS_CA_CERT", str(ca_file))
    monkeypatch.setenv("NOMAD_TEMPORAL_TLS_SERVER_NAME", "legacy.internal")
    settings = load_settings()
    assert settings.temporal.use_tls
    assert settings.source("temporal.tls_domain") == "env NOMAD_TEMPORAL_TLS_SERVER_NAME"
    tls = get_config().tls
    assert tls is not None and tls.domain == "legacy.internal"
    assert tls.server_root_ca_cert == ca_file.read_bytes()
    # The upstream name wins over the alias.
    monkeypatch.setenv("NOMAD_TEMPORAL_TLS_DOMAIN", "upstream.internal")
    assert get_config().tls.domain == "upstream.internal"  # type: ignore[union-attr]


def test_unreadable_certificate_path_names_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOMAD_TEMPORAL_TLS_CLIENT_KEY", str(tmp_path / "nope.key"))
    with pytest.raises(ConfigurationError, match="NOMAD_TEMPORAL_TLS_CLIENT_KEY: cannot read"):
        get_config()


def test_use_tls_false_with_certificates_conflicts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(
        tmp_path / "nomad.yaml",
        "temporal:\n  use_tls: false\n  tls_domain: x.internal\n",
    )
    with pytest.raises(ConfigurationError, match=r"nomad.yaml: temporal.use_tls=false conflicts"):
        get_config()


# -- production safety --------------------------------------------------------------------


def test_client_refuses_plain_payloads_outside_development_mode() -> None:
    configure(host="127.0.0.1", port=1)  # never contacted: the check comes first
    with pytest.raises(ConfigurationError, match=r"services\.api_secret") as info:
        nomad_actions.get_action_status("any-workflow-id")
    assert "NOMAD_SERVICES_API_SECRET" in str(info.value)
    assert "development" in str(info.value)
    assert info.value.key == "services.api_secret"


def test_upstreams_default_secret_is_refused_too(tmp_path: Path) -> None:
    write(tmp_path / "nomad.yaml", "services:\n  api_secret: defaultApiSecret\n")
    with pytest.raises(ConfigurationError, match="the API secret is NOMAD's default"):
        get_config().require_payload_security()


def test_worker_refuses_plain_payloads_outside_development_mode() -> None:
    from nomad_actions.worker import Worker

    with pytest.raises(ConfigurationError, match=r"services\.api_secret"):
        Worker("nomad-test-queue", actions=["nomad_actions_testplugin.actions:greet_action"])


def test_development_mode_or_a_secret_is_enough(tmp_path: Path) -> None:
    write(tmp_path / "nomad.yaml", "services:\n  mode: development\n")
    get_config().require_payload_security()
    write(tmp_path / "nomad.yaml", "services:\n  api_secret: a-real-secret\n")
    os.utime(tmp_path / "nomad.yaml", (2, 2))
    config = get_config()
    config.require_payload_security()
    assert config.payload_secret == "a-real-secret"


# -- nomad-actions config -------------------------------------------------------------------


def run_cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nomad_actions", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_config_command_shows_values_sources_and_masks_secrets(tmp_path: Path) -> None:
    write(
        tmp_path / "nomad.yaml",
        "temporal:\n  host: temporal.example.org\n  api_key: key-do-not-print\n"
        "services:\n  api_secret: secret-do-not-print\n",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOMAD_")}
    env["NOMAD_TEMPORAL_PORT"] = "7444"
    done = run_cli("config", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "secret-do-not-print" not in out and "key-do-not-print" not in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert "temporal.example.org" in lines["temporal.host"]
    assert "(nomad.yaml)" in lines["temporal.host"]
    assert "(env NOMAD_TEMPORAL_PORT)" in lines["temporal.port"]
    assert "********" in lines["services.api_secret"]
    assert "(default)" in lines["temporal.namespace"]
    assert "payload encryption on" in out

    done = run_cli("config", "--json", "--port", "7555", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    rows = {r["key"]: r for r in data["settings"]}
    assert rows["temporal.port"] == {"key": "temporal.port", "value": 7555, "source": "--port"}
    assert data["effective"]["address"] == "temporal.example.org:7555"
    assert "secret-do-not-print" not in done.stdout


def test_config_command_reports_a_broken_file(tmp_path: Path) -> None:
    write(tmp_path / "nomad.yaml", "temporal:\n  port: [1, 2]\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOMAD_")}
    done = run_cli("config", cwd=tmp_path, env=env)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "nomad.yaml" in done.stderr and "temporal.port" in done.stderr
