"""Training data: twins, partial descriptions and which texts describe which images, the
multi-positive loss, batch assembly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from open_clip.loss import ClipLoss

from viewfinder.pipeline.scenes.generator import (
    SceneGeneratorConfig,
    generate_scenes,
    held_out_pairs,
    split_constraints,
    split_rng,
)
from viewfinder.pipeline.scenes.graph import Scene, SceneObject, scene_problems
from viewfinder.pipeline.scenes.queries import partial_text
from viewfinder.pipeline.scenes.twins import TWIN_KINDS, sample_twin
from viewfinder.pipeline.train.data import (
    PARTIAL_FORMS,
    WILDCARD,
    TrainSplit,
    batch_texts,
    describes,
    object_codes,
    partial_description,
    partial_descriptions,
    sample_batch,
)
from viewfinder.pipeline.train.losses import MultiPositiveClipLoss

CONFIG = SceneGeneratorConfig(seed=3)


@pytest.fixture(scope="module")
def train_scenes() -> list[Scene]:
    forbid, _ = split_constraints(CONFIG, "train")
    return generate_scenes(200, split_rng(CONFIG, "train"), CONFIG, id_prefix="train", forbid_pairs=forbid)


def _obj(shape: str, colour: str, size: str, x: float, y: float) -> SceneObject:
    return SceneObject(shape=shape, colour=colour, size=size, x=x, y=y)


def _changed(scene: Scene, twin: Scene) -> list[tuple[int, set[str]]]:
    """(object index, attributes that differ) for every object that changed."""
    out = []
    for i, (a, b) in enumerate(zip(scene.objects, twin.objects, strict=True)):
        diff = {k for k in ("shape", "colour", "size", "position") if getattr(a, k) != getattr(b, k)}
        if diff:
            out.append((i, diff))
    return out


# Twins -----------------------------------------------------------------------------------------


def test_twins_differ_in_exactly_one_fact(train_scenes: list[Scene]) -> None:
    forbid = set(held_out_pairs(CONFIG))
    rng = np.random.default_rng(0)
    seen = set()
    for scene in train_scenes:
        twin = sample_twin(scene, rng, CONFIG, new_id=f"{scene.id}-twin", forbid_pairs=forbid)
        assert twin is not None
        kind = twin.metadata["twin"]
        seen.add(kind)
        assert twin.id == f"{scene.id}-twin" and twin.metadata["twin_of"] == scene.id
        assert scene_problems(twin) == [] and not twin.pairs() & forbid
        assert twin.background == scene.background
        changed = _changed(scene, twin)
        if kind.startswith("swap_"):
            fields = {"swap_colours": ("colour",), "swap_sizes": ("size",), "swap_places": ("x", "y")}[kind]
            (i, _), (j, _) = changed
            a, b = twin.objects[i], twin.objects[j]
            for f in fields:  # two objects exchanged the attribute; nothing else changed
                assert (getattr(a, f), getattr(b, f)) == (getattr(scene.objects[j], f), getattr(scene.objects[i], f))
            assert len(changed) == 2 and (a.shape, b.shape) == (scene.objects[i].shape, scene.objects[j].shape)
        else:
            expected = {"reshape": "shape", "recolour": "colour", "resize": "size", "move": "position"}[kind]
            assert len(changed) == 1 and expected in changed[0][1]
            assert changed[0][1] <= {expected, "position"}  # a resized object may shift its centre
        assert twin.facts() != scene.facts()
    assert seen == set(TWIN_KINDS)


def test_twin_kinds_are_validated(train_scenes: list[Scene]) -> None:
    with pytest.raises(ValueError, match="kinds"):
        sample_twin(train_scenes[0], np.random.default_rng(0), CONFIG, new_id="x", kinds=["teleport"])  # type: ignore[list-item]


def test_single_object_scene_has_no_swap_twin() -> None:
    scene = Scene(id="s", background="black", objects=[_obj("circle", "red", "large", 0.25, 0.25)])
    for kind in ("swap_colours", "swap_sizes", "swap_places"):
        assert sample_twin(scene, np.random.default_rng(0), CONFIG, new_id="t", kinds=[kind]) is None


def test_swapped_places_reverse_the_relation() -> None:
    a, b = _obj("circle", "red", "small", 0.2, 0.5), _obj("square", "blue", "small", 0.8, 0.5)
    scene = Scene(id="s", background="black", objects=[a, b])
    twin = sample_twin(scene, np.random.default_rng(0), CONFIG, new_id="t", kinds=["swap_places"])
    assert twin is not None
    assert (twin.objects[0].x, twin.objects[1].x) == (0.8, 0.2)
    assert twin.relations() != scene.relations()


# Partial descriptions and matches --------------------------------------------------------------


def test_partial_descriptions_use_other_words_than_the_benchmark_queries() -> None:
    obj = _obj("star", "red", "small", 0.2, 0.2)
    text, codes = partial_description(obj, ("colour", "position"), "thing")
    assert text == "a red thing in the top left"
    assert codes == [WILDCARD, 0, WILDCARD, 0]  # red is colour 0, top left is cell 0
    assert partial_text({"colour": "red", "position": "top left"}) == "something red in the top left"
    for form in PARTIAL_FORMS:
        text, _ = partial_description(obj, form)
        assert "object" not in text and "something" not in text


def test_describes_marks_every_image_a_partial_text_fits() -> None:
    scenes = [
        Scene("a", "black", [_obj("star", "red", "small", 0.2, 0.2), _obj("circle", "blue", "large", 0.7, 0.7)]),
        Scene("b", "black", [_obj("star", "green", "small", 0.8, 0.2)]),
        Scene("c", "black", [_obj("square", "red", "large", 0.5, 0.5)]),
    ]
    objects = torch.tensor([object_codes(s) for s in scenes])
    texts = [
        partial_description(scenes[0].objects[0], ("shape",)),  # "a star": a and b
        partial_description(scenes[1].objects[0], ("colour", "shape")),  # "a green star": b only
        partial_description(scenes[2].objects[0], ("colour",)),  # "a red shape": a and c
    ]
    codes = torch.tensor([c for _, c in texts])
    got = describes(codes, torch.tensor([True, True, True]), objects)
    assert got.tolist() == [[True, True, False], [False, True, False], [True, False, True]]
    # Full captions describe their own image only.
    assert describes(codes, torch.tensor([False, False, False]), objects).tolist() == torch.eye(3, dtype=bool).tolist()


def _split(scenes: list[Scene], with_twins: bool) -> TrainSplit:
    rng = np.random.default_rng(0)
    all_scenes = list(scenes)
    twin_rows = torch.full((len(scenes),), -1, dtype=torch.long)
    if with_twins:
        for row, scene in enumerate(scenes):
            twin = sample_twin(scene, rng, CONFIG, new_id=f"{scene.id}-twin")
            if twin is not None:
                twin_rows[row] = len(all_scenes)
                all_scenes.append(twin)
    n, p = len(all_scenes), 3
    partial = [partial_descriptions(s, rng, p) for s in all_scenes]
    return TrainSplit(
        ids=[s.id for s in all_scenes],
        pixels=torch.zeros(n, 3, 4, 4),
        tokens=torch.arange(n)[:, None, None].expand(n, 2, 5).clone(),
        n_captions=torch.full((n,), 2),
        partial_tokens=torch.full((n, p, 5), -1),
        partial_codes=torch.tensor([[c for _, c in row] for row in partial]),
        objects=torch.tensor([object_codes(s) for s in all_scenes]),
        twin=torch.cat([twin_rows, torch.full((n - len(scenes),), -1, dtype=torch.long)]),
        n_base=len(scenes),
    )


def test_batches_pair_scenes_with_their_twins(train_scenes: list[Scene]) -> None:
    split = _split(train_scenes[:100], with_twins=True)
    rng = np.random.default_rng(1)
    for _ in range(20):
        idx = sample_batch(split, 32, 0.5, rng)
        assert len(idx) == 32 and len(set(idx.tolist())) == 32
        bases, twins, rest = idx[:8], idx[8:16], idx[16:]
        assert torch.equal(split.twin[bases], twins)
        assert bool((rest < split.n_base).all()) and bool((bases < split.n_base).all())
    no_twins = sample_batch(split, 32, 0.0, rng)
    assert bool((no_twins < split.n_base).all())
    with pytest.raises(ValueError, match="batch_size"):
        sample_batch(split, 500, 0.0, rng)


def test_batch_texts_pick_captions_or_partials(train_scenes: list[Scene]) -> None:
    split = _split(train_scenes[:50], with_twins=False)
    idx = sample_batch(split, 16, 0.0, np.random.default_rng(0))
    texts, positives = batch_texts(split, idx, 0.0, np.random.default_rng(0))
    assert torch.equal(texts[:, 0], idx)  # caption tokens carry their row
    assert torch.equal(positives, torch.eye(16, dtype=torch.bool))
    texts, positives = batch_texts(split, idx, 1.0, np.random.default_rng(0))
    assert bool((texts == -1).all())  # all partial
    assert bool(positives.diagonal().all()) and int(positives.sum()) > 16  # "a star" fits several


# Loss --------------------------------------------------------------------------------------------


def test_multi_positive_loss_is_clip_loss_with_one_positive() -> None:
    torch.manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    scale = torch.tensor(10.0)
    expected = ClipLoss()(img, txt, scale)
    loss = MultiPositiveClipLoss()
    assert torch.allclose(loss(img, txt, scale, torch.eye(8, dtype=torch.bool)), expected)
    assert torch.allclose(loss(img, txt, scale), expected)


def test_multi_positive_loss_does_not_push_apart_matching_images() -> None:
    """Text 0 describes images 0 and 1: ranking them equally beats preferring either one."""
    positives = torch.eye(3, dtype=torch.bool)
    positives[0, 1] = True
    txt = torch.eye(3)
    img_equal = torch.nn.functional.normalize(torch.tensor([[1.0, 0, 0], [0.7, 0.7, 0], [0, 0, 1]]), dim=-1)
    img_apart = torch.nn.functional.normalize(torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1]]), dim=-1)
    loss = MultiPositiveClipLoss()
    scale = torch.tensor(10.0)
    assert loss(img_equal, txt, scale, positives) < loss(img_apart, txt, scale, positives)
    assert ClipLoss()(img_equal, txt, scale) > ClipLoss()(img_apart, txt, scale)  # plain loss prefers apart


def test_multi_positive_loss_checks_its_input() -> None:
    feats = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    loss = MultiPositiveClipLoss()
    with pytest.raises(ValueError, match="shape"):
        loss(feats, feats, torch.tensor(1.0), torch.ones(3, 4, dtype=torch.bool))
    empty = torch.eye(4, dtype=torch.bool)
    empty[2, 2] = False
    with pytest.raises(ValueError, match="at least one positive"):
        loss(feats, feats, torch.tensor(1.0), empty)


def test_fillers_avoid_every_benchmark_word_and_keep_the_caption() -> None:
    import open_clip

    from viewfinder.pipeline.train.fillers import benchmark_words, filler_token_ids, insert_fillers

    words = benchmark_words(n_scenes=60)
    assert {"backdrop", "contains", "sits", "we", "red", "circle", "left", "object", "something"} <= words
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    ids = filler_token_ids(tokenizer, words)
    filler_words = {tokenizer.decoder[int(i)][:-4] for i in ids}
    assert not filler_words & words and len(filler_words) > 1000

    tokens = tokenizer(["a small red circle on the left", "a blue star"])
    eot = tokenizer.eot_token_id
    out = insert_fillers(tokens, ids, 1.0, 3, eot, np.random.default_rng(0))
    assert out.shape == tokens.shape and not torch.equal(out, tokens)
    for before, after in zip(tokens.tolist(), out.tolist(), strict=True):
        kept = [t for t in after if t not in set(ids.tolist()) and t != 0]
        assert kept == [t for t in before if t != 0]  # removing the fillers gives back the caption
        added = len(after) - after.count(0) - (len(before) - before.count(0))
        assert 1 <= added <= 3 and after.index(eot) == before.index(eot) + added

    full = tokenizer(["red " * 100])  # already at full length: left alone
    assert torch.equal(insert_fillers(full, ids, 1.0, 3, eot, np.random.default_rng(0)), full)
    assert torch.equal(insert_fillers(tokens, ids, 0.0, 3, eot, np.random.default_rng(0)), tokens)
