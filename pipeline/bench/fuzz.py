"""Generated bad input, measured: mutated image files through the indexer, and generated queries through
the Python API and the CLI. Each run counts what it generated and every outcome; a crash is an exception
that is not the project's own clear error (``viewfinder.Error``), a CLI exit that is neither 0 nor the
error exit 2, or a traceback on the terminal. Prints figures; the tests keep small seeded samples."""

from __future__ import annotations

import io
import logging
import random
import re
import struct
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "TIFF")
MUTATIONS = ("truncate", "flip_header", "flip_body", "insert", "delete", "huge_dims", "zero_dims", "repeat_chunk")


def seed_image(rng: np.random.Generator, fmt: str) -> bytes:
    """A small valid image file in ``fmt``: gradient, noise and a block (so decoders do real work)."""
    w, h = int(rng.integers(8, 80)), int(rng.integers(8, 80))
    pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    pixels[: h // 2, : w // 2] = rng.integers(0, 256, size=3, dtype=np.uint8)
    image = Image.fromarray(pixels, "RGB")
    if fmt == "GIF":
        image = image.convert("P")
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


def _set_dims(data: bytearray, width: int, height: int) -> None:
    """Write declared dimensions where each format keeps them (PNG IHDR, JPEG SOF, GIF screen, WebP
    VP8 frame, TIFF: the first IFD's width/length entries)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        data[16:24] = struct.pack(">II", width, height)
    elif data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(data):
            if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC1, 0xC2):
                data[i + 5 : i + 9] = struct.pack(">HH", min(height, 0xFFFF), min(width, 0xFFFF))
                return
            i += 1
    elif data[:3] == b"GIF" and len(data) >= 10:
        data[6:10] = struct.pack("<HH", min(width, 0xFFFF), min(height, 0xFFFF))
    elif data[:4] == b"RIFF" and len(data) >= 30:
        data[26:30] = struct.pack("<HH", min(width, 0x3FFF), min(height, 0x3FFF))
    elif data[:2] in (b"II", b"MM") and len(data) >= 8:
        endian = "<" if data[:2] == b"II" else ">"
        (ifd,) = struct.unpack(endian + "I", bytes(data[4:8]))
        if ifd + 2 > len(data):
            return
        (count,) = struct.unpack(endian + "H", bytes(data[ifd : ifd + 2]))
        for k in range(count):
            at = ifd + 2 + 12 * k
            if at + 12 > len(data):
                return
            (tag,) = struct.unpack(endian + "H", bytes(data[at : at + 2]))
            if tag in (256, 257):
                data[at + 2 : at + 12] = struct.pack(endian + "HII", 4, 1, width if tag == 256 else height)


def mutate(data: bytes, kind: str, rng: random.Random) -> bytes:
    """One mutation of a valid file: cut short, bytes flipped in the header or the body, bytes inserted
    or deleted (wrong lengths), huge or zero declared dimensions, a chunk repeated."""
    out = bytearray(data)
    if kind == "truncate":
        return bytes(out[: rng.randrange(0, max(1, len(out)))])
    if kind == "flip_header":
        for _ in range(rng.randint(1, 4)):
            out[rng.randrange(0, min(64, len(out)))] ^= 1 << rng.randrange(8)
    elif kind == "flip_body":
        for _ in range(rng.randint(1, 16)):
            out[rng.randrange(0, len(out))] = rng.randrange(256)
    elif kind == "insert":
        at = rng.randrange(0, len(out) + 1)
        out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    elif kind == "delete":
        at = rng.randrange(0, len(out))
        del out[at : at + rng.randint(1, 64)]
    elif kind == "huge_dims":
        _set_dims(out, rng.choice([65_535, 100_000, 2**31 - 1]), rng.choice([65_535, 100_000, 2**31 - 1]))
    elif kind == "zero_dims":
        _set_dims(out, 0, rng.choice([0, 1]))
    elif kind == "repeat_chunk":
        at = rng.randrange(0, len(out))
        chunk = out[at : at + rng.randint(8, 256)]
        out[at:at] = chunk * rng.randint(2, 50)
    return bytes(out)


def write_mutated(folder: Path, n: int, seed: int = 0) -> dict[str, tuple[str, str]]:
    """``n`` mutated files (formats and mutations in turn) in ``folder``: name -> (format, mutation)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng, nprng = random.Random(seed), np.random.default_rng(seed)
    made = {}
    for i in range(n):
        fmt, kind = FORMATS[i % len(FORMATS)], MUTATIONS[(i // len(FORMATS)) % len(MUTATIONS)]
        name = f"m{i:05d}_{kind}.{ {'JPEG': 'jpg', 'TIFF': 'tif'}.get(fmt, fmt.lower()) }"
        (folder / name).write_bytes(mutate(seed_image(nprng, fmt), kind, rng))
        made[name] = (fmt, kind)
    return made


@dataclass
class ImageFuzzReport:
    files: int
    seed: int
    indexed: int = 0
    skipped: int = 0
    aborts: int = 0
    """Runs that ended in an exception (0 expected: every bad file is skipped with a reason)."""
    hangs: int = 0
    """Files skipped for exceeding the per-image time limit."""
    seconds: float = 0.0
    time_limit: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)
    """Skip reasons (their label before the colon) and how many files each."""
    by_mutation: dict[str, dict[str, int]] = field(default_factory=dict)
    """mutation -> {"indexed": n, "skipped": n}."""
    abort_detail: str = ""


def fuzz_images(
    encoder: Any, work: Path, n: int = 2000, seed: int = 0, workers: int = 2, time_limit: float = 5.0
) -> ImageFuzzReport:
    """Index ``n`` mutated files with ``encoder`` and count: indexed, skipped by reason, aborted runs,
    files stopped by the time limit."""
    from ..stages.presets import load_preset
    from ..store.indexer import Indexer

    made = write_mutated(work / "images", n, seed)
    config = load_preset("tiny").index
    config = type(config)(**{**config.__dict__, "num_workers": workers, "decode_timeout": time_limit})
    report = ImageFuzzReport(files=n, seed=seed, time_limit=time_limit)
    start = time.perf_counter()
    try:
        result = Indexer(encoder, config, progress=False).run(work / "images", work / "index")
    except Exception:  # the figure this run exists to measure: it must stay 0
        report.aborts = 1
        report.abort_detail = traceback.format_exc()[-2000:]
        return report
    report.seconds = time.perf_counter() - start
    report.indexed, report.skipped = result.added, len(result.skipped)
    reasons = Counter(reason.split(":")[0] for _, reason in result.skipped)
    report.reasons = dict(reasons.most_common())
    report.hangs = reasons.get("too slow", 0)
    skipped_names = {Path(path).name for path, _ in result.skipped}
    for name, (_, kind) in made.items():
        counts = report.by_mutation.setdefault(kind, {"indexed": 0, "skipped": 0})
        counts["skipped" if name in skipped_names else "indexed"] += 1
    return report


# ---------------------------------------------------------------------------------------------- queries
_ODD = [
    "",
    " ",
    "\t\n",
    "\x00",
    "\u200b",  # zero-width space
    "\u200f",  # right-to-left mark
    "\u202e",  # right-to-left override
    "\ufeff",  # byte-order mark
    "\ud800",  # lone surrogate
    "\U0001f600",
    "\x1b[31m",  # terminal escape
    "%s%n{0}{}",
    "'; DROP TABLE items; --",
    "\\",
    "\r",
    "a\u0301",  # combining accent
    "ﷺ",
]


def random_query(rng: random.Random) -> str:
    """A query people, scripts and attackers type: odd characters, control codes, surrogates, RTL marks,
    empty and huge strings, mixed with words."""
    kind = rng.random()
    if kind < 0.05:
        return rng.choice(["", " ", "\n" * rng.randint(1, 5)])
    if kind < 0.10:
        return "a red square " * rng.randint(100, 2000)  # long and huge
    pieces = []
    for _ in range(rng.randint(1, 12)):
        r = rng.random()
        if r < 0.3:
            pieces.append(rng.choice(["a", "red", "square", "the", "two", "circle", "left", "photo"]))
        elif r < 0.55:
            pieces.append(rng.choice(_ODD))
        elif r < 0.8:
            pieces.append("".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randint(1, 8))))
        else:
            pieces.append("".join(chr(rng.randrange(0, 0x110000)) for _ in range(rng.randint(1, 4))))
    return rng.choice([" ", "", "\u200b"]).join(pieces)


