"""The demo's agent part: a free-form request normalised, and feedback rounds by the simulated user.

Both run the packaged ``agent`` preset (normalise, rewrite, preselect, rerank, caption) over the
demo index. The request is written in the wording style held out of the rewriter's training; the
feedback rounds start from one of the collection's partial queries, and the simulated user, who
wants that query's scene, marks the hits each round. The target's rank is its place among the
round's candidates (the preset reranks 128), so a move is visible before it reaches the top k.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..stages.registry import stage_names
from ..store.search import SearchResult

logger = logging.getLogger(__name__)

AGENT_PRESET = "agent"


@dataclass
class AgentRound:
    query: str | None
    target_rank: int | None
    """Among the round's candidates; None: not among them."""
    result: SearchResult
    relevant: int = 0
    """Hits the simulated user then marked relevant / not relevant."""
    irrelevant: int = 0
    fallback: bool = False
    """The language model's answer was refused and the query stayed."""


@dataclass
class AgentDemo:
    preset: str
    request: str
    """A free-form request (the held-out wording style) for ``request_target``."""
    request_target: str
    typed_rank: int | None
    """The target's rank for the request searched as typed (preselect alone)."""
    normalised: AgentRound
    partial_query: str
    partial_target: str
    rounds: list[AgentRound] = field(default_factory=list)
    sample_ranks: list[list[int | None]] = field(default_factory=list)
    """The target's rank per round for every partial query of the seeded sample; the example above
    (``partial_query``) is the first of them."""
    pool: int = 0
    """How many of the split's partial queries the sample was drawn from."""
    seed: int = 0
    k: int = 8

    def found_per_round(self) -> list[int]:
        """Per round: sampled queries whose target is in the top ``k``."""
        rounds = max((len(r) for r in self.sample_ranks), default=0)
        return [
            sum(1 for ranks in self.sample_ranks if i < len(ranks) and ranks[i] is not None and ranks[i] <= self.k)
            for i in range(rounds)
        ]


def _rank(keys: list[str], target: str) -> int | None:
    return keys.index(target) + 1 if target in keys else None


def _round(session: Any, target: str) -> AgentRound:
    result = session.results[-1]
    keys = [c.key for c in session.state.candidates]
    llm_stages = stage_names(uses_llm=True)
    fallback = any(s["notes"].get("fallback") for s in result.trace["steps"] if s["stage"] in llm_stages)
    return AgentRound(result.query, _rank(keys, target), result, fallback=fallback)


def run_agent_demo(
    data_root: Path,
    index_dir: Path,
    encoder: Any,
    *,
    k: int = 8,
    rounds: int = 2,
    seed: int = 0,
    sample: int = 6,
    preset: str | Path = AGENT_PRESET,
    progress: bool | None = None,
) -> AgentDemo:
    """Normalise one free-form request and run ``rounds`` feedback rounds on ``sample`` partial queries
    drawn with ``seed`` (the first is shown round by round; the others give the figure it is one case
    of), with ``preset`` (a packaged name or a YAML file). A bar counts the searches (the normalised request, then
    each round) when ``progress`` is True or, by default, on a terminal; loading the preset's models
    comes before it (the first time, fetching and converting the language model say so themselves)."""
    from ..agent.session import Session
    from ..progress import progress_bar
    from ..scenes.dataset import load_scene_dataset
    from ..scenes.wordings import HELD_OUT_STYLE, free_form
    from ..stages.presets import load_preset
    from ..stages.runner import Pipeline
    from ..store.search import Searcher

    pipeline = Pipeline.from_preset(load_preset(preset), index=index_dir, encoder=encoder)
    dataset = load_scene_dataset(data_root)
    scenes = dataset.scenes["test"]
    rng = np.random.default_rng([seed, 71])
    keys = sorted(scenes)
    target = scenes[keys[int(rng.integers(len(keys)))]]
    request = free_form(target, HELD_OUT_STYLE, rng)
    first = stage_names(role="first")  # the stages that draw candidates from the whole index
    candidates = max((getattr(s.config, "k", 0) or 0) for s in pipeline.stages if s.name in first) or 128
    typed = Searcher(pipeline.store, encoder).search(request, k=candidates)
    # partial queries that name a place as well (the kind a person narrows down by feedback)
    partial = [q for q in dataset.queries["test"] if q.type == "partial" and len(q.attributes) == 2]
    partial = [q for q in partial if "position" in q.attributes] or partial
    drawn = [partial[int(i)] for i in rng.choice(len(partial), min(sample, len(partial)), replace=False)]
    typed_rank = _rank([h.key for h in typed.hits], target.id)
    with progress_bar("agent: normalising a request", 1 + len(drawn) * (rounds + 1), "search", progress) as bar:
        session = Session(pipeline, k=k)
        session.search(request)
        normalised = _round(session, target.id)
        bar.advance()
        demo = AgentDemo(
            pipeline.name, request, target.id, typed_rank, normalised, drawn[0].text, drawn[0].target_id,
            pool=len(partial), seed=seed, k=k,
        )  # fmt: skip
        for n, query in enumerate(drawn):
            steps = _feedback_rounds(pipeline, query, scenes, k, rounds, bar, label=f"query {n + 1}/{len(drawn)}")
            demo.sample_ranks.append([step.target_rank for step in steps])
            if n == 0:
                demo.rounds = steps
    return demo


def _feedback_rounds(
    pipeline: Any, query: Any, scenes: dict[str, Any], k: int, rounds: int, bar: Any, label: str
) -> list[AgentRound]:
    """Round 0 and ``rounds`` feedback rounds for one partial query, the simulated user marking hits."""
    from ..agent.session import Session
    from ..eval.simulate import marks_for
    from ..scenes.simuser import SimulatedUser

    user = SimulatedUser(scenes[query.target_id])
    session = Session(pipeline, k=k)
    bar.describe(f"agent: feedback, {label}, round 0")
    session.search(query.text)
    bar.advance()
    steps = []
    for round_ in range(rounds + 1):
        step = _round(session, query.target_id)
        steps.append(step)
        if round_ == rounds:
            break
        relevant, irrelevant = marks_for(session.results[-1].hits, user, scenes)
        step.relevant, step.irrelevant = len(relevant), len(irrelevant)
        bar.describe(f"agent: feedback, {label}, round {round_ + 1}")
        session.feedback(relevant=relevant, irrelevant=irrelevant)
        bar.advance()
    return steps


__all__ = ["AGENT_PRESET", "AgentDemo", "AgentRound", "run_agent_demo"]
