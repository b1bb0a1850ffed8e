"""The identifier model: a causal LM with a LoRA adapter (and, for atomic ids, new tokens) that
decodes the identifiers of one index's items, constrained by a trie to identifiers that exist.

A trained model is a folder: the peft adapter, ``genid.json`` (scheme, base model, the index it was
trained for, the id map it learned) and, for atomic ids, the tokenizer with the new tokens.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ...errors import Error
from ..store.index_store import IndexStore
from ..store.records import StoreError
from .idmap import IdMap, load_id_map
from .trie import IdTrie

logger = logging.getLogger(__name__)

GENID_FILE = "genid.json"
DEFAULT_PROMPTS = {"memorise": "genid-memorise", "retrieve": "genid-retrieve"}


class GenidIndexError(StoreError):
    """The identifier model was trained for another index (or another state of its id map)."""


class GenidModelError(Error, FileNotFoundError):
    """A folder given as an identifier model is not one (no ``genid.json``)."""


def index_identity(store: IndexStore) -> dict[str, str]:
    """What names an index for an identifier model: its random id, when it was made, its encoder."""
    m = store.manifest
    return {"uuid": store.uuid or "", "created_at": m.created_at, "encoder_fingerprint": m.encoder_fingerprint}


@dataclass
class GenidInfo:
    """What ``genid.json`` records."""

    scheme: str
    base_model: str
    index: dict[str, str]
    id_map: dict[str, Any]
    prompts: dict[str, str] = field(
        default_factory=lambda: {"memorise": "genid-memorise", "retrieve": "genid-retrieve"}
    )
    new_tokens: list[str] = field(default_factory=list)

    def save(self, folder: Path) -> None:
        (folder / GENID_FILE).write_text(json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, folder: Path) -> GenidInfo:
        path = folder / GENID_FILE
        if not path.is_file():
            raise GenidModelError(
                f"{folder} is not a generative-identifier model (no {GENID_FILE}): give the model folder a genid "
                "training run wrote, or train one on the index"
            )
        return cls(**json.loads(path.read_text()))


@dataclass
class IndexCheck:
    new: list[int]
    """Items added to the index since training: not reachable until ``viewfinder train genid --continue``."""
    removed: list[int]
    """Items the model learned that the index no longer holds: never returned."""


def check_index(info: GenidInfo, store: IndexStore) -> IndexCheck:
    """A :class:`GenidIndexError` unless ``store`` is the index the model was trained for, with the
    identifiers it learned; which items were added and removed since."""
    how = "train one on it"
    if index_identity(store) != info.index:
        raise GenidIndexError(
            f"this identifier model was trained for another index (made {info.index.get('created_at')}, encoder "
            f"{info.index.get('encoder_fingerprint')}), not {store.path}: {how}"
        )
    learned, now = IdMap.from_dict(info.id_map), load_id_map(store, info.scheme)
    named = now.ids | now.retired
    changed = [i for i, name in learned.ids.items() if named.get(i) != name]
    if changed:
        raise GenidIndexError(f"{store.path}: the {info.scheme} identifiers of {len(changed)} items differ from "
                              f"the ones this model learned: {how}")  # fmt: skip
    items = {row.id for row in store.iter_items()}
    return IndexCheck(sorted(items - set(learned.ids)), sorted(set(learned.ids) - items))


class IdentifierModel:
    """Query text -> the top-k item ids of the collection, by constrained beam search."""

    def __init__(self, lm: Any, tokenizer: Any, info: GenidInfo) -> None:
        from ..llm.prompts import load_prompt

        self.lm, self.tokenizer, self.info = lm.eval(), tokenizer, info
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.prompt = load_prompt(info.prompts["retrieve"])
        self.id_map = IdMap.from_dict(info.id_map)
        self.live = dict(self.id_map.ids)
        self.invalid = 0
        """Decoded sequences that named no identifier (the trie should keep this at 0)."""
        self._build_trie()

    def _build_trie(self) -> None:
        self.trie, by_tokens = IdTrie.from_identifiers(self.live.values(), self.tokenizer)
        item_of = {name: item for item, name in self.live.items()}
        self.item_of_tokens = {tokens: item_of[name] for tokens, name in by_tokens.items()}
        self.max_tokens = max(len(t) for t in by_tokens) + 1

    def restrict(self, live_items: set[int]) -> None:
        """Decode only identifiers of ``live_items`` (items removed from the index since training drop out)."""
        self.live = {i: n for i, n in self.id_map.ids.items() if i in live_items}
        self._build_trie()

    @classmethod
    def load(cls, folder: str | Path, *, device: str = "cpu") -> IdentifierModel:
        from peft import PeftModel

        from ...adapters.registry import load_model

        folder = Path(folder).expanduser()
        info = GenidInfo.load(folder)
        chat = load_model(info.base_model, "chat")
        tokenizer, lm = chat.tokenizer, chat.lm
        if info.new_tokens:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(folder)
            lm.resize_token_embeddings(len(tokenizer))
        lm = PeftModel.from_pretrained(lm, folder).merge_and_unload()
        return cls(lm.to(device), tokenizer, info)

    def messages(self, query: str) -> list[dict[str, str]]:
        from ...adapters.chat import role_messages

        return role_messages(self.prompt.format(query=query))

    @torch.no_grad()
    def retrieve(self, queries: list[str], k: int = 10, beams: int = 10) -> list[list[tuple[int, float]]]:
        """For each query, up to ``k`` (item id, log-probability) pairs, best first; every decoded
        sequence is an identifier of the collection (the trie admits nothing else)."""
        if not queries:
            return []
        beams = min(max(beams, k), self.trie.size)  # more beams than identifiers would decode non-ids
        k = min(k, beams)
        texts = [self.tokenizer.apply_chat_template(self.messages(q), add_generation_prompt=True, tokenize=False)
                 for q in queries]  # fmt: skip
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.lm.device)
        width = enc["input_ids"].shape[1]
        out = self.lm.generate(
            **enc, num_beams=beams, num_return_sequences=min(k, beams), do_sample=False,
            max_new_tokens=self.max_tokens, prefix_allowed_tokens_fn=self.trie.prefix_fn(width),
            length_penalty=0.0, early_stopping=True, output_scores=True, return_dict_in_generate=True,
            pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id,
        )  # fmt: skip
        per = min(k, beams)
        scores = out.sequences_scores.tolist()
        results: list[list[tuple[int, float]]] = []
        end = self.tokenizer.eos_token_id
        for q in range(len(queries)):
            hits: dict[int, float] = {}
            for row in range(q * per, (q + 1) * per):
                tokens = out.sequences[row, width:].tolist()
                tokens = tuple(tokens[: tokens.index(end)] if end in tokens else tokens)
                item = self.item_of_tokens.get(tokens)
                if item is None:  # cannot happen with the trie; counted by the eval as invalid
                    self.invalid += 1
                    logger.warning("decoded a sequence that is no identifier: %s", tokens)
                    continue
                hits.setdefault(item, scores[row])
            results.append(sorted(hits.items(), key=lambda kv: -kv[1])[:k])
        return results


__all__ = [
    "GENID_FILE",
    "GenidIndexError",
    "GenidInfo",
    "IdentifierModel",
    "IndexCheck",
    "check_index",
    "index_identity",
]
