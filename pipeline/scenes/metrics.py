"""Benchmark metrics: pure functions of rankings and scores, whatever model produced them.

Rankings are lists of scene ids, best first, one list per query. A ranking should cover the whole
collection; a target missing from a (truncated) ranking counts as ranked last, at the size of the
collection.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import numpy as np

from .graph import Scene
from .queries import ATTRIBUTE_TYPES, PartialQuery, chance_rate, scene_matches


def target_ranks(ranked_ids: Sequence[Sequence[str]], target_ids: Sequence[str], collection_size: int) -> np.ndarray:
    """1-based rank of each query's target; ``collection_size`` where the target is missing.

    Returns an int array of shape (n_queries,).
    """
    if len(ranked_ids) != len(target_ids):
        raise ValueError(f"ranked_ids: {len(ranked_ids)} rankings for {len(target_ids)} targets")
    ranks = np.empty(len(target_ids), dtype=np.int64)
    for q, (ranking, target) in enumerate(zip(ranked_ids, target_ids, strict=True)):
        try:
            ranks[q] = list(ranking).index(target) + 1
        except ValueError:
            ranks[q] = collection_size
    return ranks


def recall_at_k(
    ranked_ids: Sequence[Sequence[str]],
    target_ids: Sequence[str | Collection[str]],
    ks: Sequence[int] = (1, 5, 10),
) -> dict[int, float]:
    """Share of queries with a target among the first ``k`` ids, for each ``k``.

    A target is one id or a collection of ids (then any of them counts as a hit).
    """
    if len(ranked_ids) != len(target_ids):
        raise ValueError(f"ranked_ids: {len(ranked_ids)} rankings for {len(target_ids)} targets")
    if any(k < 1 for k in ks):
        raise ValueError(f"ks: {tuple(ks)} must all be >= 1")
    targets = [{t} if isinstance(t, str) else set(t) for t in target_ids]
    out: dict[int, float] = {}
    for k in ks:
        hits = [bool(targets[q] & set(ranking[:k])) for q, ranking in enumerate(ranked_ids)]
        out[k] = float(np.mean(hits)) if hits else 0.0
    return out


def swap_accuracy(pos_scores: Sequence[float], neg_scores: Sequence[float]) -> float:
    """Share of pairs where the positive text scores strictly above the negative (chance 0.5)."""
    pos = np.asarray(pos_scores, dtype=np.float64)  # (n,)
    neg = np.asarray(neg_scores, dtype=np.float64)  # (n,)
    if pos.shape != neg.shape or pos.ndim != 1:
        raise ValueError(f"pos_scores {pos.shape} and neg_scores {neg.shape}: need equal 1-D shapes")
    if pos.size == 0:
        return 0.0
    return float(np.mean(pos > neg))


def partial_query_report(
    queries: Sequence[PartialQuery],
    ranked_ids: Sequence[Sequence[str]],
    scenes: Mapping[str, Scene],
    k: int = 10,
) -> dict:
    """How rankings for partial queries fare, attribute by attribute.

    ``scenes`` is the whole collection that was ranked (id -> scene). Returns::

        {"n_queries", "k",
         "median_rank", "mean_rank",    # 1-based rank of the query's target_id
         "target_at_k",                 # share of queries with the target in the top k
         "attributes": {name: {"share_at_k", "chance", "n_queries"}}}

    For each attribute type a query names (colour, shape, size, position), ``share_at_k`` is the
    mean over those queries of the share of the top-k ids whose scene has an object with that
    attribute value; ``chance`` is the fraction of the collection that does, averaged over the
    same queries. ``"all"`` does the same for every named attribute on one object together
    (precision at k against the relevant set).
    """
    if k < 1:
        raise ValueError(f"k: {k} must be >= 1")
    if len(queries) != len(ranked_ids):
        raise ValueError(f"ranked_ids: {len(ranked_ids)} rankings for {len(queries)} queries")
    for query in queries:
        if not isinstance(query, PartialQuery):
            raise ValueError(f"queries: {query.id!r} is a {query.type!r} query, not partial")
    collection = list(scenes.values())
    ranks = target_ranks(ranked_ids, [q.target_id for q in queries], len(scenes))
    shares: dict[str, list[float]] = {name: [] for name in (*ATTRIBUTE_TYPES, "all")}
    chances: dict[str, list[float]] = {name: [] for name in shares}
    chance_cache: dict[frozenset, float] = {}  # few distinct constraints; each costs a pass
    for query, ranking in zip(queries, ranked_ids, strict=True):
        top = [scenes[i] for i in list(ranking)[:k]]
        constraints = {name: {name: value} for name, value in query.attributes.items()}
        constraints["all"] = dict(query.attributes)
        for name, attributes in constraints.items():
            matched = [scene_matches(scene, attributes) for scene in top]
            shares[name].append(float(np.mean(matched)) if matched else 0.0)
            key = frozenset(attributes.items())
            if key not in chance_cache:
                chance_cache[key] = chance_rate(collection, attributes)
            chances[name].append(chance_cache[key])
    return {
        "n_queries": len(queries),
        "k": k,
        "median_rank": float(np.median(ranks)) if len(ranks) else float("nan"),
        "mean_rank": float(np.mean(ranks)) if len(ranks) else float("nan"),
        "target_at_k": float(np.mean(ranks <= k)) if len(ranks) else 0.0,
        "attributes": {
            name: {
                "share_at_k": float(np.mean(shares[name])),
                "chance": float(np.mean(chances[name])),
                "n_queries": len(shares[name]),
            }
            for name in shares
            if shares[name]
        },
    }
