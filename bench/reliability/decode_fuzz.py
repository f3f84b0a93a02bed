"""Decoder fuzzing: mutated image bytes through :func:`~similarity.imageio.open_image` and the eval preprocessing.

Inputs are real images (18 formats, many modes, 1x1 to 1x10000) encoded with Pillow at run time, then mutated:
byte flips, truncation, duplicated or spliced chunks, corrupted header fields (PNG IHDR with a valid CRC, GIF,
BMP, JPEG SOF and TIFF sizes set to extreme values), plus fully random bytes. The contract under test:
``open_image`` returns an "RGB"/"L" image or raises ``ImageDecodeError``; a decoded image preprocesses into a
finite tensor of the spec's shape; nothing else is raised (the API would answer 500), no input runs past the
time limit and none needs more than the memory limit.

* :func:`fuzz_inputs` / :func:`fuzz_input`: the seeded generator; :func:`image_bytes` wraps it for hypothesis.
* :func:`run_decode_fuzz`: decodes in a child process under ``RLIMIT_AS``, killed after ``time_limit_s`` per input.
"""

from __future__ import annotations

import io
import json
import os
import random
import resource
import select
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import suppress
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from bench import REPO
from similarity.config import PreprocessSpec

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy


# Every decoded input goes through both: Fashion-MNIST-like (28, grey) and ImageNet-like (256 -> 224, RGB).
FUZZ_SPECS = (
    PreprocessSpec(image_size=28, channels=1, mean=(0.2860,), std=(0.3530,)),
    PreprocessSpec(image_size=224, channels=3, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), resize=256),
)

# (format, mode, save options); "exif": True becomes an EXIF block with a random (sometimes invalid) orientation.
_RECIPES: tuple[tuple[str, str, dict], ...] = (
    ("PNG", "L", {}), ("PNG", "LA", {}), ("PNG", "RGB", {}), ("PNG", "RGBA", {}), ("PNG", "1", {}),
    ("PNG", "I;16", {}), ("PNG", "P", {}), ("PNG", "P", {"transparency": 0}),
    ("JPEG", "RGB", {"quality": 80}), ("JPEG", "L", {}), ("JPEG", "CMYK", {}),
    ("JPEG", "RGB", {"progressive": True}), ("JPEG", "RGB", {"exif": True}),
    ("GIF", "P", {"save_all": True, "duration": 50, "loop": 0}), ("GIF", "L", {}),
    ("TIFF", "RGB", {"save_all": True, "compression": "tiff_lzw"}), ("TIFF", "L", {"save_all": True}),
    ("TIFF", "RGBA", {"compression": "tiff_adobe_deflate"}), ("TIFF", "CMYK", {"compression": "packbits"}),
    ("TIFF", "I;16", {}), ("TIFF", "F", {}), ("TIFF", "1", {"compression": "group4"}), ("TIFF", "RGB", {"exif": True}),
    ("WEBP", "RGB", {"quality": 70}), ("WEBP", "RGBA", {"lossless": True}), ("WEBP", "RGB", {"save_all": True}),
    ("BMP", "1", {}), ("BMP", "L", {}), ("BMP", "P", {}), ("BMP", "RGB", {}), ("BMP", "RGBA", {}),
    ("ICO", "RGBA", {}), ("PPM", "L", {}), ("PPM", "RGB", {}), ("PPM", "1", {}), ("PPM", "I;16", {}),
    # formats nobody names but Image.open accepts all the same
    ("JPEG2000", "RGB", {}), ("JPEG2000", "L", {"irreversible": True}), ("AVIF", "RGBA", {}), ("QOI", "RGBA", {}),
    ("DDS", "RGB", {}), ("TGA", "RGBA", {"compression": "tga_rle"}), ("PCX", "P", {}), ("SGI", "RGB", {}),
    ("MPO", "RGB", {"save_all": True}), ("XBM", "1", {}), ("SPIDER", "F", {}),
)
_BANDS = {"1": 1, "L": 1, "P": 1, "I;16": 1, "F": 1, "LA": 2, "RGB": 3, "RGBA": 4, "CMYK": 4}
_MAGICS = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"GIF87a", b"BM", b"II*\x00", b"MM\x00*",
           b"RIFF\x00\x01\x00\x00WEBPVP8 ", b"RIFF\x00\x01\x00\x00WEBPVP8L", b"\x00\x00\x01\x00", b"P6\n", b"P5\n")
