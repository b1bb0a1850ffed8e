"""Prompt experiments: pipeline variants x a query set x feedback rounds with the simulated user.

A *variant* is a pipeline (a prompt and model in its ``rewrite`` stage, a Rocchio setting, a whole
preset). Every variant runs the same queries through a :class:`.session.Session`; after each round
the scene benchmark's simulated user marks the hits (:func:`.simulate.marks_for`) and the next
round runs. Per round and variant the report gives:

* ``hits@1`` / ``hits@k``: the target among the round's top 1 / top k;
* ``found@k``: the target shown in the top k in this round or an earlier one (a person who sees
  it stops there; ChatIR's cumulative Hits@k);
* ``median_rank``: of the target among the round's candidates (``None`` past the last candidate,
  counted as worse than all ranks);
* ``invalid_rate``: language-model answers refused by the parser (the query then stayed) per call;
* ``tokens`` and ``seconds``: per query and round, mean.

Every session's trace (prompts, raw answers, parsed queries, candidates with each stage's score,
captions, marks, timings) goes to a JSONL file, one line per variant and query.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...adapters.entries import ConfigError
from ..agent.session import Session
from ..scenes.graph import Scene
from ..scenes.simuser import SimulatedUser
from ..stages.registry import stage_names
from ..stages.runner import Pipeline
from .retrieval import EvalDataError
from .simulate import marks_for


@dataclass
class ExperimentQuery:
    """One query of the set, and the scene the simulated user wants."""

    text: str
    target: Scene


@dataclass
class _Tally:
    """Per query and round (arrays of shape (queries, rounds + 1))."""

    ranks: np.ndarray
    """The target's rank among the candidates (inf: not among them)."""
    calls: np.ndarray
    invalid: np.ndarray
    tokens: np.ndarray
    seconds: np.ndarray

    @classmethod
    def zeros(cls, shape: tuple[int, int]) -> _Tally:
        return cls(*(np.zeros(shape) for _ in range(5)))


ROCCHIO = [0.75, 0.15]
"""Default Rocchio weights (relevant, not relevant) of a ``+rocchio`` variant."""


def variant_stages(
    spec: str,
    *,
    captioner: str | None = "scene-captioner",
    preselect_k: int = 64,
    rocchio: Sequence[float] = ROCCHIO,
    exclude_rejected: bool = True,
) -> list[Any]:
    """A preset's raw ``stages`` list for a variant spec:

    * ``none``: no rewriting (the query as typed, every round);
    * ``rule``: the caption of the first hit marked relevant becomes the query;
    * ``rocchio``: Rocchio feedback on the query vector, no rewriting;
    * ``MODEL=PROMPT``: the ``rewrite`` stage with that chat model entry and prompt;
    * any of these + ``+rocchio`` (``MODEL=PROMPT+rocchio``): with Rocchio as well;
    * ``rocchio:B,C`` (alone or as the add-on): Rocchio with those weights instead of ``rocchio``.

    Every variant preselects ``preselect_k`` (leaving out rejected hits unless ``exclude_rejected``
    is off) and captions the top 10 with ``captioner`` (None: no
    captioner; the rewrite stages then read the items' own texts, e.g. a manifest's captions).
    """
    base, plus, extra = spec.partition("+")
    if plus and not extra.startswith("rocchio"):
        raise ConfigError(f"variant {spec!r}: the only add-on is '+rocchio' (or '+rocchio:B,C')")
    weights = _rocchio_weights(extra, spec, rocchio) if extra else None
    if base.startswith("rocchio"):
        weights, base = _rocchio_weights(base, spec, rocchio), "none"
    if base == "none":
        query_stages: list[Any] = []
    elif base == "rule":
        query_stages = ["rewrite-rule"]
    elif "=" in base:
        model, _, prompt = base.partition("=")
        if not model or not prompt:
            raise ConfigError(f"variant {spec!r}: write MODEL=PROMPT")
        query_stages = [{"rewrite": {"model": model, "prompt": prompt}}]
    else:
        raise ConfigError(f"variant {spec!r}: expected none, rule, rocchio or MODEL=PROMPT (optionally +rocchio)")
    preselect: dict[str, Any] = {"k": preselect_k, "exclude_rejected": exclude_rejected}
    if weights is not None:
        preselect["rocchio"] = weights
    caption = [{"caption": {"model": captioner, "k": 10}}] if captioner else []
    return [*query_stages, {"preselect": preselect}, *caption]


def _rocchio_weights(token: str, spec: str, default: Sequence[float]) -> list[float]:
    if token == "rocchio":
        return list(default)
    name, _, values = token.partition(":")
    try:
        weights = [float(v) for v in values.split(",")]
    except ValueError:
        weights = []
    if name != "rocchio" or len(weights) != 2 or min(weights) < 0:
        raise ConfigError(f"variant {spec!r}: write rocchio:B,C with two weights >= 0, e.g. rocchio:0.75,0.5")
    return weights


