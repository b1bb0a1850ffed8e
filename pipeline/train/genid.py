"""``viewfinder train genid``: teach a causal LM (LoRA) the identifiers of one index's items (GRACE).

Two tasks, as in GRACE, both answered with the item's identifier:

* **memorise**: the picture -> its identifier. The picture enters as its generated caption (the
  index's captioner; cached in the index), not as visual tokens;
* **retrieve**: pseudo-queries made from that caption (its object phrases, alone and in pairs, and
  the whole caption) -> the identifier.

The id map is synced into the index store first (new items named, removed ones retired). The run
is resumable (``<out>/checkpoint``); ``<out>/adapter`` is the model (:class:`.model.IdentifierModel`).
With ``continue_run`` after the collection grew, training goes on from that adapter on the new
items' examples plus a replay share of the old items' (so that they are not forgotten), in
``<out>/continue-<n>``, and the adapter is replaced when it is done.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...adapters.entries import ConfigError
from ..genid.schemes import ATOMIC_FORMAT, check_scheme
from ..store.fsutil import atomic_write_json
from .run_config import check_at_least_one, load_run_config
from .user_data import LoraConfig

logger = logging.getLogger(__name__)


@dataclass
class GenidSettings:
    queries_per_item: int = 4
    """Pseudo-queries per item (retrieve task), besides one memorise example."""
    branching: int = 10
    leaf_size: int = 10
    """Semantic ids: clusters per level, and most items in a leaf."""
    steps: int = 600
    continue_steps: int = 200
    """Steps of a ``--continue`` run."""
    replay: float = 1.0
    """``--continue``: old items' examples drawn per new item's example (0: none; forgetting shows)."""
    batch_size: int = 16
    lr: float = 2e-3
    warmup_steps: int = 20
    seed: int = 0
    checkpoint_every: int = 100
    log_every: int = 10
    max_length: int = 96

    def __post_init__(self) -> None:
        check_at_least_one(self, ("steps", "continue_steps", "batch_size", "checkpoint_every", "log_every",
                                  "max_length"))  # fmt: skip
        if self.lr <= 0 or self.replay < 0 or self.queries_per_item < 0:
            raise ConfigError("train: 'lr' must be > 0, 'replay' and 'queries_per_item' >= 0")


@dataclass
class GenidTrainConfig:
    name: str
    model: str = "smollm2-135m-instruct"
    """The chat model entry to adapt (a ``transformers_chat`` entry)."""
    scheme: str = "semantic"
    captioner: str | None = "scene-captioner"
    """Describes the items' images for memorisation and the pseudo-queries; empty: the items' own
    texts (a manifest's captions) instead."""
    lora: LoraConfig = field(default_factory=lambda: LoraConfig(r=16, alpha=32))
    train: GenidSettings = field(default_factory=GenidSettings)
    out: str = "runs/genid"

    def __post_init__(self) -> None:
        try:
            check_scheme(self.scheme)
        except ValueError as exc:
            raise ConfigError(f"scheme: {exc}") from exc


def load_genid_config(path: str | Path) -> GenidTrainConfig:
    return load_run_config(path, GenidTrainConfig)


_PREAMBLE = re.compile(r"^(a picture showing|this scene contains [a-z]+ shapes?:|we see|there is|there are|"
                       r"(one|two|three|four|five) objects?:)\s*")  # fmt: skip


def caption_phrases(caption: str) -> list[str]:
    """The object phrases of a caption ("a large red star at the top"), split at commas, semicolons
    and "and"."""
    text = _PREAMBLE.sub("", caption.strip().lower())
    parts = re.split(r",\s*(?:and\s+)?|;\s*|\s+and\s+", text)
    return [p.strip() for p in parts if p.strip()]


def pseudo_queries(caption: str, n: int, rng: np.random.Generator) -> list[str]:
    """``n`` queries a person might type for the picture: one object phrase, two of them in either
    order, or the whole caption."""
    phrases = caption_phrases(caption) or [caption]
    out = []
    for _ in range(n):
        roll = rng.random()
        if roll < 0.2 or len(phrases) == 1:
            out.append(caption if roll < 0.2 else phrases[0])
        elif roll < 0.6:
            out.append(phrases[int(rng.integers(len(phrases)))])
        else:
            a, b = rng.choice(len(phrases), 2, replace=False)
            out.append(f"{phrases[int(a)]} and {phrases[int(b)]}")
    return out


def item_captions(
    index: Path, captioner_name: str, items: list[tuple[int, str]], progress: bool | None
) -> dict[int, str]:
    """Generated captions of ``items`` ((id, path)), from the index's caption cache when there."""
    from ...adapters.registry import load_model
    from ..progress import progress_bar
    from ..stages.caption import Captioner
    from ..store.cache import ModelCache

    captioner = Captioner(load_model(captioner_name, "captioner"), ModelCache(index))
    out: dict[int, str] = {}
    with progress_bar("captions for memorisation", len(items), "img", progress) as bar:
        for start in range(0, len(items), 256):
            made, _, failed = captioner.captions(items[start : start + 256])
            out.update(made)
            for item, why in failed:
                logger.warning("item %s cannot be captioned (%s): it is memorised from no caption", item, why)
                out[item] = ""
            bar.advance(len(items[start : start + 256]))
    return out


def genid_examples(
    ids: dict[int, str], captions: dict[int, str], queries_per_item: int, rng: np.random.Generator
) -> list[tuple[str, str, str]]:
    """(task, text, identifier) examples: one memorise example and ``queries_per_item`` pseudo-queries
    per item."""
    out = []
    for item, identifier in ids.items():
        caption = captions.get(item, "")
        out.append(("memorise", caption, identifier))
        out += [("retrieve", q, identifier) for q in pseudo_queries(caption, queries_per_item, rng)]
    return out


@dataclass
class GenidResult:
    out: Path
    adapter_dir: Path
    steps: int
    seconds: float
    added: int
    retired: int


def train_genid(
    config: GenidTrainConfig,
    index: str | Path,
    *,
    continue_run: bool = False,
    progress: bool | None = None,
    max_steps: int | None = None,
) -> GenidResult:
    """Train (or resume, or with ``continue_run`` extend) the identifier model of ``index``."""
    from accelerate.utils import set_seed
    from peft import LoraConfig as PeftLoraConfig
    from peft import PeftModel

    from ...adapters.registry import load_model
    from ..genid.idmap import IdMap, sync_id_map
    from ..genid.model import DEFAULT_PROMPTS, GENID_FILE, GenidInfo, index_identity
    from ..llm.prompts import load_prompt
    from ..reports import machine_info
    from ..store.index_store import IndexStore
    from .lm_lora import LoopSettings, encode_example, lora_targets, resume_or_wrap, train_steps

    s = config.train
    index = Path(index).expanduser()
    out = Path(config.out).expanduser()
    adapter_dir = out / "adapter"
    previous = GenidInfo.load(adapter_dir) if continue_run else None
    if previous is not None and previous.scheme != config.scheme:
        raise ConfigError(f"continue_run: {adapter_dir} learned {previous.scheme} ids; the config says {config.scheme}")
    if continue_run and config.scheme == "atomic":
        raise ConfigError("continue_run: atomic ids add one token per new image, which a trained adapter cannot take; "
                          "train afresh (into a new out folder)")  # fmt: skip
    if not continue_run and (adapter_dir / GENID_FILE).is_file():
        raise ConfigError(
            f"{adapter_dir} holds a trained model: continue training it (continue_run), or use another out folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "train_config.json", asdict(config))
    set_seed(s.seed)

    with IndexStore.open(index) as store:
        rows = list(store.iter_items())
        if previous is not None and previous.index != index_identity(store):  # before touching its id map
            raise ConfigError(f"continue_run: {adapter_dir} was trained for another index than {index}")
    if not rows:
        raise ConfigError(f"{index}: the index is empty: nothing to memorise")
    if config.captioner:
        captions = item_captions(index, config.captioner, [(r.id, r.path) for r in rows], progress)
    else:
        captions = {r.id: r.text or "" for r in rows}
        if not any(captions.values()):
            raise ConfigError(f"{index}: its items have no texts: name a captioner in the config")
    report = sync_id_map(index, config.scheme, describe=lambda rows: [captions[r.id] for r in rows],
                         branching=s.branching, leaf_size=s.leaf_size, seed=s.seed)  # fmt: skip
    id_map = report.id_map
    with IndexStore.open(index) as store:
        identity = index_identity(store)  # after the sync: it gives an older index its id
    rng = np.random.default_rng([s.seed, 71])
    if previous is not None:
        learned = IdMap.from_dict(previous.id_map)
        new = {i: n for i, n in id_map.ids.items() if i not in learned.ids}
        if not new:
            raise ConfigError(f"continue_run: no item of {index} is new since the last training: nothing to learn")
        old = {i: n for i, n in id_map.ids.items() if i in learned.ids}
        examples = genid_examples(new, captions, s.queries_per_item, rng)
        replay = genid_examples(old, captions, s.queries_per_item, rng)
        n_replay = min(len(replay), int(round(s.replay * len(examples))))
        examples += [replay[int(i)] for i in rng.choice(len(replay), n_replay, replace=False)] if n_replay else []
        run_dir, steps = out / f"continue-{len(id_map.ids)}", s.continue_steps
    else:
        examples = genid_examples(id_map.ids, captions, s.queries_per_item, rng)
        run_dir, steps = out, s.steps
    run_dir.mkdir(parents=True, exist_ok=True)

    chat = load_model(config.model, "chat")
    tokenizer, base = chat.tokenizer, chat.lm
    new_tokens: list[str] = []
    if config.scheme == "atomic":
        new_tokens = [ATOMIC_FORMAT.format(n=i) for i in sorted(id_map.ids)]
        tokenizer.add_tokens(new_tokens)
        base.resize_token_embeddings(len(tokenizer))
    prompts = {task: load_prompt(name) for task, name in DEFAULT_PROMPTS.items()}
    encoded = [
        encode_example(tokenizer, prompts[task], {"caption" if task == "memorise" else "query": text}, identifier,
                       s.max_length)
        for task, text, identifier in examples
    ]  # fmt: skip

    targets = lora_targets(base, config.lora.target_modules, config.model)

    def lora() -> PeftLoraConfig:
        extra: dict[str, Any] = {}
        if new_tokens:  # atomic ids: the new tokens' embedding rows train too
            extra["trainable_token_indices"] = {"embed_tokens": tokenizer.convert_tokens_to_ids(new_tokens)}
        return PeftLoraConfig(r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
                              target_modules=targets, task_type="CAUSAL_LM", **extra)  # fmt: skip

    if previous is not None and not (run_dir / "checkpoint_state.json").is_file():
        model, step = PeftModel.from_pretrained(base, adapter_dir, is_trainable=True), 0
    else:
        model, step = resume_or_wrap(base, run_dir, lora)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    loop = LoopSettings(steps, s.batch_size, s.lr, s.warmup_steps, s.seed, s.checkpoint_every, s.log_every)
    step, seconds = train_steps(model, encoded, loop, run_dir, step=step, pad=pad, name=config.name,
                                progress=progress, max_steps=max_steps)  # fmt: skip
    if step < steps:  # stopped early (max_steps): the checkpoint holds the run
        return GenidResult(out, adapter_dir, step, seconds, len(report.added), len(report.retired))
    staging = out / ".adapter.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    # atomic ids: the new tokens' rows are in the adapter (trainable tokens), not the whole embedding
    model.save_pretrained(staging, save_embedding_layers=False)
    if new_tokens:
        tokenizer.save_pretrained(staging)
    info = GenidInfo(config.scheme, config.model, identity, id_map.to_dict(), new_tokens=new_tokens)
    info.save(staging)
    if adapter_dir.exists():
        shutil.rmtree(adapter_dir)
    staging.rename(adapter_dir)
    summary = {"name": config.name, "scheme": config.scheme, "steps": step, "train_minutes": seconds / 60,
               "examples": len(examples), "items": len(id_map.ids), "added": len(report.added),
               "retired": len(report.retired), "continued": previous is not None,
               "machine": machine_info()}  # fmt: skip
    atomic_write_json(run_dir / "summary.json", summary)
    (run_dir / "examples.sample.json").write_text(json.dumps(examples[:20], indent=1) + "\n")
    return GenidResult(out, adapter_dir, step, seconds, len(report.added), len(report.retired))


__all__ = ["GenidTrainConfig", "caption_phrases", "genid_examples", "load_genid_config", "pseudo_queries",
           "train_genid"]  # fmt: skip
