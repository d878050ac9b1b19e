"""WorkflowBridge: hand-built coresdk activations in, completions out (no server, no Rust)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from datetime import timedelta

from temporalio import workflow
from temporalio.api.common.v1 import Payload
from temporalio.bridge.proto.workflow_activation import WorkflowActivation
from temporalio.bridge.proto.workflow_completion import WorkflowActivationCompletion
from temporalio.common import RawValue
from temporalio.converter import DataConverter, DefaultPayloadConverter, PayloadCodec

with workflow.unsafe.imports_passed_through():
    import pytest
    from pydantic import BaseModel
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.worker import UnsandboxedWorkflowRunner

    from nomad_actions._core import Reply as NativeReply
    from nomad_actions.workflow_bridge import WorkflowBridge

CONVERTER = pydantic_data_converter.payload_converter
NAMESPACE = "test-namespace"
TASK_QUEUE = "test-queue"


class Greeting(BaseModel):
    name: str
    times: int = 1


class Reply(BaseModel):
    message: str


@workflow.defn
class ActivityWorkflow:
    @workflow.run
    async def run(self, greeting: Greeting) -> Reply:
        reply = await workflow.execute_activity(
            "do_thing",
            greeting,
            start_to_close_timeout=timedelta(seconds=10),
            result_type=Reply,
        )
        return Reply(message=f"{reply.message} x{greeting.times}")


@workflow.defn
class TimerWorkflow:
    @workflow.run
    async def run(self) -> str:
        await workflow.sleep(30)
        return "woke up"


@workflow.defn
class SignalWorkflow:
    def __init__(self) -> None:
        self._items: list[str] = []
        self._done = False

    @workflow.run
    async def run(self) -> list[str]:
        await workflow.wait_condition(lambda: self._done)
        return self._items

    @workflow.signal
    def add(self, item: str) -> None:
        self._items.append(item)

    @workflow.signal
    def finish(self) -> None:
        self._done = True

    @workflow.query
    def items(self) -> list[str]:
        return self._items


def block_thread(seconds: float) -> None:
    """Blocks in small sleeps, so that an asynchronous exception can get in between."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.02)


@workflow.defn(sandboxed=False)
class BlockingWorkflow:
    @workflow.run
    async def run(self) -> None:
        block_thread(5)


@workflow.defn
class SandboxedBlockingWorkflow:
    @workflow.run
    async def run(self) -> None:
        with workflow.unsafe.sandbox_unrestricted():
            block_thread(5)


@workflow.defn
class ConverterWorkflow:
    """Returns which payload converter object its run was given."""

    @workflow.run
    async def run(self) -> int:
        return id(workflow.payload_converter())


class CountingPayloadConverter(DefaultPayloadConverter):
    """A converter class of the plugin's own: counts its instances."""

    made = 0

    def __init__(self) -> None:
        super().__init__()
        type(self).made += 1


@workflow.defn(dynamic=True)
class DynamicWorkflow:
    @workflow.run
    async def run(self, args: Sequence[RawValue]) -> str:
        info = workflow.info()
        return f"{info.workflow_type}/{info.namespace}/{info.task_queue}/{info.workflow_id}"


# --- activation builders -------------------------------------------------------------------


def init_activation(run_id: str, workflow_type: str, *args: object) -> WorkflowActivation:
    act = WorkflowActivation(run_id=run_id)
    act.timestamp.GetCurrentTime()
    init = act.jobs.add().initialize_workflow
    init.workflow_type = workflow_type
    init.workflow_id = f"wf-{run_id}"
    init.arguments.extend(CONVERTER.to_payloads(list(args)))
    init.randomness_seed = 4242
    init.attempt = 1
    init.first_execution_run_id = run_id
    init.start_time.GetCurrentTime()
    init.workflow_task_timeout.FromSeconds(10)
    return act


def job_activation(run_id: str) -> WorkflowActivation:
    act = WorkflowActivation(run_id=run_id)
    act.timestamp.GetCurrentTime()
    return act


