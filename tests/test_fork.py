"""Fork safety: the client works in children forked after the parent used it.

NOMAD runs ELN `normalize()` in forked processes (process pools, celery's prefork pool,
gunicorn). Every call into a child here is bounded by a timeout, so a child that hangs on
the parent's dead runtime fails the test instead of hanging it.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import pickle
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowExecutionStatus

from nomad_actions import (
    WorkerForkedError,
    _core,
    get_action_result,
    get_action_status,
    start_action,
)
from nomad_actions.testing import DevServer, free_port
from nomad_actions.worker import Worker

from .conftest import GREET, TEST_QUEUE
from .polling import poll

pytestmark = [
    pytest.mark.usefixtures("temporal", "official_worker"),
    # Forking a threaded process is what NOMAD does; Python 3.12+ warns about it.
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]

#: Seconds a child may take for one start + result; far above the normal second or two.
CHILD_TIMEOUT = 60.0


def user() -> str:
    return f"fork-{uuid.uuid4().hex[:8]}"


def greet_in_this_process(uid: str) -> dict[str, Any]:
    """Start a greeting, wait for its result; what a forked ELN normalize() would do."""
    wid = start_action(GREET, {"user_id": uid, "name": uid})
    message = get_action_result(wid, timeout=CHILD_TIMEOUT).message
    return {
        "pid": os.getpid(),
        "wid": wid,
        "message": message,
        "generations": _core.runtime_generations(),
    }


def run_in_fork(fn: Callable[[], Any], timeout: float = CHILD_TIMEOUT) -> Any:
    """Run `fn` in an `os.fork()` child; return its value or raise its exception.

    The child is killed (and the test fails) when it does not answer within `timeout`.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        os.close(read_fd)
        code = 0
        try:
            try:
                outcome: tuple[str, Any] = ("ok", fn())
            except BaseException as err:  # reported to the parent, not swallowed
                outcome = ("error", err)
            with os.fdopen(write_fd, "wb") as out:
                pickle.dump(outcome, out)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    try:
        data = b""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                pytest.fail(f"forked child {pid} did not answer within {timeout:.0f} s (hung)")
            ready, _, _ = select.select([read_fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(read_fd)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, f"child exited with status {status}"
    kind, value = pickle.loads(data)
    if kind == "error":
        raise value
    return value


def use_client_in_parent() -> str:
    """Make sure the parent's runtime and connection exist before it forks."""
    out = greet_in_this_process(user())
    assert _core.connection_count() >= 1
    return out["wid"]


def test_os_fork_child_starts_actions_and_parent_is_unaffected() -> None:
    parent_wid = use_client_in_parent()
    parent_generations = _core.runtime_generations()
    uid = user()
    out = run_in_fork(lambda: greet_in_this_process(uid))
    assert out["pid"] != os.getpid()
    assert out["message"] == f"Hello, {uid}!"
    # The child built its own runtime (one more than the parent had).
    assert out["generations"] == parent_generations + 1
    assert get_action_status(out["wid"]) == WorkflowExecutionStatus.COMPLETED
    # The parent still runs on its first runtime and connection.
    assert get_action_status(parent_wid) == WorkflowExecutionStatus.COMPLETED
    again = greet_in_this_process(user())
    assert again["generations"] == parent_generations


def test_fork_of_a_fork_and_async_api_in_the_child() -> None:
    import asyncio

    from nomad_actions import get_action_result_async, start_action_async

    use_client_in_parent()
    uid = user()

    async def async_greet() -> str:
        wid = await start_action_async(GREET, {"user_id": uid, "name": "async"})
        return (await get_action_result_async(wid, timeout=CHILD_TIMEOUT)).message

    def child() -> tuple[str, dict[str, Any]]:
        message = asyncio.run(async_greet())
        # The child has used its runtime; its own child must get a fresh one again.
        grandchild = run_in_fork(lambda: greet_in_this_process(f"{uid}-g"))
        return message, grandchild

    message, grandchild = run_in_fork(child)
    assert message == "Hello, async!"
    assert grandchild["message"] == f"Hello, {uid}-g!"


def test_multiprocessing_fork_pool() -> None:
    use_client_in_parent()
    users = [user() for _ in range(6)]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(3) as pool:
        try:
            results = pool.map_async(greet_in_this_process, users).get(timeout=3 * CHILD_TIMEOUT)
        finally:
            pool.terminate()
    assert [r["message"] for r in results] == [f"Hello, {u}!" for u in users]
    assert {r["pid"] for r in results}.isdisjoint({os.getpid()})
    for r in results:
        assert get_action_status(r["wid"]) == WorkflowExecutionStatus.COMPLETED


def test_process_pool_executor_with_fork_context() -> None:
    use_client_in_parent()
    users = [user() for _ in range(4)]
    ctx = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as pool:
        futures = [pool.submit(greet_in_this_process, u) for u in users]
        results = [f.result(timeout=2 * CHILD_TIMEOUT) for f in futures]
    assert [r["message"] for r in results] == [f"Hello, {u}!" for u in users]
    assert all(r["pid"] != os.getpid() for r in results)


def test_worker_created_before_fork_refuses_to_run_in_child() -> None:
    worker = Worker(TEST_QUEUE, actions=[GREET])

    def child() -> None:
        worker.run()

    with pytest.raises(WorkerForkedError, match=r"cannot run in process \d+, a fork of it"):
        run_in_fork(child)
    with pytest.raises(WorkerForkedError, match=TEST_QUEUE):
        run_in_fork(lambda: worker.__enter__())


def test_native_worker_of_the_parent_refuses_in_child() -> None:
    """The Rust side checks too: the running parent worker's handle fails fast in a child."""
    with Worker("fork-native-queue", actions=[GREET]) as worker:
        ref = worker._ref
        assert ref is not None

        def child() -> None:
            ref.run(None, None, True)

        with pytest.raises(WorkerForkedError, match="fork-native-queue"):
            run_in_fork(child)
        # initiate_shutdown in the child must not touch the parent's core worker.
        run_in_fork(lambda: ref.initiate_shutdown())


# -- celery's prefork pool with a real Redis broker -------------------------------------


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[int]:
    """A Redis server (from Debian, installed by scripts/test.sh) on a free port."""
    port = free_port()
    log = tmp_path / "redis.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(tmp_path)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        import redis

        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return proc.poll() is not None and pytest.fail(log.read_text())

        poll(up, 30, "redis-server to answer", log.read_text)
        client.close()
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_celery_prefork_worker_tasks_start_actions(
    temporal: DevServer, redis_server: int, tmp_path: Path
) -> None:
    from celery import Celery

    from .celery_fork_app import make_app

    broker = f"redis://127.0.0.1:{redis_server}/0"
    master_file = tmp_path / "master.json"
    env = {
        **os.environ,
        "NOMAD_TEMPORAL_HOST": temporal.host,
        "NOMAD_TEMPORAL_PORT": str(temporal.port),
        "FORK_TEST_BROKER": broker,
        "FORK_TEST_MASTER_FILE": str(master_file),
    }
    log = tmp_path / "celery.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tests.celery_fork_app", "worker",
             "--pool", "prefork", "--concurrency", "3", "--loglevel", "INFO",
             "--without-heartbeat", "--without-gossip", "--without-mingle"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            cwd=Path(__file__).parent.parent, start_new_session=True,
        )  # fmt: skip
    app: Celery = make_app(broker)
    try:
        # The master used the client before its pool forked (worker_init, see the app).
        poll(
            lambda: (
                master_file.exists() or (proc.poll() is not None and pytest.fail(log.read_text()))
            ),
            120,
            "the celery master to use the client",
            log.read_text,
        )
        import json

        master = json.loads(master_file.read_text())
        assert get_action_status(master["wid"]) == WorkflowExecutionStatus.COMPLETED
        users = [user() for _ in range(9)]
        pending = [app.send_task("fork_test.greet", args=[u]) for u in users]
        # Polled (each read is a Redis GET): bounded, and no result subscription to race.
        poll(
            lambda: all(r.ready() for r in pending),
            2 * CHILD_TIMEOUT,
            "every celery task to finish",
            lambda: f"states {[r.state for r in pending]}\n{log.read_text()}",
        )
        failed = [r.result for r in pending if not r.successful()]
        assert not failed, f"{failed}\n{log.read_text()}"
        results = [r.result for r in pending]
        assert [r["message"] for r in results] == [f"Hello, {u}!" for u in users]
        # Every task ran in a forked pool process, after its parent (the master) had used
        # the client, and each built its own runtime.
        assert all(r["ppid"] == master["pid"] != r["pid"] for r in results), results
        assert all(r["generations"] == master["generations"] + 1 for r in results)
        for r in results:
            assert get_action_status(r["wid"]) == WorkflowExecutionStatus.COMPLETED
    finally:
        app.close()
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