@dataclass
class QueryFuzzReport:
    entry_point: str
    queries: int
    seed: int
    answered: int = 0
    refused: int = 0
    """Clear errors (``viewfinder.Error``, or the CLI's exit 2 with one line)."""
    crashes: int = 0
    crash_examples: list[dict[str, str]] = field(default_factory=list)
    refusals: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def fuzz_python(pipeline: Any, n: int, seed: int = 0) -> QueryFuzzReport:
    """``pipeline.search(query, k)`` for ``n`` generated queries and odd ``k``."""

    rng = random.Random(seed)
    report = QueryFuzzReport("python", n, seed)
    start = time.perf_counter()
    logging.disable(logging.WARNING)  # a truncation warning per long query would bury the figures
    try:
        _fuzz_python(pipeline, n, rng, report)
    finally:
        logging.disable(logging.NOTSET)
    report.seconds = time.perf_counter() - start
    return report


def _fuzz_python(pipeline: Any, n: int, rng: random.Random, report: QueryFuzzReport) -> None:
    from ...errors import Error

    for _ in range(n):
        query, k = random_query(rng), rng.choice([1, 5, 10, 0, -3, 10**9])
        try:
            pipeline.search(query, k=k)
            report.answered += 1
        except Error as exc:
            report.refused += 1
            label = f"{type(exc).__name__}: {re.sub(r'[0-9]+', 'N', str(exc))[:40]}"
            report.refusals[label] = report.refusals.get(label, 0) + 1
        except Exception as exc:  # a crash: the figure must stay 0
            report.crashes += 1
            if len(report.crash_examples) < 10:
                report.crash_examples.append({"query": repr(query[:200]), "k": str(k), "error": repr(exc)[:300]})


