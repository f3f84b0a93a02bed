"""Decoder fuzzing (issue 6): mutated image bytes are decoded to "RGB"/"L" and preprocess to a finite tensor of
the spec's shape, or are refused with ``ImageDecodeError``; nothing else is raised, nothing hangs or blows up
memory. Plus regressions for what the fuzzing found, each input built here at test time."""

from __future__ import annotations

import io
import logging
import struct
import threading
import time
import warnings
import zlib
from datetime import timedelta

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from PIL import Image, ImageFile
from torchvision.transforms import v2

from bench.reliability.decode_fuzz import FUZZ_SPECS, fuzz_inputs, image_bytes, run_decode_fuzz
from similarity.config import PreprocessSpec
from similarity.imageio import DEFAULT_MAX_PIXELS, MAX_SIDE, ImageDecodeError, open_image
from similarity.transforms import ResizeCenterCrop, eval_transform, pixels_to_tensor

TRANSFORMS = [(spec, eval_transform(spec)) for spec in FUZZ_SPECS]


def _assert_preprocesses(image: Image.Image) -> None:
    for spec, transform in TRANSFORMS:
        x = transform(image)
        assert x.shape == (spec.channels, spec.image_size, spec.image_size) and x.dtype == torch.float32
        assert torch.isfinite(x).all()


@settings(max_examples=300, deadline=timedelta(seconds=5), derandomize=True, database=None)
@given(image_bytes())
def test_fuzzed_bytes_decode_to_rgb_or_l_or_are_refused(data):
    try:
        image = open_image(data)
    except ImageDecodeError:
        return
    assert image.mode in ("RGB", "L")
    assert image.width >= 1 and image.height >= 1 and image.width * image.height <= DEFAULT_MAX_PIXELS
    _assert_preprocesses(image)


def test_fuzz_run_in_a_child_process_finds_no_crash_hang_or_memory_blowup():
    result = run_decode_fuzz(n_inputs=150, seed=1, time_limit_s=5.0, memory_limit_mb=512)
    assert result["crashes"] == 0, result["crash_examples"]
    assert result["hangs"] == 0, result["hang_examples"]
    assert result["memory_errors"] == 0, result["memory_examples"]
    assert result["decoded_ok"] + result["refused"] == 150
    assert result["decoded_ok"] > 20 and result["refused"] > 20  # both paths exercised
    assert result["peak_rss_mb"] < result["baseline_rss_mb"] + 512
    assert result["max_seconds_per_input"] < 5.0


def test_fuzz_run_counts_an_input_over_the_time_limit_as_a_hang():
    result = run_decode_fuzz(n_inputs=1, seed=0, time_limit_s=0.0)
    assert result["hangs"] == 1 and result["crashes"] == 0 and result["child_processes"] == 1
    assert result["hang_examples"][0]["hex_prefix"] == next(fuzz_inputs(1, seed=0))[:48].hex()


def test_fuzz_inputs_are_seeded():
    assert list(fuzz_inputs(20, seed=3)) == list(fuzz_inputs(20, seed=3))
    assert list(fuzz_inputs(20, seed=3)) != list(fuzz_inputs(20, seed=4))


# ------------------------------------------------------------------------------ extreme aspect ratios
def _old_eval_transform(spec: PreprocessSpec) -> v2.Compose:
    """``eval_transform`` as it was before the extreme-aspect fix: the definition checkpoints were built with."""
    mode = "L" if spec.channels == 1 else "RGB"
    return v2.Compose([
        v2.Lambda(lambda image: image if image.mode == mode else image.convert(mode)),
        v2.Resize(spec.resize_to, antialias=True), v2.CenterCrop(spec.image_size),
        v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(spec.mean, spec.std),
    ])


def _noise(size: tuple[int, int], mode: str, seed: int = 0) -> Image.Image:
    bands = 3 if mode == "RGB" else 1
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], bands), dtype=np.uint8)
    return Image.frombytes(mode, size, pixels.tobytes())


