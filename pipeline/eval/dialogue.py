"""Dialogue search on the scene benchmark: the simulated user answers the system's questions.

Each dialogue starts from one of the split's partial queries (a short description of one target
scene); every round the questioner asks, the simulated user answers from the target's scene graph
(:meth:`..scenes.simuser.SimulatedUser.answer`), the reformulator writes the query and the pipeline
searches. The agent's parts know none of the benchmark's words. Per round: Hits@1/@10 (the target
in the round's top k), found@10 (by that round), and over the whole dialogue the best log rank
integral (BRI, PlugIR; lower is better). Variants share the queries: ``QUESTIONER+REFORMULATOR``
with ``random`` / ``grounded`` / ``MODEL=PROMPT`` questioners and ``concat`` / ``rule`` /
``MODEL=PROMPT`` reformulators.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ...adapters.entries import ConfigError

DIALOGUE_BASELINES = ("random+concat", "grounded+concat", "grounded+rule")
"""Questions about random phrases of the candidates' captions with the dialogue concatenated
(ChatIR's weakest setting); grounded questions with the dialogue concatenated (ChatIR's query, the
query alone orders the candidates); grounded questions with the rule reformulation, which also
orders the candidates by what the answers said of their captions (PlugIR's idea, no model). No
part knows the benchmark's words: only the simulated user does."""


def parse_variant(spec: str) -> tuple[str, str]:
    """``QUESTIONER+REFORMULATOR``: ``random``/``grounded``/``MODEL=PROMPT`` + ``concat``/``rule``/``MODEL=PROMPT``."""
    questioner, plus, reformulator = spec.partition("+")
    ok_q = questioner in ("random", "grounded") or _is_model(questioner)
    ok_r = reformulator in ("concat", "rule") or _is_model(reformulator)
    if not plus or not ok_q or not ok_r:
        raise ConfigError(
            f"dialogue variant {spec!r}: write QUESTIONER+REFORMULATOR, e.g. grounded+rule or "
            "smollm2-135m-instruct=dialogue-question+rule"
        )
    return questioner, reformulator


def _is_model(part: str) -> bool:
    model, eq, prompt = part.partition("=")
    return bool(eq and model and prompt)


def resolve_part(part: str, loaded: dict[str, Any]) -> Any:
    """A baseline's name as is; ``MODEL=PROMPT`` as (chat model, prompt), each model loaded once."""
    if not _is_model(part):
        return part
    from ...adapters.registry import load_model
    from ..llm.prompts import load_prompt

    model, _, prompt = part.partition("=")
    if model not in loaded:
        loaded[model] = load_model(model, "chat")
    return loaded[model], load_prompt(prompt)


def dialogue_report(
    root: Path,
    split: str,
    pipeline: Any,
    variants: list[str],
    *,
    n_queries: int = 100,
    rounds: int = 10,
    k: int = 10,
    seed: int = 0,
    progress: bool | None = None,
    traces: Any = None,
) -> dict[str, Any]:
    """Hits@1/@k and found@k per round and BRI for each variant, on ``n_queries`` partial queries.
    ``traces``: an open text file that gets each dialogue's trace as one JSON line."""
    import json

    from ..agent.dialogue import DialogueSession, best_log_rank_integral
    from ..progress import progress_bar
    from ..scenes.simuser import UNKNOWN, SimulatedUser
    from .experiment import finite_ranks, partial_queries, per_round_hits, target_rank

    queries, _ = partial_queries(root, split, n_queries, seed)
    loaded: dict[str, Any] = {}
    specs = {spec: tuple(resolve_part(p, loaded) for p in parse_variant(spec)) for spec in variants}
    report: dict[str, Any] = {"split": split, "n_queries": len(queries), "rounds": rounds, "k": k, "variants": {}}
    with progress_bar("dialogues", len(queries) * len(specs), "dialogue", progress) as bar:
        for spec, (questioner, reformulator) in specs.items():
            start = time.perf_counter()
            ranks = np.zeros((len(queries), rounds + 1))
            unknown, depth, fallbacks = 0, 0, 0
            for qi, query in enumerate(queries):
                session = DialogueSession(pipeline, questioner, reformulator, k=k, max_rounds=rounds + 1, seed=seed)
                user = SimulatedUser(query.target)
                session.search(query.text)
                for r in range(rounds + 1):
                    if r:
                        answer = user.answer(session.ask())
                        unknown += answer == UNKNOWN
                        session.answer(answer)
                    keys = session.candidate_keys()
                    ranks[qi, r] = target_rank(keys, query.target.id)
                    depth = max(depth, len(keys))
                fallbacks += sum(n.get("source") == "llm-fallback" for n in session.notes)
                if traces is not None:
                    line = {"variant": spec, "query": query.text, "target": query.target.id,
                            "target_ranks": finite_ranks(ranks[qi].tolist()),
                            "session": session.trace}  # fmt: skip
                    traces.write(json.dumps(line, default=str) + "\n")
                bar.advance(1)
            report["variants"][spec] = {
                "per_round": per_round_hits(ranks, k),
                "bri": best_log_rank_integral(np.minimum(ranks, depth + 1)),
                "median_rank_last": float(np.median(ranks[:, -1])) if np.isfinite(np.median(ranks[:, -1])) else None,
                "unanswered_rate": unknown / max(1, len(queries) * rounds),
                "refused_question_rate": fallbacks / max(1, len(queries) * rounds),
                "seconds": time.perf_counter() - start,
            }
    report["bri_note"] = "ranks past the candidates count as their number + 1"
    return report


__all__ = ["DIALOGUE_BASELINES", "dialogue_report", "parse_variant", "resolve_part"]
