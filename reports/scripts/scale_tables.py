"""Print the README's scale tables (markdown) from the committed search and scale reports.

    python reports/scripts/scale_tables.py [reports/bench-search-1m.json reports/bench-search-100k.json ...]

Table 1: each index type at each measured size: nprobe (tuned), p50/p95, recall@10 against exact
search, and bytes per item in RAM and on disk, from ``viewfinder bench search`` reports. Table 2: the
simulated 10M collection from ``viewfinder bench scale`` (``reports/bench-scale-10m.json``), and what
that sizing means at 100M and 1B items.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPORTS = Path(__file__).resolve().parents[1]
DEFAULT_SEARCH = ["bench-search-100k.json", "bench-search-1m.json"]


def search_table(paths: list[Path]) -> str:
    lines = [
        "| n | index | nprobe | p50 ms | p95 ms | recall@10 | RAM B/item | disk B/item |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for path in paths:
        run = json.loads(path.read_text())
        for r in run["results"]:
            nprobe = "-" if r["nprobe"] is None else str(r["nprobe"])
            if r.get("refine_factor"):
                nprobe += f", shortlist {r['refine_factor']} x k"
            ram = r.get("ram_mb", r["index_mb"]) * 1e6 / r["n"]
            disk = r.get("disk_mb", r["index_mb"]) * 1e6 / r["n"]
            if r.get("refine"):
                disk += 8  # the store also keeps each item's 8-byte id beside its fp16 vector
            lines.append(
                f"| {r['n']:,} | `{r['spec']}` | {nprobe} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | "
                f"{r['recall']:.3f} | {ram:,.0f} | {disk:,.0f} |"
            )
    return "\n".join(lines)


def scale_table(path: Path) -> str:
    report = json.loads(path.read_text())
    r = report["result"]
    ram, disk = r["ram_bytes_per_item"], r["disk_bytes_per_item"]
    on_disk_gb = (r["index_file_mb"] + r["vectors_file_mb"]) / 1e3
    lines = [
        "| n | index | build | peak memory | index RAM | disk | nprobe, shortlist | p50 / p95 ms | recall@10 |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {r['n']:,} | `{r['spec']}` | {r['build_seconds'] / 60:.0f} min | {r['peak_anon_mb'] / 1e3:.1f} GB | "
        f"{r['index_ram_mb'] / 1e3:.2f} GB ({ram:.0f} B/item) | {on_disk_gb:.1f} GB ({disk:.0f} B/item) | "
        f"{r['nprobe']}, {r['refine_factor']} x k | {r['p50_ms']:.2f} / {r['p95_ms']:.2f} | {r['recall']:.3f} |",
    ]
    for n in (100_000_000, 1_000_000_000):
        sized = f"| {n:,} (sized from the row above) | same | | | {ram * n / 1e9:,.0f} GB | {disk * n / 1e9:,.0f} GB |"
        lines.append(sized + " | | |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    searches = [Path(a) for a in argv if "scale" not in Path(a).name] or [REPORTS / p for p in DEFAULT_SEARCH]
    scale = next((Path(a) for a in argv if "scale" in Path(a).name), REPORTS / "bench-scale-10m.json")
    print(search_table(searches))
    print()
    if scale.is_file():
        print(scale_table(scale))


if __name__ == "__main__":
    main(sys.argv[1:])