# size fields: zero, one, large but allowed (a big allocation, then too little data), over every limit
_EXTREME_16 = (0, 1, 5_000, 0x7FFF, 0x8000, 0xFFFF)
_EXTREME_32 = (0, 1, 5_000, 30_000, 65_535, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)


# ------------------------------------------------------------------------------------------------ inputs
def fuzz_inputs(n: int, seed: int) -> Iterator[bytes]:
    """``n`` fuzz inputs (bytes), the same for the same ``seed``."""
    rng = random.Random(seed)
    for _ in range(n):
        yield fuzz_input(rng)


def image_bytes() -> SearchStrategy[bytes]:
    """Hypothesis strategy over :func:`fuzz_input` (its format, size and mutation choices shrink)."""
    from hypothesis import strategies as st  # a test dependency only

    return st.randoms(use_true_random=False).map(fuzz_input)


def fuzz_input(rng: random.Random) -> bytes:
    """One input: random bytes (15%) or an encoded image, mutated 1-3 times in 3 cases out of 4."""
    kind = rng.random()
    if kind < 0.07:
        return _random_bytes(rng, rng.randint(0, 1024))
    if kind < 0.15:
        return rng.choice(_MAGICS) + _random_bytes(rng, rng.randint(0, 512))
    data = encode_random_image(rng)
    if rng.random() < 0.25:
        return data
    for _ in range(rng.randint(1, 3)):
        if data:
            data = rng.choice(_MUTATIONS)(data, rng)
    return data


def encode_random_image(rng: random.Random) -> bytes:
    """A random image in a random format and mode: 1x1, up to 64x64, or a strip of up to 3x10000 pixels."""
    fmt, mode, options = rng.choice(_RECIPES)
    shape = rng.random()
    if shape < 0.1:
        size = (1, 1)
    elif shape < 0.3:
        long_side, short_side = rng.randint(100, 10_000), rng.randint(1, 3)
        size = (short_side, long_side) if rng.random() < 0.5 else (long_side, short_side)
    else:
        size = (rng.randint(1, 64), rng.randint(1, 64))
    if fmt in ("WEBP", "ICO", "AVIF"):  # ICO's limit; WebP and AVIF take long to encode a strip
        size = (min(size[0], 256), min(size[1], 256))
    pixels = np.random.default_rng(rng.getrandbits(64))
    frames = [_random_image(mode, size, pixels) for _ in range(rng.randint(2, 3) if options.get("save_all") else 1)]
    options = dict(options, **({"append_images": frames[1:]} if options.get("save_all") else {}))
    if options.get("exif"):
        exif = Image.Exif()
        exif[0x0112] = rng.choice((0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0xFFFF))  # orientation
        options["exif"] = exif.tobytes()
    buffer = io.BytesIO()
    frames[0].save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _random_image(mode: str, size: tuple[int, int], pixels: np.random.Generator) -> Image.Image:
    """Noise or a gradient in ``mode``; ``size`` is (width, height)."""
    width, height = size
    shape = (height, width, _BANDS[mode])
    if pixels.random() < 0.5:
        array = pixels.integers(0, 256, shape, dtype=np.uint8)
    else:
        ramp = np.add.outer(np.arange(height), np.arange(width)) * (255.0 / max(width + height - 2, 1))
        array = np.repeat(ramp[..., None], shape[2], axis=2).astype(np.uint8)
    if mode == "1":
        return Image.frombytes("L", size, array.tobytes()).point(lambda v: 255 if v > 127 else 0).convert("1")
    if mode == "I;16":
        return Image.frombytes(mode, size, (array.astype("<u2") * 257).tobytes())
    if mode == "F":
        return Image.frombytes(mode, size, (array.astype(np.float32) / 7.0).tobytes())
    image = Image.frombytes("L" if mode == "P" else mode, size, array.tobytes())
    if mode == "P":
        image = image.convert("P")
        image.putpalette(pixels.integers(0, 256, 768, dtype=np.uint8).tobytes())
    return image


def _random_bytes(rng: random.Random, n: int) -> bytes:
    return np.random.default_rng(rng.getrandbits(64)).integers(0, 256, n, dtype=np.uint8).tobytes()


