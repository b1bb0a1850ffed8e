"""Generated presets and model entries (wrong types, unknown keys, missing files, nonsense nesting):
each loads, or is refused with the project's own clear error naming what is wrong; never a traceback
of another kind."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import viewfinder
from viewfinder.adapters.registry import load_entry
from viewfinder.pipeline.stages.presets import load_preset

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["tiny-test", "scene-clip", "Flat", "IVFPQR", "missing.yaml", "/no/such/file", "auto", "int8"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
INDEX_KEYS = [
    "factory",
    "nprobe",
    "batch_size",
    "num_workers",
    "engine",
    "decode",
    "target_recall",
    "decode_timeout",
    "typo",
]
STAGES = ["preselect", "rerank", "caption", "normalise", "rewrite", "compose", "genid", "nonsense"]
ENTRY_KEYS = [
    "name",
    "family",
    "arch",
    "weights",
    "path",
    "precision",
    "device",
    "batch_size",
    "base",
    "sha256",
    "oops",
]


@st.composite
def presets(draw):
    preset = {}
    if draw(st.booleans()):
        preset["encoder"] = draw(st.one_of(st.sampled_from(["tiny-test", "no-such-model"]), VALUES))
    if draw(st.booleans()):
        preset["index"] = draw(st.one_of(st.dictionaries(st.sampled_from(INDEX_KEYS), VALUES, max_size=4), VALUES))
    if draw(st.booleans()):
        stage = st.dictionaries(
            st.sampled_from(STAGES),
            st.one_of(st.dictionaries(st.text(max_size=6), VALUES, max_size=2), VALUES),
            min_size=1,
            max_size=1,
        )
        preset["stages"] = draw(st.one_of(st.lists(stage, max_size=3), VALUES))
    if draw(st.booleans()):
        preset[draw(st.text(max_size=8))] = draw(VALUES)
    return preset


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=presets())
def test_a_generated_preset_loads_or_is_refused_clearly(tmp_path, data):
    path = tmp_path / "preset.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    try:
        load_preset(str(path))
    except viewfinder.Error as exc:
        assert str(exc)


@settings(max_examples=200, deadline=None)
@given(data=st.dictionaries(st.sampled_from(ENTRY_KEYS), VALUES, max_size=6))
def test_a_generated_model_entry_loads_or_is_refused_clearly(data):
    try:
        load_entry(data)
    except viewfinder.Error as exc:
        assert str(exc)
