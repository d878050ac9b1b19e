"""Summarise criterion's estimates (benches/payload.rs) as a Markdown table and JSON.

Usage: python benches/criterion_table.py TARGET_DIR [--json PATH]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# Document sizes in bytes of compact JSON (see `document` in payload.rs) for throughput.
SIZES = {"1kB": 1_000, "1MB": 1_000_000}


def _fmt(ns: float) -> str:
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.0f} ns"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target_dir")
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "rust.json"))
    args = parser.parse_args()
    root = Path(args.target_dir) / "criterion"
    rows = []
    for path in sorted(root.glob("*/*/*/new/estimates.json")):
        group, name, size = path.parts[-5:-2]
        median = json.loads(path.read_text())["median"]
        ns = median["point_estimate"]
        rows.append(
            {
                "bench": f"{group}/{name}",
                "size": size,
                "median_ns": ns,
                "ci95_ns": [
                    median["confidence_interval"]["lower_bound"],
                    median["confidence_interval"]["upper_bound"],
                ],
                "mib_per_s": SIZES.get(size, 0) / (ns / 1e9) / 2**20 if size in SIZES else None,
            }
        )
    order = {"encode": 0, "decode": 1, "to_python": 2, "from_python": 3}
    rows.sort(key=lambda r: (order.get(r["bench"].split("/")[1], 9), SIZES.get(r["size"], 0)))
    if not rows:
        raise SystemExit(f"no criterion estimates under {root}")
    print("| benchmark | size | median | MiB/s |\n|---|---|---:|---:|")
    for r in rows:
        rate = f"{r['mib_per_s']:.0f}" if r["mib_per_s"] else "-"
        print(f"| {r['bench']} | {r['size']} | {_fmt(r['median_ns'])} | {rate} |")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