# ----------------------------------------------------------------------------------------------- mutations
def flip_bytes(data: bytes, rng: random.Random) -> bytes:
    """Set 1-8 random bytes to random values (or flip one bit of them)."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(out))
        out[i] = out[i] ^ (1 << rng.randrange(8)) if rng.random() < 0.5 else rng.randrange(256)
    return bytes(out)


def truncate(data: bytes, rng: random.Random) -> bytes:
    """Cut at a random offset."""
    return data[:rng.randrange(len(data))]


def duplicate_chunk(data: bytes, rng: random.Random) -> bytes:
    """Insert a copy of a random slice (up to 256 bytes, repeated up to 8 times) at a random offset."""
    start = rng.randrange(len(data))
    chunk = data[start:start + rng.randint(1, 256)] * rng.randint(1, 8)
    at = rng.randrange(len(data) + 1)
    return data[:at] + chunk + data[at:]


def splice(data: bytes, rng: random.Random) -> bytes:
    """Overwrite or insert a slice of another random image (often another format) at a random offset."""
    other = encode_random_image(rng)
    start = rng.randrange(len(other))
    chunk = other[start:start + rng.randint(1, 512)]
    at = rng.randrange(len(data) + 1)
    return data[:at] + chunk + data[at + (len(chunk) if rng.random() < 0.5 else 0):]


def corrupt_int_field(data: bytes, rng: random.Random) -> bytes:
    """Write an extreme 16- or 32-bit value (either byte order) somewhere in the first 64 bytes."""
    width = rng.choice((2, 4))
    value = rng.choice(_EXTREME_16 if width == 2 else _EXTREME_32)
    packed = struct.pack(rng.choice("<>") + ("H" if width == 2 else "I"), value)
    at = rng.randrange(max(1, min(len(data), 64)))
    return data[:at] + packed + data[at + width:]


def corrupt_dimensions(data: bytes, rng: random.Random) -> bytes:
    """Set the width/height fields of a PNG (also inside an ICO), GIF, BMP, JPEG or TIFF to extreme values."""
    out = bytearray(data)
    ihdr = data.find(b"IHDR")
    if ihdr >= 4 and len(data) >= ihdr + 21:
        for at in (ihdr + 4, ihdr + 8):
            if rng.random() < 0.7:
                out[at:at + 4] = struct.pack(">I", rng.choice(_EXTREME_32))
        if rng.random() < 0.8:  # a valid CRC gets past Pillow's chunk check
            out[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(out[ihdr:ihdr + 17])))
    elif data[:3] == b"GIF" and len(data) >= 13:
        for at in _gif_size_offsets(data):
            out[at:at + 2] = struct.pack("<H", rng.choice(_EXTREME_16))
    elif data[:2] == b"BM" and len(data) >= 30:
        at = rng.choice((18, 22, 28))  # width, height (negative: top-down), bits per pixel
        out[at:at + 4] = struct.pack("<i", rng.choice((0, -1, 1, 5_000, 65_535, -30_000, 2**31 - 1, -2**31)))
    elif data[:2] == b"\xff\xd8" and (sof := _jpeg_sof_offset(data)) is not None:
        out[sof + 5:sof + 9] = struct.pack(">HH", rng.choice(_EXTREME_16), rng.choice(_EXTREME_16))
    elif data[:4] in (b"II*\x00", b"MM\x00*"):
        order = "<" if data[:2] == b"II" else ">"
        for at in _tiff_size_offsets(data, order):  # as one LONG: type, count, value
            out[at - 6:at + 4] = struct.pack(order + "HII", 4, 1, rng.choice(_EXTREME_32))
    else:
        return corrupt_int_field(data, rng)
    return bytes(out[:len(data)])


def _gif_size_offsets(data: bytes) -> list[int]:
    """Offsets of the logical screen width/height and of the first image descriptor's width/height."""
    offsets = [6, 8]
    at = 13 + (3 * 2 ** ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    while at < len(data) and data[at] == 0x21:  # extension blocks: introducer, label, sub-blocks
        at += 2
        while at < len(data) and data[at]:
            at += data[at] + 1
        at += 1
    return offsets + ([at + 5, at + 7] if at + 9 <= len(data) and data[at] == 0x2C else [])


def _jpeg_sof_offset(data: bytes) -> int | None:
    at = 2
    while at + 9 <= len(data) and data[at] == 0xFF:
        if 0xC0 <= data[at + 1] <= 0xCF and data[at + 1] not in (0xC4, 0xC8, 0xCC):
            return at
        at += 2 + struct.unpack(">H", data[at + 2:at + 4])[0]
    return None


def _tiff_size_offsets(data: bytes, order: str) -> list[int]:
    """Offsets of the value fields of the first IFD's ImageWidth/ImageLength entries."""
    ifd = struct.unpack(order + "I", data[4:8])[0] if len(data) >= 8 else len(data)
    if ifd + 2 > len(data):
        return []
    end = min(ifd + 2 + 12 * struct.unpack(order + "H", data[ifd:ifd + 2])[0], len(data) - 11)
    return [entry + 8 for entry in range(ifd + 2, end, 12)
            if struct.unpack(order + "H", data[entry:entry + 2])[0] in (256, 257)]


_MUTATIONS: tuple[Callable[[bytes, random.Random], bytes], ...] = (
    flip_bytes, flip_bytes, truncate, truncate, duplicate_chunk, splice, corrupt_int_field,
    corrupt_dimensions, corrupt_dimensions,
)


# ------------------------------------------------------------------------------------------------- runner
def run_decode_fuzz(n_inputs: int, seed: int, time_limit_s: float = 5.0, memory_limit_mb: int = 1024,
                    max_examples: int = 5) -> dict:
    """Decode and preprocess the first ``n_inputs`` of :func:`fuzz_inputs` in a child process; JSON-able counts.

    The child sets ``RLIMIT_AS`` to its address space after its imports (torch alone maps ~3 GB) plus
    ``memory_limit_mb``, and turns warnings into errors, as the tests do. An input still running after
    ``time_limit_s`` seconds is a hang: the child is killed and a fresh one started. Every input has exactly one
    outcome: ``decoded_ok``, ``refused`` (``ImageDecodeError``), ``crashes`` (any other exception, a bad image
    or tensor, the child dying), ``memory_errors`` (``MemoryError``, also as the cause of a refusal) or
    ``hangs``. Seconds are measured in the child; ``peak_rss_mb`` is the child's peak resident set (VmHWM:
    ``ru_maxrss`` would include the parent's, inherited through vfork and exec).
    """
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    examples: dict[str, list[dict]] = {"crash": [], "hang": [], "memory": []}
    max_seconds, peak_rss_kb, baseline_rss_kb, children = 0.0, 0, 0, 0
    started = time.perf_counter()
    worker: _Worker | None = None
    try:
        for data in fuzz_inputs(n_inputs, seed):
            if worker is None:
                worker, children = _Worker(memory_limit_mb), children + 1
                baseline_rss_kb = max(baseline_rss_kb, worker.baseline_rss_kb)
            result = worker.decode(data, time_limit_s)
            if result is None:  # it hung (still running: killed now) or died
                exit_code, worker = worker.kill(), None
                result = ({"outcome": "hang", "type": "hang", "message": f"over {time_limit_s} s"} if exit_code is None
                          else {"outcome": "crash", "type": "child died", "message": f"exit code {exit_code}"})
            else:
                max_seconds, peak_rss_kb = max(max_seconds, result["seconds"]), max(peak_rss_kb, result["rss_kb"])
            counts[result["outcome"]] += 1
            if result["outcome"] == "refused":
                reasons[_reason(result["message"])] += 1
            elif result["outcome"] in examples and len(examples[result["outcome"]]) < max_examples:
                examples[result["outcome"]].append({"type": result["type"], "message": result["message"][:300],
                                                    "size": len(data), "hex_prefix": data[:48].hex()})
    finally:
        if worker is not None:
            worker.kill()
    return {
        "inputs": n_inputs, "seed": seed, "decoded_ok": counts["ok"], "refused": counts["refused"],
        "crashes": counts["crash"], "hangs": counts["hang"], "memory_errors": counts["memory"],
        "max_seconds_per_input": round(max_seconds, 3), "time_limit_s": time_limit_s,
        "peak_rss_mb": round(peak_rss_kb / 1024, 1), "baseline_rss_mb": round(baseline_rss_kb / 1024, 1),
        "memory_limit_mb": memory_limit_mb, "child_processes": children,
        "wall_seconds": round(time.perf_counter() - started, 1), "refusal_reasons": dict(reasons.most_common(8)),
        "crash_examples": examples["crash"], "hang_examples": examples["hang"], "memory_examples": examples["memory"],
    }


def _reason(message: str) -> str:
    """'upload: corrupt or truncated image (broken data stream)' -> 'corrupt or truncated image'."""
    reason = message.split(": ", 1)[-1].split(" (", 1)[0]
    return "".join("N" if c.isdigit() else c for c in reason)[:80]


class _Worker:
    """The child process: length-prefixed inputs on its stdin, one JSON line per input on its stdout."""

    def __init__(self, memory_limit_mb: int, startup_timeout_s: float = 300.0) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)}
        self._stderr, self._buffer = tempfile.TemporaryFile(), b""
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from bench.reliability.decode_fuzz import worker_main; worker_main()",
             str(memory_limit_mb)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=env)
        ready = self._read_line(startup_timeout_s)
        if ready is None:
            self.kill()
            self._stderr.seek(0)
            log = self._stderr.read()[-2000:].decode(errors="replace")
            raise RuntimeError(f"decode fuzz worker did not start: {log}")
        self.baseline_rss_kb = int(json.loads(ready)["rss_kb"])

    def decode(self, data: bytes, timeout_s: float) -> dict | None:
        """The child's result for ``data``, or None if it has not answered within ``timeout_s`` or died."""
        try:
            self.proc.stdin.write(struct.pack(">I", len(data)) + data)  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
        except BrokenPipeError:
            return None
        line = self._read_line(timeout_s)
        return None if line is None else json.loads(line)

    def _read_line(self, timeout_s: float) -> bytes | None:
        fd, deadline = self.proc.stdout.fileno(), time.monotonic() + timeout_s  # type: ignore[union-attr]
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:  # the child exited
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def kill(self) -> int | None:
        """Stop the child; its exit code if it had exited by itself, None if it had to be killed."""
        code = self.proc.poll()
        if code is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self._stderr):
            with suppress(BrokenPipeError):  # unflushed input for a dead child
                stream.close()  # type: ignore[union-attr]
        return code


