"""Identifier schemes: how each item of a collection is named for a model that generates its name.

* ``numeric``: the item's store id as digits ("417"), one token per digit;
* ``atomic``: one new token per item ("<id_417>"), learned from scratch;
* ``semantic``: hierarchical k-means of the items' image vectors, one number per level ("3-7-1"):
  similar images share prefixes;
* ``structured``: the first content words of the item's caption and a number ("blue-circle-right-2"):
  the name says what the image shows.

Assignment is incremental: :func:`assign` names new items from the scheme's saved ``state`` without
renaming old ones, and an identifier, once given, is never given to another item (the counters only
grow, removed items' names stay taken). The state is plain JSON.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

SCHEMES = ("atomic", "numeric", "semantic", "structured")
ATOMIC_FORMAT = "<id_{n}>"

_STOP = {"a", "an", "the", "of", "with", "and", "in", "on", "at", "to", "is", "are", "there", "this", "that",
         "picture", "image", "photo", "scene", "showing", "shows", "contains", "we", "see", "one", "two",
         "three", "four", "objects", "object", "shapes", "shape", "sits", "also", "backdrop", "background"}  # fmt: skip


def check_scheme(scheme: str) -> str:
    if scheme not in SCHEMES:
        raise ValueError(f"identifier scheme {scheme!r}: expected one of {', '.join(SCHEMES)}")
    return scheme


def structured_prefix(text: str | None, words: int = 3) -> str:
    """The first ``words`` content words of a caption, joined by "-" ("large-blue-circle");
    "item" for an empty caption."""
    found = [w for w in re.findall(r"[a-z]+", (text or "").lower()) if w not in _STOP]
    return "-".join(found[:words]) or "item"


def assign(
    scheme: str,
    state: dict[str, Any],
    item_ids: Sequence[int],
    vectors: np.ndarray | None = None,
    texts: Sequence[str | None] | None = None,
    *,
    branching: int = 10,
    leaf_size: int = 10,
    seed: int = 0,
) -> dict[int, str]:
    """Identifiers for new items (``item_ids``: the store's ids), updating ``state`` in place.

    ``semantic`` needs ``vectors`` (one row per item); the first call clusters them (hierarchical
    k-means, ``branching`` clusters per level until a cluster holds ``leaf_size`` or fewer), later
    calls route new vectors down the saved centroids. ``structured`` needs ``texts`` (captions).
    """
    check_scheme(scheme)
    ids = [int(i) for i in item_ids]
    if scheme == "numeric":
        return {i: str(i) for i in ids}
    if scheme == "atomic":
        return {i: ATOMIC_FORMAT.format(n=i) for i in ids}
    if scheme == "structured":
        if texts is None or len(texts) != len(ids):
            raise ValueError("structured identifiers need one caption per item")
        counters = state.setdefault("next", {})
        out = {}
        for i, text in zip(ids, texts, strict=True):
            prefix = structured_prefix(text)
            out[i] = f"{prefix}-{counters.get(prefix, 0)}"
            counters[prefix] = counters.get(prefix, 0) + 1
        return out
    if vectors is None or len(vectors) != len(ids):
        raise ValueError("semantic identifiers need one vector per item")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if "centroids" not in state:
        state.update(centroids={}, next={}, branching=branching, leaf_size=leaf_size)
        return _cluster(state, ids, vectors, "", np.random.default_rng(seed))
    return {i: _route(state, v) for i, v in zip(ids, vectors, strict=True)}


def _leaf(state: dict[str, Any], prefix: str) -> str:
    n = state["next"].get(prefix, 0)
    state["next"][prefix] = n + 1
    return f"{prefix}-{n}" if prefix else str(n)


def _cluster(state: dict[str, Any], ids: list[int], vectors: np.ndarray, prefix: str, rng) -> dict[int, str]:
    if len(ids) <= state["leaf_size"] or prefix.count("-") >= 8:
        return {i: _leaf(state, prefix) for i in ids}
    k = min(state["branching"], len(ids))
    labels, centroids = _kmeans(vectors, k, rng)
    state["centroids"][prefix] = centroids.tolist()
    out: dict[int, str] = {}
    for c in range(k):
        members = np.flatnonzero(labels == c)
        child = f"{prefix}-{c}" if prefix else str(c)
        out |= _cluster(state, [ids[m] for m in members], vectors[members], child, rng)
    return out


def _kmeans(vectors: np.ndarray, k: int, rng, iterations: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means (k-means++ start); a split that leaves one cluster with every item falls
    back to equal parts along the first principal direction, so the tree always gets deeper."""
    n = len(vectors)
    centroids = [vectors[int(rng.integers(n))]]
    for _ in range(1, k):
        d = np.min(((vectors[:, None, :] - np.array(centroids)[None]) ** 2).sum(-1), axis=1)
        total = d.sum()
        centroids.append(vectors[int(rng.choice(n, p=d / total))] if total > 0 else vectors[int(rng.integers(n))])
    c = np.array(centroids)
    labels = np.zeros(n, dtype=int)
    for _ in range(iterations):
        labels = ((vectors[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
        for j in range(k):
            if (labels == j).any():
                c[j] = vectors[labels == j].mean(0)
    if np.bincount(labels, minlength=k).max() == n:
        centred = vectors - vectors.mean(0)
        direction = np.linalg.svd(centred, full_matrices=False)[2][0] if n > 1 else np.zeros(vectors.shape[1])
        order = np.argsort(centred @ direction, kind="stable")
        labels = np.empty(n, dtype=int)
        labels[order] = np.arange(n) * k // n
        c = np.stack([vectors[labels == j].mean(0) for j in range(k)])
    return labels, c.astype(np.float32)


def _route(state: dict[str, Any], vector: np.ndarray) -> str:
    prefix = ""
    while prefix in state["centroids"]:
        centroids = np.asarray(state["centroids"][prefix], dtype=np.float32)
        c = int(((centroids - vector) ** 2).sum(-1).argmin())
        prefix = f"{prefix}-{c}" if prefix else str(c)
    return _leaf(state, prefix)


__all__ = ["ATOMIC_FORMAT", "SCHEMES", "assign", "check_scheme", "structured_prefix"]
