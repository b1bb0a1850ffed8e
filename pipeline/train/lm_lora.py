"""The LoRA training loop shared by the causal-LM runs (the query rewriter, generative identifiers):
prompt + answer token sequences, loss on the answer tokens, cosine schedule with warm-up, gradient
clipping, resumable checkpoints (``<out>/checkpoint/`` and ``checkpoint_state.json``) and a JSONL
log. Batches depend on the step alone, so a resumed run draws exactly the batches it would have."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..store.fsutil import atomic_write_json

logger = logging.getLogger(__name__)


@dataclass
class LoopSettings:
    steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    seed: int
    checkpoint_every: int
    log_every: int


def encode_example(
    tokenizer: Any, prompt: Any, values: dict[str, str], answer: str, max_length: int
) -> tuple[list[int], int]:
    """Token ids of ``prompt`` filled with ``values`` (with the generation prompt) + ``answer`` + end
    of turn, and where the answer starts; a long example is cut from the left of the prompt."""
    from ...adapters.chat import role_messages

    messages = role_messages(prompt.format(**values))
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = (prompt_ids + answer_ids)[-max_length:]
    return ids, max(0, len(ids) - len(answer_ids))


def lora_targets(base: Any, wanted: list[str], model_name: str) -> list[str]:
    """The layer names of ``wanted`` that ``base`` has (a :class:`ConfigError` when none)."""
    from ...adapters.entries import ConfigError

    names = {n.split(".")[-1] for n, _ in base.named_modules()}
    targets = [t for t in wanted if t in names]
    if not targets:
        raise ConfigError(f"lora: no layer named {wanted} in {model_name}")
    return targets


def resume_or_wrap(base: Any, out: Path, make_config: Any) -> tuple[Any, int]:
    """The peft model to train and its step: the checkpoint in ``out`` when there is one, else
    ``base`` wrapped with the LoRA config ``make_config()`` returns."""
    from peft import PeftModel, get_peft_model

    ckpt, state_file = out / "checkpoint", out / "checkpoint_state.json"
    if (ckpt / "adapter_config.json").is_file() and state_file.is_file():
        model = PeftModel.from_pretrained(base, ckpt, is_trainable=True)
        step = int(json.loads(state_file.read_text())["step"])
        logger.info("resumed %s at step %d", ckpt, step)
        return model, step
    return get_peft_model(base, make_config()), 0


def train_steps(
    model: Any,
    encoded: list[tuple[list[int], int]],
    settings: LoopSettings,
    out: Path,
    *,
    step: int,
    pad: int,
    name: str,
    progress: bool | None = None,
    max_steps: int | None = None,
) -> tuple[int, float]:
    """Train ``model`` from ``step`` to ``settings.steps`` (or ``max_steps`` more); returns the step
    reached and the seconds it took. Checkpoints go to ``out/checkpoint``."""
    from ..progress import progress_bar

    s = settings
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=s.lr, weight_decay=0.0)
    stop_at = s.steps if max_steps is None else min(s.steps, step + max_steps)
    batch_size = min(s.batch_size, len(encoded))
    t_start = time.perf_counter()
    with (out / "log.jsonl").open("a") as log, progress_bar(f"training {name}", s.steps, "step", progress) as bar:
        bar.advance(step)
        while step < stop_at:
            rng = np.random.default_rng([s.seed, step])
            batch = [encoded[int(i)] for i in rng.choice(len(encoded), batch_size, replace=False)]
            width = max(len(ids) for ids, _ in batch)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            labels = torch.full((len(batch), width), -100, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (ids, start) in enumerate(batch):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                labels[row, start : len(ids)] = torch.tensor(ids[start:])
                mask[row, : len(ids)] = 1
            lr = s.lr * min(1.0, (step + 1) / max(1, s.warmup_steps))
            lr *= 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, s.steps))))
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            step += 1
            bar.advance(1)
            if step % s.log_every == 0 or step == stop_at:
                log.write(json.dumps({"step": step, "loss": float(loss.detach()), "lr": lr}) + "\n")
                log.flush()
                bar.describe(f"training {name} loss {float(loss.detach()):.3f}")
            if step % s.checkpoint_every == 0 or step == stop_at:
                model.save_pretrained(out / "checkpoint", save_embedding_layers=False)  # new-token rows are in it
                atomic_write_json(out / "checkpoint_state.json", {"step": step})
    return step, time.perf_counter() - t_start


__all__ = ["LoopSettings", "encode_example", "lora_targets", "resume_or_wrap", "train_steps"]
