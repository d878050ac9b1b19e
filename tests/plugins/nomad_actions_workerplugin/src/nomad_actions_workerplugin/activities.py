"""Activities of the worker plugin: plain ``temporalio`` activities, sync and async."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import temporalio.exceptions
from temporalio import activity
from temporalio.exceptions import ApplicationError

from .models import (
    BatchInput,
    BatchSummary,
    Credentials,
    GetRequestInput,
    MaskedCredentials,
    Point,
    SecretReport,
    ThreadReport,
)

#: Environment variable with the PubChem PUG REST base URL (tests point it at a local server).
PUBCHEM_BASE_URL_ENV = "PUBCHEM_BASE_URL"
DEFAULT_PUBCHEM_BASE_URL = "https://pubchem.ncbi.nlm.nih.gov/rest/pug"


# -- PubChem (the docs' example, with urllib instead of aiohttp) ------------------------------


def pubchem_url(url: str) -> str:
    """``url`` itself when absolute, else ``url`` below the configured PubChem base URL."""
    if url.startswith(("http://", "https://")):
        return url
    base = os.environ.get(PUBCHEM_BASE_URL_ENV) or DEFAULT_PUBCHEM_BASE_URL
    return f"{base.rstrip('/')}/{url.lstrip('/')}"


def _get_json(url: str, timeout: float) -> Any:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as err:
        err.close()
        if 400 <= err.code < 500 and err.code != 429:
            # Asking again will not help: fail the action instead of retrying.
            raise ApplicationError(
                f"PubChem answered HTTP {err.code} for {url}",
                type="PubChemClientError",
                non_retryable=True,
            ) from None
        raise RuntimeError(f"PubChem answered HTTP {err.code} for {url}") from None


@activity.defn
def get_cid(compound: str) -> int:
    """Resolves a compound name to its PubChem CID (a blocking, sync activity)."""
    name = urllib.parse.quote(compound, safe="")
    url = pubchem_url(f"compound/name/{name}/cids/JSON")
    activity.logger.info("Looking up the CID of %s", compound)
    cids = _get_json(url, timeout=10).get("IdentifierList", {}).get("CID") or []
    if not cids:
        raise ApplicationError(f'PubChem has no CID for "{compound}"', non_retryable=True)
    return int(cids[0])


@activity.defn
async def get_request(data: GetRequestInput) -> dict:
    """Performs a GET request and returns the JSON answer (async, as in the docs)."""
    return await asyncio.to_thread(_get_json, pubchem_url(data.url), data.timeout)


# -- Pydantic with SecretStr ------------------------------------------------------------------


@activity.defn
async def inspect_secret(credentials: Credentials, masked: MaskedCredentials) -> SecretReport:
    """Reports what arrived of both secrets, and hands a new secret back."""
    key = credentials.api_key.get_secret_value()
    return SecretReport(
        username=credentials.username,
        api_key_sha256=hashlib.sha256(key.encode()).hexdigest(),
        api_key_length=len(key),
        masked_api_key=masked.api_key.get_secret_value(),
        token=f"token-for-{credentials.username}-{len(key)}",  # type: ignore[arg-type]
    )


# -- nested dataclasses -----------------------------------------------------------------------


@activity.defn
def summarize_batch(batch: BatchInput) -> BatchSummary:
    """Summarises a batch of samples (sync)."""
    if not all(isinstance(s.position, Point) for s in batch.samples):
        raise TypeError("nested dataclasses were not rebuilt")
    count = len(batch.samples)
    return BatchSummary(
        lab=batch.lab,
        count=count,
        total_mass=round(sum(s.mass for s in batch.samples), 6),
        heaviest=max(batch.samples, key=lambda s: s.mass),
        centroid=Point(
            x=sum(s.position.x for s in batch.samples) / count,
            y=sum(s.position.y for s in batch.samples) / count,
        ),
        tags=sorted({t for s in batch.samples for t in s.tags}),
    )


# -- primitives -------------------------------------------------------------------------------


@activity.defn
def shout(text: str) -> str:
    return text.upper() + "!"


@activity.defn
async def scale(value: float, factor: int) -> float:
    return value * factor


@activity.defn
async def count_words(words: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for word in words:
        counts[word] = counts.get(word, 0) + 1
    return counts


@activity.defn
async def invert(mapping: dict[str, int]) -> dict[int, str]:
    return {value: key for key, value in mapping.items()}


@activity.defn
def is_even(number: int) -> bool:
    return number % 2 == 0


@activity.defn
async def noop() -> None:
    return None


# -- orchestration helpers --------------------------------------------------------------------


@activity.defn
async def square(number: int) -> int:
    await asyncio.sleep(0.05)
    return number * number


@activity.defn
def where_am_i(index: int) -> ThreadReport:
    """Reports the thread it runs in (sync activities run in the worker's thread pool)."""
    activity.logger.info("Sync activity %d running", index)
    time.sleep(0.05)
    return ThreadReport(
        index=index,
        thread_name=threading.current_thread().name,
        is_main_thread=threading.current_thread() is threading.main_thread(),
        activity_type=activity.info().activity_type,
    )


@activity.defn
async def flaky(succeed_on: int) -> int:
    """Fails until attempt ``succeed_on``; returns the attempt that succeeded."""
    attempt = activity.info().attempt
    if attempt < succeed_on:
        raise RuntimeError(f"attempt {attempt} fails on purpose")
    return attempt


@activity.defn
async def too_slow(seconds: float) -> str:
    """Sleeps longer than its start-to-close timeout."""
    await asyncio.sleep(seconds)
    return "finished"


# -- cancellation -----------------------------------------------------------------------------

_HEARTBEAT_EVERY = 0.2
_GIVE_UP_AFTER = 60.0


@activity.defn
async def heartbeat_until_cancelled(marker_dir: str) -> str:
    """Heartbeats every 0.2 s until cancelled; records the cancellation, then re-raises."""
    markers = Path(marker_dir)
    (markers / "started").write_text(threading.current_thread().name)
    beats = 0
    try:
        deadline = time.monotonic() + _GIVE_UP_AFTER
        while time.monotonic() < deadline:
            beats += 1
            activity.heartbeat(beats)
            await asyncio.sleep(_HEARTBEAT_EVERY)
    except asyncio.CancelledError as err:
        (markers / "cancelled").write_text(f"{type(err).__name__} after {beats} heartbeats")
        raise
    return "never cancelled"


@activity.defn
def heartbeat_until_cancelled_sync(marker_dir: str) -> str:
    """Sync twin: temporalio raises ``CancelledError`` in the activity's thread."""
    markers = Path(marker_dir)
    (markers / "started").write_text(threading.current_thread().name)
    beats = 0
    try:
        deadline = time.monotonic() + _GIVE_UP_AFTER
        while time.monotonic() < deadline:
            beats += 1
            activity.heartbeat(beats)
            time.sleep(_HEARTBEAT_EVERY)
    except temporalio.exceptions.CancelledError as err:
        (markers / "cancelled").write_text(f"{type(err).__name__} after {beats} heartbeats")
        raise
    return "never cancelled"
