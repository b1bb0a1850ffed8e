"""LoRA fine-tuning of the query rewriter (the default LLM): normalisation, feedback rewriting,
composed-query edits and dialogue (questions and reformulations), one adapter for all.

Examples come from *training* scenes only, of these kinds:

* **normalisation**: a free-form request in one of the training wording styles
  (:data:`..scenes.wordings.TRAIN_STYLES`; the held-out style is never used) and, as the answer,
  the scene's description in the ``listing`` training template, the words the encoder knows; a
  quarter are partial requests ("show me a red star"), answered with the partial query alone, so
  that the rewriter never adds details the person did not ask for;
* **feedback situations** (:func:`feedback_examples`): a partial query drawn from a target scene,
  ten shown scenes that match it (sometimes the target or scenes close to it among them), the
  simulated user's marks, the shown scenes' captions (training templates) as the prompt's data and,
  as the answer, the first scene marked right described in the ``listing`` template (the query
  unchanged when nothing was marked right);
* **edits** (:func:`edit_examples`, composed queries): a reference scene's caption and an edit
  instruction (half of them worded another way than the benchmark's template), answered with the
  edited scene described in the ``listing`` template;
* **dialogue** (:func:`dialogue_examples`): questions the grounded questioner asks over training
  scenes' captions, and reformulations of dialogues (half the answers worded loosely) into what
  the answers establish.

A user's own examples can be added (JSONL lines ``{"request": ..., "query": ...}``, normalisation).
Each kind has its prompt file (``normalise-short``, ``rewrite-feedback-short``, ``compose-edit-short``,
``dialogue-question-short``, ``dialogue-reformulate-short``); the loss is on
the answer tokens only. peft LoRA adapters on the attention and MLP projections; resumable from
``<out>/checkpoint/``; ``<out>/adapter/`` is the result (a peft folder a ``transformers_chat``
entry names as ``adapter``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...adapters.entries import ConfigError
from ..store.fsutil import atomic_write_json
from .clip import SceneDataConfig, ensure_scene_data
from .lm_lora import LoopSettings, encode_example, lora_targets, resume_or_wrap, train_steps
from .run_config import check_at_least_one, load_run_config
from .user_data import LoraConfig

logger = logging.getLogger(__name__)


@dataclass
class RewriterSettings:
    n_examples: int = 1200
    """Training examples generated from training scenes."""
    n_feedback_examples: int = 0
    """Feedback situations generated from training scenes (0: a normalisation-only rewriter)."""
    n_edit_examples: int = 0
    """Composed-query edits generated from training scenes (0: none)."""
    n_dialogue_examples: int = 0
    """Dialogue questions, and as many dialogue reformulations, from training scenes (0: none)."""
    max_captions: int = 3
    """Captions per side (right, wrong) in a feedback situation: the ``rewrite`` stage's
    ``max_captions`` the adapter is meant to run with."""
    user_examples: str | None = None
    """A JSONL file of the user's own ``{"request", "query"}`` pairs, added to the generated ones."""
    steps: int = 150
    batch_size: int = 8
    lr: float = 1e-3
    warmup_steps: int = 10
    seed: int = 0
    threads: int | None = None
    checkpoint_every: int = 50
    log_every: int = 10
    max_length: int = 160
    """Tokens per example (prompt + answer); longer ones are cut from the left of the prompt."""

    def __post_init__(self) -> None:
        check_at_least_one(self, ("n_examples", "steps", "batch_size", "checkpoint_every", "log_every", "max_length"))
        if self.lr <= 0:
            raise ConfigError("train: field 'lr' must be > 0")


@dataclass
class RewriterTrainConfig:
    name: str
    model: str = "smollm2-135m-instruct"
    """The chat model entry to adapt (a ``transformers_chat`` entry)."""
    prompt: str = "normalise-short"
    feedback_prompt: str = "rewrite-feedback-short"
    """The prompt of the feedback situations."""
    edit_prompt: str = "compose-edit-short"
    """The prompt of the composed-query edits."""
    question_prompt: str = "dialogue-question-short"
    reformulate_prompt: str = "dialogue-reformulate-short"
    """The prompts of the dialogue questions and reformulations."""
    data: SceneDataConfig = field(default_factory=SceneDataConfig)
    lora: LoraConfig = field(default_factory=lambda: LoraConfig(r=16, alpha=32))
    """Adapters on the layers named in ``target_modules`` that the model has (Llama: q/k/v/o, MLP)."""
    train: RewriterSettings = field(default_factory=RewriterSettings)
    out: str = "runs/scene-rewriter"