@pytest.mark.parametrize("spec", [*FUZZ_SPECS, PreprocessSpec(image_size=28, resize=20)],
                         ids=["gray28", "rgb256-224", "gray20-28"])
@pytest.mark.parametrize("size", [(1, 1), (3, 2), (28, 28), (640, 480), (300, 1000), (500, 9), (2, 256)])
def test_normal_images_preprocess_bit_for_bit_as_before(spec, size):
    for mode in ("L", "RGB"):
        image = _noise(size, mode)
        assert torch.equal(eval_transform(spec)(image), _old_eval_transform(spec)(image))


@pytest.mark.parametrize("size", [(3, 300), (300, 2), (5, 400), (1, 100), (255, 2939)])
@pytest.mark.parametrize("resize_to,crop", [(256, 224), (28, 28), (20, 28)])
def test_windowed_resize_matches_the_plain_path_within_one_grey_level(size, resize_to, crop):
    image = _noise(size, "RGB", seed=size[0])
    plain = np.asarray(v2.CenterCrop(crop)(v2.Resize(resize_to, antialias=True)(image)), dtype=np.int16)
    windowed = np.asarray(ResizeCenterCrop(resize_to, crop, max_resized_pixels=0)(image), dtype=np.int16)
    assert windowed.shape == plain.shape
    assert np.abs(windowed - plain).max() <= 1


@pytest.mark.parametrize("size", [(1, 10_000), (10_000, 1), (2, 65_535), (3, 40_000)])
def test_extreme_aspect_ratio_preprocesses_fast_without_a_huge_intermediate(size):
    """A 1 x 10000 image used to become 256 x 2,560,000 pixels (2 GB) before the centre crop."""
    data = io.BytesIO()
    Image.linear_gradient("L").resize(size).save(data, "PNG")
    image = open_image(data.getvalue())
    started = time.perf_counter()
    _assert_preprocesses(image)
    assert time.perf_counter() - started < 2.0  # the plain path needs ~7 s (and 2 GB) for 1 x 10000


def test_pixels_to_tensor_refuses_what_it_would_scale_wrongly():
    spec = PreprocessSpec()
    pixels = np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    assert torch.equal(pixels_to_tensor(pixels, spec), torch.stack([eval_transform(spec)(Image.fromarray(p))
                                                                     for p in pixels]))
    with pytest.raises(ValueError, match="uint8 pixels, got torch.int64"):
        pixels_to_tensor(pixels.astype(np.int64), spec)
    with pytest.raises(ValueError, match=r"got \(4, 28, 27\)"):
        pixels_to_tensor(pixels[:, :, :27], spec)


# ------------------------------------------------------------------------------ headers that lie
def _png(width: int, height: int, bit_depth: int, colour_type: int, raw_rows: bytes) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw_rows, 9))
            + chunk(b"IEND", b""))


