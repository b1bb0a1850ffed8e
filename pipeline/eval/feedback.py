"""Relevance-feedback rounds on the scene benchmark: partial queries, one target scene each.

A partial query ("a star", "something red in the top left") matches many scenes; the simulated
user wants one of them, the scene the query was drawn from. Each round: search (top ``k``),
caption the hits, the user marks them (relevant: the target, or a scene sharing at least half of
its facts), and a *strategy* writes the next query. Hits@k and the target's rank are counted per
round. Strategies, all on the same rounds:

* ``none``: the query as typed, every round (round 0 repeated);
* ``rule``: the caption of the first hit marked relevant becomes the query (fixed rule);
* ``rocchio``: in embedding space, q' = a q + b mean(relevant images) - c mean(not relevant);
* an LLM with a prompt (the ``rewrite`` stage's call: query, marked captions as quoted data).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Round:
    """What a strategy sees after a round: the query, its vector, and the marked hits."""

    text: str
    vector: np.ndarray
    relevant: list[Any]
    """Hits marked relevant (with ``caption`` and ``path``)."""
    irrelevant: list[Any]


Strategy = Callable[[Round], tuple[str | None, np.ndarray | None]]
"""Next query: a text (searched as text), or a vector (searched as is)."""


def no_rewrite(r: Round) -> tuple[str | None, np.ndarray | None]:
    return r.text, None


def first_relevant_caption(r: Round) -> tuple[str | None, np.ndarray | None]:
    captions = [h.caption for h in r.relevant if h.caption]
    return (captions[0] if captions else r.text), None


def rocchio(encoder: Any, a: float = 1.0, b: float = 0.75, c: float = 0.15) -> Strategy:
    """Rocchio in the dual encoder's space (image vectors of the marked hits)."""
    from ..store.images import load_image

    def step(r: Round) -> tuple[str | None, np.ndarray | None]:
        vec = a * r.vector
        for hits, weight in ((r.relevant, b), (r.irrelevant, -c)):
            if hits and weight:
                vec = vec + weight * encoder.encode_images([load_image(h.path) for h in hits]).mean(0)
        return None, vec / (np.linalg.norm(vec) or 1.0)

    return step


def llm_rewrite(llm: Any, prompt_name: str = "rewrite-feedback", max_captions: int = 5) -> Strategy:
    """The rewrite stage's model call; a refused answer keeps the query."""
    from ..agent.ask import ask_for_query
    from ..agent.prompts import load_prompt, quoted

    prompt = load_prompt(prompt_name)

    def step(r: Round) -> tuple[str | None, np.ndarray | None]:
        relevant = [h.caption for h in r.relevant if h.caption][:max_captions]
        irrelevant = [h.caption for h in r.irrelevant if h.caption][:max_captions]
        if not relevant and not irrelevant:
            return r.text, None
        values = {"query": quoted(r.text), "relevant": quoted(relevant), "irrelevant": quoted(irrelevant)}
        record = ask_for_query(llm, prompt, values)
        step.invalid += record["query"] is None  # type: ignore[attr-defined]
        return record["query"] or r.text, None

    step.invalid = 0  # type: ignore[attr-defined]
    return step


def feedback_report(
    root: Path,
    split: str,
    index: Path,
    encoder: Any,
    captioner: Any,
    strategies: dict[str, Strategy],
    *,
    n_queries: int = 100,
    rounds: int = 3,
    k: int = 10,
    seed: int = 0,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Hits@1/@k and median target rank per round, for each strategy, on ``n_queries`` partial queries."""
    from ..agent.simulate import marks_for
    from ..progress import progress_bar
    from ..scenes.dataset import load_scene_dataset
    from ..scenes.simuser import SimulatedUser
    from ..stages.caption import Captioner
    from ..store.cache import ModelCache
    from ..store.index_store import IndexStore
    from ..store.search import Searcher

    dataset = load_scene_dataset(root)
    scenes = dataset.scenes[split]
    partial = [q for q in dataset.queries[split] if q.type == "partial" and q.target_id in scenes]
    rng = np.random.default_rng([seed, 53])
    chosen = [partial[int(i)] for i in sorted(rng.choice(len(partial), min(n_queries, len(partial)), replace=False))]
    store = IndexStore.open(index)
    searcher = Searcher(store, encoder)
    captions = Captioner(captioner, ModelCache(store.path))
    report: dict[str, Any] = {"split": split, "n_queries": len(chosen), "rounds": rounds, "k": k, "strategies": {}}
    with progress_bar("feedback rounds", len(chosen) * len(strategies), "query", progress) as bar:
        for name, strategy in strategies.items():
            ranks = np.full((len(chosen), rounds + 1), np.inf)
            start = time.perf_counter()
            for qi, query in enumerate(chosen):
                user = SimulatedUser(scenes[query.target_id])
                text, vector = query.text, None
                for round_ in range(rounds + 1):
                    if vector is None:
                        encoded, text, _ = searcher.encode_query_text(text)
                        vector = encoded[0]  # (D,)
                    hits = searcher.search_vectors(vector[None].astype(np.float32), k)[0]
                    keys = [h.key for h in hits]
                    if query.target_id in keys:
                        ranks[qi, round_] = keys.index(query.target_id) + 1
                    if round_ == rounds:
                        break
                    made, _, _ = captions.captions([(h.id, h.path) for h in hits])
                    for h in hits:
                        h.caption = made.get(h.id)
                    good, bad = (set(keys) for keys in marks_for(hits, user, scenes, max_relevant=3))
                    r = Round(text, vector, [h for h in hits if h.key in good], [h for h in hits if h.key in bad])
                    new_text, new_vector = strategy(r)
                    text, vector = (new_text or text), new_vector
                bar.advance(1)
            per_round = [
                {"round": i, "hits@1": float((ranks[:, i] <= 1).mean()), f"hits@{k}": float((ranks[:, i] <= k).mean())}
                for i in range(rounds + 1)
            ]
            entry: dict[str, Any] = {"per_round": per_round, "seconds": time.perf_counter() - start}
            if hasattr(strategy, "invalid"):
                entry["invalid_answers"] = strategy.invalid
            entry["gain_points"] = 100 * (per_round[-1][f"hits@{k}"] - per_round[0][f"hits@{k}"])
            report["strategies"][name] = entry
    return report


__all__ = ["Round", "feedback_report", "first_relevant_caption", "llm_rewrite", "no_rewrite", "rocchio"]