def resolve_activity(run_id: str, seq: int, result: Payload) -> WorkflowActivation:
    act = job_activation(run_id)
    resolve = act.jobs.add().resolve_activity
    resolve.seq = seq
    resolve.result.completed.result.CopyFrom(result)
    return act


def evict_activation(run_id: str) -> WorkflowActivation:
    act = job_activation(run_id)
    act.jobs.add().remove_from_cache.message = "test eviction"
    return act


def activate(bridge: WorkflowBridge, act: WorkflowActivation) -> WorkflowActivationCompletion:
    """Calls the bridge as the Rust worker does: on a thread of its own, waiting for the
    reply, which comes from that thread or, for a deadlocked activation, the reply's timer."""
    replies: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    threading.Thread(
        target=bridge.activate,
        args=(act.SerializeToString(), NativeReply(replies.put)),
        name=f"activation-{act.run_id}",
        daemon=True,
    ).start()
    completion = WorkflowActivationCompletion.FromString(replies.get(timeout=30))
    assert completion.run_id == act.run_id
    return completion


def commands(completion: WorkflowActivationCompletion) -> list:
    assert completion.HasField("successful"), completion.failed.failure.message
    return list(completion.successful.commands)


def decode(payload: Payload, type_hint: type) -> object:
    return CONVERTER.from_payloads([payload], [type_hint])[0]


def make_bridge(*workflows: type, **kwargs: object) -> WorkflowBridge:
    return WorkflowBridge(
        workflows or [ActivityWorkflow], namespace=NAMESPACE, task_queue=TASK_QUEUE, **kwargs
    )


def run_activity_workflow(bridge: WorkflowBridge, run_id: str, name: str) -> Reply:
    """Drives ActivityWorkflow to completion; returns its result."""
    (cmd,) = commands(
        activate(bridge, init_activation(run_id, "ActivityWorkflow", Greeting(name=name, times=2)))
    )
    assert cmd.schedule_activity.activity_type == "do_thing"
    assert decode(cmd.schedule_activity.arguments[0], Greeting) == Greeting(name=name, times=2)
    reply = CONVERTER.to_payloads([Reply(message=f"hello {name}")])[0]
    (done,) = commands(activate(bridge, resolve_activity(run_id, cmd.schedule_activity.seq, reply)))
    assert done.HasField("complete_workflow_execution")
    return decode(done.complete_workflow_execution.result, Reply)  # type: ignore[return-value]


# --- tests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("sandboxed", [True, False], ids=["sandboxed", "unsandboxed"])
def test_activity_roundtrip(sandboxed: bool) -> None:
    runner = None if sandboxed else UnsandboxedWorkflowRunner()
    bridge = make_bridge(runner=runner)
    assert bridge.workflow_types == ["ActivityWorkflow"]
    assert run_activity_workflow(bridge, "run-1", "ada") == Reply(message="hello ada x2")
    assert bridge.running_count() == 1


def test_eviction_drops_instance() -> None:
    bridge = make_bridge()
    commands(activate(bridge, init_activation("run-e", "ActivityWorkflow", Greeting(name="x"))))
    assert bridge.running_count() == 1

    completion = activate(bridge, evict_activation("run-e"))
    assert completion.HasField("successful")
    assert not completion.successful.commands
    assert bridge.running_count() == 0
    # Evicting an unknown run is fine too (core may evict after a failed task).
    assert activate(bridge, evict_activation("run-unknown")).HasField("successful")


def test_not_in_cache_fails() -> None:
    bridge = make_bridge()
    reply = CONVERTER.to_payloads([Reply(message="x")])[0]
    completion = activate(bridge, resolve_activity("run-missing", 1, reply))
    assert completion.HasField("failed")
    assert "not in cache" in completion.failed.failure.message


def test_evict_all() -> None:
    bridge = make_bridge(ActivityWorkflow, TimerWorkflow)
    commands(activate(bridge, init_activation("run-a", "ActivityWorkflow", Greeting(name="a"))))
    commands(activate(bridge, init_activation("run-b", "TimerWorkflow")))
    assert bridge.running_count() == 2
    bridge.evict_all()
    assert bridge.running_count() == 0