def load_rewriter_config(path: str | Path) -> RewriterTrainConfig:
    return load_run_config(path, RewriterTrainConfig)


def scene_examples(root: Path, n: int, seed: int, partial_share: float = 0.25) -> list[tuple[str, str]]:
    """``n`` (request, canonical description) pairs from the benchmark's *training* scenes; a
    ``partial_share`` of them ask for one object or attribute (a partial query, sometimes with an
    opener) and are answered with the partial query alone."""
    from ..scenes.captions import templates
    from ..scenes.dataset import load_scene_dataset
    from ..scenes.queries import PARTIAL_KINDS, partial_text
    from ..scenes.wordings import OPENERS, TRAIN_STYLES, free_form

    listing = next(t for t in templates("train") if t.name == "listing")
    scenes = load_scene_dataset(root).scenes["train"]
    keys = sorted(scenes)
    rng = np.random.default_rng([seed, 41])
    out = []
    for i in rng.choice(len(keys), n, replace=len(keys) < n):
        scene = scenes[keys[int(i)]]
        if rng.random() < partial_share:  # a partial request stays partial: nothing is made up
            obj = scene.objects[int(rng.integers(len(scene.objects)))]
            kind = PARTIAL_KINDS[int(rng.integers(len(PARTIAL_KINDS)))]
            query = partial_text({name: getattr(obj, name) for name in kind})
            opener = OPENERS[int(rng.integers(len(OPENERS)))] + " " if rng.random() < 0.5 else ""
            out.append((opener + query, query))
            continue
        style = TRAIN_STYLES[int(rng.integers(len(TRAIN_STYLES)))]
        out.append((free_form(scene, style, rng), listing.write(scene, rng)))
    return out


def feedback_examples(root: Path, n: int, seed: int, max_captions: int = 3) -> list[tuple[dict[str, Any], str]]:
    """``n`` (prompt values, answer) feedback situations from the benchmark's *training* scenes."""
    from ..llm.prompts import quoted
    from ..scenes.captions import caption_scene, templates
    from ..scenes.dataset import load_scene_dataset
    from ..scenes.queries import PARTIAL_KINDS, partial_text, scene_matches
    from ..scenes.simuser import SimulatedUser

    listing = next(t for t in templates("train") if t.name == "listing")
    scenes = load_scene_dataset(root).scenes["train"]
    keys = sorted(scenes)
    rng = np.random.default_rng([seed, 47])
    out: list[tuple[dict[str, Any], str]] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 50 * n:
            raise ValueError(f"{root}: too few training scenes to write {n} feedback situations")
        target = scenes[keys[int(rng.integers(len(keys)))]]
        obj = target.objects[int(rng.integers(len(target.objects)))]
        kind = PARTIAL_KINDS[int(rng.integers(len(PARTIAL_KINDS)))]
        attributes = {name: getattr(obj, name) for name in kind}
        pool = [scenes[keys[int(i)]] for i in rng.choice(len(keys), min(300, len(keys)), replace=False)]
        pool = [s for s in pool if s.id != target.id and scene_matches(s, attributes)]
        if len(pool) < 2:
            continue
        user = SimulatedUser(target)
        shown = pool[:10]  # what a search for the partial query shows: scenes that match it
        roll = rng.random()
        if roll < 0.25:  # the target is among the hits
            shown[int(rng.integers(len(shown)))] = target
        elif roll < 0.6:  # a scene close to it is
            close = max(pool[10:] or pool, key=user.similarity)
            shown[int(rng.integers(len(shown)))] = close
        verdicts = user.feedback(shown, max_relevant=3)
        right = [s for s, (_, ok) in zip(shown, verdicts, strict=True) if ok]
        wrong = [s for s, (_, ok) in zip(shown, verdicts, strict=True) if not ok]
        query = partial_text(attributes)
        values = {
            "query": quoted(query),
            "relevant": quoted([caption_scene(s, rng) for s in right[:max_captions]]),
            "irrelevant": quoted([caption_scene(s, rng) for s in wrong[:max_captions]]),
        }
        answer = listing.write(right[0], rng) if right else query
        out.append((values, answer))
    return out


