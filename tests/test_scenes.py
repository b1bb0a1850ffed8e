"""The synthetic scene benchmark: graph, generator, render, captions, queries, metrics, simulated
user, dataset folder and CLI. Small seeded inputs; the whole file runs in seconds."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from viewfinder.pipeline.scenes import dataset as dataset_module
from viewfinder.pipeline.scenes.captions import (
    RELATION_PHRASES,
    TEST_TEMPLATE_MARKERS,
    all_captions,
    caption_scene,
    templates,
)
from viewfinder.pipeline.scenes.dataset import (
    QuerySetConfig,
    is_scene_dataset,
    load_scene_dataset,
    write_scene_dataset,
)
from viewfinder.pipeline.scenes.edits import EDIT_KINDS, SceneEdit, sample_edit
from viewfinder.pipeline.scenes.generator import (
    SceneGeneratorConfig,
    generate_scenes,
    held_out_pairs,
    split_constraints,
    split_rng,
)
from viewfinder.pipeline.scenes.graph import (
    BACKGROUNDS,
    COLOURS,
    POSITION_PHRASES,
    SHAPES,
    Scene,
    SceneObject,
    scene_problems,
)
from viewfinder.pipeline.scenes.metrics import (
    partial_query_report,
    recall_at_k,
    swap_accuracy,
    target_ranks,
)
from viewfinder.pipeline.scenes.queries import (
    BindingSwapQuery,
    ComposedQuery,
    PartialQuery,
    RelationSwapQuery,
    make_binding_swap_queries,
    make_composed_queries,
    make_partial_queries,
    make_relation_swap_queries,
    partial_text,
    query_from_dict,
    query_to_dict,
)
from viewfinder.pipeline.scenes.render import render_scene
from viewfinder.pipeline.scenes.simuser import UNKNOWN, SimulatedUser, parse_descriptor

CONFIG = SceneGeneratorConfig(seed=7)


@pytest.fixture(scope="module")
def test_scenes() -> list[Scene]:
    forbid, require = split_constraints(CONFIG, "test")
    return generate_scenes(300, split_rng(CONFIG, "test"), CONFIG, id_prefix="test", forbid_pairs=forbid)


def obj(shape: str, colour: str, size: str, x: float, y: float) -> SceneObject:
    return SceneObject(shape=shape, colour=colour, size=size, x=x, y=y)


def hand_scene(scene_id: str = "s0") -> Scene:
    """Large red circle top left, small blue square bottom right, small green star centre."""
    return Scene(
        id=scene_id,
        background="black",
        objects=[
            obj("circle", "red", "large", 0.22, 0.22),
            obj("square", "blue", "small", 0.85, 0.85),
            obj("star", "green", "small", 0.5, 0.5),
        ],
    )


def satisfied(scene: Scene, text: str) -> list[bool]:
    """For a text "X and Y": whether each part names an object of the scene."""
    out = []
    for part in text.split(" and "):
        attributes = parse_descriptor(part)
        assert attributes is not None, part
        out.append(any(all(getattr(o, k) == v for k, v in attributes.items()) for o in scene.objects))
    return out


# Graph and generator ---------------------------------------------------------------------------


def test_vocabulary_contrasts() -> None:
    assert len(SHAPES) >= 8 and len(COLOURS) == 8 and len(BACKGROUNDS) == 3
    for colour in COLOURS.values():
        for background in BACKGROUNDS.values():
            assert np.linalg.norm(np.subtract(colour, background)) > 120


def test_generation_is_deterministic_from_seed() -> None:
    def make(seed: int) -> list[dict]:
        return [s.to_dict() for s in generate_scenes(50, np.random.default_rng(seed), CONFIG)]

    assert make(3) == make(3)
    assert make(3) != make(4)


def test_scenes_keep_invariants(test_scenes: list[Scene]) -> None:
    for scene in test_scenes:
        assert scene_problems(scene) == [], scene
        assert CONFIG.min_objects <= len(scene.objects) <= CONFIG.max_objects
        pairs = [o.pair for o in scene.objects]
        assert len(pairs) == len(set(pairs))
    counts = {len(s.objects) for s in test_scenes}
    assert counts == {1, 2, 3}


def test_scene_json_round_trip(test_scenes: list[Scene]) -> None:
    for scene in test_scenes[:20]:
        assert Scene.from_dict(json.loads(json.dumps(scene.to_dict()))) == scene


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="max_objects"):
        SceneGeneratorConfig(max_objects=9)
    with pytest.raises(ValueError, match="image_size"):
        SceneGeneratorConfig(image_size=8)
    with pytest.raises(ValueError, match="held_out_pairs"):
        SceneGeneratorConfig(held_out_pairs=-1)


def test_held_out_pairs_are_seeded_and_balanced() -> None:
    pairs = held_out_pairs(CONFIG)
    assert pairs == held_out_pairs(SceneGeneratorConfig(seed=7))
    assert pairs != held_out_pairs(SceneGeneratorConfig(seed=8))
    assert len(pairs) == 8
    assert sorted(s for s, _ in pairs) == sorted(SHAPES)
    assert sorted(c for _, c in pairs) == sorted(COLOURS)


def test_held_out_pairs_only_in_compositional_split() -> None:
    held = set(held_out_pairs(CONFIG))
    for split in ("train", "val", "test", "compositional"):
        forbid, require = split_constraints(CONFIG, split)
        scenes = generate_scenes(200, split_rng(CONFIG, split), CONFIG, forbid_pairs=forbid, require_pairs=require)
        for scene in scenes:
            if split == "compositional":
                assert scene.pairs() & held
            else:
                assert not scene.pairs() & held


def test_relations_from_centres() -> None:
    scene = Scene(
        id="r",
        background="black",
        objects=[obj("circle", "red", "small", 0.2, 0.5), obj("star", "blue", "small", 0.8, 0.45)],
    )
    assert sorted(scene.relations()) == [(0, "left of", 1), (1, "right of", 0)]
    assert scene.objects[0].position == "left" and scene.objects[1].position == "right"
    assert ("relation", "red", "circle", "left of", "blue", "star") in scene.facts()


# Render ------------------------------------------------------------------------------------------


def test_render_draws_the_graph() -> None:
    scene = hand_scene()
    image = render_scene(scene, 64)
    assert image.mode == "RGB" and image.size == (64, 64)
    pixels = np.asarray(image).astype(int)
    assert np.abs(pixels[2, 40] - BACKGROUNDS["black"]).max() < 5  # empty top middle
    assert np.abs(pixels[14, 14] - COLOURS["red"]).max() < 10  # circle centre (0.22 * 64)
    assert np.abs(pixels[54, 54] - COLOURS["blue"]).max() < 10  # square centre

    def area(colour: str) -> int:
        return int((np.abs(pixels - COLOURS[colour]).max(axis=-1) < 40).sum())

    ratio = area("red") / area("blue")  # large circle vs small square: about 2x the diameter
    assert 2.5 < ratio < 6.0


def test_render_jitter_is_seeded() -> None:
    scene = hand_scene()
    a = np.asarray(render_scene(scene, 64, seed=1))
    assert np.array_equal(a, np.asarray(render_scene(scene, 64, seed=1)))
    assert not np.array_equal(a, np.asarray(render_scene(scene, 64, seed=2)))


# Captions ----------------------------------------------------------------------------------------


def test_captions_mention_every_object(test_scenes: list[Scene]) -> None:
    rng = np.random.default_rng(0)
    relation_words = tuple(RELATION_PHRASES.values())
    for scene in test_scenes[:100]:
        for template_set in ("train", "test"):
            for caption in all_captions(scene, template_set, 6, rng):
                for o in scene.objects:
                    assert f"{o.size} {o.colour} {o.shape}" in caption, caption
                    placed = POSITION_PHRASES[o.position] in caption or any(w in caption for w in relation_words)
                    assert placed, caption


def test_test_only_templates_never_in_training_captions(test_scenes: list[Scene]) -> None:
    assert len(templates("train")) >= 5 and len(templates("test")) >= 3
    assert not {t.name for t in templates("train")} & {t.name for t in templates("test")}
    rng = np.random.default_rng(1)
    for scene in test_scenes[:100]:
        for caption in all_captions(scene, "train", 6, rng):
            assert not any(marker in caption for marker in TEST_TEMPLATE_MARKERS), caption
        for caption in all_captions(scene, "test", 3, rng):
            assert any(marker in caption for marker in TEST_TEMPLATE_MARKERS), caption


def test_all_captions_use_distinct_templates() -> None:
    scene = hand_scene()
    captions = all_captions(scene, "train", 5, np.random.default_rng(0))
    assert len(set(captions)) == 5
    assert caption_scene(scene, np.random.default_rng(5)) == caption_scene(scene, np.random.default_rng(5))


# Queries -----------------------------------------------------------------------------------------


def test_partial_queries_relevant_ids_are_exactly_the_matches(test_scenes: list[Scene]) -> None:
    queries = make_partial_queries(test_scenes[:100], test_scenes, np.random.default_rng(0), n=100)
    assert len(queries) == 100
    kinds = set()
    for q in queries:
        kinds.add(tuple(sorted(q.attributes)))
        expected = sorted(
            s.id
            for s in test_scenes
            if any(all(getattr(o, k) == v for k, v in q.attributes.items()) for o in s.objects)
        )
        assert q.relevant_ids == expected
        assert q.target_id in q.relevant_ids
        assert q.text == partial_text(q.attributes)
    assert len(kinds) >= 6
    assert partial_text({"colour": "red"}) == "something red"
    assert partial_text({"shape": "star"}) == "a star"
    assert partial_text({"size": "large"}) == "a large object"
    assert partial_text({"position": "top left"}) == "an object in the top left"
    assert partial_text({"colour": "green", "shape": "heart"}) == "a green heart"


def test_binding_swap_negatives_describe_another_scene(test_scenes: list[Scene]) -> None:
    by_id = {s.id: s for s in test_scenes}
    queries = make_binding_swap_queries(test_scenes, np.random.default_rng(0), n=80)
    assert len(queries) == 80
    assert {q.swapped for q in queries} == {"colour", "size"}
    for q in queries:
        scene = by_id[q.image_id]
        assert q.negative != q.positive
        assert sorted(q.negative.split()) == sorted(q.positive.split())  # same words, rebound
        assert satisfied(scene, q.positive) == [True, True]
        neg = satisfied(scene, q.negative)
        assert neg == [False, False], (q, scene)


def test_relation_swap_negatives_are_false(test_scenes: list[Scene]) -> None:
    by_id = {s.id: s for s in test_scenes}
    phrases = {v: k for k, v in RELATION_PHRASES.items()}
    pattern = re.compile(r"^an? (\w+) (\w+) (" + "|".join(phrases) + r") an? (\w+) (\w+)$")
    queries = make_relation_swap_queries(test_scenes, np.random.default_rng(0), n=50)
    assert len(queries) == 50
    for q in queries:
        scene = by_id[q.image_id]
        index = {(o.colour, o.shape): i for i, o in enumerate(scene.objects)}
        relations = set(scene.relations())
        for text, truth in ((q.positive, True), (q.negative, False)):
            c1, s1, phrase, c2, s2 = pattern.match(text).groups()
            fact = (index[(c1, s1)], phrases[phrase], index[(c2, s2)])
            assert (fact in relations) is truth, (text, scene)


def check_edit(reference: Scene, edited: Scene, edit: SceneEdit) -> None:
    before, after = reference.objects, edited.objects
    if edit.kind == "add":
        assert after[:-1] == before and after[-1] == edit.added
        return
    if edit.kind == "remove":
        assert after == before[: edit.object_index] + before[edit.object_index + 1 :]
        return
    i = edit.object_index
    assert len(after) == len(before)
    assert [o for k, o in enumerate(after) if k != i] == [o for k, o in enumerate(before) if k != i]
    old, new = before[i], after[i]
    if edit.kind == "recolour":
        assert new == replace(old, colour=edit.value) and old.colour != edit.value
    elif edit.kind == "resize":
        assert new == replace(old, size=edit.value) and old.size != edit.value
    else:
        assert edit.kind == "move"
        assert (new.shape, new.colour, new.size) == (old.shape, old.colour, old.size)
        assert new.position == edit.value != old.position


def test_composed_targets_differ_by_exactly_the_edit(test_scenes: list[Scene]) -> None:
    forbid, require = split_constraints(CONFIG, "test")
    queries, edited = make_composed_queries(
        test_scenes,
        np.random.default_rng(0),
        CONFIG,
        n=60,
        forbid_pairs=forbid,
        prefix="test",
        edited_prefix="test-edit",
    )
    assert len(queries) == len(edited) == 60
    collection = {s.id: s for s in test_scenes + edited}
    assert len(collection) == len(test_scenes) + 60
    kinds = set()
    for q in queries:
        target, reference = collection[q.target_id], collection[q.reference_id]
        edit = SceneEdit.from_dict(q.edit)
        kinds.add(edit.kind)
        assert target.metadata["edited_from"] == reference.id
        assert q.instruction == edit.instruction
        assert scene_problems(target) == []
        assert not target.pairs() & forbid
        check_edit(reference, target, edit)
    assert kinds == {"recolour", "resize", "move", "remove", "add"}


def test_composed_keeps_compositional_constraint() -> None:
    forbid, require = split_constraints(CONFIG, "compositional")
    scenes = generate_scenes(60, split_rng(CONFIG, "compositional"), CONFIG, require_pairs=require)
    _, edited = make_composed_queries(scenes, np.random.default_rng(0), CONFIG, n=40, require_pairs=require)
    assert edited and all(s.pairs() & require for s in edited)


def test_query_json_round_trip(test_scenes: list[Scene]) -> None:
    rng = np.random.default_rng(0)
    queries = [
        *make_partial_queries(test_scenes[:3], test_scenes, rng),
        *make_binding_swap_queries(test_scenes, rng, n=2),
        *make_relation_swap_queries(test_scenes, rng, n=2),
        *make_composed_queries(test_scenes, rng, CONFIG, n=2)[0],
    ]
    for q in queries:
        data = json.loads(json.dumps(query_to_dict(q)))
        assert data["type"] == q.type
        assert query_from_dict(data) == q
    with pytest.raises(ValueError, match="type"):
        query_from_dict({"type": "nonsense", "id": "x"})


# Simulated user ----------------------------------------------------------------------------------


def test_simulated_user_answers() -> None:
    user = SimulatedUser(hand_scene())
    assert user.answer("What colour is the large object?") == "red"
    assert user.answer("what color is the circle") == "red"
    assert user.answer("what shape is the red object?") == "circle"
    assert user.answer("how many objects are there?") == "three"
    assert user.answer("how many small objects are there?") == "two"
    assert user.answer("is there a blue square?") == "yes"
    assert user.answer("is there a blue star?") == "no"
    assert user.answer("where is the star?") == "in the centre"
    assert user.answer("is the circle red?") == "yes"
    assert user.answer("is the square in the top left?") == "no"
    assert user.answer("is the small object blue?").startswith("there are several: ")
    assert user.answer("what is the background colour?") == "black"
    assert user.answer("what colour is the background?") == "black"
    assert user.answer("what colour is the object in the bottom right?") == "blue"
    several = user.answer("what colour is the small object?")
    assert several.startswith("there are several: ") and "blue square" in several and "green star" in several
    assert user.answer("what colour is the heart?") == "there is no heart"
    assert user.answer("what colour is the dragon?") == UNKNOWN
    assert user.answer("why is the sky blue?") == UNKNOWN
    assert user.describe() == "a picture with a large red circle"


def test_simulated_user_feedback() -> None:
    target = hand_scene("target")
    near = target.with_objects(target.objects, id="near")  # same picture, another id
    near = replace(near, background="brown")
    far = Scene(id="far", background="dark grey", objects=[obj("heart", "pink", "small", 0.5, 0.85)])
    user = SimulatedUser(target)
    assert user.feedback([far, near, target]) == [("far", False), ("near", True), ("target", True)]
    assert user.feedback([far, near, target], max_relevant=1) == [("far", False), ("near", False), ("target", True)]
    assert user.similarity(far) < 0.1 < user.threshold < user.similarity(near)


# Metrics -----------------------------------------------------------------------------------------


def test_metrics_on_a_hand_made_ranking() -> None:
    scenes = {
        "A": Scene("A", "black", [obj("circle", "red", "small", 0.5, 0.5)]),
        "B": Scene("B", "black", [obj("square", "red", "small", 0.5, 0.5)]),
        "C": Scene("C", "black", [obj("circle", "blue", "large", 0.5, 0.5)]),
        "D": Scene("D", "black", [obj("star", "green", "small", 0.5, 0.5)]),
    }
    queries = [
        PartialQuery("q1", "something red", {"colour": "red"}, "A", ["A", "B"]),
        PartialQuery("q2", "a circle", {"shape": "circle"}, "C", ["A", "C"]),
        PartialQuery("q3", "a small red circle", {"size": "small", "colour": "red", "shape": "circle"}, "A", ["A"]),
    ]
    ranked = [["B", "C", "A", "D"], ["C", "A", "B", "D"], ["D", "B"]]  # q3: truncated, target missing
    report = partial_query_report(queries, ranked, scenes, k=2)
    assert report["n_queries"] == 3
    assert report["median_rank"] == 3.0  # ranks 3, 1, 4 (missing -> collection size)
    assert report["mean_rank"] == pytest.approx(8 / 3)
    assert report["target_at_k"] == pytest.approx(1 / 3)
    attrs = report["attributes"]
    # colour: q1 top2 {B red, C blue} -> 0.5; q3 {D green, B red} -> 0.5; chance red 2/4.
    assert attrs["colour"] == {"share_at_k": 0.5, "chance": 0.5, "n_queries": 2}
    # shape: q2 {C, A} both circles -> 1.0; q3 {D, B} -> 0.0; chance 0.5.
    assert attrs["shape"] == {"share_at_k": 0.5, "chance": 0.5, "n_queries": 2}
    # size: q3 small in {D, B} -> 1.0; chance small 3/4.
    assert attrs["size"] == {"share_at_k": 1.0, "chance": 0.75, "n_queries": 1}
    assert "position" not in attrs
    # all: q1 0.5 (chance .5), q2 1.0 (.5), q3 0.0 (.25)
    assert attrs["all"]["share_at_k"] == pytest.approx(0.5)
    assert attrs["all"]["chance"] == pytest.approx((0.5 + 0.5 + 0.25) / 3)

    assert swap_accuracy([1, 2, 3, 4], [0, 3, 3, 1]) == 0.5  # a tie is not a win
    assert recall_at_k(ranked, ["A", "C", "A"], ks=(1, 3)) == {1: pytest.approx(1 / 3), 3: pytest.approx(2 / 3)}
    assert recall_at_k([["B", "C"]], [{"C", "D"}], ks=(1, 2)) == {1: 0.0, 2: 1.0}
    assert target_ranks(ranked, ["A", "C", "A"], 4).tolist() == [3, 1, 4]
    with pytest.raises(ValueError):
        partial_query_report(queries, ranked[:2], scenes)


# Dataset folder and CLI --------------------------------------------------------------------------

SMALL = {"n_train": 8, "n_val": 4, "n_test": 6, "n_compositional": 6, "n_composed_queries": 3}


def test_dataset_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "scenes"
    config = SceneGeneratorConfig(seed=3)
    info = write_scene_dataset(root, config, **SMALL)
    assert is_scene_dataset(root)
    assert [p.name for p in tmp_path.iterdir()] == ["scenes"]  # no temp folder left behind
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [
            "scenes.json",
            "dataset_scenes.json",
            "images",
            "queries",
            "train.jsonl",
            "val.jsonl",
            "test.jsonl",
            "compositional.jsonl",
        ]
    )
    data = load_scene_dataset(root)
    assert data.info == json.loads((root / "scenes.json").read_text())
    assert data.info["held_out_pairs"] == [list(p) for p in held_out_pairs(config)]
    assert SceneGeneratorConfig.from_dict(data.info["generator"]) == config
    assert {split: len(s) for split, s in data.scenes.items()} == {"train": 8, "val": 4, "test": 9, "compositional": 9}
    assert info["splits"]["test"]["edited_scenes"] == 3

    held = {tuple(p) for p in info["held_out_pairs"]}
    for split, scenes in data.scenes.items():
        for scene in scenes.values():
            assert bool(scene.pairs() & held) is (split == "compositional")

    for split in ("train", "val", "test", "compositional"):
        lines = [json.loads(line) for line in (root / f"{split}.jsonl").read_text().splitlines()]
        for record in lines:
            assert set(record) == {"id", "path", "caption", "split", "scene"}
            path = root / record["path"]
            with Image.open(path) as image:
                assert image.format == "PNG" and image.size == (64, 64) and image.mode == "RGB"
            test_template = [any(m in c for m in TEST_TEMPLATE_MARKERS) for c in record["caption"]]
            if split in ("train", "val"):
                assert len(record["caption"]) == 5 and not any(test_template)
            else:
                assert len(record["caption"]) == 3 and all(test_template)

    for split in ("test", "compositional"):
        queries = data.queries[split]
        assert {q.type for q in queries} >= {"full", "partial", "composed"}
        collection = data.scenes[split]
        for q in queries:
            if isinstance(q, PartialQuery):
                assert set(q.relevant_ids) <= set(collection) and q.target_id in q.relevant_ids
            if isinstance(q, ComposedQuery):
                assert collection[q.target_id].metadata["edited_from"] == q.reference_id
            if isinstance(q, (BindingSwapQuery, RelationSwapQuery)):
                assert q.image_id in collection

    karpathy = json.loads((root / "dataset_scenes.json").read_text())
    assert karpathy["dataset"] == "scenes"
    assert len(karpathy["images"]) == sum(len(s) for s in data.scenes.values())
    sentids = []
    for imgid, image in enumerate(karpathy["images"]):
        assert {"filename", "filepath", "split", "imgid", "sentids", "sentences"} <= set(image)
        assert image["imgid"] == imgid
        assert (root / image["filepath"] / image["filename"]).is_file()
        for sentence in image["sentences"]:
            assert set(sentence) == {"raw", "tokens", "imgid", "sentid"}
            assert sentence["imgid"] == imgid and sentence["tokens"] and " ".join(sentence["tokens"]) != ""
        assert image["sentids"] == [s["sentid"] for s in image["sentences"]]
        sentids += image["sentids"]
    assert sentids == list(range(len(sentids)))


def test_dataset_is_deterministic_and_refuses_to_overwrite(tmp_path: Path) -> None:
    config = SceneGeneratorConfig(seed=5)
    write_scene_dataset(tmp_path / "a", config, **SMALL)
    write_scene_dataset(tmp_path / "b", config, workers=1, **SMALL)  # thread count changes nothing
    for name in (
        "scenes.json",
        "train.jsonl",
        "test.jsonl",
        "queries/compositional.jsonl",
        "images/val/val-000001.png",
    ):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    with pytest.raises(FileExistsError):
        write_scene_dataset(tmp_path / "a", config, **SMALL)
    write_scene_dataset(tmp_path / "a", SceneGeneratorConfig(seed=6), overwrite=True, **SMALL)
    assert load_scene_dataset(tmp_path / "a").info["seed"] == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_a_crash_leaves_no_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = dataset_module.render_scene

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 5:
            raise RuntimeError("disk on fire")
        return real(*args, **kwargs)

    monkeypatch.setattr(dataset_module, "render_scene", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_scene_dataset(tmp_path / "ds", SceneGeneratorConfig(), **SMALL)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError, match="write_scene_dataset"):
        load_scene_dataset(tmp_path / "ds")


def test_dataset_without_held_out_pairs(tmp_path: Path) -> None:
    config = SceneGeneratorConfig(held_out_pairs=0)
    with pytest.raises(ValueError, match="held_out_pairs"):
        write_scene_dataset(tmp_path / "x", config, **SMALL)
    info = write_scene_dataset(tmp_path / "y", config, **{**SMALL, "n_compositional": 0})
    assert info["held_out_pairs"] == [] and info["splits"]["compositional"]["images"] == 0


def test_query_counts_follow_query_config(tmp_path: Path) -> None:
    info = write_scene_dataset(
        tmp_path / "ds",
        SceneGeneratorConfig(seed=1),
        n_train=0,
        n_val=0,
        n_test=20,
        n_compositional=0,
        n_composed_queries=2,
        query_config=QuerySetConfig(n_full=4, n_partial=7, n_binding_swap=3, n_relation_swap=2),
    )
    assert info["splits"]["test"]["query_counts"] == {
        "full": 4,
        "partial": 7,
        "binding_swap": 3,
        "relation_swap": 2,
        "composed": 2,
    }


def test_cli_generate(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from viewfinder.pipeline.cli.scenes import app

    runner = CliRunner()
    out = tmp_path / "cli"
    args = ["generate", "--out", str(out), "--n-train", "6", "--n-val", "2", "--n-test", "4", "--n-compositional", "4"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert is_scene_dataset(out)
    again = runner.invoke(app, args)
    assert again.exit_code != 0 and "--overwrite" in again.output
    shown = runner.invoke(app, ["info", str(out)])
    assert shown.exit_code == 0 and "compositional" in shown.output


def test_unreadable_benchmark_folders_are_scene_data_errors(tmp_path: Path) -> None:
    from viewfinder.pipeline.scenes.dataset import FORMAT, INFO_FILE, SceneDataError

    with pytest.raises(FileNotFoundError, match="write_scene_dataset"):
        load_scene_dataset(tmp_path)
    info = tmp_path / INFO_FILE
    for content, fragment in [
        ("{not json", "not valid JSON"),
        ("[]", "not a scene benchmark"),
        (json.dumps({"format": "other"}), "not a scene benchmark"),
        (json.dumps({"format": FORMAT, "format_version": -1}), "regenerate"),
    ]:
        info.write_text(content)
        with pytest.raises(SceneDataError, match=fragment):
            load_scene_dataset(tmp_path)


def test_reworded_edits_and_answers_keep_their_content(test_scenes: list[Scene]) -> None:
    from viewfinder.pipeline.scenes.edits import reworded_instruction
    from viewfinder.pipeline.scenes.simuser import UNKNOWN, reworded_answer

    rng = np.random.default_rng(0)
    config = SceneGeneratorConfig()
    seen = set()
    for scene in test_scenes[:40]:
        found = sample_edit(scene, rng, config, new_id="e")
        if found is None:
            continue
        edit, _ = found
        text = reworded_instruction(edit, scene, rng)
        seen.add(edit.kind)
        assert text and text != edit.instruction
        if edit.value:  # the new colour, size or place is still said
            assert edit.value in text
        if edit.added is not None:
            assert edit.added.shape in text and edit.added.colour in text
    assert seen == set(EDIT_KINDS)
    assert reworded_answer("is there a red star?", "yes", rng) != "yes"
    assert "blue" in reworded_answer("what colour is the star?", "blue", rng)
    for kept in (UNKNOWN, "there are several: a red star and a blue star", "there is no red star"):
        assert reworded_answer("what colour is the star?", kept, rng) == kept