def test_unknown_workflow_type() -> None:
    bridge = make_bridge(ActivityWorkflow, TimerWorkflow)
    completion = activate(bridge, init_activation("run-u", "NoSuchWorkflow"))
    assert completion.HasField("failed")
    message = completion.failed.failure.message
    assert "NoSuchWorkflow is not registered" in message
    assert "ActivityWorkflow, TimerWorkflow" in message
    assert bridge.running_count() == 0


def test_dynamic_workflow_takes_unknown_types() -> None:
    bridge = make_bridge(ActivityWorkflow, DynamicWorkflow)
    assert bridge.workflow_types == ["ActivityWorkflow"]
    (cmd,) = commands(activate(bridge, init_activation("run-d", "Anything", "arg")))
    result = decode(cmd.complete_workflow_execution.result, str)
    assert result == f"Anything/{NAMESPACE}/{TASK_QUEUE}/wf-run-d"


@pytest.mark.parametrize("workflow_class", [BlockingWorkflow, SandboxedBlockingWorkflow])
def test_deadlock_detected(workflow_class: type) -> None:
    name = workflow_class.__name__
    bridge = make_bridge(workflow_class, deadlock_timeout=0.5)
    evicted: list = []
    evict_instance = bridge._evict_instance

    def record_eviction(run, act=None):  # type: ignore[no-untyped-def]
        evicted.append(run)
        evict_instance(run, act)

    bridge._evict_instance = record_eviction  # type: ignore[method-assign]
    before = set(threading.enumerate())
    started = time.monotonic()
    completion = activate(bridge, init_activation("run-dl", name))
    assert time.monotonic() - started < 4.5
    assert completion.HasField("failed")
    message = completion.failed.failure.message
    assert "Potential deadlock detected" in message
    assert f"workflow {name} didn't yield within 0.5 second(s)" in message
    assert "time.sleep" in completion.failed.failure.stack_trace
    assert bridge.running_count() == 0

    # The stuck thread is interrupted (well before its 5 s), tears its instance down, ends.
    new_threads = [t for t in threading.enumerate() if t not in before]
    (stuck,) = (t for t in new_threads if t.name == "activation-run-dl")
    stuck.join(4)
    assert not stuck.is_alive()
    assert not bridge._unevictable
    assert [run.run_id for run in evicted if run.evicted] == ["run-dl"]


@pytest.mark.parametrize("sandboxed", [True, False], ids=["sandboxed", "unsandboxed"])
def test_concurrent_runs(sandboxed: bool) -> None:
    bridge = make_bridge(runner=None if sandboxed else UnsandboxedWorkflowRunner())
    results: dict[str, Reply] = {}
    errors: list[BaseException] = []

    def drive(index: int) -> None:
        try:
            for round_ in range(2):
                run_id = f"run-{index}-{round_}"
                results[run_id] = run_activity_workflow(bridge, run_id, run_id)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=drive, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(results) == 16
    for run_id, reply in results.items():
        assert reply == Reply(message=f"hello {run_id} x2")


def converter_ids(bridge: WorkflowBridge, runs: int) -> list[int]:
    """Runs ConverterWorkflow `runs` times (each evicted after); the converter ids seen."""
    ids = []
    for index in range(runs):
        run_id = f"run-conv-{index}"
        (done,) = commands(activate(bridge, init_activation(run_id, "ConverterWorkflow")))
        ids.append(decode(done.complete_workflow_execution.result, int))
        commands(activate(bridge, evict_activation(run_id)))
    return ids


def test_stock_payload_converter_is_shared_by_unsandboxed_runs_only() -> None:
    # temporalio makes a converter per instance, whose type-adapter cache is then always
    # empty; unsandboxed runs of the stock converters share one (their types are the
    # host's), sandboxed runs keep their own (their types are per-run copies).
    unsandboxed = make_bridge(ConverterWorkflow, runner=UnsandboxedWorkflowRunner())
    first, second, third = converter_ids(unsandboxed, 3)
    assert first == second == third
    assert converter_ids(unsandboxed, 1) == [first]
    sandboxed = make_bridge(ConverterWorkflow)
    assert len(set(converter_ids(sandboxed, 3))) == 3
    # The shared converter decodes for every run as a fresh one would.
    assert run_activity_workflow(
        make_bridge(runner=UnsandboxedWorkflowRunner()), "run-conv-ok", "eve"
    ) == Reply(message="hello eve x2")


