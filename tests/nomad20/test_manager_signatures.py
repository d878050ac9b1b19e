"""``nomad_actions.manager`` against ``nomad.actions.manager`` of nomad-lab 2.0.0: every
function both have takes the same arguments (names, kinds, defaults) and is async exactly
where upstream's is. Runs in the venv with nomad-lab installed (scripts/test.sh)."""

from __future__ import annotations

import inspect

import nomad.actions.manager as upstream

from nomad_actions import manager as ours

# Upstream functions we do not offer: event streams need NOMAD's stream service, and the
# signal-input activity needs its MongoDB (our worker registers upstream's own one instead).
NOT_OFFERED = {
    "action_event_publisher",
    "publish_action_event",
    "stream_action_events_for_user_async",
    "stream_processing_events_for_user_async",
    "request_signal_input_activity",
}


def _upstream_functions() -> dict[str, object]:
    return {
        name: getattr(upstream, name)
        for name in upstream.__all__
        if inspect.isfunction(getattr(upstream, name))
    }


def _shape(fn: object) -> list[tuple[str, object, object]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


def test_every_upstream_function_is_offered() -> None:
    missing = sorted(set(_upstream_functions()) - NOT_OFFERED - set(ours.__all__))
    assert missing == []
    assert len(_upstream_functions()) - len(NOT_OFFERED) == 18


def test_same_signatures_as_upstream() -> None:
    compared = 0
    for name, theirs in sorted(_upstream_functions().items()):
        if name in NOT_OFFERED:
            continue
        mine = getattr(ours, name)
        assert _shape(mine) == _shape(theirs), name
        assert inspect.iscoroutinefunction(mine) == inspect.iscoroutinefunction(theirs), name
        compared += 1
    assert compared == 18


def test_same_record_fields_as_upstream() -> None:
    from nomad.actions import models

    for name in ("ActionSchemaInfo", "ActionRecord", "ActionSummaryRecord", "ActionRecordPage"):
        assert list(getattr(ours, name).model_fields) == list(getattr(models, name).model_fields), (
            name
        )
