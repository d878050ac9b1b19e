"""`SandboxRunner`: temporalio's workflow sandbox, built once per workflow class.

The restrictions, the restricted importer, the restriction proxies and the restricted builtins
are temporalio's own (`SandboxRestrictions`, `Importer`, `RestrictedModule`,
`RestrictedWorkflowAccessError`), so a run sees the same modules, the same proxies and the same
errors as under `temporalio.worker.workflow_sandbox.SandboxedWorkflowRunner`. What differs is
the per-run cost: temporalio imports the workflow module again for every run; this runner
imports it once per workflow class (the template) and gives each run a copy of the sandboxed
modules' namespaces (`ModuleCloner`), its own `sys.modules` built from the template's, and a
copy of the importer that shares the template's proxies and restricted builtins.
"""

from __future__ import annotations

import builtins
import contextlib
import copy
import dataclasses
import logging
import sys
import threading
import types
from collections.abc import Iterator, Sequence
from typing import Any

import temporalio.bridge.proto.workflow_activation
import temporalio.bridge.proto.workflow_completion
import temporalio.converter
import temporalio.workflow
from temporalio.converter._extstore import StorageDriverStoreContext
from temporalio.worker import (
    UnsandboxedWorkflowRunner,
    WorkflowInstance,
    WorkflowInstanceDetails,
    WorkflowRunner,
    _command_aware_visitor,
)
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions
from temporalio.worker.workflow_sandbox._importer import (
    Importer,
    _thread_local_import,
    _thread_local_sys_modules,
)
from temporalio.worker.workflow_sandbox._restrictions import RestrictionContext

from ._clone import CloneUnsupported, ModuleCloner

logger = logging.getLogger(__name__)


class _ThreadLocalContext(RestrictionContext):
    """A `RestrictionContext` whose flags belong to the thread.

    temporalio makes a context per run; the template's proxies and restricted builtins hold
    one context shared by all runs of the class, so whether a run is at import time or at
    run time (`is_runtime`, `in_activation`) must be per thread, as runs on different threads
    may activate at once.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        super().__init__()

    @property  # type: ignore[override]
    def is_runtime(self) -> bool:
        return getattr(self._local, "is_runtime", False)

    @is_runtime.setter
    def is_runtime(self, value: bool) -> None:
        self._local.is_runtime = value

    @property  # type: ignore[override]
    def in_activation(self) -> bool:
        return getattr(self._local, "in_activation", False)

    @in_activation.setter
    def in_activation(self, value: bool) -> None:
        self._local.in_activation = value


@contextlib.contextmanager
def _context_flags(
    context: RestrictionContext, *, is_runtime: bool, in_activation: bool = False
) -> Iterator[None]:
    before = (context.is_runtime, context.in_activation)
    context.is_runtime, context.in_activation = is_runtime, in_activation
    try:
        yield
    finally:
        context.is_runtime, context.in_activation = before


@contextlib.contextmanager
def _in_sandbox(importer: Importer) -> Iterator[None]:
    before = temporalio.workflow.unsafe.in_sandbox()
    temporalio.workflow.unsafe._set_in_sandbox(True)
    try:
        with importer.applied():
            yield
    finally:
        temporalio.workflow.unsafe._set_in_sandbox(before)


class _Overrides:
    """What `Importer.applied()` does for one activation, as two plain calls.

    temporalio swaps `sys.modules`, `builtins.__import__` and each restricted builtin for a
    thread-local override through a stack of generator context managers (an `ExitStack`
    over one per builtin): 35-40 us per activation, several times per workflow. This does
    the same steps on the same override objects (`_ThreadLocalOverride.applied`: count the
    users under the override's lock, install it on first use, set this thread's value;
    undo in reverse), so it interleaves with temporalio's own sandbox on other threads.
    """

    __slots__ = ("_entries", "_importer")

    def __init__(self, importer: Importer) -> None:
        self._importer = importer
        self._entries: list[tuple[Any, Any, str, Any]] = [
            (_thread_local_sys_modules, sys, "modules", importer.new_modules),
            (_thread_local_import, builtins, "__import__", importer.import_func),
        ]
        self._entries += [
            (override, builtins, name, restricted)
            for name, override, restricted in importer.restricted_builtins
        ]

    def enter(self) -> tuple[Any, list[Any]]:
        """Applies the run's importer on this thread; returns what `leave` restores."""
        current = Importer._thread_local_current
        before = (current.__dict__.get("importer"), temporalio.workflow.unsafe.in_sandbox())
        current.importer = self._importer
        temporalio.workflow.unsafe._set_in_sandbox(True)
        saved: list[Any] = []
        try:
            for override, obj, attr, value in self._entries:
                local = override.thread_local.__dict__
                with override.applied_counter_lock:
                    override.applied_counter += 1
                    if getattr(obj, attr) is not override:
                        setattr(obj, attr, override)
                saved.append(local.get("data"))
                local["data"] = value
        except BaseException:
            self.leave((before, saved))
            raise
        return before, saved

    def leave(self, token: tuple[Any, list[Any]]) -> None:
        """Undoes `enter` (in reverse order)."""
        (importer, in_sandbox), saved = token
        for (override, obj, attr, _), previous in reversed(
            list(zip(self._entries, saved, strict=False))
        ):
            local = override.thread_local.__dict__
            if previous is None:
                local.pop("data", None)
            else:
                local["data"] = previous
            with override.applied_counter_lock:
                override.applied_counter -= 1
                if override.applied_counter == 0:
                    setattr(obj, attr, override.orig)
        temporalio.workflow.unsafe._set_in_sandbox(in_sandbox)
        Importer._thread_local_current.importer = importer


