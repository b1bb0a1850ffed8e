"""The training loop every trainer of the zoo shares (CLIP, reranker, captioner).

A trainer builds its model, its optimizer and its data, and hands the loop the one thing that is
its own: a step (a batch -> a loss), with an evaluation and a few optional hooks (:class:`TrainTask`).
The loop does the rest, the same way for every model:

* device placement and mixed precision through HF ``accelerate`` (a GPU run is the same code as a
  CPU run; on the CPU, with no mixed precision, accelerate changes no number);
* resume: ``<out>/checkpoint.pt`` (model, optimizer, step, seconds, the torch RNG, the trainer's
  own entries) is written atomically every ``checkpoint_every`` steps and at the last step of an
  invocation, and loaded back with ``torch.load(weights_only=True)`` by the next run in the folder;
* the learning rate: linear warm-up, then cosine decay to 0 at the last step
  (:func:`.run_config.warmup_cosine_lr`), set before every step;
* ``<out>/log.jsonl``: every ``log_every`` steps (and at the last one) the step, the loss, the
  step's own metrics, the learning rate and samples/s; an evaluation joins the record every
  ``eval_every`` steps (on logged steps) and at the last step;
* ``<out>/train_config.json`` at the start (:func:`start_run`), ``<out>/summary.json`` at the end
  (:meth:`TrainingRun.write_summary`).

Randomness: :func:`start_run` seeds python, numpy and torch (``accelerate.utils.set_seed``); the
model is built after it. A resumed run restores the torch RNG from the checkpoint, and the streams
batches are drawn from (:class:`BatchStreams`) are derived from ``(seed, step the invocation
starts at)``: so a run that stops and resumes draws other batches than an uninterrupted one, as the
trainers always did (the zoo's models come out bit for bit the same as before the loop was shared;
``reports/loop-reproduces.json``). A step that draws its randomness from the torch RNG alone
resumes exactly.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import torch

from ...adapters.entries import ConfigError
from ..store.fsutil import atomic_write, atomic_write_json
from .run_config import warmup_cosine_lr

if TYPE_CHECKING:
    from accelerate import Accelerator

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
LOG_FILE = "log.jsonl"
Precision = Literal["no", "fp16", "bf16"]


class TrainSchedule(Protocol):
    """What the loop reads of a trainer's settings section (every trainer's ``train:`` has these)."""

    steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    seed: int
    eval_every: int
    checkpoint_every: int
    log_every: int


@dataclass
class BatchStreams:
    """The random streams an invocation of the loop draws its batches from, derived from the run's
    seed and the step the invocation starts at (:meth:`at`)."""

    numpy: np.random.Generator
    torch: torch.Generator
    """A CPU generator (e.g. for ``torch.multinomial``), apart from the global torch RNG."""

    @classmethod
    def at(cls, seed: int, step: int) -> BatchStreams:
        return cls(np.random.default_rng([seed, step]), torch.Generator().manual_seed(seed * 1_000_003 + step))


@dataclass
class StepOutput:
    """What one training step returns."""

    loss: torch.Tensor
    """() the loss to back-propagate."""
    metrics: dict[str, float] = field(default_factory=dict)
    """The step's own figures (e.g. the reranker's ITC and ITM parts), logged after ``loss``."""


StepFn = Callable[[torch.nn.Module, int, BatchStreams], StepOutput]
"""``(model as prepared by accelerate, step index from 0, streams) -> StepOutput``: draw a batch,
run the forward pass, return the loss (the loop runs it under the accelerator's autocast)."""


@dataclass
class TrainTask:
    """The model-specific part of a run, handed to :meth:`TrainingRun.train`."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    """Over the model's trainable parameters; its learning rate is set by the loop at every step."""
    step: StepFn
    evaluate: Callable[[torch.nn.Module], dict[str, Any]]
    """Quick validation figures of the (unwrapped) model, logged with the step's record."""
    grad_clip: float | None = None
    """Clip the gradient norm of the model's trainable parameters to this (None: no clipping)."""
    after_step: Callable[[torch.nn.Module], None] | None = None
    """Called with the unwrapped model after every optimizer step (e.g. CLIP clamps its logit scale)."""
    checkpoint_extra: dict[str, Any] = field(default_factory=dict)
    """Saved in the checkpoint (tensors and plain Python values only) and checked on resume: a
    checkpoint whose entry differs (e.g. the captioner's vocabulary) is an error."""
    eval_fields: dict[str, Any] = field(default_factory=dict)
    """Constant figures logged next to every evaluation (e.g. the captioner's reference F1)."""


@dataclass
class LoopResult:
    """Where an invocation of the loop stopped."""

    model: torch.nn.Module
    """The trained model, unwrapped from accelerate (still on the training device)."""
    step: int
    seconds: float
    """Training seconds of the run, earlier invocations included."""
    last_eval: dict[str, Any]
    """The last evaluation of this invocation ({} when it evaluated nothing)."""
    rates: list[float]
    """Samples/s of each logged window of this invocation."""
    export: bool
    """Whether the trainer should write its model: the run reached its last step, or was told to
    stop early (``max_steps``, ``max_seconds``) and exports what it has."""


@dataclass
class TrainingRun:
    """A run folder and the accelerator that places its models (see :func:`start_run`)."""

    out: Path
    accelerator: Accelerator

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def checkpoint(self) -> Path:
        return self.out / CHECKPOINT_FILE

    def train(
        self,
        task: TrainTask,
        schedule: TrainSchedule,
        *,
        name: str,
        progress: bool | None = None,
        max_steps: int | None = None,
        max_seconds: float | None = None,
    ) -> LoopResult:
        """Train ``task`` from the run's checkpoint (or from step 0) to ``schedule.steps``.

        ``max_steps`` stops after that many more steps; ``max_seconds`` after the first step that
        ends past that many seconds of this invocation's loop. Either way the step it stops at is
        logged, evaluated and checkpointed, and the next run in the folder resumes from there.
        """
        from ..progress import progress_bar

        accelerator = self.accelerator
        model, optimizer = accelerator.prepare(task.model, task.optimizer)
        unwrapped = accelerator.unwrap_model(model)
        step, elapsed = self._resume(unwrapped, optimizer, task.checkpoint_extra)
        streams = BatchStreams.at(schedule.seed, step)
        trainable = [p for p in unwrapped.parameters() if p.requires_grad]
        stop_at = schedule.steps if max_steps is None else min(schedule.steps, step + max_steps)
        model.train()
        t_start = time.perf_counter() - elapsed
        last_eval: dict[str, Any] = {}
        rates: list[float] = []
        with (
            (self.out / LOG_FILE).open("a") as log_fh,
            progress_bar(f"training {name}", schedule.steps, "step", progress) as bar,
        ):
            bar.advance(step)
            loop_start = window_t = time.perf_counter()
            window_n = 0
            while step < stop_at:
                for group in optimizer.param_groups:
                    group["lr"] = warmup_cosine_lr(step, schedule)
                with accelerator.autocast():
                    output = task.step(model, step, streams)
                optimizer.zero_grad(set_to_none=True)
                accelerator.backward(output.loss)
                if task.grad_clip is not None:
                    accelerator.unscale_gradients()  # fp16: clip the true gradients
                    torch.nn.utils.clip_grad_norm_(trainable, task.grad_clip)
                optimizer.step()
                if task.after_step is not None:
                    with torch.no_grad():
                        task.after_step(unwrapped)
                step += 1
                window_n += schedule.batch_size
                bar.advance(1)
                if max_seconds is not None and time.perf_counter() - loop_start > max_seconds:
                    logger.warning("stopping at step %d: the %.0f s time box is used up", step, max_seconds)
                    stop_at = step
                if step % schedule.log_every == 0 or step == stop_at:
                    loss = float(output.loss.detach())
                    rate = window_n / (time.perf_counter() - window_t)
                    rates.append(rate)
                    record: dict[str, Any] = {
                        "step": step,
                        "loss": loss,
                        **output.metrics,
                        "lr": warmup_cosine_lr(step, schedule),
                        "samples_per_s": rate,
                    }
                    bar.describe(f"training {name} loss {loss:.3f} {rate:.0f} samples/s")
                    if step % schedule.eval_every == 0 or step == stop_at:
                        last_eval = task.evaluate(unwrapped)
                        record.update(last_eval, **task.eval_fields)
                        logger.info("step %d: %s", step, record)
                    log_fh.write(json.dumps(record) + "\n")
                    log_fh.flush()
                    window_t, window_n = time.perf_counter(), 0
                if step % schedule.checkpoint_every == 0 or step == stop_at:
                    self._save_checkpoint(unwrapped, optimizer, step, time.perf_counter() - t_start, task)
        seconds = time.perf_counter() - t_start
        export = step >= schedule.steps or max_steps is not None or max_seconds is not None
        return LoopResult(unwrapped, step, seconds, last_eval, rates, export)

    def write_summary(self, name: str, result: LoopResult, **fields: Any) -> dict[str, Any]:
        """``<out>/summary.json``: the run's name, steps, training minutes and final evaluation,
        then the trainer's own ``fields``; returns it."""
        summary = {
            "name": name,
            "steps": result.step,
            "train_minutes": result.seconds / 60,
            "final_eval": result.last_eval,
            **fields,
        }
        atomic_write_json(self.out / "summary.json", summary)
        return summary

    # ------------------------------------------------------------------------------- checkpoint
    def _resume(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, extra: dict[str, Any]
    ) -> tuple[int, float]:
        """Load the run's checkpoint into ``model`` and ``optimizer``; (step, seconds) it had, or (0, 0)."""
        ckpt = self.checkpoint
        if not ckpt.is_file():
            return 0, 0.0
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        for key, value in extra.items():
            if state.get(key) != value:
                raise ConfigError(f"{ckpt}: its {key!r} differs from this run's; use another 'out' folder")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if "scaler" in state and self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and self.device.type == "cuda" and len(state["cuda_rng"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        logger.info("resumed %s at step %d", ckpt, state["step"])
        return int(state["step"]), float(state["seconds"])

    def _save_checkpoint(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int, seconds: float, task: TrainTask
    ) -> None:
        state: dict[str, Any] = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "seconds": seconds,
            "torch_rng": torch.get_rng_state(),  # (N,) uint8
            **task.checkpoint_extra,
        }
        if self.accelerator.scaler is not None:  # fp16 on a GPU: the loss scale goes on
            state["scaler"] = self.accelerator.scaler.state_dict()
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state_all()  # dropout on the GPU draws from these
        atomic_write(self.checkpoint, lambda tmp: torch.save(state, tmp))


def start_run(
    out: str | Path, config: Any, *, seed: int, device: torch.device, precision: Precision = "no"
) -> TrainingRun:
    """Open the run folder ``out`` for the run-config dataclass ``config``: create it, write
    ``train_config.json``, make the accelerator for ``device`` and ``precision``, and seed python,
    numpy and torch with ``seed`` (build the model after this)."""
    from accelerate.utils import set_seed

    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "train_config.json", asdict(config))
    accelerator = make_accelerator(device, precision)
    set_seed(seed)  # python, numpy and torch (every device) at once
    return TrainingRun(out, accelerator)


def make_accelerator(device: torch.device, precision: Precision = "no") -> Accelerator:
    """An ``accelerate.Accelerator`` on ``device`` (CPU or CUDA) with ``precision``.

    accelerate keeps one process-wide state and refuses (or silently ignores) another device or
    precision once it is set; a process may train one run on the GPU and the next on the CPU, so a
    state made for another device or precision is reset first.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    cpu = device.type == "cpu"
    partial, full = PartialState._shared_state, AcceleratorState._shared_state
    if (partial and partial.get("_cpu") != cpu) or (full and full.get("_mixed_precision") != precision):
        AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(mixed_precision=precision, cpu=cpu)


__all__ = [
    "BatchStreams",
    "LoopResult",
    "StepOutput",
    "TrainSchedule",
    "TrainTask",
    "TrainingRun",
    "make_accelerator",
    "start_run",
]


def adamw_without_decay_on(module: torch.nn.Module, lr: float, weight_decay: float, *names: str) -> torch.optim.AdamW:
    """AdamW over ``module``'s trainable parameters (betas 0.9, 0.98) with weight decay on matrices
    only: never on biases, norms, or parameters whose name contains one of ``names`` (e.g. a
    Q-Former's ``query_tokens``)."""
    params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    spared = [p.ndim < 2 or any(name in n for name in names) for n, p in params]
    decay = [p for (_, p), spare in zip(params, spared, strict=True) if not spare]
    no_decay = [p for (_, p), spare in zip(params, spared, strict=True) if spare]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.98),
    )
