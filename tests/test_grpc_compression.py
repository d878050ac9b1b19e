"""gRPC compression (`grpc_compression`: auto, gzip, none), proven on the wire: the client
and the worker talk to a real dev server through a loopback proxy (tests/netproxy.py) that
counts the bytes it forwards. A highly compressible 256 kB name crosses as a few kB with
gzip and in full without it; `auto` (the default) does not compress on loopback."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator

import pytest

from nomad_actions import (
    Action,
    ConfigurationError,
    configure,
    get_action_result,
    load_action,
    register_action,
    start_action,
    unregister_action,
)
from nomad_actions.config import GRPC_COMPRESSION_ENV, get_config, reset_config
from nomad_actions.testing import DevServer
from nomad_actions.worker import Worker

from .conftest import GREET
from .netproxy import FaultProxy

pytestmark = pytest.mark.timeout(300)

NAME = "compressible " * 20_000  # 260 kB of text that gzip shrinks ~100-fold
SIZE = len(NAME)


@pytest.fixture
def proxy(temporal_server: DevServer) -> Iterator[FaultProxy]:
    with FaultProxy(temporal_server.host, temporal_server.port) as p:
        yield p
    reset_config()


def _start_bytes(proxy: FaultProxy, mode: str | None) -> int:
    """Bytes sent to the server by one `start_action` with the big name, in `mode`."""
    reset_config()
    if mode is None:
        configure(host=proxy.host, port=proxy.port)
    else:
        configure(host=proxy.host, port=proxy.port, grpc_compression=mode)
    user = f"gz-{uuid.uuid4().hex[:8]}"
    # Connect first, so that only the start request is counted.
    start_action(GREET, {"user_id": user, "name": "warm-up"})
    before = proxy.bytes_up
    start_action(GREET, {"user_id": user, "name": NAME})
    return proxy.bytes_up - before


def test_client_compresses_requests_as_configured(proxy: FaultProxy) -> None:
    gzip = _start_bytes(proxy, "gzip")
    none = _start_bytes(proxy, "none")
    auto = _start_bytes(proxy, None)
    assert gzip < SIZE / 20, (gzip, none, auto)
    assert none > SIZE, (gzip, none, auto)
    # The proxy listens on 127.0.0.1: `auto` means no compression there.
    assert auto > SIZE, (gzip, none, auto)
    assert get_config().grpc_compression == "auto"


@pytest.fixture
def big_action() -> Iterator[Callable[[str], str]]:
    ids: list[str] = []

    def register(queue: str) -> str:
        greet = load_action(GREET)
        action = Action(task_queue=queue, workflow=greet.workflow, activities=greet.activities)
        ids.append(register_action(action, id=f"grpc-compression:{queue}"))
        return ids[-1]

    yield register
    for action_id in ids:
        unregister_action(action_id)


@pytest.mark.parametrize("mode", ["gzip", "none"])
def test_worker_uses_the_configured_compression(
    proxy: FaultProxy, temporal_server: DevServer, big_action: Callable[[str], str], mode: str
) -> None:
    """The worker runs the action through the proxy; the client talks to the server
    directly. With gzip the worker's completions (activity result and workflow result, each
    holding the name) go up compressed, and the server's answers to its polls (the
    workflow input and activity input) come down compressed."""
    queue = f"grpc-compression-{mode}"
    action_id = big_action(queue)
    configure(host=temporal_server.host, port=temporal_server.port)
    worker_config = dataclasses.replace(
        get_config(), host=proxy.host, port=proxy.port, grpc_compression=mode
    )
    with Worker(queue, config=worker_config, actions=[load_action(action_id)]):
        up, down = proxy.bytes_up, proxy.bytes_down
        wid = start_action(action_id, {"user_id": f"gz-{mode}", "name": NAME})
        result = get_action_result(wid, timeout=120)
        up, down = proxy.bytes_up - up, proxy.bytes_down - down
    assert result.message == f"Hello, {NAME}!"
    if mode == "gzip":
        assert up < SIZE / 5 and down < SIZE / 5, (up, down)
    else:
        assert up > 2 * SIZE and down > 2 * SIZE, (up, down)


def test_bad_compression_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"grpc_compression must be one of auto, gzip, none"):
        configure(grpc_compression="zstd")
    reset_config()
    monkeypatch.setenv(GRPC_COMPRESSION_ENV, "brotli")
    with pytest.raises(ConfigurationError) as caught:
        get_config()
    assert caught.value.key == GRPC_COMPRESSION_ENV
    assert f"{GRPC_COMPRESSION_ENV} must be one of auto, gzip, none; got 'brotli'" in str(
        caught.value
    )
    monkeypatch.setenv(GRPC_COMPRESSION_ENV, "GZIP")
    assert get_config().grpc_compression == "gzip"
