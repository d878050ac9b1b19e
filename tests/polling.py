"""Waiting helpers for tests; nothing here asserts on speed (deadlines are generous)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest


def poll(check: Callable[[], Any], timeout: float, what: str, logs: Callable[[], str] = str) -> Any:
    """Call `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{logs()}")
        time.sleep(0.1)


def wait_until(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Like `poll`, but exceptions from `check` count as "not yet" (the last one is shown)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except Exception as err:
            last = err
        else:
            if value:
                return value
        time.sleep(0.1)
    raise AssertionError(
        f"timed out waiting for {what}" + (f" (last error: {last!r})" if last else "")
    )