def _workflow_module_name(cls: type) -> str:
    # As temporalio: `__main__` is loaded again as `__temporal_main__` so that its
    # top-level `if __name__ == "__main__"` code does not run.
    return "__temporal_main__" if cls.__module__ == "__main__" else cls.__module__


class _Template:
    """One workflow class imported once under the restrictions; copied for each run."""

    def __init__(self, cls: type, restrictions: SandboxRestrictions) -> None:
        self.context = _ThreadLocalContext()
        module_name = _workflow_module_name(cls)
        self.importer = Importer(restrictions, self.context, workflow_module_name=module_name)
        with _context_flags(self.context, is_runtime=False), _in_sandbox(self.importer):
            module = builtins.__import__(module_name, None, None, [cls.__name__], 0)
            self.cls: type = getattr(module, cls.__name__)
        host_modules = _thread_local_sys_modules.orig
        self.modules = dict(self.importer.new_modules)
        sandboxed: dict[str, types.ModuleType] = {}
        host_objects: set[int] = {id(builtins.__dict__)}
        for name, mod in self.modules.items():
            if mod is host_modules.get(name) or name in ("sys", "builtins"):
                host_objects.add(id(mod))
                host_objects.add(id(mod.__dict__))
                host_objects.update(id(v) for v in mod.__dict__.values())
            elif isinstance(mod, types.ModuleType) and type(mod) is types.ModuleType:
                sandboxed[name] = mod
        # Objects of passed-through modules that are not in this sandbox's `sys.modules`
        # but are reachable (e.g. `temporalio.workflow` via a proxy) are host objects too:
        # every module of the host's `sys.modules` that the sandbox shares.
        for name, mod in list(host_modules.items()):
            if (
                name not in sandboxed
                and mod is not None
                and id(mod) not in host_objects
                and self.importer.module_configured_passthrough(name)
            ):
                host_objects.add(id(mod))
                d = getattr(mod, "__dict__", None)
                if isinstance(d, dict):
                    host_objects.add(id(d))
                    host_objects.update(id(v) for v in d.values())
        # One level further: the attributes of the host's classes (e.g. the default
        # `SandboxRestrictions`) are the host's too.
        for value_id_holder in [m for m in list(host_modules.values()) if id(m) in host_objects]:
            d = getattr(value_id_holder, "__dict__", None)
            if not isinstance(d, dict):
                continue
            for value in d.values():
                if isinstance(value, type):
                    host_objects.update(id(v) for v in value.__dict__.values())
        self.checked = frozenset(self.importer.modules_checked_for_restrictions)
        # Runs are copied from a pristine copy of the template (the golden), never from the
        # template itself: methods of shared classes (see `_clone`) still hold the template's
        # globals, so whatever they write there never reaches the copies.
        try:
            template_cloner = ModuleCloner(sandboxed, set(host_objects))
            golden, memo = template_cloner.clone()
            # (The class itself, where its module is passed through.)
            self.golden_cls: type = memo.get(id(self.cls), self.cls)
            self._golden = golden
            self.cloner = ModuleCloner(
                golden, host_objects | template_cloner.shared_ids, template_cloner.template_ids
            )
            self.shared_classes = dict(template_cloner.shared_classes)
            # The proof, once per class: a copy reaches neither the template's objects nor the
            # golden's.
            new_modules, _ = self.cloner.clone()
            self.cloner.verify(new_modules.values())
            self.cloner.release()
        except CloneUnsupported:
            raise
        except Exception as err:
            # Anything unexpected while copying: this class keeps temporalio's sandbox.
            raise CloneUnsupported(f"copying the template failed: {err!r}") from err

    def new_run(self) -> tuple[Importer, type]:
        """A run's importer (its own `sys.modules`) and its copy of the workflow class."""
        new_modules, memo = self.cloner.clone()
        importer = copy.copy(self.importer)
        modules = dict(self.modules)
        modules.update(new_modules)
        importer.new_modules = modules
        importer.modules_checked_for_restrictions = set(self.checked)
        importer.import_func = importer._import
        # Parents hold their children as attributes: the copies already point at the
        # run's children (through the memo), host parents are untouched.
        return importer, memo.get(id(self.golden_cls), self.golden_cls)