def test_a_plugin_payload_converter_class_is_made_for_every_run() -> None:
    converter = DataConverter(payload_converter_class=CountingPayloadConverter)
    bridge = make_bridge(
        ConverterWorkflow, runner=UnsandboxedWorkflowRunner(), data_converter=converter
    )
    before = CountingPayloadConverter.made
    assert len(set(converter_ids(bridge, 3))) == 3
    assert CountingPayloadConverter.made - before == 3


def test_timer() -> None:
    bridge = make_bridge(TimerWorkflow)
    (cmd,) = commands(activate(bridge, init_activation("run-t", "TimerWorkflow")))
    assert cmd.start_timer.start_to_fire_timeout.ToTimedelta() == timedelta(seconds=30)

    fire = job_activation("run-t")
    fire.jobs.add().fire_timer.seq = cmd.start_timer.seq
    (done,) = commands(activate(bridge, fire))
    assert decode(done.complete_workflow_execution.result, str) == "woke up"


def test_signal_and_query() -> None:
    bridge = make_bridge(SignalWorkflow)
    assert commands(activate(bridge, init_activation("run-s", "SignalWorkflow"))) == []

    signal = job_activation("run-s")
    job = signal.jobs.add().signal_workflow
    job.signal_name = "add"
    job.originating_event_id = 5
    job.input.extend(CONVERTER.to_payloads(["first"]))
    assert commands(activate(bridge, signal)) == []

    query = job_activation("run-s")
    job = query.jobs.add().query_workflow
    job.query_id = "q-1"
    job.query_type = "items"
    (answer,) = commands(activate(bridge, query))
    assert answer.respond_to_query.query_id == "q-1"
    assert decode(answer.respond_to_query.succeeded.response, list) == ["first"]

    finish = job_activation("run-s")
    job = finish.jobs.add().signal_workflow
    job.signal_name = "finish"
    job.originating_event_id = 9
    (done,) = commands(activate(bridge, finish))
    assert decode(done.complete_workflow_execution.result, list) == ["first"]


def xor(payload: Payload) -> Payload:
    """Encodes a payload the way XorCodec does."""
    data = bytes(b ^ 0xFF for b in payload.SerializeToString())
    return Payload(metadata={"encoding": b"binary/xor"}, data=data)


def unxor(payload: Payload) -> Payload:
    """Decodes a payload the way XorCodec does."""
    assert payload.metadata["encoding"] == b"binary/xor"
    return Payload.FromString(bytes(b ^ 0xFF for b in payload.data))


class XorCodec(PayloadCodec):
    """Flips every byte and marks the payload, so encoded payloads are recognizable."""

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [xor(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [unxor(p) for p in payloads]


def test_payload_codec() -> None:
    converter = DataConverter(
        payload_converter_class=pydantic_data_converter.payload_converter_class,
        payload_codec=XorCodec(),
    )
    bridge = make_bridge(data_converter=converter)

    act = init_activation("run-c", "ActivityWorkflow", Greeting(name="enc"))
    arguments = act.jobs[0].initialize_workflow.arguments
    arguments[0].CopyFrom(xor(arguments[0]))
    (cmd,) = commands(activate(bridge, act))
    (argument,) = cmd.schedule_activity.arguments
    assert decode(unxor(argument), Greeting) == Greeting(name="enc")

    reply = xor(CONVERTER.to_payloads([Reply(message="hi")])[0])
    resolve = resolve_activity("run-c", cmd.schedule_activity.seq, reply)
    (done,) = commands(activate(bridge, resolve))
    result = unxor(done.complete_workflow_execution.result)
    assert decode(result, Reply) == Reply(message="hi x1")
