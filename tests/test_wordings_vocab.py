"""The train-only paraphrase vocabulary never uses a word of the held-out synonyms style."""

from viewfinder.pipeline.scenes import wordings
from viewfinder.pipeline.scenes.graph import COLOURS, POSITIONS, SHAPES, SIZES


def _words(*tables: dict[str, tuple[str, ...]]) -> set[str]:
    return {word for table in tables for phrases in table.values() for phrase in phrases for word in phrase.split()}


def test_paraphrase_words_are_disjoint_from_the_held_out_synonyms():
    plain = set(COLOURS) | set(SHAPES) | set(SIZES) | {w for p in POSITIONS for w in p.split()} | {"the", "at", "in"}
    held_out = _words(wordings.SIZE_WORDS, wordings.POSITION_WORDS, wordings.SHAPE_WORDS)
    train = _words(wordings.PARAPHRASE_SIZES, wordings.PARAPHRASE_POSITIONS, wordings.PARAPHRASE_SHAPES)
    assert not (held_out & train) - plain
    assert wordings.HELD_OUT_STYLE == "synonyms" and "synonyms" not in wordings.TRAIN_STYLES
    assert "paraphrase" in wordings.TRAIN_STYLES
