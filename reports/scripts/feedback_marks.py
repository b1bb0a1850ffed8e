"""How many of the first round's hits the simulated user marks relevant, on the feedback eval's queries.

Usage: python reports/scripts/feedback_marks.py SCENES INDEX OUT.json

The same 100 partial test queries as `viewfinder eval-feedback` (seed 0), the scene CLIP's top 10,
and the simulated user's marks (relevant: the target, or a scene sharing half of its facts; no
cap on the number marked). Writes the distribution of the number marked relevant.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from viewfinder.pipeline.api import open_index
from viewfinder.pipeline.eval.experiment import partial_queries
from viewfinder.pipeline.eval.simulate import marks_for
from viewfinder.pipeline.scenes.simuser import SimulatedUser


def main(scenes_root: Path, index: Path, out: Path) -> None:
    queries, scenes = partial_queries(scenes_root, "test", 100)
    searcher = open_index(index)
    counts = []
    for q in queries:
        hits = searcher.search(q.text, k=10).hits
        relevant, _ = marks_for(hits, SimulatedUser(q.target), scenes, max_relevant=None)
        counts.append(len(relevant))
    hist = np.bincount(counts, minlength=4).tolist()
    report = {
        "n_queries": len(queries),
        "k": 10,
        "relevant_marked_histogram": hist,
        "share_with_none_relevant": hist[0] / len(queries),
        "command": "python reports/scripts/feedback_marks.py " + " ".join(sys.argv[1:]),
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]).expanduser(), Path(sys.argv[2]).expanduser(), Path(sys.argv[3]))
