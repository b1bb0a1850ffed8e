"""Swap accuracy of the zoo reranker's ITM alone on the first 400 train scenes and the first 400 test
scenes (200 relation and 200 binding pairs each, seed 5): whether a miss on test is over-fitting or a
thing the reranker never learned. Usage: python reports/scripts/swap_train_vs_test.py OUT.json"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

from viewfinder.adapters.registry import load_model
from viewfinder.pipeline.reports import machine_info, save_report
from viewfinder.pipeline.scenes.graph import Scene
from viewfinder.pipeline.scenes.queries import make_binding_swap_queries, make_relation_swap_queries
from viewfinder.pipeline.store.images import load_image

root = Path.home() / ".cache/viewfinder/scenes-64"
m = load_model("scene-reranker", "matcher")
out = {}
for split in ("train", "test"):
    recs = [json.loads(line) for line in (root / f"{split}.jsonl").read_text().splitlines()[:400]]
    scenes = [Scene.from_dict(r["scene"]) for r in recs]
    path = {r["id"]: root / r["path"] for r in recs}
    for kind, make in (("relation", make_relation_swap_queries), ("binding", make_binding_swap_queries)):
        qs = make(scenes, np.random.default_rng(5))[:200]
        feats = m.image_features(torch.stack([m.image_transform(load_image(path[q.image_id])) for q in qs]))
        pos = m.match(feats, [q.positive for q in qs]).itm
        neg = m.match(feats, [q.negative for q in qs]).itm
        out[f"{split}_{kind}_itm_acc"] = float((np.asarray(pos) > np.asarray(neg)).mean())
        print(split, kind, out[f"{split}_{kind}_itm_acc"], len(qs), flush=True)


out["machine"] = machine_info()
save_report(out, Path(sys.argv[1]))
