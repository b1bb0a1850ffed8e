"""Long work says what it does and shows progress: generating a scene benchmark (what `train rewriter`
and the demo do first)."""

from __future__ import annotations

from contextlib import contextmanager

from viewfinder.pipeline import progress
from viewfinder.pipeline.scenes.dataset import ensure_scene_dataset
from viewfinder.pipeline.scenes.generator import SceneGeneratorConfig


class _Recorder:
    def __init__(self) -> None:
        self.bars: list[tuple[str, str, bool | None]] = []
        self.updates: list[tuple[int, int | None]] = []

    @contextmanager
    def progress_bar(self, description, total, unit="it", enabled=None):
        self.bars.append((description, unit, enabled))
        recorder = self

        class Bar:
            def update(self, completed, total=None):
                recorder.updates.append((completed, total))

            def advance(self, n=1):
                pass

        yield Bar()


def test_generating_the_scene_benchmark_shows_a_bar_of_images_written(tmp_path, monkeypatch):
    recorder = _Recorder()
    monkeypatch.setattr(progress, "progress_bar", recorder.progress_bar)
    config = SceneGeneratorConfig(seed=3)
    ensure_scene_dataset(tmp_path / "s", config, n_train=6, n_val=0, n_test=4, n_compositional=0, progress=True)
    assert recorder.bars == [("generating the scene benchmark (once)", "image", True)]
    total = recorder.updates[0][1]
    assert recorder.updates[0] == (0, total) and recorder.updates[-1] == (total, total) and total >= 10
    ensure_scene_dataset(tmp_path / "s", config, n_train=6, n_val=0, n_test=4, n_compositional=0, progress=True)
    assert len(recorder.bars) == 1  # already there: nothing to generate, no bar