def edit_examples(root: Path, n: int, seed: int, reworded_share: float = 0.5) -> list[tuple[dict[str, Any], str]]:
    """``n`` composed-query edits (prompt values, answer) from the benchmark's *training* scenes: the
    reference scene's caption (a training template) and an edit instruction, answered with the
    edited scene described in the ``listing`` template; a ``reworded_share`` of the instructions are
    worded another way (:func:`..scenes.edits.reworded_instruction`). Edits keep the training split's held-out
    (shape, colour) pairs out, as the benchmark's own edits do."""
    from ..llm.prompts import quoted
    from ..scenes.captions import caption_scene, templates
    from ..scenes.dataset import load_scene_dataset
    from ..scenes.edits import reworded_instruction, sample_edit
    from ..scenes.generator import SceneGeneratorConfig, split_constraints

    dataset = load_scene_dataset(root)
    config = SceneGeneratorConfig.from_dict(dataset.info["generator"])
    forbid, require = split_constraints(config, "train")
    listing = next(t for t in templates("train") if t.name == "listing")
    scenes = dataset.scenes["train"]
    keys = sorted(scenes)
    rng = np.random.default_rng([seed, 59])
    out: list[tuple[dict[str, Any], str]] = []
    for attempt in range(50 * n):
        if len(out) >= n:
            break
        reference = scenes[keys[int(rng.integers(len(keys)))]]
        found = sample_edit(
            reference, rng, config, new_id=f"edit-{attempt}", forbid_pairs=forbid, require_pairs=require
        )
        if found is None:
            continue
        edit, edited = found
        instruction = edit.instruction
        if rng.random() < reworded_share:  # people word edits more ways than the benchmark's template
            instruction = reworded_instruction(edit, reference, rng)
        values = {"caption": quoted(caption_scene(reference, rng)), "edit": quoted(instruction)}
        out.append((values, listing.write(edited, rng)))
    if len(out) < n:
        raise ValueError(f"{root}: could write only {len(out)} of {n} edits from the training scenes")
    return out


def dialogue_examples(
    root: Path, n: int, seed: int, max_captions: int = 3, max_turns: int = 8, loose_share: float = 0.5
) -> tuple[list[tuple[dict[str, Any], str]], list[tuple[dict[str, Any], str]]]:
    """``n`` question and ``n`` reformulation examples (prompt values, answer) from dialogues on the
    benchmark's *training* scenes: a partial first description, up to ``max_turns`` questions by the
    grounded questioner (over the captions of training scenes that match the first description, as
    a search shows them) answered by the simulated user.

    * question: the dialogue so far and ``max_captions`` captions -> the grounded questioner's next
      question;
    * reformulation: the dialogue, where a ``loose_share`` of the answers are worded loosely ("yep",
      "it's blue"), -> the rule reformulation of the user's own short answers (what they establish;
      the rule reads the loose wordings the same way).
    """
    from ..agent.dialogue import Turn, dialogue_lines, grounded_question, rule_reformulation
    from ..llm.prompts import quoted
    from ..scenes.captions import caption_scene
    from ..scenes.dataset import load_scene_dataset
    from ..scenes.queries import PARTIAL_KINDS, partial_text, scene_matches
    from ..scenes.simuser import SimulatedUser, reworded_answer

    scenes = load_scene_dataset(root).scenes["train"]
    keys = sorted(scenes)
    rng = np.random.default_rng([seed, 67])
    questions: list[tuple[dict[str, Any], str]] = []
    reformulations: list[tuple[dict[str, Any], str]] = []
    for _ in range(50 * n):
        if len(questions) >= n and len(reformulations) >= n:
            break
        target = scenes[keys[int(rng.integers(len(keys)))]]
        obj = target.objects[int(rng.integers(len(target.objects)))]
        kind = PARTIAL_KINDS[int(rng.integers(len(PARTIAL_KINDS)))]
        attributes = {name: getattr(obj, name) for name in kind}
        first = partial_text(attributes)
        pool = [scenes[keys[int(i)]] for i in rng.choice(len(keys), min(200, len(keys)), replace=False)]
        pool = [s for s in pool if s.id != target.id and scene_matches(s, attributes)][:20] + [target]
        user, turns, stop = SimulatedUser(target), [], int(rng.integers(0, max_turns + 1))
        captions: list[str] = []
        while True:
            shown = [pool[int(i)] for i in rng.choice(len(pool), min(max_captions, len(pool)), replace=False)]
            captions = [caption_scene(s, rng) for s in shown]
            question = grounded_question(first, captions, turns)
            if question is None or len(turns) >= stop:
                break
            turns.append(Turn(question, user.answer(question), "grounded"))
        if question is not None and len(questions) < n:
            values = {"query": quoted(first), "dialogue": quoted(dialogue_lines(turns)), "captions": quoted(captions)}
            questions.append((values, question))
        if turns and len(reformulations) < n:
            loose = [
                Turn(t.question, reworded_answer(t.question, t.answer, rng) if rng.random() < loose_share else t.answer,
                     t.source)
                for t in turns
            ]  # fmt: skip
            values = {"query": quoted(first), "dialogue": quoted(dialogue_lines(loose))}
            reformulations.append((values, rule_reformulation(first, turns)))
    if len(questions) < n or len(reformulations) < n:
        raise ValueError(f"{root}: too few training scenes to write {n} dialogue examples")
    return questions, reformulations


