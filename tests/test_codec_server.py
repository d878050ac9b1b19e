"""``nomad-actions codec-server``: Temporal's remote codec protocol for NOMAD's encrypted
payloads, checked with the real Temporal CLI (``temporal workflow show --codec-endpoint``)
against a dev server, plus the HTTP protocol and CORS the Web UI relies on."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from temporalio.api.common.v1 import Payload

from nomad_actions import configure, get_config, start_action
from nomad_actions.codec_server import CodecServer
from nomad_actions.config import ConnectionConfig, reset_config
from nomad_actions.testing import DevServer, find_temporal_cli, free_port

from .conftest import GREET

SECRET = "codec-server-test-secret"
CODEC_KEY = "a-separate-payload-codec-key"
KEY_ID = "key-2026"


@pytest.fixture(scope="module")
def server() -> Iterator[DevServer]:
    with DevServer() as dev:
        yield dev


@pytest.fixture
def encrypted(server: DevServer) -> Iterator[ConnectionConfig]:
    yield configure(
        host=server.host,
        port=server.port,
        api_secret=SECRET,
        payload_codec_key=CODEC_KEY,
        payload_codec_key_id=KEY_ID,
    )
    reset_config()


def _show(server: DevServer, workflow_id: str, *extra: str) -> str:
    done = subprocess.run(
        [
            find_temporal_cli(),
            "workflow",
            "show",
            "--address",
            server.address,
            "--workflow-id",
            workflow_id,
            "--output",
            "json",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def _post(url: str, body: Any, origin: str | None = None) -> tuple[int, dict, dict[str, str]]:
    headers = {"Content-Type": "application/json"}
    if origin:
        headers["Origin"] = origin
    request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), dict(err.headers)


def _payload_json(payload: Payload) -> dict[str, Any]:
    return {
        "metadata": {k: base64.b64encode(v).decode() for k, v in payload.metadata.items()},
        "data": base64.b64encode(payload.data).decode(),
    }


def _input_payload(history: str) -> dict[str, Any]:
    started = json.loads(history)["events"][0]["workflowExecutionStartedEventAttributes"]
    [payload] = started["input"]["payloads"]
    return {
        "metadata": {k: base64.b64decode(v) for k, v in payload["metadata"].items()},
        "data": base64.b64decode(payload["data"]),
    }


def test_temporal_cli_reads_encrypted_history_through_it(
    server: DevServer, encrypted: ConnectionConfig
) -> None:
    # Nobody polls this queue: the start event alone holds the encrypted input.
    wid = start_action(GREET, {"user_id": "codec-user", "name": "Encrypted Ada"})
    shown = _input_payload(_show(server, wid))
    assert shown["metadata"] == {
        "encoding": b"binary/encrypted",
        "encryption-key-id": KEY_ID.encode(),
    }
    assert b"Encrypted Ada" not in shown["data"]
    with CodecServer(encrypted) as codec:
        decoded = _input_payload(_show(server, wid, "--codec-endpoint", codec.url))
    assert decoded["metadata"] == {"encoding": b"json/plain"}
    assert json.loads(decoded["data"])["name"] == "Encrypted Ada"


def test_protocol_errors_and_cors(encrypted: ConnectionConfig) -> None:
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'{"a": 1}')
    with CodecServer(encrypted, cors_origins=["http://ui.example"]) as codec:
        status, body, headers = _post(
            f"{codec.url}/encode", {"payloads": [_payload_json(plain)]}, "http://ui.example"
        )
        assert status == 200
        assert headers["Access-Control-Allow-Origin"] == "http://ui.example"
        [enc] = body["payloads"]
        assert base64.b64decode(enc["metadata"]["encryption-key-id"]) == KEY_ID.encode()
        status, body, _ = _post(f"{codec.url}/decode", {"payloads": [enc]})
        assert status == 200 and body["payloads"] == [_payload_json(plain)]

        # A payload made with another key id: refused, naming the id (upstream's words).
        other = CodecServer(
            ConnectionConfig(payload_codec_key="k", payload_codec_key_id="other-id")
        )
        foreign = other._server.codec.encode([plain.SerializeToString()])[0]
        other.stop()
        status, body, _ = _post(
            f"{codec.url}/decode", {"payloads": [_payload_json(Payload.FromString(foreign))]}
        )
        assert status == 400
        assert "No Temporal payload codec key configured for key ID 'other-id'" in body["message"]

        status, body, _ = _post(f"{codec.url}/nothing", {})
        assert status == 404 and "/decode" in body["message"]

        # The browser's preflight: only allowed origins get the CORS headers.
        for origin, allowed in (("http://ui.example", True), ("http://evil.example", False)):
            request = urllib.request.Request(
                f"{codec.url}/decode",
                method="OPTIONS",
                headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 200
                assert "X-Namespace" in response.headers["Access-Control-Allow-Headers"]
                assert (response.headers.get("Access-Control-Allow-Origin") == origin) is allowed


def test_refuses_a_configuration_without_keys() -> None:
    with pytest.raises(ValueError, match="needs a key"):
        CodecServer(ConnectionConfig(api_secret=SECRET, development=True))


def test_command_line(encrypted: ConnectionConfig) -> None:
    env = {
        **os.environ,
        "NOMAD_SERVICES_API_SECRET": SECRET,
        "NOMAD_TEMPORAL_PAYLOAD_CODEC_KEY": CODEC_KEY,
        "NOMAD_TEMPORAL_PAYLOAD_CODEC_KEY_ID": KEY_ID,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "nomad_actions", "codec-server", "--port", str(free_port())],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "Codec server listening on http://127.0.0.1:" in line, line
        url = line.split(" on ", 1)[1].split()[0]
        enc = get_config()  # the same keys, from configure() in the fixture
        assert enc.payload_codec_key_id == KEY_ID
        plain = Payload(metadata={"encoding": b"json/plain"}, data=b'"hi"')
        status, body, _ = _post(f"{url}/encode", {"payloads": [_payload_json(plain)]})
        assert status == 200
        status, body, _ = _post(f"{url}/decode", body)
        assert status == 200 and body["payloads"] == [_payload_json(plain)]
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=15)
    assert process.returncode == 0, err
    assert "Stopped." in out
