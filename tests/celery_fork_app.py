"""A celery app for `test_fork.py`: its master process uses the nomad-actions client before
the prefork pool forks, and its task starts an action in the forked pool process, the way
NOMAD's celery workers run ELN `normalize()`.

Configured by the environment: `FORK_TEST_BROKER` (Redis URL, broker and result backend),
`FORK_TEST_MASTER_FILE` (where the master writes what it did), `NOMAD_TEMPORAL_*`.
"""

from __future__ import annotations

import json
import os
from typing import Any

from celery import Celery
from celery.signals import worker_init

from nomad_actions import _core, get_action_result, start_action

GREET = "nomad_actions_testplugin.actions:greet_action"


def make_app(broker: str) -> Celery:
    """The app with the broker and result backend at `broker`."""
    app = Celery("fork_test", broker=broker, backend=broker)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
    )

    @app.task(name="fork_test.greet")
    def greet(user_id: str) -> dict[str, Any]:
        wid = start_action(GREET, {"user_id": user_id, "name": user_id})
        return {
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "wid": wid,
            "message": get_action_result(wid, timeout=60).message,
            "generations": _core.runtime_generations(),
        }

    return app


app = make_app(os.environ.get("FORK_TEST_BROKER", "redis://127.0.0.1:6379/0"))


@worker_init.connect
def use_client_before_fork(**_: Any) -> None:
    """Runs in the master before the pool forks: open the runtime and the connection."""
    path = os.environ.get("FORK_TEST_MASTER_FILE")
    if not path:
        return
    wid = start_action(GREET, {"user_id": "celery-master", "name": "master"})
    get_action_result(wid, timeout=60)
    record = {"pid": os.getpid(), "wid": wid, "generations": _core.runtime_generations()}
    with open(path + ".tmp", "w") as out:
        json.dump(record, out)
    os.replace(path + ".tmp", path)
