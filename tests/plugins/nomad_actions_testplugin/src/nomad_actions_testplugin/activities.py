"""Activities of the test actions."""

from __future__ import annotations

from temporalio import activity

from .models import GreetInput, GreetOutput


@activity.defn
async def make_greeting(data: GreetInput) -> GreetOutput:
    """Greets ``data.name`` ``data.times`` times."""
    activity.logger.info("Greeting %s", data.name)
    message = " ".join(f"Hello, {data.name}!" for _ in range(data.times))
    return GreetOutput(message=message, count=data.times)
