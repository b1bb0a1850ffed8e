"""A language-model query stage checking its own work: the word constraint, several candidates,
grounding in the collection's words, the verifier's choice, and preset overrides."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from langchain_core.messages import HumanMessage

from viewfinder.adapters.entries import ConfigError
from viewfinder.pipeline.llm.prompts import load_prompt
from viewfinder.pipeline.stages.checked import CheckedOptions, QueryWriter
from viewfinder.pipeline.stages.grounding import FUNCTION_WORDS, Vocabulary, words_of
from viewfinder.pipeline.stages.presets import load_preset, load_preset_spec, with_overrides
from viewfinder.pipeline.stages.rewrite import Normalise, NormaliseConfig, Rewrite, RewriteConfig
from viewfinder.pipeline.stages.state import Candidate as Item
from viewfinder.pipeline.stages.state import Feedback, QueryState
from viewfinder.pipeline.stages.verify import Candidate


def _char_chat(folder: Path):
    """A tiny random Llama spelling one character per token (decoded without spaces between them)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from viewfinder.adapters.chat import TransformersChatModel

    chars = list("abcdefghijklmnopqrstuvwxyz ,.;:")
    vocab = {w: i for i, w in enumerate(["<pad>", "<s>", "</s>", "<unk>", *chars])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }};{% endfor %}"
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        initializer_range=0.5,
    )  # fmt: skip
    lm = LlamaForCausalLM(config).eval()
    return TransformersChatModel(lm=lm, tokenizer=tokenizer, max_new_tokens=40, max_seconds=None, batch_size=4)


@pytest.fixture(scope="module")
def char_chat(tmp_path_factory):
    return _char_chat(tmp_path_factory.mktemp("charlm"))


def test_a_constrained_model_writes_only_the_words_it_is_given(char_chat):
    conversations = [[HumanMessage(t)] for t in ("a red star", "the blue moon", "zzz")]
    free = [r[0] for r in char_chat.generate_batch(conversations)]
    words = ["kettle", "copper", "shelf"]
    replies = char_chat.generate_candidates(conversations, 3, words=words)
    allowed = set(words) | FUNCTION_WORDS
    assert len(replies) == 3 and all(len(r) == 3 for r in replies)  # three beams each
    for beams in replies:
        for text, tokens in beams:
            assert set(re.findall(r"[a-z]+", text)) <= allowed, text
            assert tokens["output_tokens"] >= 1
    # the random model writes words off any list when left alone: the constraint is what held it
    assert any(set(re.findall(r"[a-z]+", t)) - allowed for t in free)


def test_the_collection_vocabulary_comes_from_its_texts_and_repairs_by_the_encoder():
    vocab = Vocabulary(words_of(["A copper kettle on the shelf", "two kettles"]))
    assert vocab.words == {"a", "copper", "kettle", "on", "the", "shelf", "two", "kettles"}
    assert vocab.unknown("a brass kettle by the window") == ["brass", "window"]

    class Encoder:  # letters as a bag: words sharing letters lie near each other
        def encode_texts(self, texts):
            out = np.zeros((len(texts), 26), np.float32)
            for i, t in enumerate(texts):
                for ch in t:
                    if ch.isalpha():
                        out[i, ord(ch) - 97] += 1
            return out / np.linalg.norm(out, axis=1, keepdims=True)

    vocab.encoder = Encoder()
    text, changes = vocab.repair("a coper ketle on the shelf")
    assert text == "a copper kettle on the shelf"
    assert changes == [{"from": "coper", "to": "copper"}, {"from": "ketle", "to": "kettle"}]