class SandboxRunner(WorkflowRunner):
    """Sandboxed workflow runner with temporalio's isolation, built once per workflow class.

    Each workflow run gets fresh module-level state of the workflow module and of every
    module it imports that is not passed through, like temporalio's
    `SandboxedWorkflowRunner`, but from a copy of a template imported once per class
    instead of a re-import. A workflow class whose module holds something that cannot be
    copied with the same isolation (see `nomad_actions.sandbox._clone`) runs under
    temporalio's `SandboxedWorkflowRunner` instead; `fallback_reasons` says which and why.

    Args:
        restrictions: temporalio's `SandboxRestrictions` (default: `SandboxRestrictions.default`).
    """

    def __init__(self, restrictions: SandboxRestrictions = SandboxRestrictions.default) -> None:
        self.restrictions = restrictions
        self._fallback = SandboxedWorkflowRunner(restrictions=restrictions)
        self._templates: dict[type, _Template | None] = {}
        self.fallback_reasons: dict[str, str] = {}
        self._lock = threading.Lock()
        self._exception_types: Sequence[type[BaseException]] = []

    def prepare_workflow(self, defn: temporalio.workflow._Definition) -> None:
        """Imports the workflow's module under the restrictions (once) and validates it."""
        template = self._template(defn.cls)
        if template is None:
            self._fallback.prepare_workflow(defn)
            return
        # As temporalio validates: create one instance with placeholder details.
        from temporalio.api.common.v1.message_pb2 import Payloads
        from temporalio.api.failure.v1.message_pb2 import Failure
        from temporalio.worker.workflow_sandbox._runner import _fake_info

        self.create_instance(
            WorkflowInstanceDetails(
                payload_converter_factory=temporalio.converter.DataConverter.default._new_payload_converter,
                failure_converter_class=temporalio.converter.DataConverter.default.failure_converter_class,
                interceptor_classes=[],
                defn=defn,
                info=_fake_info,
                randomness_seed=-1,
                extern_functions={},
                disable_eager_activity_execution=False,
                worker_level_failure_exception_types=self._exception_types,
                patch_activation_callback=None,
                last_completion_result=Payloads(),
                last_failure=Failure(),
            )
        )

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        """A workflow instance with its own copy of the sandboxed modules."""
        template = self._template(det.defn.cls)
        if template is None:
            return self._fallback.create_instance(det)
        return _Instance(template, det)

    def set_worker_level_failure_exception_types(
        self, types: Sequence[type[BaseException]]
    ) -> None:
        """Implements `WorkflowRunner.set_worker_level_failure_exception_types`."""
        self._exception_types = types
        self._fallback.set_worker_level_failure_exception_types(types)

    def _template(self, cls: type) -> _Template | None:
        try:
            return self._templates[cls]
        except KeyError:
            pass
        with self._lock:
            if cls not in self._templates:
                try:
                    self._templates[cls] = _Template(cls, self.restrictions)
                except CloneUnsupported as err:
                    name = f"{cls.__module__}.{cls.__qualname__}"
                    self.fallback_reasons[name] = str(err)
                    logger.info(
                        "workflow %s runs in temporalio's sandbox (re-imported per run): %s",
                        name,
                        err,
                    )
                    self._templates[cls] = None
            return self._templates[cls]


