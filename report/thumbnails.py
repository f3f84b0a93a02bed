"""Small images for the report: decoded through :func:`similarity.imageio.open_image`, inlined as data URIs."""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from similarity.imageio import ImageDecodeError, open_image, scale_to_fit

log = logging.getLogger(__name__)


def load_thumbnail(path: str, size: int, *, upscale: bool = False) -> Image.Image | None:
    """The image at ``path`` ("RGB") scaled by :func:`similarity.imageio.scale_to_fit` to fit ``size`` x ``size``,
    or None if it cannot be decoded.

    Without ``upscale``, smaller images (e.g. 28x28 Fashion-MNIST) keep their size (the page enlarges them).
    """
    try:
        image = open_image(path)
    except ImageDecodeError as exc:
        log.warning("no thumbnail: %s", exc)
        return None
    return scale_to_fit(image.convert("RGB"), size if upscale else min(size, max(image.size)))


def placeholder(text: str, size: int) -> Image.Image:
    """A grey ``size`` x ``size`` tile showing ``text`` (for rows without an image file)."""
    tile = Image.new("RGB", (size, size), (225, 225, 225))
    draw = ImageDraw.Draw(tile)
    font = ImageFont.load_default(size=max(8, size // 8))
    draw.multiline_text((3, 3), _wrap(text, max(4, size // max(5, size // 12))), fill=(60, 60, 60), font=font)
    return tile


def _wrap(text: str, width: int) -> str:
    return "\n".join(text[i:i + width] for i in range(0, min(len(text), width * 4), width))


def data_uri(image: Image.Image, fmt: str = "PNG") -> str:
    """``data:image/...;base64,...`` for ``image`` (PNG is lossless; JPEG is smaller for photos)."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 80} if fmt == "JPEG" else {}))
    mime = "jpeg" if fmt == "JPEG" else fmt.lower()
    return f"data:image/{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def png_data_uri(png: bytes) -> str:
    """Data URI of already-encoded PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def thumbnail_uris(paths: Sequence[str], size: int, *, progress: bool = False) -> list[str | None]:
    """A data URI per path (None where the file cannot be decoded): PNG or JPEG, whichever is shorter
    (PNG keeps tiny grey images like Fashion-MNIST free of JPEG artefacts)."""
    out: list[str | None] = []
    for path in tqdm(paths, desc="thumbnails", unit="img", disable=not progress):
        image = load_thumbnail(path, size)
        out.append(None if image is None else min(data_uri(image, "PNG"), data_uri(image, "JPEG"), key=len))
    return out
