"""The built wheel works on its own: installed into a fresh venv (without the editable install),
its console script indexes and searches, and its packaged configs are found from the wheel.

Offline: the wheel is built with this environment's setuptools (``--no-build-isolation``, no
index), and the fresh venv gets its dependencies from this environment's site-packages through a
``.pth`` file, so nothing is fetched from a package index. Slow (a build and a venv): ``-m slow``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from helpers import REPO_ROOT, write_images

pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (
        f"{cmd} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    )
    return result


def _source_copy(dest: Path) -> Path:
    """The files a fresh clone would have (tracked and untracked-but-not-ignored), copied aside, so
    that the build neither writes ``build/`` into the working tree nor picks up stale files there."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=60,
    )
    if listed.returncode != 0:
        pytest.skip("not a git checkout: cannot tell which files a clone would have")
    for name in filter(None, listed.stdout.decode().split("\0")):
        src = REPO_ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PIP_REQUIRE_VIRTUALENV")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PIP_DISABLE_PIP_VERSION_CHECK="1")

    source = _source_copy(tmp / "src")
    dist = tmp / "dist"
    # No build isolation and no index: an isolated build env would fetch setuptools from the index.
    build = [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "--no-index"]
    _run([*build, "-w", str(dist), "-q"], cwd=source, env=env)
    wheels = sorted(dist.glob("viewfinder-*.whl"))
    assert len(wheels) == 1, list(dist.iterdir())

    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp, env=env, timeout=300)
    new_site = Path(
        _run(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            cwd=tmp,
            env=env,
        ).stdout.strip()
    )
    # The dependencies of this environment, without its .pth files (so not its editable finder).
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (new_site / "_viewfinder_test_deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    _run([str(venv / "bin" / "pip"), "install", "--no-deps", "--no-index", "-q", str(wheels[0])], cwd=tmp, env=env)
    work = tmp / "elsewhere"
    work.mkdir()
    return {"venv": venv, "wheel": wheels[0], "env": env, "cwd": work}


def test_wheel_contents(wheel_venv):
    names = zipfile.ZipFile(wheel_venv["wheel"]).namelist()
    for needed in (
        "viewfinder/pipeline/cli/__init__.py",
        "viewfinder/pipeline/stages/runner.py",
        "viewfinder/pipeline/store/index_store.py",
        "viewfinder/adapters/open_clip_encoder.py",
        "viewfinder/configs/presets/tiny.yaml",
        "viewfinder/configs/models/tiny-test.yaml",
        "viewfinder/configs/arch/tiny-test.json",
    ):
        assert needed in names, needed
    top_level = {n.split("/")[0] for n in names}
    assert all(t == "viewfinder" or t.endswith(".dist-info") for t in top_level), top_level  # no bare `pipeline`
    assert not any(n.startswith(("tests/", "pipeline/", "adapters/")) for n in names)


def test_installed_package_comes_from_the_wheel(wheel_venv):
    venv = wheel_venv["venv"]
    code = (
        "import json, viewfinder.pipeline, viewfinder.adapters, viewfinder.configs, viewfinder.prompts\n"
        "from viewfinder.pipeline.config import config_root, load_preset\n"
        "root = config_root()\n"
        "print(json.dumps({'pipeline': viewfinder.pipeline.__file__, 'adapters': viewfinder.adapters.__file__,"
        " 'configs': str(root), 'tiny': str(root / 'presets' / 'tiny.yaml'),"
        " 'encoder': load_preset('tiny').encoder.arch}))\n"
    )
    out = _run([str(venv / "bin" / "python"), "-c", code], cwd=wheel_venv["cwd"], env=wheel_venv["env"]).stdout
    info = json.loads(out.strip().splitlines()[-1])
    venv_root = str(venv.resolve())
    for key in ("pipeline", "adapters", "configs", "tiny"):
        assert str(Path(info[key]).resolve()).startswith(venv_root), (key, info[key])
        assert not str(Path(info[key]).resolve()).startswith(str(REPO_ROOT)), (key, info[key])
    assert Path(info["tiny"]).is_file()
    assert info["encoder"] == "tiny-test"


def test_console_script_help_index_and_search(wheel_venv):
    venv, env, cwd = wheel_venv["venv"], wheel_venv["env"], wheel_venv["cwd"]
    viewfinder = str(venv / "bin" / "viewfinder")
    help_text = _run([viewfinder, "--help"], cwd=cwd, env=env).stdout
    assert "index" in help_text and "search" in help_text

    images = write_images(cwd / "photos", 5, seed=13)
    _run([viewfinder, "index", "photos", "--index", "idx", "-c", "tiny"], cwd=cwd, env=env)
    assert json.loads((cwd / "idx" / "manifest.json").read_text())["count"] == 5
    out = _run(
        [viewfinder, "search", "--image", str(images[2]), "--index", "idx", "-c", "tiny", "--json", "-k", "3"],
        cwd=cwd,
        env=env,
    ).stdout
    data = json.loads(out)
    assert data["hits"][0]["key"] == images[2].name and len(data["hits"]) == 3
    assert set(data["timings"]) == {"preselect"}
