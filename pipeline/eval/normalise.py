"""Query normalisation on the scene benchmark: free-form requests against the captions they describe.

For a sample of a split's scenes, one free-form request each (:mod:`..scenes.wordings`, one style)
is searched among all the split's images with the dual encoder, as typed and after each
normaliser; next to it, the same scenes' own test-template captions (the goal's reference: R@1
after normalisation >= 0.9 x R@1 of the captions). A normaliser is any function from a list of
requests to a list of queries (the rule baseline, an LLM with a prompt, a LoRA-tuned LLM).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

Normaliser = Callable[[list[str]], list[str]]

_OPENERS = re.compile(
    r"^(?:hey,?\s*)?(?:can you\s+|could you\s+|pls\s+|please\s+)?"
    r"(?:find( me)?|show( me)?|search for|i'?m looking for|looking for|need|got any pictures with|"
    r"the one with)\s*:?\s*",
    re.IGNORECASE,
)
_CLOSERS = re.compile(r"(?:\s*(?:please|pls|thanks|thank you|if you have it))*\s*[?!.]*\s*$", re.IGNORECASE)


def rule_normaliser(requests: list[str]) -> list[str]:
    """The fixed-rule baseline: lower case, no opener ("show me", "i'm looking for"...) or closer
    ("please", "thanks", "?"), single spaces. It knows no synonyms and fixes no typos."""
    out = []
    for text in requests:
        text = _OPENERS.sub("", text.strip().lower())
        text = _CLOSERS.sub("", text)
        out.append(re.sub(r"\s+", " ", text).strip() or text)
    return out


def llm_normaliser(llm: Any, prompt_name: str = "normalise", max_chars: int = 200) -> Normaliser:
    """Requests -> the chat model's normalised queries (batched where the model batches; an answer the
    checks refuse falls back to the request as typed). ``invalid`` holds the last run's refusal count."""
    from ..llm.ask import ask_for_queries
    from ..llm.prompts import load_prompt, quoted

    prompt = load_prompt(prompt_name)

    def run(requests: list[str]) -> list[str]:
        records = ask_for_queries(llm, prompt, [{"query": quoted(r)} for r in requests], max_chars=max_chars)
        run.invalid = sum(rec["query"] is None for rec in records)  # type: ignore[attr-defined]
        return [rec["query"] or r for rec, r in zip(records, requests, strict=True)]

    run.invalid = 0  # type: ignore[attr-defined]
    return run


def preset_normaliser(pipeline: Any) -> Normaliser:
    """Requests -> the queries a preset's ``normalise`` stage writes (with its candidates, grounding
    and verifier, as the preset sets them), one request at a time as a search would. ``invalid``:
    answers refused (a fallback searched); ``kept_typed``: the verifier chose the request as typed;
    ``stage_seconds``: per request."""
    from ..stages.state import QueryState

    stage = next((s for s in pipeline.stages if getattr(s, "name", "") == "normalise"), None)
    if stage is None:
        raise ValueError(f"the pipeline {pipeline.name!r} has no normalise stage")

    def run(requests: list[str]) -> list[str]:
        out, invalid, typed, seconds = [], 0, 0, []
        for request in requests:
            state = QueryState(query=request, text=request, k=10)
            start = time.perf_counter()
            state = stage.run(state)
            seconds.append(time.perf_counter() - start)
            invalid += bool(state.notes.get("fallback"))
            typed += state.notes.get("chosen") == "typed"
            out.append(state.text or request)
        run.invalid, run.kept_typed = invalid, typed  # type: ignore[attr-defined]
        run.stage_seconds = float(np.median(seconds)) if seconds else 0.0  # type: ignore[attr-defined]
        return out

    run.invalid = run.kept_typed = 0  # type: ignore[attr-defined]
    return run


def normalisation_report(
    root: Path,
    split: str,
    encoder: Any,
    normalisers: dict[str, Normaliser],
    *,
    style: str,
    n_queries: int = 300,
    seed: int = 0,
) -> dict[str, Any]:
    """R@1 / R@5 of free-form requests in ``style``: as typed, after each normaliser, and the scenes'
    own captions, all over the split's images with ``encoder``."""
    from ..scenes.dataset import load_scene_dataset
    from ..scenes.wordings import free_form
    from ..store.images import load_image
    from .retrieval import ranks_of_targets, recall_from_ranks

    dataset = load_scene_dataset(root)
    scenes = dataset.scenes[split]
    keys = sorted(scenes)
    records = {r["id"]: r for r in _records(root, split)}
    images = [load_image(root / records[k]["path"]) for k in keys]
    image_vecs = encoder.encode_images(images)  # (N, D)
    rng = np.random.default_rng([seed, 31])
    chosen = sorted(rng.choice(len(keys), min(n_queries, len(keys)), replace=False).tolist())
    targets = np.array(chosen)
    requests = [free_form(scenes[keys[i]], style, rng) for i in chosen]
    captions = [records[keys[i]]["caption"][0] for i in chosen]

    def recall(texts: list[str]) -> dict[str, float]:
        ranks = ranks_of_targets(encoder.encode_texts(texts) @ image_vecs.T, targets)
        return recall_from_ranks(ranks, (1, 5))

    report: dict[str, Any] = {
        "split": split, "style": style, "n_queries": len(chosen), "images": len(keys),
        "captions": recall(captions), "as_typed": recall(requests), "normalised": {},
        "examples": [{"request": r, "caption": c} for r, c in zip(requests[:5], captions[:5], strict=True)],
    }  # fmt: skip
    for name, normalise in normalisers.items():
        start = time.perf_counter()
        queries = normalise(requests)
        seconds = time.perf_counter() - start
        entry = {**recall(queries), "seconds": seconds, "examples": queries[:5]}
        if hasattr(normalise, "invalid"):
            entry["invalid_rate"] = normalise.invalid / max(len(requests), 1)
        if hasattr(normalise, "kept_typed"):
            entry["kept_typed_rate"] = normalise.kept_typed / max(len(requests), 1)
            entry["p50_seconds_per_request"] = normalise.stage_seconds
        entry["ratio_to_captions"] = entry["R@1"] / report["captions"]["R@1"] if report["captions"]["R@1"] else None
        report["normalised"][name] = entry
    return report


def _records(root: Path, split: str) -> list[dict[str, Any]]:
    import json

    return [json.loads(x) for x in (root / f"{split}.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]


__all__ = ["llm_normaliser", "normalisation_report", "preset_normaliser", "rule_normaliser"]
