#!/usr/bin/env python3
"""Fetch temporalio's own sandbox test suite and run it against nomad-actions' SandboxRunner.

The tests (sdk-python `tests/worker/workflow_sandbox/`, with the `tests/helpers` package they
import) are fetched at run time for the installed temporalio version and laid out in a
scratch folder; they are never copied into this repository. `upstream_conftest.py` (ours)
becomes their `tests/conftest.py`: it gives them a real dev server and swaps the
`SandboxedWorkflowRunner` they build for our `SandboxRunner` with the same restrictions.

Where the sources come from, first that works:

1. `--source DIR` (or `TEMPORALIO_SDK_PYTHON_SOURCE`): an sdk-python checkout (or an
   unpacked source archive);
2. `--git-dir DIR [--rev REV]` (or `TEMPORALIO_SDK_PYTHON_GIT_DIR`): a clone of sdk-python,
   read with `git archive`;
3. the source archive of the tag matching the installed temporalio version, downloaded
   from GitHub (`--no-download` turns this off).

temporalio's sdist on PyPI has no `tests/` (checked for 1.35.0: only `temporalio/` and
sdk-core), and no other package on the registries this project's CI reaches ships them, so
where none of the above works the script says so and exits 0 with a SKIP line (our own
isolation tests in tests/test_sandbox.py still run).

Usage: run_upstream_sandbox_tests.py [--source DIR | --git-dir DIR [--rev REV]]
       [--no-download] [--keep] [-- extra pytest args]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
# What the sandbox tests import from upstream's test tree.
WANTED = (
    "tests/__init__.py",
    "tests/helpers/",
    "tests/worker/__init__.py",
    "tests/worker/workflow_sandbox/",
)
SOURCE_ENV = "TEMPORALIO_SDK_PYTHON_SOURCE"
GIT_DIR_ENV = "TEMPORALIO_SDK_PYTHON_GIT_DIR"
ARCHIVE = "https://github.com/temporalio/sdk-python/archive/refs/tags/{version}.tar.gz"


def _wanted(path: str) -> bool:
    return any(path == w or (w.endswith("/") and path.startswith(w)) for w in WANTED)


def _from_dir(src: Path, dest: Path) -> None:
    for rel in WANTED:
        path = src / rel
        if rel.endswith("/"):
            shutil.copytree(path, dest / rel)
        else:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest / rel)


def _from_tar(data: bytes, dest: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            # Archives have one top folder (sdk-python-<version>/); drop it.
            rel = member.name.split("/", 1)[1] if "/" in member.name else ""
            if member.isfile() and _wanted(rel):
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as f:  # type: ignore[union-attr]
                    target.write_bytes(f.read())


def _from_git(git_dir: Path, rev: str, dest: Path) -> None:
    data = subprocess.run(
        [
            "git",
            "--git-dir",
            str(git_dir),
            "archive",
            "--format=tar",
            "--prefix=x/",
            rev,
            *[w.rstrip("/") for w in WANTED],
        ],
        check=True,
        capture_output=True,
        timeout=120,
    ).stdout
    _from_tar(data, dest)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # Defaults from the environment, so that CI (or anyone) with a checkout or a clone of
    # sdk-python at hand runs the suite through the README's test command unchanged.
    parser.add_argument("--source", type=Path, default=os.environ.get(SOURCE_ENV) or None)
    parser.add_argument("--git-dir", type=Path, default=os.environ.get(GIT_DIR_ENV) or None)
    parser.add_argument(
        "--rev", default=None, help="git revision (default: the version tag, else HEAD)"
    )
    parser.add_argument("--no-download", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("pytest_args", nargs="*")
    args = parser.parse_args()
    version = importlib.metadata.version("temporalio")
    scratch = Path(tempfile.mkdtemp(prefix="upstream-sandbox-tests-"))
    try:
        if args.source:
            _from_dir(args.source, scratch)
            origin = str(args.source)
        elif args.git_dir:
            rev = args.rev
            if rev is None:
                tags = subprocess.run(
                    ["git", "--git-dir", str(args.git_dir), "tag", "-l", version],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout.split()
                rev = version if tags else "HEAD"
            _from_git(args.git_dir, rev, scratch)
            origin = f"{args.git_dir}@{rev}"
        elif not args.no_download:
            url = ARCHIVE.format(version=version)
            try:
                with urllib.request.urlopen(url, timeout=20) as resp:
                    _from_tar(resp.read(), scratch)
            except OSError as err:
                print(
                    f"SKIP: temporalio's sandbox tests for {version} cannot be fetched here "
                    f"({url}: {err}); their sdist on PyPI has no tests/. "
                    "Pass --source or --git-dir to run them."
                )
                return 0
            origin = url
        else:
            print("SKIP: no source for temporalio's sandbox tests (--source/--git-dir).")
            return 0
        if not (scratch / "tests/worker/workflow_sandbox").is_dir():
            print(f"error: no tests/worker/workflow_sandbox in {origin}", file=sys.stderr)
            return 2
        shutil.copy2(HERE / "upstream_conftest.py", scratch / "tests/conftest.py")
        (scratch / "pytest.ini").write_text(
            "[pytest]\nasyncio_mode = auto\ntimeout = 60\n"
            "asyncio_default_fixture_loop_scope = function\n"
            "filterwarnings =\n    ignore::DeprecationWarning\n"
            "    ignore::pytest.PytestDeprecationWarning\n"
        )
        print(
            f"==> temporalio {version} sandbox tests from {origin}, "
            "against nomad_actions.sandbox.SandboxRunner"
        )
        # pytest-asyncio (the upstream tests are `async def`) goes into the scratch folder,
        # not the venv: installed there it would change how the repository's own suite runs.
        deps = scratch / "_deps"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--target",
                str(deps),
                "pytest-asyncio>=0.23,<2",
                "--no-deps",
            ],
            check=True,
            timeout=300,
        )
        env = dict(os.environ, PYTHONPATH=f"{scratch}{os.pathsep}{deps}")
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-p",
                "no:cacheprovider",
                "-q",
                "-rs",
                "tests/worker/workflow_sandbox",
                *args.pytest_args,
            ],
            cwd=scratch,
            env=env,
            check=False,
        ).returncode
    finally:
        if args.keep:
            print(f"(kept {scratch})")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
