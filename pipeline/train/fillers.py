"""Wording noise for training texts: random filler words inserted into tokenised captions.

A text tower trained from scratch on a handful of caption templates has never seen most of the
vocabulary, so an unknown word in a query ("we see", "backdrop") lands as an untrained embedding
and shifts the whole text vector. Inserting random common words that carry no scene fact teaches
the tower to read past such words. The fillers never include a word the benchmark uses (captions
of either template set, every query type, edit instructions), so the test-only wording stays
unseen in training.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from ..scenes.captions import all_captions
from ..scenes.generator import SceneGeneratorConfig
from ..scenes.queries import query_to_dict

_WORD = re.compile(r"[a-z]+")


def benchmark_words(n_scenes: int = 200, seed: int = 0) -> frozenset[str]:
    """Every word of the scene benchmark's captions (both template sets) and queries, drawn from
    ``n_scenes`` generated scenes of a test-like split."""
    from ..scenes.dataset import QuerySetConfig, _build_split

    config = SceneGeneratorConfig(seed=seed)
    scenes, queries = _build_split(config, "test", n_scenes, n_scenes // 4, QuerySetConfig())
    rng = np.random.default_rng(seed)
    texts: list[str] = []
    for scene in scenes:
        for template_set in ("train", "test"):
            texts.extend(all_captions(scene, template_set, 6, rng))
    for query in queries:
        texts.extend(v for v in query_to_dict(query).values() if isinstance(v, str))
    return frozenset(word for text in texts for word in _WORD.findall(text.lower()))


def filler_token_ids(tokenizer: object, exclude: frozenset[str], max_rank: int = 20000) -> np.ndarray:
    """Ids of whole-word BPE tokens (alphabetic, 3+ letters) among the ``max_rank`` most frequent
    merges of an open_clip ``SimpleTokenizer``, minus the words in ``exclude``."""
    encoder: dict[str, int] | None = getattr(tokenizer, "encoder", None)
    if encoder is None:
        raise TypeError(f"{type(tokenizer).__name__} has no BPE vocabulary ('encoder'); fillers need open_clip's")
    ids = [
        i
        for token, i in encoder.items()
        if token.endswith("</w>") and i < max_rank and (w := token[:-4]).isalpha() and len(w) >= 3 and w not in exclude
    ]
    if not ids:
        raise ValueError("no filler words left in the tokenizer vocabulary")
    return np.array(sorted(ids), dtype=np.int64)


def insert_fillers(
    tokens: torch.Tensor,
    filler_ids: np.ndarray,
    prob: float,
    max_fillers: int,
    eot_id: int,
    rng: np.random.Generator,
) -> torch.Tensor:
    """A copy of ``tokens`` (B, T) where each text, with probability ``prob``, gets 1..``max_fillers``
    random filler tokens at random places between its start and end tokens (fewer if the context
    would overflow; a text already at full length is left alone)."""
    out = tokens.clone()
    if prob <= 0 or max_fillers < 1:
        return out
    context = tokens.shape[1]
    for row in np.flatnonzero(rng.random(len(tokens)) < prob):
        ids = tokens[row].tolist()
        end = ids.index(eot_id) if eot_id in ids else context - 1  # end token's position
        k = min(int(rng.integers(1, max_fillers + 1)), context - 1 - end)
        if k <= 0:
            continue
        body = ids[1:end]
        for word in rng.choice(filler_ids, k):
            body.insert(int(rng.integers(0, len(body) + 1)), int(word))
        new = [ids[0], *body, eot_id]
        out[row] = torch.tensor(new + [0] * (context - len(new)), dtype=tokens.dtype)
    return out
