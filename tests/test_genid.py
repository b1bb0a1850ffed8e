"""Generative identifiers: schemes, the id map in the index store, the constrained-decoding trie."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import write_images
from hypothesis import given, settings
from hypothesis import strategies as st

from viewfinder.pipeline import build_index
from viewfinder.pipeline.genid.idmap import load_id_map, sync_id_map
from viewfinder.pipeline.genid.schemes import SCHEMES, assign, structured_prefix
from viewfinder.pipeline.genid.trie import IdTrie
from viewfinder.pipeline.store.index_store import IndexStore

END = 0


def _tokens(identifier: str) -> list[int]:
    return [ord(c) for c in identifier]  # one token per character (never 0, the end token)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.text(alphabet="0123-ab", min_size=1, max_size=6), min_size=1, max_size=30, unique=True),
    st.integers(0, 2**32 - 1),
)
def test_the_trie_admits_every_identifier_and_nothing_else(identifiers, seed):
    trie = IdTrie([_tokens(i) for i in identifiers], END)
    assert all(trie.contains(_tokens(i)) for i in identifiers)
    rng = np.random.default_rng(seed)
    for _ in range(20):  # a decoder that picks any allowed token always ends on an identifier
        out: list[int] = []
        while not out or out[-1] != END:
            choices = trie.allowed(out)
            assert choices, f"a dead end after {out}"
            out.append(int(rng.choice(choices)))
        assert "".join(map(chr, out[:-1])) in identifiers
        assert trie.allowed(out) == [END] and trie.allowed([*out, END]) == [END]  # finished stays finished
    for identifier in identifiers:  # a prefix is not an identifier unless it is one
        for cut in range(1, len(identifier)):
            assert trie.contains(_tokens(identifier[:cut])) == (identifier[:cut] in identifiers)
    assert trie.allowed([ord("z")]) == []


def test_schemes_name_items_uniquely_and_incrementally():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(230, 8)).astype(np.float32)
    texts = [f"a {c} circle on the left" for c in ("red", "blue")] * 115
    for scheme in SCHEMES:
        state: dict = {}
        first = assign(scheme, state, range(200), vectors[:200], texts[:200], branching=4, leaf_size=5)
        more = assign(scheme, state, range(200, 230), vectors[200:], texts[200:], branching=4, leaf_size=5)
        names = [*first.values(), *more.values()]
        assert len(set(names)) == 230, scheme
    semantic: dict = {}
    ids = assign("semantic", semantic, range(200), vectors[:200], branching=4, leaf_size=5)
    assert max(name.count("-") for name in ids.values()) >= 2  # a hierarchy, not a flat list
    close = assign("semantic", semantic, [500], vectors[:1] + 1e-4)[500]
    assert close.rsplit("-", 1)[0] == ids[0].rsplit("-", 1)[0]  # a near copy lands in the same leaf
    assert structured_prefix("a picture showing a large blue circle on the right") == "large-blue-circle"
    with pytest.raises(ValueError, match="one caption per item"):
        assign("structured", {}, [1], None, None)
    with pytest.raises(ValueError, match="expected one of"):
        assign("words", {}, [1])


def test_the_id_map_survives_adding_and_removing_items_and_never_reuses_an_id(tmp_path):
    images = tmp_path / "images"
    paths = write_images(images, 6)
    build_index(images, tmp_path / "index", preset="tiny", progress=False)
    for scheme in ("numeric", "semantic", "structured"):
        first = sync_id_map(tmp_path / "index", scheme, describe=lambda rows: [r.key for r in rows])
        assert len(first.added) == 6 and not first.retired
    before = {s: load_id_map(IndexStore.open(tmp_path / "index"), s) for s in ("numeric", "semantic")}
    paths[0].unlink()
    write_images(images, 2, seed=9, prefix="new")
    build_index(images, tmp_path / "index", progress=False)
    for scheme, old in before.items():
        report = sync_id_map(tmp_path / "index", scheme)
        now = report.id_map
        assert len(report.added) == 2 and len(report.retired) == 1 and len(now.ids) == 7
        kept = set(old.ids) - set(report.retired)
        assert all(now.ids[i] == old.ids[i] for i in kept)  # old items keep their names
        assert not set(now.ids.values()) & set(now.retired.values())  # a removed item's name is not reused
        assert load_id_map(IndexStore.open(tmp_path / "index"), scheme).ids == now.ids  # it is on disk
        again = sync_id_map(tmp_path / "index", scheme)
        assert not again.added and not again.retired and again.id_map.fingerprint() == now.fingerprint()


def _text_index(folder, names: list[str], seed: int = 0):
    import json

    images = write_images(folder / "images", len(names), seed=seed)
    manifest = folder / "items.jsonl"
    lines = [json.dumps({"path": str(p), "caption": n}) + "\n" for p, n in zip(images, names, strict=True)]
    manifest.write_text("".join(lines))
    build_index(manifest, folder / "index", preset="tiny", progress=False)
    return folder / "index"


def _genid_config(tmp_path, scheme: str, steps: int):
    from helpers import save_char_chat_model

    from viewfinder.pipeline.train.genid import GenidSettings, GenidTrainConfig
    from viewfinder.pipeline.train.user_data import LoraConfig

    lm = save_char_chat_model(tmp_path / "lm")
    (tmp_path / "lm.yaml").write_text(f"family: transformers_chat\nweights: local-dir\npath: {lm}\n")
    settings = GenidSettings(queries_per_item=3, steps=steps, continue_steps=steps, batch_size=8, lr=2e-2,
                             warmup_steps=5, checkpoint_every=50, log_every=10, max_length=96)  # fmt: skip
    return GenidTrainConfig(name="tiny-genid", model=str(tmp_path / "lm.yaml"), scheme=scheme, captioner=None,
                            lora=LoraConfig(r=8, alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                                           "gate_proj", "up_proj", "down_proj"]),
                            train=settings, out=str(tmp_path / f"run-{scheme}"))  # fmt: skip


NAMES = ["red star", "blue circle", "green square", "pink heart"]


@pytest.mark.parametrize("scheme", ["numeric", "atomic"])
def test_a_tiny_lm_memorises_a_handful_of_items_and_decodes_only_their_ids(tmp_path, scheme):
    from viewfinder.pipeline.genid.model import GenidIndexError, IdentifierModel, check_index
    from viewfinder.pipeline.train.genid import train_genid

    index = _text_index(tmp_path, NAMES)
    config = _genid_config(tmp_path, scheme, steps=60)
    result = train_genid(config, index, progress=False)
    model = IdentifierModel.load(result.adapter_dir)
    with IndexStore.open(index) as store:
        assert check_index(model.info, store).new == []
        key_of = {row.id: row.text for row in store.iter_items()}
    hits = model.retrieve(NAMES, k=3, beams=4)
    assert all(1 <= len(h) <= 3 and set(i for i, _ in h) <= set(key_of) for h in hits)  # valid ids only
    assert sum(key_of[h[0][0]] == name for h, name in zip(hits, NAMES, strict=True)) >= 3  # memorised
    other = _text_index(tmp_path / "other", NAMES, seed=1)
    with IndexStore.open(other) as store, pytest.raises(GenidIndexError, match="trained for another index"):
        check_index(model.info, store)


def test_continue_training_learns_new_items_and_keeps_old_ids(tmp_path):
    import json

    from viewfinder.pipeline.genid.model import IdentifierModel, check_index
    from viewfinder.pipeline.train.genid import train_genid

    index = _text_index(tmp_path, NAMES)
    config = _genid_config(tmp_path, "numeric", steps=60)
    train_genid(config, index, progress=False, max_steps=30)  # interrupted ...
    first = train_genid(config, index, progress=False)  # ... and resumed
    assert first.steps == 60 and len(IdentifierModel.load(first.adapter_dir).id_map.ids) == 4
    with pytest.raises(Exception, match="continue_run"):
        train_genid(config, index, progress=False)
    manifest = tmp_path / "items.jsonl"
    extra = write_images(tmp_path / "images2", 1, seed=5)
    manifest.write_text(manifest.read_text() + json.dumps({"path": str(extra[0]), "caption": "cyan cross"}) + "\n")
    build_index(manifest, index, progress=False)
    with IndexStore.open(index) as store:
        model_before = IdentifierModel.load(first.adapter_dir)
        assert len(check_index(model_before.info, store).new) == 1  # one item the model has not learned yet
    grown = train_genid(config, index, continue_run=True, progress=False)
    assert grown.added == 1
    model = IdentifierModel.load(grown.adapter_dir)
    assert set(model.id_map.ids) >= set(model_before.id_map.ids)
    assert all(model.id_map.ids[i] == n for i, n in model_before.id_map.ids.items())  # old ids kept


@pytest.fixture(scope="module")
def memorised(tmp_path_factory):
    """A tiny index of four captioned images and a numeric-id model trained on it."""
    from viewfinder.pipeline.train.genid import train_genid

    root = tmp_path_factory.mktemp("genid")
    index = _text_index(root, NAMES)
    result = train_genid(_genid_config(root, "numeric", steps=60), index, progress=False)
    return root, index, result.adapter_dir


def test_the_genid_stage_preselects_alone_or_fuses_with_clip_and_traces_its_ids(memorised):
    from viewfinder.pipeline import Pipeline
    from viewfinder.pipeline.stages.presets import load_preset

    root, index, model = memorised
    tiny = load_preset("tiny")
    genid = {"model": str(model), "k": 3, "beams": 4}
    fused = genid | {"fusion": "score", "weight": 10.0}  # a memorised id's probability outweighs a cosine
    for stages, first in (([{"genid": genid}], "genid"), (["preselect", {"genid": fused}], "preselect")):
        preset = root / f"{first}.yaml"
        preset.write_text(f"encoder: tiny-test\nindex: {{num_workers: 0}}\nstages: {stages!r}\n".replace("'", '"'))
        result = Pipeline.from_preset(preset, index=index).search("blue circle", k=3)
        step = next(s for s in result.trace["steps"] if s["stage"] == "genid")
        assert step["notes"]["decoded"] and step["notes"]["scheme"] == "numeric"
        assert result.hits[0].text == "blue circle"  # memorised, and ranked first in either mode
        assert step["notes"]["fusion"] == ("none" if first == "genid" else "score")
    assert tiny.name == "tiny"
    bad = root / "bad.yaml"
    bad.write_text(f'encoder: tiny-test\nstages: [{{genid: {{model: "{root / "nothing"}"}}}}]\n')
    with pytest.raises(Exception, match="not a generative-identifier model"):
        Pipeline.from_preset(bad, index=index)


def test_reciprocal_rank_fusion_rewards_agreement():
    from viewfinder.pipeline.stages.genid import reciprocal_rank_fusion

    fused = reciprocal_rank_fusion([[1, 2, 3], [3, 1, 9]], [1.0, 1.0], rrf_k=60)
    assert sorted(fused, key=lambda i: -fused[i]) == [1, 3, 2, 9]
    heavier = reciprocal_rank_fusion([[1, 2, 3], [3, 1, 9]], [1.0, 3.0], rrf_k=60)
    assert max(heavier, key=heavier.get) == 3


def test_genid_eval_reports_clip_the_model_and_their_fusion_with_no_invalid_output(memorised):
    import json

    from typer.testing import CliRunner

    from viewfinder.pipeline.cli import app

    root, index, model = memorised
    out = root / "genid.json"
    result = CliRunner().invoke(app, ["eval-genid", str(root / "items.jsonl"), "-i", str(index), "-m", str(model),
                                      "--beams", "4", "--fusion", "rrf:1", "--fusion", "score:0.1",
                                      "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    entry = report["models"][str(model)]
    assert report["n_queries"] == 4 and entry["invalid_outputs"] == 0 and entry["alone"]["R@1"] >= 0.75
    assert set(entry["fused_with_clip"]) == {"rrf:1", "score:0.1"} and entry["decode_ms_per_query"] > 0
    assert set(entry["fused_with_clip"]["rrf:1"]["held_out_half"]) >= {"R@1", "R@5", "R@10"}
    assert entry["selected_fusion"]["setting"] in entry["fused_with_clip"]
    assert "CLIP + genid numeric (rrf:1)" in result.output and "held-out half" in result.output
    bad = CliRunner().invoke(app, ["eval-genid", str(root / "items.jsonl"), "-i", str(index), "-m", str(model),
                                   "--fusion", "max:2"])  # fmt: skip
    assert bad.exit_code != 0 and "rrf:WEIGHT or score:WEIGHT" in bad.output


def test_viewfinder_eval_with_a_genid_preset_reports_the_stage_beside_clip_on_its_index(memorised):
    import json

    from typer.testing import CliRunner

    from viewfinder.pipeline.cli import app

    root, index, model = memorised
    preset = root / "eval-genid.yaml"
    stages = ["preselect", {"genid": {"model": str(model), "k": 3, "beams": 4, "fusion": "rrf", "weight": 0.5}}]
    preset.write_text(f"encoder: tiny-test\nindex: {{num_workers: 0}}\nstages: {stages!r}\n".replace("'", '"'))
    out = root / "eval.json"
    args = ["eval", str(root / "items.jsonl"), "-c", str(preset), "--work-dir", str(root / "work"), "--out", str(out)]
    missing = CliRunner().invoke(app, args)
    assert missing.exit_code != 0 and "--index" in missing.output and not out.exists()
    result = CliRunner().invoke(app, [*args, "--index", str(index)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["text_to_image"]["R@1"] >= 0 and report["genid"]["preset_fusion"] == "rrf:0.5"
    entry = report["genid"]["models"][str(model)]
    assert entry["invalid_outputs"] == 0 and "rrf:0.5" in entry["fused_with_clip"] and entry["alone"]["R@1"] >= 0.75
    assert "CLIP (FAISS search)" in result.output


def test_score_fusion_adds_the_weighted_identifier_probability_to_the_dual_encoder_score():
    import math

    from viewfinder.pipeline.eval.genid import _fused_ranking, parse_fusion

    clip = [(1, 0.30), (2, 0.29), (3, 0.10)]
    decoded = [(2, math.log(0.9)), (7, math.log(0.05))]
    assert _fused_ranking(clip, decoded, "score", 0.0, 60) == [1, 2, 3, 7]
    assert _fused_ranking(clip, decoded, "score", 0.1, 60)[:2] == [2, 1]  # 0.29 + 0.09 > 0.30
    assert _fused_ranking(clip, decoded, "rrf", 1.0, 60)[0] == 2  # 1/62 + 1/61 beats 1/61
    assert parse_fusion("score:0.05") == ("score", 0.05) and parse_fusion("rrf") == ("rrf", 1.0)


def test_the_packaged_genid_config_loads_and_the_cli_explains_a_missing_index(tmp_path):
    from typer.testing import CliRunner

    from viewfinder.pipeline.cli import app
    from viewfinder.pipeline.train.genid import load_genid_config

    config = load_genid_config("scene-genid")
    assert config.scheme in SCHEMES and config.captioner == "scene-captioner"
    result = CliRunner().invoke(app, ["train", "genid", "-i", str(tmp_path / "none"), "-c", "scene-genid"])
    assert result.exit_code != 0 and "no viewfinder index" in result.output


def test_bench_genid_times_decoding_beside_faiss_search(memorised):
    import json

    from typer.testing import CliRunner

    from viewfinder.pipeline.cli import app

    root, index, model = memorised
    out = root / "bench.json"
    args = ["bench", "genid", "-i", str(index), "-m", str(model), "--queries", "3", "--beams", "4", "--json", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    run = json.loads(out.read_text())
    assert run["queries"] == 3 and run["scheme"] == "numeric" and run["decode_p50_ms"] > 0
    assert "FAISS search" in result.output
