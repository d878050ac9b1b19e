"""Python side of the two ways a typed activity argument / result can cross (issue 15, point 2).

(a) today: Rust parses the json/plain bytes (serde_json) and builds Python objects
    (pythonize); Python validates them with `TypeAdapter.validate_python`. A result goes back
    as `to_jsonable_python(value)`, which Rust walks into a `Value` and serializes.
(b) bytes: Rust hands the payload's bytes to `TypeAdapter.validate_json`; a result comes back
    as `pydantic_core.to_json(value)` bytes that Rust puts in the payload as they are.

This script times the Python half of each (the same document as benches/payload.rs); the
Rust half of (a) is criterion's `payload/decode` + `python/to_python` (arguments) and
`python/from_python` + `payload/encode` (results), in benches/results/rust.json.
"""

from __future__ import annotations

import json
import sys
import timeit

import pydantic
import pydantic_core


class Entry(pydantic.BaseModel):
    entry_id: str
    formula: str
    energy_ev: float
    converged: bool
    positions: list[list[float]]
    tags: list[str]


class Document(pydantic.BaseModel):
    user_id: str
    upload_id: str
    entries: list[Entry]


def document(target: int) -> dict:
    doc: dict = {"user_id": "user-7f3a", "upload_id": "upload-91c2", "entries": []}
    size = len(json.dumps(doc, separators=(",", ":")))
    i = 0
    while size < target:
        f = float(i)
        entry = {
            "entry_id": f"entry-{i:08}",
            "formula": "C9H8O4",
            "energy_ev": -1234.5678 - f * 0.001,
            "converged": i % 3 != 0,
            "positions": [[0.1 * f, 0.2, 0.3], [1.4, 0.05 * f, 2.25]],
            "tags": ["dft", "pbe"],
        }
        size += len(json.dumps(entry, separators=(",", ":"))) + 1
        doc["entries"].append(entry)
        i += 1
    return doc


def best(fn, number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number


def main() -> None:
    adapter = pydantic.TypeAdapter(Document)
    rows = []
    for name, target, number in (("1kB", 1_000, 20_000), ("1MB", 1_000_000, 5)):
        obj = document(target)
        data = pydantic_core.to_json(obj)
        model = adapter.validate_python(obj)
        rows.append(
            {
                "size": name,
                "args_validate_python_us": best(
                    lambda obj=obj: adapter.validate_python(obj), number
                )
                * 1e6,
                "args_validate_json_us": best(lambda data=data: adapter.validate_json(data), number)
                * 1e6,
                "result_to_jsonable_us": best(
                    lambda model=model: pydantic_core.to_jsonable_python(model), number
                )
                * 1e6,
                "result_to_json_us": best(lambda model=model: pydantic_core.to_json(model), number)
                * 1e6,
            }
        )
    json.dump(rows, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
