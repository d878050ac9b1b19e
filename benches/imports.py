"""What each worker's imports cost in memory: RSS after each import, in a fresh interpreter.

The floor under both workers' peak RSS (benches/README.md, "Peak RSS"): the official worker
as upstream NOMAD runs it imports temporalio's worker and its Pydantic converter; ours also
imports its own modules, its Rust extension, PyYAML (nomad.yaml) and importlib.metadata
(plugin entry points). Each step is measured after the previous ones, so it shows what that
import adds; `nomad_actions._core` is loaded from its file alone, before the package.

Usage: python benches/imports.py   (in the bench venv: .venv-bench/bin/python)
"""

from __future__ import annotations

import subprocess
import sys

STEPS = {
    "official": [
        "temporalio",
        "temporalio.workflow",
        "temporalio.worker",
        "temporalio.contrib.pydantic",
        "concurrent.futures",
    ],
    "ours": [
        "temporalio",
        "temporalio.workflow",
        "temporalio.worker",
        "temporalio.contrib.pydantic",
        "yaml",
        "importlib.metadata",
        "nomad_actions._core (the extension alone)",
        "nomad_actions.worker",
    ],
}

_CHILD = r"""
import importlib.util, sys
def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
print(f"  {'(interpreter)':<44} {rss():6.1f} MiB")
for name in sys.argv[1:]:
    before = rss()
    if name.startswith("nomad_actions._core"):
        spec = importlib.util.find_spec("nomad_actions")
        path = spec.submodule_search_locations[0] + "/_core.abi3.so"
        core = importlib.util.spec_from_file_location("nomad_actions._core", path)
        module = importlib.util.module_from_spec(core)
        core.loader.exec_module(module)
        sys.modules["nomad_actions._core"] = module  # the package finds it loaded
    else:
        __import__(name)
    after = rss()
    print(f"  {name:<44} {after:6.1f} MiB  (+{after - before:4.1f}, {len(sys.modules)} modules)")
"""


def main() -> None:
    for worker, steps in STEPS.items():
        print(f"{worker}:")
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, *steps], capture_output=True, text=True, check=True
        )
        print(out.stdout, end="")


if __name__ == "__main__":
    main()
