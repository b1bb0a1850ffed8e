"""Single text queries timed end to end through the Python API on the demo index: the stage pipeline
(`Pipeline.search`) where it exists, else the bare `Searcher.search` (the code before the stage seam).

    python reports/scripts/query_latency.py ~/.cache/viewfinder/demo/index-default reports/query-latency.json
"""
import json, sys, time, statistics
import numpy as np
idx = sys.argv[1]; out = sys.argv[2]
try:
    from viewfinder.pipeline import Pipeline
    p = Pipeline.from_preset("default", index=idx)
    run = lambda q: p.search(q, k=10)
    kind = "Pipeline.search"
except ImportError:
    from viewfinder.pipeline import open_index
    s = open_index(idx)
    run = lambda q: s.search(q, k=10)
    kind = "Searcher.search"
qs = [f"a {sz} {c} {sh}" for sz in ("small","large") for c in ("red","blue","green","pink","orange") for sh in ("star","circle","heart","cross","square")]
for q in qs[:10]: run(q)
lat = []
for rep in range(4):
    for q in qs:
        t=time.perf_counter(); run(q); lat.append(time.perf_counter()-t)
lat = np.array(lat)*1000
r = {"api": kind, "queries": len(lat), "p50_ms": float(np.percentile(lat,50)), "p95_ms": float(np.percentile(lat,95))}
print(r); json.dump(r, open(out,"w"), indent=2)
