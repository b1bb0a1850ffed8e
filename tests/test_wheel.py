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
        "from viewfinder.pipeline.config import config_root\n"
        "from viewfinder.pipeline.stages.presets import load_preset\n"
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


def _source_modules() -> list[str]:
    """Every module of the source tree, by the name it installs under (``pipeline/store/cache.py`` is
    ``viewfinder.pipeline.store.cache``): read from the tree, not the wheel, so that a package the
    build leaves out shows up as a module the wheel lacks."""
    roots = {"viewfinder": "viewfinder", "pipeline": "viewfinder.pipeline", "adapters": "viewfinder.adapters"}
    names = ["viewfinder.configs", "viewfinder.prompts"]
    for folder, package in roots.items():
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            parts = path.relative_to(REPO_ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            elif parts[-1] == "__main__":
                continue
            names.append(".".join((package, *parts)))
    return names


def test_every_module_imports_from_the_installed_wheel(wheel_venv):
    modules = _source_modules()
    assert "viewfinder.pipeline.genid.trie" in modules and "viewfinder.pipeline.cli.train" in modules
    code = (
        "import importlib, json, sys\n"
        "where = {}\n"
        "for name in sys.argv[1:]:\n"
        "    where[name] = importlib.import_module(name).__file__\n"
        "print(json.dumps(where))\n"
    )
    out = _run(
        [str(wheel_venv["venv"] / "bin" / "python"), "-c", code, *modules], cwd=wheel_venv["cwd"], env=wheel_venv["env"]
    ).stdout
    where = json.loads(out.strip().splitlines()[-1])
    venv_root = str(wheel_venv["venv"].resolve())
    outside = {name: path for name, path in where.items() if not str(Path(path).resolve()).startswith(venv_root)}
    assert not outside, outside


def test_every_cli_command_runs_from_the_installed_wheel(wheel_venv):
    """``--help`` of every command and subcommand, walked from the click tree of the installed app (in
    one process of the wheel's venv, through typer's CliRunner), and each command's callback module
    imported: a command whose module is missing cannot pass. The console script itself runs in
    :func:`test_console_script_help_index_and_search`."""
    code = (
        "import importlib, json\n"
        "import typer.main\n"
        "from typer.testing import CliRunner\n"
        "from viewfinder.pipeline.cli import app\n"
        "root = typer.main.get_command(app)\n"
        "paths, failed = [], {}\n"
        "def walk(cmd, path):\n"
        "    paths.append(path)\n"
        "    if cmd.callback is not None:\n"
        "        importlib.import_module(cmd.callback.__module__)\n"
        "    for name, sub in getattr(cmd, 'commands', {}).items():\n"
        "        walk(sub, [*path, name])\n"
        "walk(root, [])\n"
        "runner = CliRunner()\n"
        "for path in paths:\n"
        "    result = runner.invoke(app, [*path, '--help'])\n"
        "    if result.exit_code != 0 or 'Usage' not in result.output:\n"
        "        failed[' '.join(path)] = (result.exit_code, result.output[-500:], repr(result.exception))\n"
        "print(json.dumps({'paths': paths, 'failed': failed}))\n"
    )
    venv, env, cwd = wheel_venv["venv"], wheel_venv["env"], wheel_venv["cwd"]
    out = json.loads(_run([str(venv / "bin" / "python"), "-c", code], cwd=cwd, env=env).stdout.strip().splitlines()[-1])
    paths = out["paths"]
    assert ["train", "genid"] in paths and ["eval-genid"] in paths and ["bench", "genid"] in paths
    assert ["serve"] in paths and len(paths) > 30
    assert out["failed"] == {}
