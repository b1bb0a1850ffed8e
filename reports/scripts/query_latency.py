"""Single text queries timed end to end through the Python API on the demo index: the stage pipeline
(``Pipeline.search``) where it exists, else the bare ``Searcher.search`` (the code before the stage seam).

    python reports/scripts/query_latency.py ~/.cache/viewfinder/demo/index-default reports/query-latency.json
"""

import json
import sys
import time

import numpy as np


def main(index: str, out: str) -> None:
    try:
        from viewfinder.pipeline import Pipeline

        pipeline = Pipeline.from_preset("default", index=index)
        run, api = (lambda q: pipeline.search(q, k=10)), "Pipeline.search"
    except ImportError:
        from viewfinder.pipeline import open_index

        searcher = open_index(index)
        run, api = (lambda q: searcher.search(q, k=10)), "Searcher.search"
    sizes, colours = ("small", "large"), ("red", "blue", "green", "pink", "orange")
    queries = [
        f"a {s} {c} {sh}" for s in sizes for c in colours for sh in ("star", "circle", "heart", "cross", "square")
    ]
    for q in queries[:10]:  # warm-up
        run(q)
    latencies = []
    for _ in range(4):
        for q in queries:
            start = time.perf_counter()
            run(q)
            latencies.append(time.perf_counter() - start)
    ms = np.array(latencies) * 1000
    report = {
        "api": api,
        "queries": len(ms),
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
    }
    print(report)
    with open(out, "w") as fh:
        json.dump(report, fh, indent=2)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
