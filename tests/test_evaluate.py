"""Evaluation harness: metrics on hand-made embeddings, the Karpathy and manifest loaders, reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import write_images

from viewfinder.pipeline.config import IndexConfig
from viewfinder.pipeline.eval.plots import plot_recall_curves
from viewfinder.pipeline.eval.retrieval import (
    EvalDataError,
    evaluate_retrieval,
    load_karpathy,
    load_manifest,
    ranks_of_targets,
    retrieval_metrics,
)


def test_ranks_and_recall_on_hand_made_embeddings() -> None:
    # 3 images on the axes; 4 captions: two for image 0, one each for images 1 and 2.
    images = np.eye(3, dtype=np.float32)
    texts = np.array(
        [[1.0, 0.1, 0.0], [0.0, 1.0, 0.2], [0.0, 0.9, 0.1], [0.1, 0.0, 1.0]], dtype=np.float32
    )  # caption 1 (owner 0) scores image 1 (1.0) and image 2 (0.2) above its own image 0 (0.0)
    owner = np.array([0, 0, 1, 2])
    m = retrieval_metrics(images, texts, owner, ks=(1, 2, 3))
    assert m.t2i_ranks == [1, 3, 1, 1]
    assert m.text_to_image == {"R@1": 0.75, "R@2": 0.75, "R@3": 1.0}
    # image 1: caption 1 (1.0, owner 0) outranks its own caption 2 (0.9) -> rank 2.
    assert m.i2t_ranks == [1, 2, 1]
    assert m.image_to_text == {"R@1": pytest.approx(2 / 3), "R@2": 1.0, "R@3": 1.0}


def test_ties_count_against_the_target() -> None:
    scores = np.array([[0.5, 0.5, 0.1]])
    assert ranks_of_targets(scores, np.array([0])).tolist() == [1]
    assert ranks_of_targets(np.array([[0.5, 0.6, 0.6]]), np.array([0])).tolist() == [3]


def _karpathy(tmp_path: Path) -> Path:
    paths = write_images(tmp_path / "imgs" / "part", 6, seed=3)
    images = []
    for i, p in enumerate(paths):
        images.append(
            {
                "filename": p.name,
                "filepath": "part",
                "imgid": i,
                "split": "test" if i < 4 else "train",
                "sentences": [{"raw": f" caption {i} a "}, {"raw": f"caption {i} b"}],
            }
        )
    path = tmp_path / "dataset_tiny.json"
    path.write_text(json.dumps({"dataset": "tiny", "images": images}))
    return path


def test_karpathy_loader_picks_the_split(tmp_path: Path) -> None:
    ds = load_karpathy(_karpathy(tmp_path), "test", tmp_path / "imgs")
    assert len(ds.image_keys) == 4 and len(ds.captions) == 8
    assert ds.captions[0] == "caption 0 a"
    assert ds.caption_image == [0, 0, 1, 1, 2, 2, 3, 3]
    assert all(Path(p).is_file() for p in ds.image_paths)
    with pytest.raises(EvalDataError, match="splits present"):
        load_karpathy(_karpathy(tmp_path), "val", tmp_path / "imgs")


def test_manifest_loader_rejects_bad_lines_and_missing_captions(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"path": "a.png", "caption": "x"}\nnot json\n')
    with pytest.raises(EvalDataError, match="bad.jsonl:2"):
        load_manifest(bad)
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"path": "a.png"}\n')
    with pytest.raises(EvalDataError, match="no captions"):
        load_manifest(empty)


def test_evaluate_retrieval_end_to_end(tmp_path: Path, tiny_encoder) -> None:
    ds = load_karpathy(_karpathy(tmp_path), "test", tmp_path / "imgs")
    report = evaluate_retrieval(ds, tiny_encoder, IndexConfig(num_workers=0), tmp_path / "work")
    assert report["images"] == 4 and report["captions"] == 8
    for direction in ("text_to_image", "image_to_text"):
        assert set(report[direction]) == {"R@1", "R@5", "R@10"}
        assert report[direction]["R@10"] == 1.0  # only 4 images / 8 captions
        assert 0.0 <= report[direction]["R@1"] <= 1.0
    assert report["encoder"]["fingerprint"] == tiny_encoder.fingerprint
    assert len(report["recall_curves"]["k"]) == 50
    png = plot_recall_curves(report, tmp_path / "curves.png")
    assert png.stat().st_size > 1000
    # A second run reuses the cached index: same numbers.
    again = evaluate_retrieval(ds, tiny_encoder, IndexConfig(num_workers=0), tmp_path / "work")
    assert again["text_to_image"] == report["text_to_image"]
