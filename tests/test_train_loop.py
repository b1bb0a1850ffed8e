"""The shared training loop (``pipeline/train/loop.py``) with a tiny step: a linear model fitted to
random targets drawn from the torch RNG, on the CPU."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from viewfinder.adapters.entries import ConfigError
from viewfinder.pipeline.train.loop import (
    BatchStreams,
    LoopResult,
    StepOutput,
    TrainTask,
    make_accelerator,
    start_run,
)


@dataclass
class Schedule:
    steps: int = 8
    batch_size: int = 4
    lr: float = 0.1
    warmup_steps: int = 2
    seed: int = 0
    eval_every: int = 4
    checkpoint_every: int = 3
    log_every: int = 2


@dataclass
class RunConfig:
    name: str
    out: str


def _train(out: Path, schedule: Schedule, **kwargs) -> LoopResult:
    """Build the tiny task in ``out`` (model and optimizer after the seed, as the trainers do) and train it."""
    run = start_run(out, RunConfig("tiny", str(out)), seed=schedule.seed, device=torch.device("cpu"))
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Dropout(0.2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=schedule.lr)

    def step(model: torch.nn.Module, index: int, streams: BatchStreams) -> StepOutput:
        x = torch.randn(schedule.batch_size, 3)  # (B, 3), from the global torch RNG the checkpoint restores
        y = torch.randn(schedule.batch_size, 2)  # (B, 2)
        loss = torch.nn.functional.mse_loss(model(x), y)
        return StepOutput(loss, {"index": float(index)})

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        return {"val_norm": float(model[0].weight.detach().norm())}

    task = TrainTask(model, optimizer, step, evaluate, grad_clip=1.0, eval_fields={"val_reference": 1.0})
    return run.train(task, schedule, name="tiny", progress=False, **kwargs)


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path: Path) -> None:
    schedule = Schedule()
    full = _train(tmp_path / "full", schedule)
    assert full.step == 8 and full.export
    first = _train(tmp_path / "split", schedule, max_steps=5)
    assert first.step == 5 and first.export  # told to stop early: the trainer exports what it has
    second = _train(tmp_path / "split", schedule)  # resumes from the step-5 checkpoint
    assert second.step == 8
    for name, value in full.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[name]), name
    # The log: every log_every steps and where an invocation stops; evaluations on logged steps.
    log = _log(tmp_path / "split")
    assert [r["step"] for r in log] == [2, 4, 5, 6, 8]
    assert list(log[0]) == ["step", "loss", "index", "lr", "samples_per_s"]
    assert [r["step"] for r in log if "val_norm" in r] == [4, 5, 8]
    assert all(r["val_reference"] == 1.0 for r in log if "val_norm" in r)
    assert [r["loss"] for r in _log(tmp_path / "full")] == [
        log[0]["loss"],
        log[1]["loss"],
        log[3]["loss"],
        log[4]["loss"],
    ]
    assert second.last_eval == {"val_norm": pytest.approx(float(second.model[0].weight.detach().norm()))}
    assert json.loads((tmp_path / "split" / "train_config.json").read_text())["name"] == "tiny"


def test_the_checkpoint_loads_with_weights_only(tmp_path: Path) -> None:
    _train(tmp_path, Schedule(steps=3))
    state = torch.load(tmp_path / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state["step"] == 3 and isinstance(state["seconds"], float)
    assert set(state) == {"model", "optimizer", "step", "seconds", "torch_rng"}
    assert state["torch_rng"].dtype == torch.uint8 and "0.weight" in state["model"]


def test_a_finished_run_trains_no_more_and_a_foreign_checkpoint_is_refused(tmp_path: Path) -> None:
    schedule = Schedule(steps=2)
    _train(tmp_path, schedule)
    again = _train(tmp_path, schedule)
    assert again.step == 2 and again.last_eval == {} and again.export
    assert [r["step"] for r in _log(tmp_path)] == [2]
    run = start_run(tmp_path, RunConfig("tiny", str(tmp_path)), seed=0, device=torch.device("cpu"))
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Dropout(0.2))
    task = TrainTask(
        model,
        torch.optim.AdamW(model.parameters()),
        lambda *_: StepOutput(torch.zeros(())),
        lambda _: {},
        checkpoint_extra={"vocab": ["a", "b"]},
    )
    with pytest.raises(ConfigError, match="'vocab' differs"):
        run.train(task, schedule, name="tiny", progress=False)


def test_a_time_box_stops_after_a_step_and_checkpoints_it(tmp_path: Path) -> None:
    result = _train(tmp_path, Schedule(steps=50), max_seconds=0.0)
    assert result.step == 1 and result.export and "val_norm" in result.last_eval
    assert [r["step"] for r in _log(tmp_path)] == [1]
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 1


def test_the_accelerator_follows_the_requested_precision() -> None:
    assert make_accelerator(torch.device("cpu"), "bf16").mixed_precision == "bf16"
    accelerator = make_accelerator(torch.device("cpu"), "no")  # another run in the same process
    assert accelerator.mixed_precision == "no" and accelerator.device.type == "cpu"