class _Instance(WorkflowInstance):
    """One run: temporalio's workflow instance inside the run's copy of the sandbox."""

    def __init__(self, template: _Template, det: WorkflowInstanceDetails) -> None:
        self._details = det
        self._context = template.context
        self._importer, cls = template.new_run()
        self._overrides = _Overrides(self._importer)
        self._thread_id: int | None = None
        with self._applied():
            # The definition of the run's own class (its run, signal and query functions
            # are the run's copies), as temporalio's in-sandbox code does.
            defn = temporalio.workflow._Definition.must_from_class(cls)
            exception_types = list(det.worker_level_failure_exception_types)
            for typ in det.worker_level_failure_exception_types:
                exception_types.append(_reimport(typ))
            self._instance = UnsandboxedWorkflowRunner().create_instance(
                dataclasses.replace(
                    det, defn=defn, worker_level_failure_exception_types=exception_types
                )
            )

    def _enter(self, *, in_activation: bool) -> tuple[Any, ...]:
        """Puts this thread in the run's sandbox at run time; returns what `_leave` restores.
        Plain calls, not a context manager: this runs once per activation."""
        context = self._context
        flags = (context.is_runtime, context.in_activation)
        context.is_runtime, context.in_activation = True, in_activation
        self._thread_id = threading.get_ident()
        try:
            return flags, self._overrides.enter()
        except BaseException:
            self._thread_id = None
            context.is_runtime, context.in_activation = flags
            raise

    def _leave(self, token: tuple[Any, ...]) -> None:
        flags, overrides = token
        self._overrides.leave(overrides)
        self._thread_id = None
        self._context.is_runtime, self._context.in_activation = flags

    @contextlib.contextmanager
    def _applied(self, *, in_activation: bool = False) -> Iterator[None]:
        token = self._enter(in_activation=in_activation)
        try:
            yield
        finally:
            self._leave(token)

    def activate(
        self, act: temporalio.bridge.proto.workflow_activation.WorkflowActivation
    ) -> temporalio.bridge.proto.workflow_completion.WorkflowActivationCompletion:
        """Runs one activation in the run's sandbox."""
        token = self._enter(in_activation=True)
        try:
            return self._instance.activate(act)
        finally:
            self._leave(token)

    def get_serialization_context(
        self, command_info: _command_aware_visitor.CommandInfo | None
    ) -> temporalio.converter.SerializationContext | None:
        """Forwarded to the instance inside the sandbox."""
        with self._applied():
            return self._instance.get_serialization_context(command_info)

    def get_external_store_context(
        self, command_info: _command_aware_visitor.CommandInfo | None
    ) -> StorageDriverStoreContext:
        """Forwarded to the instance inside the sandbox."""
        with self._applied():
            return self._instance.get_external_store_context(command_info)

    def get_info(self) -> temporalio.workflow.Info:
        """The run's info."""
        return self._details.info

    def get_thread_id(self) -> int | None:
        """The thread running the instance now, for deadlock reports."""
        return self._thread_id


def _reimport(typ: type[BaseException]) -> type[BaseException]:
    """`typ` as the sandbox sees it (a sandboxed module's copy of it, if it has one)."""
    path = typ.__qualname__.split(".")
    try:
        found: Any = sys.modules.get(typ.__module__)
        if found is None:
            found = builtins.__import__(typ.__module__, None, None, [path[0]], 0)
        for name in path:
            found = getattr(found, name)
    except Exception as err:
        raise TypeError(
            f"Failed to re-import workflow exception failure type {typ} in sandbox"
        ) from err
    if not (isinstance(found, type) and issubclass(found, BaseException)):
        raise TypeError(f"Final imported type of {found} does not extend BaseException")
    return found
