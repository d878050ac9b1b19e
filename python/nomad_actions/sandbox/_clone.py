"""Per-run copies of a workflow's sandboxed modules, without re-executing them.

temporalio's sandbox gives every workflow run fresh module-level state by importing the
workflow module (and every module it imports that is not passed through) again, in a fresh
`sys.modules`. `ModuleCloner` gives the same isolation by copying instead: the modules are
imported once under the restrictions (the *template*), and each run gets a copy of their
namespaces in which

- everything the host also holds (passed-through modules and the objects they define,
  restriction proxies, immutable values, classes and functions of other modules) is shared,
  as temporalio shares it;
- every function whose globals are a sandboxed module's namespace is rebuilt on the run's
  copy of that namespace (so `global x; x = ...` rebinds the run's `x`), closures with fresh
  cells;
- every class defined in a sandboxed module is rebuilt (fresh class dict, so class attributes
  assigned by one run are not seen by the next), with its methods rebuilt as above;
- every other object reachable from those namespaces (lists, dicts, sets, instances, the
  workflow definition) is copied (`copy.deepcopy`, with the rebuilt classes and functions in
  its memo so references point at the run's objects).

A class that `type(...)` cannot rebuild faithfully (a metaclass other than `type`, such as
pydantic models, enums and ABCs; `__slots__`; a base with `__init_subclass__`) is shared by
all runs instead, as if its module were passed through: state that a run writes on such a
class, or through its methods into module globals, is seen by later runs (the runner clones
from a pristine copy, so the other functions and the module globals of later runs are not
affected). `ModuleCloner.shared_classes` lists them. An object `deepcopy` cannot copy raises
`CloneUnsupported`; the runner then uses temporalio's sandbox for that workflow class.
`ModuleCloner.verify` walks a clone and proves that none of the template's own objects is
reachable from it, which the runner checks once per workflow class.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import decimal
import enum
import fractions
import functools
import gc
import logging
import operator
import re
import types
import typing
import uuid
from collections.abc import Iterable
from typing import Any

from temporalio.worker.workflow_sandbox._restrictions import (
    RestrictedModule,
    _RestrictedProxy,
    _RestrictionState,
)


class CloneUnsupported(Exception):
    """The template holds something that cannot be copied with the same isolation."""


# Values of these types are immutable (or, for code and builtins, never hold run state):
# shared by every run, as a re-import would recreate equal ones.
_ATOMIC_TYPES: tuple[type, ...] = (
    type(None),
    bool,
    int,
    float,
    complex,
    str,
    bytes,
    range,
    type(Ellipsis),
    type(NotImplemented),
    types.CodeType,
    types.BuiltinFunctionType,
    types.WrapperDescriptorType,
    types.MethodDescriptorType,
    types.GetSetDescriptorType,
    types.MemberDescriptorType,
    types.ClassMethodDescriptorType,
    types.MethodWrapperType,
    datetime.timedelta,
    datetime.date,
    datetime.time,
    datetime.timezone,
    decimal.Decimal,
    fractions.Fraction,
    uuid.UUID,
    re.Pattern,
    typing.TypeVar,
)

_LRU_WRAPPER = type(functools.lru_cache(maxsize=1)(lambda: None))
_DATACLASS_PARAMS = type(dataclasses.dataclass(type("_Probe", (), {})).__dataclass_params__)

# Module metadata that belongs to the import system, not to the module's state.
_SHARED_MODULE_KEYS = frozenset({"__builtins__", "__spec__", "__loader__"})


class ModuleCloner:
    """Copies a set of sandboxed modules (the template) for one workflow run.

    Args:
        sandboxed: the template's modules that were executed inside the sandbox, by name.
        host_objects: ids of objects the host owns (passed-through modules, their
            namespaces and the values in them); they are shared, never copied.
    """

    def __init__(
        self,
        sandboxed: dict[str, types.ModuleType],
        host_objects: set[int],
        forbidden: set[int] | None = None,
    ) -> None:
        self._sandboxed = sandboxed
        self._forbidden = forbidden or set()
        self._sandboxed_ids = {id(m) for m in sandboxed.values()}
        self._sandboxed_dicts = {id(m.__dict__) for m in sandboxed.values()}
        self._sandboxed_names = frozenset(sandboxed)
        self._host = host_objects
        # The template objects a clone must not reach (filled by the first `clone`).
        self._template_ids: set[int] = set()
        # Classes to rebuild, bases first; functions and cells to rebuild: found once.
        self._classes: list[type] = []
        self._functions: list[types.FunctionType] = []
        self._cells: list[types.CellType] = []
        # Classes defined in the sandboxed modules that are shared, not rebuilt: why.
        self.shared_classes: dict[str, str] = {}
        self._released = False
        self._discover()
        self._make_plan()

    # -- what is shared ---------------------------------------------------------------

    def _is_shared(self, obj: Any) -> bool:
        """Whether `obj` is the same object in every run (never copied)."""
        t = type(obj)
        if t in _ATOMIC_TYPES or id(obj) in self._host:
            return True
        if t is _RestrictedProxy or t is RestrictedModule:
            # A proxy over a host object (checked in `_discover` for modules).
            return True
        if isinstance(obj, types.ModuleType):
            return id(obj) not in self._sandboxed_ids
        if isinstance(obj, type):
            return not self._defined_here(obj)
        if isinstance(obj, types.FunctionType):
            return id(obj.__globals__) not in self._sandboxed_dicts and not obj.__closure__
        if isinstance(obj, enum.Enum):
            # Members of an enum: immutable singletons (an enum class is never rebuilt).
            return True
        if t is types.GenericAlias or t is types.UnionType:
            # `list[X]`, `X | Y`: immutable; shared unless they name a sandboxed class.
            return all(self._is_shared(a) for a in obj.__args__)
        if isinstance(obj, (int, float, str, bytes)):
            # Subclasses of immutable builtins (named constants such as `re`'s).
            return True
        if isinstance(obj, (tuple, frozenset)):
            return all(self._is_shared(x) for x in obj)
        if t is types.MappingProxyType:
            # Read-only: shared when everything it shows is.
            return all(self._is_shared(k) and self._is_shared(v) for k, v in obj.items())
        if t is dataclasses.Field:
            # A dataclass field's description; shared unless its default is run state.
            return (
                self._is_shared(obj.default)
                and self._is_shared(obj.default_factory)
                and self._is_shared(obj.metadata)
            )
        if t is _DATACLASS_PARAMS:
            return True
        if isinstance(obj, logging.Logger):
            # Loggers are the host's (`logging` is passed through): one per name.
            return True
        module = getattr(t, "__module__", "") or ""
        # Import-system objects (module specs, loaders) describe the module, not its state;
        # protobuf descriptors are immutable and registered in the process-wide pool.
        if module == "typing":
            # typing's aliases and special forms are immutable: shared unless they name
            # a class of the sandboxed modules (then copied, pointing at the run's class).
            return all(self._is_shared(a) for a in getattr(obj, "__args__", ()) or ())
        if module.startswith("temporalio.worker.workflow_sandbox"):
            # typing's aliases and special forms are immutable; the second is the
            # sandbox's own machinery (thread-local builtins captured at import time).
            return True
        return module.startswith(("_frozen_importlib", "importlib")) or (
            module.startswith(("google._upb", "google.protobuf"))
            and t.__name__.endswith("Descriptor")
        )

    def _defined_here(self, cls: type) -> bool:
        return (
            getattr(cls, "__module__", None) in self._sandboxed_names and id(cls) not in self._host
        )

    # -- discovery (once per template) ---------------------------------------------------

    def _discover(self) -> None:
        for name, mod in self._sandboxed.items():
            if type(mod) is RestrictedModule:
                raise CloneUnsupported(
                    f"module {name} is a restriction proxy of a sandboxed module"
                )
        seen: set[int] = set()
        stack: list[Any] = [m.__dict__ for m in self._sandboxed.values()]
        classes: list[type] = []
        # Where each walked object was found, for error messages.
        self._found_in: dict[int, Any] = {}
        while stack:
            obj = stack.pop()
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if isinstance(obj, types.ModuleType):
                stack.append(obj.__dict__)
                continue
            if isinstance(obj, type):
                why = self._clonable(obj)
                if why is not None:
                    # Shared by every run, as if passed through (see the module docstring).
                    self.shared_classes[f"{obj.__module__}.{obj.__qualname__}"] = why
                    self._host.add(id(obj))
                    seen.discard(id(obj))
                    continue
                classes.append(obj)
                stack.extend(v for v in obj.__dict__.values() if not self._is_shared(v))
                stack.extend(b for b in obj.__bases__ if not self._is_shared(b))
                continue
            if isinstance(obj, types.FunctionType):
                self._functions.append(obj)
            elif isinstance(obj, types.CellType):
                self._cells.append(obj)
            if id(obj) in self._sandboxed_dicts:
                # A module namespace: its import-system entries (loader, spec) are shared.
                refs = [v for k, v in obj.items() if k not in _SHARED_MODULE_KEYS]
            else:
                refs = _referents(obj)
            for ref in refs:
                if not self._is_shared(ref) and id(ref) not in self._sandboxed_dicts:
                    self._found_in.setdefault(id(ref), obj)
                    stack.append(ref)
        self._walked = frozenset(seen)
        self._template_ids = seen | self._sandboxed_ids | self._sandboxed_dicts | self._forbidden
        # Bases before subclasses.
        self._classes = sorted(classes, key=lambda c: len(c.__mro__))

    def _clonable(self, cls: type) -> str | None:
        """Why `cls` cannot be rebuilt with `type(...)` (then it is shared), or None."""
        if type(cls) is not type:
            return f"metaclass {type(cls).__qualname__}"
        if "__slots__" in cls.__dict__:
            return "__slots__"
        for base in cls.__mro__[1:]:
            if base is not object and "__init_subclass__" in base.__dict__:
                return f"base {base.__qualname__} defines __init_subclass__"
        return None

    # -- one run's copy ------------------------------------------------------------------

    def _make_plan(self) -> None:
        """What a clone copies and what it takes as it is: worked out once per template."""
        walked = self._walked

        def needs_copy(value: Any) -> bool:
            return id(value) in walked or id(value) in self._sandboxed_ids

        def flat(d: dict[str, Any]) -> bool:
            return not any(needs_copy(v) or needs_copy(k) for k, v in d.items())

        self._module_plans = []
        for name, mod in self._sandboxed.items():
            shared = {}
            to_copy = []
            for key, value in mod.__dict__.items():
                if key in _SHARED_MODULE_KEYS or not needs_copy(value):
                    shared[key] = value
                else:
                    to_copy.append((key, value))
            self._module_plans.append((name, mod, shared, to_copy))
        self._class_plans = []
        for cls in self._classes:
            shared = {}
            to_copy = []
            for key, value in cls.__dict__.items():
                if key in ("__dict__", "__weakref__"):
                    continue
                if needs_copy(value):
                    to_copy.append((key, value))
                else:
                    shared[key] = value
            shared["__qualname__"] = cls.__qualname__
            self._class_plans.append((cls, shared, to_copy))
        self._class_plan_by_id = {id(plan[0]): plan for plan in self._class_plans}
        self._function_plans = []
        for fn in self._functions:
            annotations = getattr(fn, "__annotations__", None)
            self._function_plans.append(
                (
                    fn,
                    fn.__defaults__ is not None and needs_copy(fn.__defaults__),
                    fn.__kwdefaults__ is not None,
                    bool(annotations) and not flat(annotations),
                    bool(fn.__dict__),
                )
            )

    def clone(self) -> tuple[dict[str, types.ModuleType], dict[int, Any]]:
        """A fresh copy of the sandboxed modules: (modules by name, template id -> copy)."""
        memo: dict[int, Any] = {}
        new_modules: dict[str, types.ModuleType] = {}
        # Shells first, so that every reference, however deep, can be mapped; the shared
        # part of each namespace goes in at once (one C-level dict update).
        for name, mod, shared, _ in self._module_plans:
            new = types.ModuleType(name)
            new.__dict__.update(shared)
            memo[id(mod)] = new
            memo[id(mod.__dict__)] = new.__dict__
            new_modules[name] = new
        for cell in self._cells:
            memo[id(cell)] = types.CellType()
        plans = self._class_plan_by_id

        def make_class(cls: type) -> Any:
            made = memo.get(id(cls))
            if made is None:
                # Bases first, whatever order discovery found them in.
                bases = tuple(make_class(b) if id(b) in plans else b for b in cls.__bases__)
                made = memo[id(cls)] = type(cls.__name__, bases, dict(plans[id(cls)][1]))
            return made

        for cls, _, _ in self._class_plans:
            make_class(cls)
        function_type = types.FunctionType
        for fn, copy_defaults, _, _, _ in self._function_plans:
            closure = fn.__closure__
            if closure:
                closure = tuple(memo.get(id(c), c) for c in closure)
            new_fn = function_type(
                fn.__code__,
                memo.get(id(fn.__globals__), fn.__globals__),
                fn.__name__,
                None if copy_defaults else fn.__defaults__,
                closure,
            )
            new_fn.__qualname__ = fn.__qualname__
            if new_fn.__module__ != fn.__module__:
                new_fn.__module__ = fn.__module__
            if new_fn.__doc__ is not fn.__doc__:
                new_fn.__doc__ = fn.__doc__
            memo[id(fn)] = new_fn
        # Then the contents that are copied.
        copy_ = self._copy
        for cell in self._cells:
            try:
                contents = cell.cell_contents
            except ValueError:  # an empty cell stays empty
                continue
            memo[id(cell)].cell_contents = copy_(contents, memo)
        for fn, copy_defaults, copy_kwdefaults, copy_annotations, copy_dict in self._function_plans:
            new_fn = memo[id(fn)]
            if copy_defaults:
                new_fn.__defaults__ = copy_(fn.__defaults__, memo)
            if copy_kwdefaults:
                new_fn.__kwdefaults__ = copy_(fn.__kwdefaults__, memo)
            if copy_annotations:
                new_fn.__annotations__ = copy_(fn.__annotations__, memo)
            elif fn.__annotations__:
                new_fn.__annotations__ = dict(fn.__annotations__)
            if copy_dict:
                new_fn.__dict__.update(copy_(fn.__dict__, memo))
        for cls, _, to_copy in self._class_plans:
            new_cls = memo[id(cls)]
            for key, value in to_copy:
                setattr(new_cls, key, copy_(value, memo))
        for _, mod, _, to_copy in self._module_plans:
            target = memo[id(mod)].__dict__
            for key, value in to_copy:
                target[key] = copy_(value, memo)
        return new_modules, memo

    def _copy(self, obj: Any, memo: dict[int, Any]) -> Any:
        found = memo.get(id(obj), memo)
        if found is not memo:
            return found
        if id(obj) not in self._walked:
            # Discovery walked everything that is not shared.
            return obj
        t = type(obj)
        if t is list:
            new_list: list[Any] = []
            memo[id(obj)] = new_list
            new_list.extend(self._copy(x, memo) for x in obj)
            return new_list
        if t is dict:
            new_dict: dict[Any, Any] = {}
            memo[id(obj)] = new_dict
            for k, v in obj.items():
                new_dict[self._copy(k, memo)] = self._copy(v, memo)
            return new_dict
        if t is set:
            new_set = {self._copy(x, memo) for x in obj}
            memo[id(obj)] = new_set
            return new_set
        if t is tuple:
            new_tuple = tuple(self._copy(x, memo) for x in obj)
            memo[id(obj)] = new_tuple
            return new_tuple
        if t is frozenset:
            new_frozen = frozenset(self._copy(x, memo) for x in obj)
            memo[id(obj)] = new_frozen
            return new_frozen
        if t is types.GenericAlias:
            args = tuple(self._copy(a, memo) for a in obj.__args__)
            new_alias = types.GenericAlias(self._copy(obj.__origin__, memo), args)
            memo[id(obj)] = new_alias
            return new_alias
        if t is types.UnionType:
            new_union = functools.reduce(operator.or_, (self._copy(a, memo) for a in obj.__args__))
            memo[id(obj)] = new_union
            return new_union
        if t is staticmethod or t is classmethod:
            new_method = t(self._copy(obj.__func__, memo))
            memo[id(obj)] = new_method
            return new_method
        if t is property:
            new_prop = property(
                self._copy(obj.fget, memo),
                self._copy(obj.fset, memo),
                self._copy(obj.fdel, memo),
                obj.__doc__,
            )
            memo[id(obj)] = new_prop
            return new_prop
        if t is dataclasses.Field:
            new_field = copy.copy(obj)
            memo[id(obj)] = new_field
            new_field.default = self._copy(obj.default, memo)
            new_field.default_factory = self._copy(obj.default_factory, memo)
            new_field.metadata = types.MappingProxyType(self._copy(dict(obj.metadata), memo))
            return new_field
        if t is _LRU_WRAPPER:
            # `deepcopy` returns an lru_cache wrapper itself; a run gets a new one (an
            # empty cache, as after a re-import) around its copy of the function.
            params = obj.cache_parameters()
            new_cached = functools.lru_cache(maxsize=params["maxsize"], typed=params["typed"])(
                self._copy(obj.__wrapped__, memo)
            )
            memo[id(obj)] = new_cached
            for key, value in obj.__dict__.items():
                if key != "__wrapped__":
                    setattr(new_cached, key, self._copy(value, memo))
            return new_cached
        if isinstance(obj, (type, types.FunctionType, types.ModuleType)):
            # Every class, function and module to rebuild has a shell in the memo.
            raise CloneUnsupported(f"{obj!r} was not found when the template was walked")
        if _plain_type(t) and (
            getattr(t, "__module__", None) in self._sandboxed_names or dataclasses.is_dataclass(t)
        ):
            # A plain instance of a sandboxed class, or a dataclass (temporalio's workflow
            # definitions, retry policies): rebuilt here rather than by `deepcopy`, so that
            # what it holds (functions, static methods, sentinels of sandboxed modules...)
            # goes through this copier, and at a fifth of deepcopy's cost.
            new_obj = self._copy_instance(obj, memo.get(id(t), t), memo)
            if new_obj is not None:
                return new_obj
        try:
            return copy.deepcopy(obj, memo)
        except Exception as err:
            raise CloneUnsupported(
                f"cannot copy {t.__qualname__} object {obj!r:.100}: {err} "
                f"(found in {self._path(obj)})"
            ) from err

    def _copy_instance(self, obj: Any, new_t: type, memo: dict[int, Any]) -> Any:
        try:
            new_obj = object.__new__(new_t)
        except TypeError:
            return None
        memo[id(obj)] = new_obj
        state = getattr(obj, "__dict__", None)
        if isinstance(state, dict):
            # Value by value: discovery walked the values (`gc.get_referents` of an
            # instance whose dict is not materialized yet yields them, not the dict), so
            # the dict itself may be unknown to `_copy`, which would then share it whole.
            new_state = new_obj.__dict__
            for key, value in state.items():
                new_state[key] = self._copy(value, memo)
        for klass in type(obj).__mro__:
            slots = klass.__dict__.get("__slots__", ())
            for name in (slots,) if isinstance(slots, str) else slots:
                if name in ("__dict__", "__weakref__") or name.startswith("__"):
                    continue
                try:
                    value = getattr(obj, name)
                except AttributeError:
                    continue
                # (object.__setattr__: frozen dataclasses refuse setattr.)
                object.__setattr__(new_obj, name, self._copy(value, memo))
        return new_obj

    # -- proof -----------------------------------------------------------------------------

    def verify(self, new_modules: Iterable[types.ModuleType]) -> None:
        """Raise `CloneUnsupported` if any template object is reachable from a clone."""
        if self._released:
            raise RuntimeError("verify() after release(): the ids it checks are gone")
        seen: set[int] = set()
        new_modules = list(new_modules)
        roots = {id(m.__dict__) for m in new_modules}
        stack: list[tuple[Any, str]] = [(m.__dict__, m.__name__) for m in new_modules]
        while stack:
            obj, path = stack.pop()
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if type(obj) is RestrictedModule or type(obj) is _RestrictedProxy:
                try:
                    target = _RestrictionState.from_proxy(obj).obj
                except RuntimeError:
                    # A class made by subclassing a proxy (no state of its own to check).
                    continue
                if id(target) in self._template_ids:
                    raise CloneUnsupported(f"{path}: a restriction proxy of a template object")
                continue
            if id(obj) in roots:
                # A clone's namespace: its import-system entries are shared, not walked.
                refs = [v for k, v in obj.items() if k not in _SHARED_MODULE_KEYS]
            else:
                refs = _referents(obj)
            for ref in refs:
                if id(ref) in self._template_ids:
                    raise CloneUnsupported(
                        f"a run's copy still reaches the template's {ref!r:.120} "
                        f"(via {path} -> {type(ref).__qualname__})"
                    )
                if not self._is_host(ref):
                    try:
                        name = getattr(ref, "__qualname__", None) or type(ref).__qualname__
                    except Exception:  # a proxy (restricted or stateless)
                        name = type(ref).__qualname__
                    stack.append((ref, f"{path} -> {name}"))

    def _is_host(self, obj: Any) -> bool:
        """Whether `verify` can stop at `obj`: the host's, or a module (all clones are roots)."""
        t = type(obj)
        if t in _ATOMIC_TYPES or id(obj) in self._host:
            return True
        if t is _RestrictedProxy or t is RestrictedModule:
            return False
        if isinstance(obj, types.ModuleType):
            return True
        if isinstance(obj, type):
            return not self._defined_here(obj)
        module = getattr(t, "__module__", "") or ""
        return module.startswith(("_frozen_importlib", "importlib"))

    def _path(self, obj: Any) -> str:
        """Where discovery found `obj`: the chain of containers up to a module namespace."""
        names = []
        for _ in range(40):
            parent = self._found_in.get(id(obj))
            if parent is None:
                break
            names.append(getattr(parent, "__qualname__", None) or type(parent).__qualname__)
            obj = parent
        if isinstance(obj, dict) and "__name__" in obj:
            names.append(f"module {obj['__name__']}")
        return " <- ".join(names)

    def release(self) -> None:
        """Drops what only discovery and `verify` use, once the template is proven.

        The sets of host and template object ids hold one int per value of every host
        module (about 30,000, 3-5 MiB per workflow class, kept for the worker's lifetime
        otherwise); `clone` works from the plans and the walked ids alone.
        """
        self._host = set()
        self._template_ids = set()
        self._forbidden = set()
        self._released = True

    @property
    def template_ids(self) -> set[int]:
        """Ids of the template's own objects (none may be reachable from a copy)."""
        return set(self._template_ids)

    @property
    def shared_ids(self) -> set[int]:
        """Ids of the objects shared by all runs (the host's and the shared classes)."""
        return set(self._host)


_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class made by a class statement (or C-API spec)
_plain_types: dict[type, bool] = {}


def _plain_type(t: type) -> bool:
    """Whether `deepcopy` would copy instances of `t` as `__new__` + a copy of their
    `__dict__` (and slots): no custom copy or pickle hooks, and no builtin base (list,
    dict, ...) whose contents live outside `__dict__`."""
    plain = _plain_types.get(t)
    if plain is None:
        plain = (
            t.__reduce_ex__ is object.__reduce_ex__
            and t.__reduce__ is object.__reduce__
            and getattr(t, "__getstate__", object.__getstate__) is object.__getstate__
            and not hasattr(t, "__setstate__")
            and not hasattr(t, "__deepcopy__")
            and all(b.__flags__ & _HEAPTYPE for b in t.__mro__[:-1])
        )
        _plain_types[t] = plain
    return plain


def _referents(obj: Any) -> list[Any]:
    """What `obj` refers to, for the walks: an lru_cache wrapper's cache internals (shared
    sentinels, cached results) are not the function's state; its function and dict are."""
    if type(obj) is _LRU_WRAPPER:
        return [obj.__wrapped__, obj.__dict__]
    return gc.get_referents(obj)