class _Verifier:
    """Scores each candidate by a fixed table, recording what it was asked."""

    def __init__(self, scores: dict[str, float]) -> None:
        self.scores, self.calls = scores, []

    def choose(self, words, candidates, **kwargs):
        self.calls.append((words, [c.text for c in candidates], kwargs))
        verdicts = [{"text": c.text, "source": c.source, "hits": [], "by": "itm", "match": self.scores.get(c.text, 0.0),
                     "marks": None, "score": self.scores.get(c.text, 0.0)} for c in candidates]  # fmt: skip
        best = max(range(len(verdicts)), key=lambda j: (verdicts[j]["score"], -j))
        verdicts[best]["chosen"] = True
        return best, verdicts


class _Beams:
    """A chat model double with local decoding: fixed beams per call."""

    def __init__(self, beams: list[str]) -> None:
        self.beams, self.asked = beams, []

    def generate_candidates(self, conversations, n, words=None):
        self.asked.append((n, words))
        return [[(b, {"input_tokens": 3, "output_tokens": 2}) for b in self.beams[:n]] for _ in conversations]

    def generate_batch(self, conversations):
        return [beams[0] for beams in self.generate_candidates(conversations, 1)]


def test_the_verifier_chooses_among_the_beams_and_the_typed_text_and_the_trace_says_why():
    llm = _Beams(["a copper kettle", "a brass kettle", "<|im_end|>"])
    config = NormaliseConfig(n=3, verify="itm")
    verifier = _Verifier({"a brass kettle": 0.9, "a copper kettle": 0.5, "kettle pls": 0.2})
    writer = QueryWriter(llm, load_prompt("normalise"), config, verifier=verifier)  # type: ignore[arg-type]
    state = Normalise(llm, load_prompt("normalise"), config, writer).run(QueryState("kettle pls", text="kettle pls"))
    assert state.text == "a brass kettle" and state.notes["chosen"] == "model:1" and state.notes["fallback"] is False
    assert [v["text"] for v in state.notes["verdicts"]] == ["a copper kettle", "a brass kettle", "kettle pls"]
    assert "model:1 scored 0.900 (itm score" in state.notes["why"] and verifier.calls[0][0] == "kettle pls"
    assert len(state.notes["candidates"]) == 3 and state.notes["candidates"][2]["query"] is None  # refused, listed

    # the typed text wins when it finds better hits: the stage never does worse than as typed
    verifier.scores = {"kettle pls": 1.0}
    state = Normalise(llm, load_prompt("normalise"), config, writer).run(QueryState("kettle pls", text="kettle pls"))
    assert state.text == "kettle pls" and state.notes["chosen"] == "typed" and state.notes["fallback"] is False

    # every answer refused: the typed text is searched and the fallback is marked
    refusing = _Beams(["", "<|im_end|>"])
    writer = QueryWriter(refusing, load_prompt("normalise"), NormaliseConfig(n=2, verify="itm"), verifier=verifier)  # type: ignore[arg-type]
    state = Normalise(refusing, load_prompt("normalise"), NormaliseConfig(n=2, verify="itm"), writer).run(
        QueryState("kettle pls", text="kettle pls")
    )
    assert state.text == "kettle pls" and state.notes["fallback"] is True


def test_grounding_constrains_a_local_model_and_repairs_a_providers_answer():
    vocab = Vocabulary(frozenset({"copper", "kettle", "shelf"}))
    llm = _Beams(["a copper kettle"])
    writer = QueryWriter(llm, load_prompt("normalise"), NormaliseConfig(ground="constrain"), vocabulary=vocab)
    state = QueryState("x", text="x")
    writer.write(state, {"query": '"x"'}, words="x", fallbacks=[Candidate("x", "typed")])
    n, words = llm.asked[0]
    assert n == 1 and "copper" in words and "the" in words and state.text == "a copper kettle"

    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    class Near:
        def encode_texts(self, texts):
            table = {"copper": [1, 0, 0], "kettle": [0, 1, 0], "shelf": [0, 0, 1], "brass": [0.9, 0.1, 0]}
            return np.array([table.get(t, [0.3, 0.3, 0.3]) for t in texts], np.float32)

    vocab.encoder = Near()
    provider = FakeListChatModel(responses=["a brass kettle"])  # no local decoding: its answer is repaired
    writer = QueryWriter(provider, load_prompt("normalise"), NormaliseConfig(ground="repair"), vocabulary=vocab)
    state = QueryState("x", text="x")
    record = writer.write(state, {"query": '"x"'}, words="x", fallbacks=[])
    assert state.text == "a copper kettle" and record["repairs"] == [[{"from": "brass", "to": "copper"}]]


