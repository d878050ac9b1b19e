"""Activities of the benchmark workflows."""

from __future__ import annotations

import time

from temporalio import activity

from .models import GreetInput, GreetOutput


@activity.defn
async def greet(data: GreetInput) -> GreetOutput:
    """A short async activity with a Pydantic model in and out."""
    return GreetOutput(message=f"Hello, {data.name}!", index=data.index)


@activity.defn
def sleep_ms(ms: int) -> int:
    """A sync activity doing `ms` milliseconds of GIL-releasing work."""
    time.sleep(ms / 1000)
    return ms
