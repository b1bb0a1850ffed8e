"""``decode: gpu``: plain JPEGs decoded in batches by ``torchvision.io.decode_jpeg`` on the encoder's
device, everything else by the CPU path. No GPU here: the same code runs with the encoder's device,
the CPU, so what is tested is the sorting, the batching, the resize and the fallbacks, not nvJPEG."""

from __future__ import annotations

import numpy as np
from helpers import image_bytes, random_image, ro_connect, tiny_index_config, write_corrupt_files, write_images
from PIL import Image

from viewfinder.pipeline.store.engines import decode_geometry
from viewfinder.pipeline.store.gpu_decode import gpu_decodable, gpu_resize_of
from viewfinder.pipeline.store.indexer import Indexer


def vectors(index_dir):
    with ro_connect(index_dir) as db:
        rows = db.execute("SELECT key, sha256, vector FROM items").fetchall()
    return {key: (sha, np.frombuffer(v, np.float32)) for key, sha, v in rows}


def test_odd_jpegs_and_other_formats_stay_on_the_cpu_path():
    rng = np.random.default_rng(0)
    image = random_image(rng, (40, 30))
    assert gpu_decodable(image_bytes(image, "JPEG"), 10**8)
    assert gpu_decodable(image_bytes(image.convert("L"), "JPEG"), 10**8)
    assert not gpu_decodable(image_bytes(image, "PNG"), 10**8)
    assert not gpu_decodable(image_bytes(image.convert("CMYK"), "JPEG"), 10**8)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: PIL applies it, so the CPU path must decode it
    assert not gpu_decodable(image_bytes(image, "JPEG", exif=exif.tobytes()), 10**8)
    assert not gpu_decodable(image_bytes(image, "JPEG"), 40 * 30 - 1)  # over the pixel limit
    assert not gpu_decodable(b"\xff\xd8\xff not really", 10**8)


def test_gpu_decode_is_chosen_only_when_asked_or_on_cuda(tiny_encoder):
    assert gpu_resize_of(tiny_encoder.uint8_image_transform) is not None
    assert decode_geometry(tiny_encoder, tiny_index_config(decode="auto")) is None  # a CPU encoder
    assert decode_geometry(tiny_encoder, tiny_index_config(decode="cpu")) is None
    assert decode_geometry(tiny_encoder, tiny_index_config(decode="gpu")) is not None


def test_device_decoding_indexes_like_the_cpu_path(tmp_path, tiny_encoder):
    source = tmp_path / "images"
    write_images(source, 14)
    broken = write_corrupt_files(source)
    rng = np.random.default_rng(5)
    random_image(rng, (50, 40)).convert("CMYK").save(source / "cmyk.jpg", "JPEG")
    random_image(rng, (50, 40)).convert("L").save(source / "grey.jpg", "JPEG")
    reports = {}
    for mode in ("cpu", "gpu"):
        config = tiny_index_config(decode=mode, batch_size=4, num_workers=2)
        reports[mode] = Indexer(tiny_encoder, config, progress=False).run(source, tmp_path / mode)
    cpu, gpu = reports["cpu"], reports["gpu"]
    assert gpu.count == cpu.count == 16 and gpu.added == 16
    assert {p for p, _ in gpu.skipped} == {p for p, _ in cpu.skipped} == {str(p) for p in broken.values()}
    on_cpu, on_gpu = vectors(tmp_path / "cpu"), vectors(tmp_path / "gpu")
    assert set(on_cpu) == set(on_gpu)
    for key, (sha, vec) in on_cpu.items():
        assert on_gpu[key][0] == sha
        # torchvision's bicubic resize is not PIL's to the last bit; the embedding is the same image's
        assert float(vec @ on_gpu[key][1]) > 0.99, key
