"""The goals table of the agent's checks (issue 24), written from the committed reports.

    python reports/scripts/agent_table.py [REPORTS_DIR]

Reads ``agent-checks/normalise-{synonyms,typos}.json``, ``agent-checks/feedback-partial-test.json``,
``composed-agent-test.json`` and ``dialogue-test.json`` and prints two markdown tables: the goals with
the ``agent`` preset as shipped, and the same figures with its checking options off (so each option's
share of the gain shows). Two figures are read from earlier reports, because what they measure
did not change: ``normalise-typos.json``'s
``scene-rewriter=normalise-short`` row (the unchecked normalise stage on the same 200 requests: same
model, prompt and greedy decoding, batched), and ``composed-agent-test.json`` (composed queries skip
``normalise``; the ``compose`` stage is the one the ``agent`` preset still has).
The README's agent section quotes this output.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ON = "preset:agent"
OFF = "preset:agent-unchecked"


def _load(root: Path, name: str) -> dict[str, Any]:
    return json.loads((root / name).read_text(encoding="utf-8"))


def _normalise(report: dict[str, Any], variant: str) -> tuple[float, float, float]:
    row = report["normalised"][variant]
    caps = report["captions"]["R@1"]
    return row["R@1"], caps, row.get("invalid_rate", 0.0)


def _feedback(report: dict[str, Any], variant: str) -> tuple[float, float]:
    entry = report["variants"][variant]
    rates = [r["invalid_rate"] for r in entry["per_round"] if r["invalid_rate"] is not None]
    return entry["gain_points"], max(rates, default=0.0)


def _dialogue_gain(report: dict[str, Any], variant: str, by_round: int = 5) -> float:
    rounds = {r["round"]: r["hits@10"] for r in report["variants"][variant]["per_round"]}
    return 100 * (rounds[by_round] - rounds[0])


def tables(root: Path) -> str:
    syn, typ = _load(root, "agent-checks/normalise-synonyms.json"), _load(root, "agent-checks/normalise-typos.json")
    fb = _load(root, "agent-checks/feedback-partial-test.json")
    comp = _load(root, "composed-agent-test.json")
    old_typos = _load(root, "normalise-typos.json")
    typ["normalised"].setdefault(OFF, old_typos["normalised"]["scene-rewriter=normalise-short"])
    dlg = _load(root, "dialogue-test.json")
    rocchio = fb["variants"]["rocchio"]["gain_points"]
    lines = []
    for title, variant in (("`agent` as shipped", ON), ("`agent-unchecked` (checks off)", OFF)):
        s1, sc, s_bad = _normalise(syn, variant)
        t1, tc, t_bad = _normalise(typ, variant)
        gain, f_bad = _feedback(fb, variant)
        c = comp["variants"]["preset"]
        lines += [
            f"**{title}**", "",
            "| figure | measured | goal | met |", "|---|---|---|---|",
            f"| free-form, held-out `synonyms`: R@1 / captions' | {s1:.3f} / {sc:.3f} ({s1 / sc:.2f}x) | >= 0.9x | "
            f"{'yes' if s1 / sc >= 0.9 else 'no'} |",
            f"| the same on `typos` | {t1:.3f} / {tc:.3f} ({t1 / tc:.2f}x) | >= 0.95x | "
            f"{'yes' if t1 / tc >= 0.95 else 'no'} |",
            f"| feedback, partial queries, 3 rounds: Hits@10 gain | {gain:+.0f} (Rocchio {rocchio:+.0f}) | "
            f">= +30 and >= Rocchio + 8 | {'yes' if gain >= 30 and gain >= rocchio + 8 else 'no'} |",
            f"| composed R@10 | {c['R@10']:.3f} | >= 0.97 | {'yes' if c['R@10'] >= 0.97 else 'no'} |",
            f"| invalid or refused LLM answers (normalise syn / typos, feedback worst round, compose) | "
            f"{s_bad:.1%} / {t_bad:.1%} / {f_bad:.1%} / {c.get('fallback_rate', 0.0):.1%} | <= 1% | "
            f"{'yes' if max(s_bad, t_bad, f_bad, c.get('fallback_rate', 0.0)) <= 0.01 else 'no'} |",
            "",
        ]  # fmt: skip
    general = dlg.get("general_variant", "grounded+rule")
    gain = _dialogue_gain(dlg, general)
    lines += [
        f"Dialogue (no scene vocabulary in the agent; `{general}`): Hits@10 gain by round 5 {gain:+.0f} "
        f"(goal >= +30: {'met' if gain >= 30 else 'not met'}).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(tables(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]))