def fuzz_cli(invoke: Callable[[list[str]], Any], index: Path, preset: str, n: int, seed: int = 0) -> QueryFuzzReport:
    """``viewfinder search QUERY --index INDEX -k K`` for ``n`` generated queries, through ``invoke``
    (the CLI's arguments -> a result with ``exit_code``, ``output`` and ``exc_info``, e.g. typer's
    in-process runner: the CLI lives above the benchmarks, so it is handed in)."""
    rng = random.Random(seed)
    report = QueryFuzzReport("cli", n, seed)
    start = time.perf_counter()
    logging.disable(logging.WARNING)
    try:
        _fuzz_cli(invoke, index, preset, n, rng, report)
    finally:
        logging.disable(logging.NOTSET)
    report.seconds = time.perf_counter() - start
    return report


def _fuzz_cli(
    invoke: Callable[[list[str]], Any], index: Path, preset: str, n: int, rng: random.Random, report: QueryFuzzReport
) -> None:
    for _ in range(n):
        query, k = random_query(rng), rng.choice(["5", "10", "1", "1000000000", "5", "10", "0", "-3", "x"])
        if "\x00" in query or any(0xD800 <= ord(c) <= 0xDFFF for c in query):
            query = query.replace("\x00", "").encode("utf-8", "surrogatepass").decode("utf-8", "replace")
            # argv cannot hold NUL or lone surrogates: the shell would never pass them
        result = invoke(["search", query, "--index", str(index), "-c", preset, "-k", k, "--json"])
        if result.exit_code == 0:
            report.answered += 1
        elif result.exit_code == 2 and "Traceback" not in result.output:
            report.refused += 1
            line = (result.output.strip().splitlines() or ["?"])[-1]
            label = re.sub(r"\d+", "N", line.removeprefix("error: ").split(":")[0])[:50]  # the kind of refusal
            report.refusals[label] = report.refusals.get(label, 0) + 1
        else:
            report.crashes += 1
            if len(report.crash_examples) < 10:
                detail = "".join(traceback.format_exception(result.exc_info[1])) if result.exc_info else result.output
                report.crash_examples.append({"query": repr(query[:200]), "k": k, "error": detail[-600:]})
