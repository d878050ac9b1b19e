"""The custom search attributes the engine records on every action, and their upkeep.

Besides the memo, every action is started with three Keyword search attributes:
`NomadUserId` (the owner), `NomadActionId` (the action id) and `NomadUploadId` (the input's
`upload_id`, when it has one). Listing then asks the server's visibility store
(`NomadUserId = "..."`) instead of paging through every execution of the namespace.

A namespace must know the attributes before a start may set them:
`nomad-actions dev` and the test fixtures start the dev server with
`--search-attribute NomadUserId=Keyword ...`; on a cluster, `nomad-actions setup` (and every
worker at start-up) registers them through the operator service where the credentials
allow it, and logs the command to run where they do not. A namespace without them still
works: starts carry the memo only, and listing falls back to the scan, with a warning.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nomad_actions.config import ConnectionConfig
from nomad_actions.errors import RPCError

__all__ = [
    "SEARCH_ATTRIBUTES",
    "SearchAttributeSetup",
    "dev_server_arguments",
    "ensure_search_attributes",
    "register_command",
]

logger = logging.getLogger(__name__)

#: Owner, action and upload of an action run.
USER_ID = "NomadUserId"
ACTION_ID = "NomadActionId"
UPLOAD_ID = "NomadUploadId"

#: The attributes and their Temporal type.
SEARCH_ATTRIBUTES: Mapping[str, str] = {
    USER_ID: "Keyword",
    ACTION_ID: "Keyword",
    UPLOAD_ID: "Keyword",
}

#: `temporal.api.enums.v1.IndexedValueType` of a Keyword.
_KEYWORD = 2

#: gRPC codes: the server refuses an attribute it does not know with INVALID_ARGUMENT.
INVALID_ARGUMENT = 3
_NOT_PERMITTED = {7, 12, 16}  # PERMISSION_DENIED, UNIMPLEMENTED, UNAUTHENTICATED

#: How long a "not registered" answer is trusted before the namespace is asked again (an
#: operator may run `nomad-actions setup` while clients run).
MISSING_RECHECK_SECONDS = 60.0


def dev_server_arguments() -> list[str]:
    """`temporal server start-dev` options that register the attributes."""
    args: list[str] = []
    for name, kind in SEARCH_ATTRIBUTES.items():
        args += ["--search-attribute", f"{name}={kind}"]
    return args


def register_command(config: ConnectionConfig, missing: list[str] | None = None) -> str:
    """The Temporal CLI command an operator runs to register the attributes."""
    names = missing or list(SEARCH_ATTRIBUTES)
    parts = [
        "temporal operator search-attribute create",
        f"--address {config.host}:{config.port}",
        f"--namespace {config.namespace}",
    ]
    for name in names:
        parts.append(f"--name {name} --type {SEARCH_ATTRIBUTES[name]}")
    return " ".join(parts)


def query_value(value: str) -> str | None:
    """`value` as a string literal of Temporal's list filter, or None when the filter
    cannot express it: tried on the dev server, a single quote escapes as `\\'`, while a
    double quote or a backslash never matches (the caller scans the memo instead)."""
    text = str(value)
    if '"' in text or "\\" in text:
        return None
    return "'" + text.replace("'", "\\'") + "'"


# -- whether a namespace has them -------------------------------------------------------

# ConnectionConfig -> (has all attributes, when this was learnt). True is kept for good;
# False is re-checked after MISSING_RECHECK_SECONDS. Absent: not known yet.
_known: dict[Any, tuple[bool, float]] = {}
_warned: set[Any] = set()


def _key(config: ConnectionConfig) -> Any:
    return (config.host, config.port, config.namespace)


def known_available(config: ConnectionConfig) -> bool | None:
    """What is known about `config`'s namespace: True, False, or None (ask it)."""
    entry = _known.get(_key(config))
    if entry is None:
        return None
    available, since = entry
    if not available and time.monotonic() - since > MISSING_RECHECK_SECONDS:
        return None
    return available


def remember(config: ConnectionConfig, available: bool) -> None:
    """Record whether `config`'s namespace has the attributes."""
    _known[_key(config)] = (available, time.monotonic())
    if available:
        _warned.discard(_key(config))


def forget() -> None:
    """Drop what is known (tests that recreate servers on the same port)."""
    _known.clear()
    _warned.clear()


def warn_missing(config: ConnectionConfig, what: str) -> None:
    """Log once per namespace that it lacks the attributes, and how to add them."""
    if _key(config) in _warned:
        return
    _warned.add(_key(config))
    logger.warning(
        "Namespace %r at %s:%d has no search attributes %s: %s. Register them with "
        "`nomad-actions setup` or: %s",
        config.namespace,
        config.host,
        config.port,
        ", ".join(SEARCH_ATTRIBUTES),
        what,
        register_command(config),
    )


def missing_from(registered: Mapping[str, int]) -> list[str]:
    """Our attributes that `registered` (name -> IndexedValueType) lacks."""
    return [name for name in SEARCH_ATTRIBUTES if name not in registered]


def is_unknown_attribute_error(err: BaseException) -> bool:
    """Whether `err` is the server refusing a request for naming an unregistered attribute
    (INVALID_ARGUMENT; our own requests are otherwise valid)."""
    return isinstance(err, RPCError) and err.code == INVALID_ARGUMENT


# -- registering them -------------------------------------------------------------------


@dataclass(frozen=True)
class SearchAttributeSetup:
    """What `ensure_search_attributes` found and did.

    Attributes:
        present: attributes that were registered already.
        added: attributes it registered now.
        missing: attributes still missing (the credentials may not register them).
        command: what an operator runs to register the missing ones ('' when none are).
        error: why they could not be registered, or ''.
    """

    present: list[str]
    added: list[str]
    missing: list[str]
    command: str
    error: str

    @property
    def ok(self) -> bool:
        """All attributes are registered."""
        return not self.missing


def ensure_search_attributes(config: ConnectionConfig | None = None) -> SearchAttributeSetup:
    """Register the missing attributes on `config`'s namespace, where permitted.

    Never raises for a refusal by the server: the result says what is missing and the
    command to run. Connection errors propagate (`TemporalConnectionError`).
    """
    from nomad_actions import client as client_module
    from nomad_actions.config import get_config

    config = config or get_config()
    native = client_module._client_for(config)
    try:
        registered = native.search_attributes(True)
    except RPCError as err:
        return SearchAttributeSetup(
            [], [], list(SEARCH_ATTRIBUTES), register_command(config), str(err)
        )
    missing = missing_from(registered)
    present = [n for n in SEARCH_ATTRIBUTES if n not in missing]
    if not missing:
        remember(config, True)
        return SearchAttributeSetup(present, [], [], "", "")
    try:
        native.add_search_attributes({name: _KEYWORD for name in missing}, True)
    except RPCError as err:
        remember(config, False)
        reason = str(err)
        if err.code not in _NOT_PERMITTED:
            reason = f"the server refused: {reason}"
        return SearchAttributeSetup(present, [], missing, register_command(config, missing), reason)
    # Registration is asynchronous on some visibility stores: wait until it shows.
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        if not missing_from(native.search_attributes(True)):
            break
        time.sleep(0.5)
    still = missing_from(native.search_attributes(True))
    remember(config, not still)
    added = [n for n in missing if n not in still]
    command = register_command(config, still) if still else ""
    return SearchAttributeSetup(present, added, still, command, "")