def test_png_bomb_claiming_30000_by_30000_is_refused_before_decoding():
    rows = (b"\x00" + bytes(30_000 // 8)) * 64  # 64 of the 30,000 rows; a 1-bit image keeps this small
    started = time.perf_counter()
    with pytest.raises(ImageDecodeError, match="decompression bomb|over the limit"):
        open_image(_png(30_000, 30_000, 1, 0, rows))
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize("width,height,message", [
    (8_000, 8_000, "over the limit of 40000000"),  # under Pillow's own bomb limit, over ours
    (70_000, 10, "side is over the limit of 65535"),
    (1, 40_000_000, "side is over the limit of 65535"),  # 8 bytes per row in Pillow: 320 MB per copy
])
def test_png_headers_over_our_limits_are_refused(width, height, message):
    rows = (b"\x00" + bytes((width + 7) // 8)) * 4
    with pytest.raises(ImageDecodeError, match=message):
        open_image(_png(width, height, 1, 0, rows))


def test_gif_claiming_65535_by_65535_is_refused():
    palette = bytes([0, 0, 0, 255, 255, 255])
    data = (b"GIF89a" + struct.pack("<HHBBB", 65_535, 65_535, 0x80, 0, 0) + palette
            + b"\x2c" + struct.pack("<HHHHB", 0, 0, 65_535, 65_535, 0) + b"\x02\x02\x44\x01\x00\x3b")
    with pytest.raises(ImageDecodeError, match="decompression bomb|over the limit"):
        open_image(data)


def test_longest_allowed_side_is_accepted():
    image = open_image(_png(MAX_SIDE, 1, 1, 0, b"\x00" + bytes((MAX_SIDE + 7) // 8)))
    assert image.size == (MAX_SIDE, 1) and image.mode == "L"
    _assert_preprocesses(image)


# ------------------------------------------------------------------------------ warnings and odd pixels
def _tiff_with_tag_past_eof() -> bytes:
    """A valid 2x2 greyscale TIFF whose ImageDescription tag points past the end of the file."""
    entries = [(256, 3, 1, 2), (257, 3, 1, 2), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (270, 2, 1000, 5000), (273, 4, 1, 0), (277, 3, 1, 1), (278, 3, 1, 2), (279, 4, 1, 4)]
    pixels_at = 8 + 2 + 12 * len(entries) + 4
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHII", tag, kind, count, pixels_at if tag == 273 else value)
        for tag, kind, count, value in entries)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + bytes([0, 85, 170, 255])


def test_pillow_metadata_warnings_are_logged_not_raised(caplog):
    """Pillow warns "Tag data larger than file"; with warnings as errors (pytest) that used to be a 500."""
    with caplog.at_level(logging.DEBUG, logger="similarity.imageio"):
        image = open_image(_tiff_with_tag_past_eof())
    assert image.mode == "L" and np.asarray(image).tolist() == [[0, 85], [170, 255]]
    assert "Tag data larger than file" in caplog.text


def test_warning_capture_is_thread_safe_and_leaves_no_global_state():
    filters, hook = list(warnings.filters), warnings.showwarning
    data, errors = _tiff_with_tag_past_eof(), []

    def decode_many() -> None:
        try:
            for _ in range(30):
                assert open_image(data).size == (2, 2)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=decode_many) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert warnings.filters == filters and warnings.showwarning is hook


@pytest.mark.parametrize("fmt", ["DDS", "SGI", "TGA", "PCX", "QOI"])
def test_formats_outside_the_allowlist_are_refused_before_decoding(fmt):
    """Pillow decodes these too, but no photo comes in them: their decoders stay out of an upload's reach
    (a damaged DDS used to raise NotImplementedError, a 500)."""
    data = io.BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(data, fmt)
    with pytest.raises(ImageDecodeError, match="not a recognised image format .supported: JPEG"):
        open_image(data.getvalue())


def test_unexpected_decoder_exceptions_become_decode_errors(monkeypatch):
    """A decoder raising RuntimeError (Pillow's AVIF plugin does on a damaged file) is a refusal, not a 500."""
    def broken_load(self):
        raise RuntimeError("Failed to decode frame")

    data = io.BytesIO()
    Image.new("RGB", (4, 4)).save(data, "PNG")
    monkeypatch.setattr(ImageFile.ImageFile, "load", broken_load)
    with pytest.raises(ImageDecodeError, match="corrupt or truncated image .Failed to decode frame"):
        open_image(data.getvalue())


def test_float_tiff_with_nan_and_infinity_becomes_l():
    signalling_nan = np.array([0x7FA00000], dtype=np.uint32).view(np.float32)[0]
    values = np.array([[np.nan, 1.0, np.inf], [-np.inf, 3.0, signalling_nan]], dtype=np.float32)
    data = io.BytesIO()
    Image.frombytes("F", (3, 2), values.tobytes()).save(data, "TIFF")
    image = open_image(data.getvalue())
    assert image.mode == "L" and np.asarray(image).tolist() == [[0, 0, 255], [0, 255, 0]]