def build_variants(
    specs: Sequence[str], index: Path, *, captioner: str | None = "scene-captioner", preselect_k: int = 64,
    exclude_rejected: bool = True,
) -> dict[str, Pipeline]:  # fmt: skip
    """One pipeline per spec over ``index`` (the index's encoder, loaded once); ``preset:NAME``
    takes a whole preset's stages as they are."""
    from dataclasses import replace

    from ...adapters.registry import load_encoder
    from ..stages.presets import load_preset_spec, preset_for_index
    from ..stages.registry import parse_stages
    from ..store.index_store import IndexStore

    with IndexStore.open(index) as store:
        base = preset_for_index(None, store)
    encoder = load_encoder(base.encoder)
    out = {}
    for spec in specs:
        if spec.startswith("preset:"):
            preset = load_preset_spec(spec.removeprefix("preset:"))
            preset = replace(preset, name=spec, encoder=base.encoder)
        else:
            raw = variant_stages(spec, captioner=captioner, preselect_k=preselect_k, exclude_rejected=exclude_rejected)
            preset = replace(base, name=spec, stages=parse_stages(raw, f"variant {spec}"))
        out[spec] = Pipeline.from_preset(preset, index=index, encoder=encoder)
    return out


def partial_queries(root: Path, split: str, n: int, seed: int = 0) -> tuple[list[ExperimentQuery], dict[str, Scene]]:
    """A seeded sample of ``n`` of the benchmark's partial queries of ``split`` (each with its target)
    and the split's scenes; for a split without query sets (``val``), ``n`` partial queries drawn
    from its scenes the way the benchmark draws them."""
    from ..scenes.dataset import load_scene_dataset
    from ..scenes.queries import make_partial_queries

    dataset = load_scene_dataset(root)
    if split not in dataset.scenes:
        raise EvalDataError(f"{root}: no split {split!r}; it has {sorted(dataset.scenes)}")
    scenes = dataset.scenes[split]
    if not scenes:
        held = sorted(name for name, held in dataset.scenes.items() if held)
        raise EvalDataError(f"{root}: split {split!r} holds no scenes; the splits with scenes: {held}")
    if n < 1:
        raise EvalDataError(f"the number of queries must be >= 1, got {n}")
    rng = np.random.default_rng([seed, 53])
    partial = [q for q in dataset.queries.get(split, []) if q.type == "partial" and q.target_id in scenes]
    if not partial:  # a split without query sets (val): draw partial queries from its scenes, seeded
        originals = [s for s in scenes.values() if "edited_from" not in s.metadata]
        partial = make_partial_queries(originals, [], rng, n=n, prefix=split)
    chosen = sorted(rng.choice(len(partial), min(n, len(partial)), replace=False))
    return [ExperimentQuery(partial[int(i)].text, scenes[partial[int(i)].target_id]) for i in chosen], scenes


def _llm_calls(trace: dict[str, Any]) -> tuple[int, int, int]:
    """(calls, refused answers, tokens) of one round's language-model stages."""
    llm_stages = stage_names(uses_llm=True)
    calls = invalid = tokens = 0
    for step in trace.get("steps", []):
        notes = step.get("notes", {})
        if step.get("stage") in llm_stages and "messages" in notes:
            calls += 1
            invalid += bool(notes.get("fallback"))
            tokens += int((notes.get("tokens") or {}).get("total_tokens", 0))
    return calls, invalid, tokens


def target_rank(keys: Sequence[str], target_id: str) -> float:
    """The target's 1-based rank among ``keys``; inf when it is not among them."""
    return float(keys.index(target_id) + 1) if target_id in keys else float("inf")


def finite_ranks(ranks: Sequence[float]) -> list[float | None]:
    """Ranks for JSON: None where the target was not among the candidates (JSON has no infinity)."""
    return [float(r) if np.isfinite(r) else None for r in ranks]


def per_round_hits(ranks: np.ndarray, k: int) -> list[dict[str, Any]]:
    """Per round of (queries, rounds) ``ranks``: hits@1, hits@k, and found@k (by that round)."""
    found = np.minimum.accumulate(ranks, axis=1) <= k
    return [
        {"round": r, "hits@1": float((ranks[:, r] <= 1).mean()), f"hits@{k}": float((ranks[:, r] <= k).mean()),
         f"found@{k}": float(found[:, r].mean())}
        for r in range(ranks.shape[1])
    ]  # fmt: skip


