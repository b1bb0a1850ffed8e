"""A soak run: searches, feedback rounds and incremental re-indexing interleaved for a bounded time on
one collection, with one long-lived pipeline reading while the index changes under it. Resident memory
and open file descriptors are sampled; the figures are errors, RSS growth per 1,000 operations after
warm-up, and descriptors left open. Prints figures; not a test (the tests run a few seconds of it)."""

from __future__ import annotations

import logging
import os
import random
import shutil
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .search import rss_mb

logger = logging.getLogger(__name__)

QUERIES = ("a red square", "two small circles", "something blue at the top", "a star", "a large green shape")


def open_fds() -> int:
    """Open file descriptors of this process (Linux /proc; 0 where unreadable)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


@dataclass
class SoakReport:
    preset: str
    seconds: float
    operations: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    error_examples: list[str] = field(default_factory=list)
    generations: int = 0
    """Index generations committed during the run (each re-index that changed something)."""
    samples: list[tuple[int, float, int]] = field(default_factory=list)
    """(operations so far, RSS MB, open descriptors), every ``sample_every`` operations."""
    rss_growth_mb_per_1000_ops: float = 0.0
    """Slope of RSS over operations after warm-up (the first fifth of the samples), per 1,000."""
    leaked_fds: int = 0
    """Open descriptors at the end minus after warm-up."""


def soak(
    images: Path,
    work: Path,
    *,
    preset: str = "default",
    seconds: float = 600.0,
    collection: int = 200,
    sample_every: int = 50,
    seed: int = 0,
) -> SoakReport:
    """Copy ``collection`` images from ``images`` into ``work``, index them with ``preset``, then until
    ``seconds`` pass: searches (text and image), feedback rounds on a session, and re-indexing after a
    file is added, removed or rewritten (the pipeline keeps reading the index as generations change)."""
    from .. import Pipeline, build_index
    from ..agent.session import Session

    rng = random.Random(seed)
    source = work / "collection"
    pool = sorted(p for p in images.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if len(pool) < collection + 20:
        raise ValueError(f"{images} holds {len(pool)} images; the soak needs at least {collection + 20}")
    source.mkdir(parents=True, exist_ok=True)
    for p in pool[:collection]:
        shutil.copy(p, source / p.name)
    spare = pool[collection:]
    index = work / "index"
    build_index(source, index, preset=preset, progress=False)
    pipeline = Pipeline.from_preset(preset, index=index)
    session = Session(pipeline, k=10)
    report = SoakReport(preset, seconds)
    ops: Counter[str] = Counter()
    start = time.monotonic()
    first_gen = pipeline.store.manifest.generation
    while time.monotonic() - start < seconds:
        kind = rng.choices(["search", "image", "feedback", "reindex"], weights=[50, 15, 30, 5])[0]
        try:
            if kind == "search":
                pipeline.search(rng.choice(QUERIES), k=10)
            elif kind == "image":
                pipeline.search(image=rng.choice(sorted(source.iterdir())), k=10)
            elif kind == "feedback":
                if session.state is None or session.round + 1 >= session.max_rounds:
                    session.search(rng.choice(QUERIES))
                hits = session.results[-1].hits
                if hits:
                    session.feedback(relevant=[hits[0].id], irrelevant=[h.id for h in hits[1:3]])
            else:
                _change_collection(source, spare, rng)
                build_index(source, index, preset=preset, progress=False)
        except Exception as exc:  # the figure this run exists to measure: it must stay 0
            report.errors += 1
            if len(report.error_examples) < 5:
                report.error_examples.append(f"{kind}: {exc!r}\n{traceback.format_exc()[-800:]}")
            if kind == "feedback":
                session = Session(pipeline, k=10)
        ops[kind] += 1
        total = sum(ops.values())
        if total % sample_every == 0:
            report.samples.append((total, rss_mb(), open_fds()))
    report.seconds = time.monotonic() - start
    report.operations = dict(ops)
    report.generations = pipeline.store.manifest.generation - first_gen
    _summarise(report)
    return report


def _change_collection(source: Path, spare: list[Path], rng: random.Random) -> None:
    """Add a spare image, remove one, or rewrite one with another's bytes."""
    present = sorted(source.iterdir())
    action = rng.choice(["add", "remove", "rewrite"])
    if action == "add" or len(present) < 10:
        pick = rng.choice(spare)
        shutil.copy(pick, source / f"added_{rng.randrange(10**9)}{pick.suffix}")
    elif action == "remove":
        rng.choice(present).unlink()
    else:
        rng.choice(present).write_bytes(rng.choice(spare).read_bytes())  # decoders go by content, not by name


def _summarise(report: SoakReport) -> None:
    if len(report.samples) < 5:
        return
    warm = report.samples[len(report.samples) // 5 :]
    ops = np.array([s[0] for s in warm], dtype=float)
    rss = np.array([s[1] for s in warm], dtype=float)
    report.rss_growth_mb_per_1000_ops = float(np.polyfit(ops, rss, 1)[0] * 1000) if len(set(ops)) > 1 else 0.0
    report.leaked_fds = report.samples[-1][2] - warm[0][2]