def worker_main() -> None:
    """Entry point of the child process of :func:`run_decode_fuzz` (``sys.argv[1]``: the memory limit in MB)."""
    import warnings

    memory_limit_mb = int(sys.argv[1])
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # stray prints from libraries must not corrupt the protocol
    import torch

    from similarity.imageio import ImageDecodeError, open_image
    from similarity.transforms import eval_transform

    torch.set_num_threads(1)
    transforms = [(spec, eval_transform(spec)) for spec in FUZZ_SPECS]
    warnings.simplefilter("error")
    limit = (_status_kb("VmSize") + memory_limit_mb * 1024) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    out.write(json.dumps({"rss_kb": _status_kb("VmHWM")}).encode() + b"\n")
    while len(header := sys.stdin.buffer.read(4)) == 4:
        data = sys.stdin.buffer.read(struct.unpack(">I", header)[0])
        started = time.perf_counter()
        try:
            result = {"outcome": "ok", "type": "", "message": ""}
            image = open_image(data)
            if image.mode not in ("RGB", "L") or image.width < 1 or image.height < 1:
                result = {"outcome": "crash", "type": "bad image", "message": f"{image.mode} {image.size}"}
            for spec, transform in transforms if result["outcome"] == "ok" else ():
                x = transform(image)
                if x.shape != (spec.channels, spec.image_size, spec.image_size) or not bool(torch.isfinite(x).all()):
                    result = {"outcome": "crash", "type": "bad tensor",
                              "message": f"{tuple(x.shape)} from a {image.mode} {image.size} image for {spec}"}
        except ImageDecodeError as exc:
            memory = isinstance(exc.__cause__, MemoryError)
            result = {"outcome": "memory" if memory else "refused", "type": type(exc).__name__, "message": str(exc)}
        except MemoryError as exc:
            result = {"outcome": "memory", "type": "MemoryError", "message": str(exc)}
        except Exception as exc:  # noqa: BLE001 - finding these is the point
            memory = isinstance(exc, RuntimeError) and "alloc" in str(exc)  # torch's allocator
            result = {"outcome": "memory" if memory else "crash", "type": type(exc).__name__, "message": str(exc)}
        result.update(seconds=time.perf_counter() - started, rss_kb=_status_kb("VmHWM"))
        out.write(json.dumps(result).encode() + b"\n")


def _status_kb(field: str) -> int:
    """A size from /proc/self/status in kB: "VmSize" (address space), "VmHWM" (peak resident set)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))