def run_variant(
    pipeline: Pipeline,
    queries: Sequence[ExperimentQuery],
    scenes: dict[str, Scene],
    *,
    rounds: int = 3,
    k: int = 10,
    max_relevant: int | None = 3,
    traces: Any = None,
    name: str = "",
    bar: Any = None,
) -> dict[str, Any]:
    """Run ``queries`` through ``pipeline`` for round 0 and ``rounds`` feedback rounds; the variant's
    per-round figures. ``traces``: an open text file that gets one JSON line per query."""
    tally = _Tally.zeros((len(queries), rounds + 1))
    for qi, query in enumerate(queries):
        session = Session(pipeline, k=k, max_rounds=rounds + 1)
        user = SimulatedUser(query.target)
        ranks: list[float] = []
        for round_ in range(rounds + 1):
            start = time.perf_counter()
            if round_ == 0:
                result = session.search(query.text)
            else:
                relevant, irrelevant = marks_for(session.results[-1].hits, user, scenes, max_relevant)
                result = session.feedback(relevant=relevant, irrelevant=irrelevant)
            tally.seconds[qi, round_] = time.perf_counter() - start
            ranks.append(target_rank([c.key for c in session.state.candidates], query.target.id))
            tally.calls[qi, round_], tally.invalid[qi, round_], tally.tokens[qi, round_] = _llm_calls(result.trace)
        tally.ranks[qi] = ranks
        if traces is not None:
            record = {"variant": name, "query": query.text, "target": query.target.id}
            record.update(target_ranks=finite_ranks(ranks), session=session.trace)
            traces.write(json.dumps(record, default=_json_default) + "\n")
        if bar is not None:
            bar.advance(1)
    return summarise(tally, k)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def summarise(tally: _Tally, k: int) -> dict[str, Any]:
    ranks = tally.ranks  # (Q, R)
    per_round = per_round_hits(ranks, k)
    for r, row in enumerate(per_round):
        median = float(np.median(ranks[:, r]))
        calls = float(tally.calls[:, r].sum())
        row.update(
            median_rank=median if np.isfinite(median) else None,
            llm_calls=int(calls),
            invalid_rate=float(tally.invalid[:, r].sum() / calls) if calls else None,
            tokens=float(tally.tokens[:, r].mean()),
            seconds=float(tally.seconds[:, r].mean()),
        )
    last, first = per_round[-1], per_round[0]
    return {
        "per_round": per_round,
        "gain_points": 100 * (last[f"hits@{k}"] - first[f"hits@{k}"]),
        "found_gain_points": 100 * (last[f"found@{k}"] - first[f"found@{k}"]),
    }


def check_targets_indexed(variants: dict[str, Pipeline], queries: Sequence[ExperimentQuery]) -> None:
    """An :class:`EvalDataError` unless there are queries and every variant's index holds every target."""
    if not queries:
        raise EvalDataError("no queries to run: choose a split (and a number of queries) that has some")
    checked: set[Path] = set()
    for pipeline in variants.values():
        store = pipeline.store
        if store.path in checked:
            continue
        checked.add(store.path)
        keys = set(store.committed_state())
        missing = [q.target.id for q in queries if q.target.id not in keys]
        if missing:
            raise EvalDataError(
                f"{len(missing)} of the {len(queries)} query targets are not in the index {store.path} "
                f"(e.g. {missing[0]!r}): the queries come from another split or collection than the index "
                "holds; choose the split the index was built from, or index that split"
            )


def run_experiment(
    variants: dict[str, Pipeline],
    queries: Sequence[ExperimentQuery],
    scenes: dict[str, Scene],
    *,
    rounds: int = 3,
    k: int = 10,
    max_relevant: int | None = 3,
    traces_path: Path | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Every variant over the same queries; the report (``variants``: name -> per-round figures).

    No queries, or queries whose target scenes are not all in a variant's index (queries of another
    split than the index holds), are an :class:`EvalDataError`: such a run measures nothing.
    """
    from ..progress import progress_bar

    check_targets_indexed(variants, queries)
    report: dict[str, Any] = {"n_queries": len(queries), "rounds": rounds, "k": k, "max_relevant": max_relevant}
    report["variants"] = {}
    traces = traces_path.open("w", encoding="utf-8") if traces_path else None
    try:
        with progress_bar("feedback rounds", len(queries) * len(variants), "query", progress) as bar:
            for name, pipeline in variants.items():
                start = time.perf_counter()
                entry = run_variant(pipeline, queries, scenes, rounds=rounds, k=k, max_relevant=max_relevant,
                                    traces=traces, name=name, bar=bar)  # fmt: skip
                entry["stages"] = [s.name for s in pipeline.stages]
                entry["seconds"] = time.perf_counter() - start
                report["variants"][name] = entry
    finally:
        if traces is not None:
            traces.close()
    if traces_path:
        report["traces"] = str(traces_path)
    return report


def plot_rounds(report: dict[str, Any], path: Path) -> Path:
    """Hits@k and found@k per round, one line per variant, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = report["k"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for name, entry in report["variants"].items():
        rounds = [r["round"] for r in entry["per_round"]]
        axes[0].plot(rounds, [r[f"hits@{k}"] for r in entry["per_round"]], marker="o", label=name)
        axes[1].plot(rounds, [r[f"found@{k}"] for r in entry["per_round"]], marker="o", label=name)
    for ax, title in zip(axes, (f"Hits@{k} in the round", f"found in top {k} by the round"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("round")
        ax.set_xticks(range(report["rounds"] + 1))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("share of queries")
    axes[1].legend(fontsize=8, loc="best")
    fig.suptitle(f"{report['n_queries']} queries, simulated user")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = [
    "ROCCHIO",
    "ExperimentQuery",
    "build_variants",
    "check_targets_indexed",
    "partial_queries",
    "plot_rounds",
    "run_experiment",
    "run_variant",
    "summarise",
    "variant_stages",
]