def test_the_rewrite_verifier_gets_the_marks_and_the_current_and_typed_queries():
    llm = _Beams(["a kettle on a shelf", "a copper pan"])
    verifier = _Verifier({"a copper pan": 0.7})
    config = RewriteConfig(n=2, verify="itm")
    writer = QueryWriter(llm, load_prompt("rewrite-feedback"), config, verifier=verifier)  # type: ignore[arg-type]
    state = QueryState("kettle pls", text="a copper kettle", round=1)
    state.candidates = [Item(1, "k1", "/1", caption="a steel kettle"), Item(2, "k2", "/2", caption="a red pan")]
    state.feedback = [Feedback(0, relevant=[2], irrelevant=[1])]
    state = Rewrite(llm, load_prompt("rewrite-feedback"), config, writer).run(state)
    words, texts, kwargs = verifier.calls[0]
    assert words == "kettle pls" and texts == ["a kettle on a shelf", "a copper pan", "a copper kettle", "kettle pls"]
    assert kwargs == {"exclude": {1}, "relevant": [2], "rejected": [1], "judge": None}
    assert state.text == "a copper pan" and state.notes["feedback_round"] == 0


def test_options_are_checked_and_presets_take_overrides():
    with pytest.raises(ConfigError, match="'ground' must be one of"):
        NormaliseConfig(ground="always")
    with pytest.raises(ConfigError, match="'n' must lie in 1..16"):
        RewriteConfig(n=0)
    with pytest.raises(ConfigError, match="needs the collection's vocabulary"):
        QueryWriter(_Beams(["x"]), load_prompt("normalise"), CheckedOptions(ground="repair"))
    preset = load_preset_spec("agent+normalise.n=4+normalise.verify=itm+preselect.k=64")
    specs = {s.name: s.config for s in preset.stages}
    assert specs["normalise"].n == 4 and specs["normalise"].verify == "itm" and specs["preselect"].k == 64
    assert specs["rewrite"].n == load_preset("agent").stages[2].config.n  # other stages untouched
    with pytest.raises(ConfigError, match="has no field 'beams'"):
        with_overrides(load_preset("agent"), ["normalise.beams=4"])
    with pytest.raises(ConfigError, match="no stage 'genid'"):
        with_overrides(load_preset("agent"), ["genid.k=4"])
    with pytest.raises(ConfigError, match="'ground' must be one of"):
        with_overrides(load_preset("agent"), ["normalise.ground=maybe"])


def test_a_local_model_scores_its_own_answer_above_others(char_chat):
    conversation = [HumanMessage("a red star")]
    own = char_chat.generate_batch([conversation], max_new_tokens=12)[0][0]
    scores = char_chat.score_replies(conversation, [own, "qqqq zzzz", own])
    assert scores[0] == pytest.approx(scores[2]) and scores[0] > scores[1]
    assert char_chat.score_replies(conversation, []) == []


def test_grounding_is_skipped_and_said_when_the_collection_has_no_words():
    llm = _Beams(["a copper kettle"])
    writer = QueryWriter(
        llm, load_prompt("normalise"), NormaliseConfig(ground="constrain"), vocabulary=Vocabulary(frozenset())
    )
    state = QueryState("x", text="x")
    writer.write(state, {"query": '"x"'}, words="x", fallbacks=[])
    assert llm.asked == [(1, None)] and state.text == "a copper kettle" and "no texts" in state.notes["ground_skipped"]