def user_examples(path: str | Path) -> list[tuple[str, str]]:
    """The user's ``{"request": ..., "query": ...}`` lines."""
    out = []
    for lineno, line in enumerate(Path(path).expanduser().read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            out.append((str(record["request"]), str(record["query"])))
        except (json.JSONDecodeError, KeyError) as exc:
            raise ConfigError(f'{path}:{lineno}: expected {{"request": ..., "query": ...}}: {exc}') from exc
    return out


@dataclass
class RewriterResult:
    out: Path
    adapter_dir: Path
    steps: int
    seconds: float


def train_rewriter(
    config: RewriterTrainConfig, *, progress: bool | None = None, max_steps: int | None = None
) -> RewriterResult:
    """Train (or resume) the LoRA rewriter run ``config`` describes."""
    from ...adapters.open_clip_encoder import torch_threads

    with torch_threads(config.train.threads):
        return _train_rewriter(config, progress, max_steps)


def _train_rewriter(config: RewriterTrainConfig, progress: bool | None, max_steps: int | None) -> RewriterResult:
    from accelerate.utils import set_seed
    from peft import LoraConfig as PeftLoraConfig

    from ...adapters.registry import load_model
    from ..llm.prompts import load_prompt, quoted
    from ..reports import machine_info

    s = config.train
    out = Path(config.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "train_config.json", asdict(config))
    set_seed(s.seed)
    chat = load_model(config.model, "chat")
    tokenizer, base = chat.tokenizer, chat.lm
    root = ensure_scene_data(config.data)
    requests = scene_examples(root, s.n_examples, s.seed)
    if s.user_examples:
        requests += user_examples(s.user_examples)
    tasks = [(config.prompt, [({"query": quoted(req)}, ans) for req, ans in requests])]  # (prompt, examples)
    if s.n_edit_examples:
        tasks.append((config.edit_prompt, edit_examples(root, s.n_edit_examples, s.seed)))
    if s.n_dialogue_examples:
        asked, reformulated = dialogue_examples(root, s.n_dialogue_examples, s.seed)
        tasks += [(config.question_prompt, asked), (config.reformulate_prompt, reformulated)]
    if s.n_feedback_examples:
        tasks.append((config.feedback_prompt, feedback_examples(root, s.n_feedback_examples, s.seed, s.max_captions)))
    encoded = []
    for prompt_name, examples in tasks:
        prompt = load_prompt(prompt_name)
        encoded += [encode_example(tokenizer, prompt, values, answer, s.max_length) for values, answer in examples]
    targets = lora_targets(base, config.lora.target_modules, config.model)

    def lora() -> PeftLoraConfig:
        return PeftLoraConfig(r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
                              target_modules=targets, task_type="CAUSAL_LM")  # fmt: skip

    model, step = resume_or_wrap(base, out, lora)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    loop = LoopSettings(s.steps, s.batch_size, s.lr, s.warmup_steps, s.seed, s.checkpoint_every, s.log_every)
    step, seconds = train_steps(model, encoded, loop, out, step=step, pad=pad, name=config.name, progress=progress,
                                max_steps=max_steps)  # fmt: skip
    adapter_dir = out / "adapter"
    model.save_pretrained(adapter_dir)
    summary = {"name": config.name, "steps": step, "train_minutes": seconds / 60, "examples": len(encoded),
               "machine": machine_info(), "base_model": config.model, "prompt": config.prompt,
               "feedback_prompt": config.feedback_prompt if s.n_feedback_examples else None,
               "edit_prompt": config.edit_prompt if s.n_edit_examples else None,
               "dialogue_prompts": [config.question_prompt, config.reformulate_prompt] if s.n_dialogue_examples
               else None,
               "examples_per_task": {name: len(examples) for name, examples in tasks}}  # fmt: skip
    atomic_write_json(out / "summary.json", summary)
    return RewriterResult(out, adapter_dir, step, seconds)


__all__ = [
    "RewriterTrainConfig",
    "dialogue_examples",
    "edit_examples",
    "feedback_examples",
    "load_rewriter_config",
    "scene_examples",
    "train_rewriter",
    "user_examples",
]
