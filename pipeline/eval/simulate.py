"""Feedback rounds driven by the scene benchmark's simulated user (for evaluations and the demo).

The simulated user (:class:`..scenes.simuser.SimulatedUser`) knows one target scene; after each
round it marks the shown hits relevant or not by their scene graphs, exactly as a person would
click them, and the session runs the next round. The target's rank is recorded every round.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..agent.session import Session
from ..scenes.simuser import SimulatedUser


@dataclass
class SimulatedRun:
    """One query's rounds: the query each round searched, and the target's rank (None: not shown)."""

    queries: list[str | None] = field(default_factory=list)
    target_ranks: list[int | None] = field(default_factory=list)


def marks_for(
    hits: list[Any], user: SimulatedUser, scenes: dict[str, Any], max_relevant: int | None = 3
) -> tuple[list[str], list[str]]:
    """(relevant keys, not relevant keys) the simulated user gives the ``hits`` (scene graphs by key)."""
    shown = [h for h in hits if h.key in scenes]
    verdicts = user.feedback([scenes[h.key] for h in shown], max_relevant=max_relevant)
    relevant = [h.key for h, (_, ok) in zip(shown, verdicts, strict=True) if ok]
    irrelevant = [h.key for h, (_, ok) in zip(shown, verdicts, strict=True) if not ok]
    return relevant, irrelevant


def simulate(
    session: Session,
    query: str,
    target: Any,
    scenes: dict[str, Any],
    *,
    rounds: int = 3,
    max_relevant: int | None = 3,
) -> SimulatedRun:
    """Round 0 for ``query``, then ``rounds`` feedback rounds by a user who wants ``target``."""
    user = SimulatedUser(target)
    run = SimulatedRun()
    result = session.search(query)
    for round_ in range(rounds + 1):
        keys = [h.key for h in result.hits]
        run.queries.append(result.query)
        run.target_ranks.append(keys.index(target.id) + 1 if target.id in keys else None)
        if round_ == rounds:
            break
        relevant, irrelevant = marks_for(result.hits, user, scenes, max_relevant)
        result = session.feedback(relevant=relevant, irrelevant=irrelevant)
    return run


__all__ = ["SimulatedRun", "marks_for", "simulate"]
