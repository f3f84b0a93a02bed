"""POST /api/search, /api/classify, /api/search/batch: inputs of every kind, and every way they can be bad."""

from __future__ import annotations

import io
from pathlib import Path
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from apitest_helpers import encode
from similarity.imageio import open_image


def post_image(client, data: bytes, url: str = "/api/search", field: str = "image", name: str = "q.png"):
    return client.post(url, data={field: (io.BytesIO(data), name)}, content_type="multipart/form-data")


def test_search_multipart_returns_neighbors_prediction_and_timings(client, png_bytes, fmnist_folder, ids):
    r = post_image(client, png_bytes, "/api/search?k=5")
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["k"] == 5 and len(body["neighbors"]) == 5
    first = body["neighbors"][0]
    # the sample is itself indexed (ids[0]): it comes back first with cosine ~1
    assert first["id"] == ids[0] and first["similarity"] > 0.999 and first["rank"] == 1
    assert first["label"] == fmnist_folder.class_names[fmnist_folder.labels[0]]
    assert first["image_url"] == f"/api/images/{ids[0]}"
    assert first["thumbnail_url"].startswith(f"/api/images/{ids[0]}?size=")
    sims = [n["similarity"] for n in body["neighbors"]]
    assert sims == sorted(sims, reverse=True)
    for n in body["neighbors"]:
        assert n["score"] == pytest.approx((1 + n["similarity"]) / 2, abs=1e-5)
    pred = body["prediction"]
    assert pred["label"] in pred["votes"] and pred["weighted"] is False and pred["is_unknown"] is False
    assert sum(pred["votes"].values()) == 5 and all(isinstance(v, int) for v in pred["votes"].values())
    assert pred["confidence"] == pytest.approx(pred["votes"][pred["label"]] / 5)
    assert set(body["timings_ms"]) >= {"decode", "embed", "search", "total"}
    assert "embed;dur=" in r.headers["Server-Timing"] and "encode;dur=" in r.headers["Server-Timing"]


def test_search_raw_body_and_default_k(client, png_bytes):
    r = client.post("/api/search", data=png_bytes, content_type="image/png")
    assert r.status_code == 200 and len(r.get_json()["neighbors"]) == 10
    r = client.post("/api/search?k=3", data=png_bytes, content_type="application/octet-stream")
    assert r.status_code == 200 and len(r.get_json()["neighbors"]) == 3


def test_weighted_vote(client, png_bytes):
    body = post_image(client, png_bytes, "/api/search?k=7&weighted=true").get_json()
    pred = body["prediction"]
    assert pred["weighted"] is True
    assert sum(pred["votes"].values()) == pytest.approx(sum(n["score"] for n in body["neighbors"]), abs=1e-4)


def test_classify_returns_prediction_only(client, png_bytes):
    r = post_image(client, png_bytes, "/api/classify?k=5")
    body = r.get_json()
    assert r.status_code == 200 and "neighbors" not in body and body["prediction"]["label"]


@pytest.mark.parametrize("k", ["0", "-1", "1000000000", "abc", "2.5", "", "101"])
def test_bad_k_is_400(client, png_bytes, k):
    r = post_image(client, png_bytes, f"/api/search?k={k}")
    assert r.status_code == 400 and "k must be" in r.get_json()["error"]


def test_bad_weighted_is_400(client, png_bytes):
    r = post_image(client, png_bytes, "/api/search?weighted=maybe")
    assert r.status_code == 400 and "weighted" in r.get_json()["error"]


def test_k_larger_than_index_returns_all(make_writable_app, png_bytes):
    client = make_writable_app(max_k=1000).test_client()
    assert len(client.post("/api/search?k=1000", data=png_bytes, content_type="image/png").get_json()["neighbors"]) == 600


@pytest.mark.parametrize("data, needle", [
    (b"this is not an image", "not a recognised image format"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "image"),
])
def test_non_image_or_corrupt_is_400(client, data, needle):
    r = post_image(client, data)
    assert r.status_code == 400 and needle in r.get_json()["error"]


def test_truncated_png_is_400(client, png_bytes):
    r = post_image(client, png_bytes[: len(png_bytes) // 2])
    assert r.status_code == 400 and "error" in r.get_json()


def test_missing_field_empty_file_and_empty_body(client, png_bytes):
    r = client.post("/api/search", data={"other": (io.BytesIO(png_bytes), "a.png")}, content_type="multipart/form-data")
    assert r.status_code == 400 and "'image'" in r.get_json()["error"]
    assert post_image(client, b"").status_code == 400
    assert client.post("/api/search", data=b"", content_type="image/png").status_code == 400


def test_unsupported_content_type_is_415(client):
    r = client.post("/api/search", json={"image": "x"})
    assert r.status_code == 415 and "content type" in r.get_json()["error"]


def test_request_too_large_is_413(make_writable_app):
    client = make_writable_app(max_upload_bytes=10_000).test_client()
    r = client.post("/api/search", data=b"\x00" * 20_000, content_type="image/png")
    assert r.status_code == 413 and "too large" in r.get_json()["error"]


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb's shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("width, height, needle", [(60_000, 60_000, "decompression bomb"),
                                                   (7_000, 7_000, "over the limit")])
def test_decompression_bomb_refused(client, width, height, needle):
    r = post_image(client, _png_claiming(width, height))
    assert r.status_code == 400 and needle in r.get_json()["error"]


def _mode_images() -> dict[str, tuple[bytes, str]]:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (28, 28, 3), dtype=np.uint8), "RGB")
    gray = rgb.convert("L")
    la = Image.merge("LA", (gray, gray.point(lambda v: 255 - v)))
    p = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    p.info["transparency"] = 0
    i16 = Image.fromarray(np.asarray(gray, dtype=np.uint16) * 257)
    assert i16.mode == "I;16", i16.mode
    return {
        "L": (encode(gray), "png"), "LA": (encode(la), "png"),
        "P+transparency": (encode(p), "png"), "RGBA": (encode(rgb.convert("RGBA")), "png"),
        "CMYK": (encode(rgb.convert("CMYK"), "JPEG"), "jpg"), "I;16": (encode(i16), "png"),
        "1": (encode(gray.convert("1")), "png"), "F": (encode(gray.convert("F"), "TIFF"), "tif"),
        "GIF": (encode(p, "GIF"), "gif"), "WEBP": (encode(rgb, "WEBP"), "webp"), "BMP": (encode(rgb, "BMP"), "bmp"),
    }


@pytest.mark.parametrize("mode", list(_mode_images()))
def test_every_pillow_mode_is_searchable(client, mode):
    data, ext = _mode_images()[mode]
    r = post_image(client, data, "/api/search?k=3", name=f"q.{ext}")
    assert r.status_code == 200, (mode, r.get_json())
    assert len(r.get_json()["neighbors"]) == 3


def test_exif_rotated_jpeg_is_transposed(client, app):
    image = Image.new("RGB", (40, 20), "white")
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    data = encode(image, "JPEG", exif=exif)
    assert open_image(data).size == (20, 40)
    assert post_image(client, data, name="r.jpg").status_code == 200


def test_batch_search(client, png_bytes, fmnist_folder, ids):
    other = Path(fmnist_folder.paths[100]).read_bytes()
    r = client.post("/api/search/batch?k=4", data={"images": [(io.BytesIO(png_bytes), "a.png"),
                                                              (io.BytesIO(other), "b.png")]},
                    content_type="multipart/form-data")
    body = r.get_json()
    assert r.status_code == 200 and len(body["results"]) == 2
    assert body["results"][0]["neighbors"][0]["id"] == ids[0] and body["results"][1]["neighbors"][0]["id"] == ids[100]
    assert all(len(res["neighbors"]) == 4 for res in body["results"])


def test_batch_errors(client, png_bytes):
    too_many = [(io.BytesIO(png_bytes), f"{i}.png") for i in range(17)]
    r = client.post("/api/search/batch", data={"images": too_many}, content_type="multipart/form-data")
    assert r.status_code == 400 and "at most 16" in r.get_json()["error"]
    r = client.post("/api/search/batch", data={"images": [(io.BytesIO(png_bytes), "a.png"),
                                                          (io.BytesIO(b"junk"), "b.png")]},
                    content_type="multipart/form-data")
    assert r.status_code == 400 and "images[1]" in r.get_json()["error"]
    assert client.post("/api/search/batch", data=png_bytes, content_type="image/png").status_code == 415
    r = client.post("/api/search/batch", data={"x": "y"}, content_type="multipart/form-data")
    assert r.status_code == 400


def test_batch_decodes_and_embeds_one_image_at_a_time_within_a_pixel_budget(make_writable_app, png_bytes,
                                                                             monkeypatch):
    """16 large images used to be decoded before any was embedded (16 x 40 MP of pixels per request): now
    each image is decoded, embedded and dropped in turn, and the request's pixels are capped."""
    import engine.engine as engine_module

    app = make_writable_app(max_request_pixels=2000)  # 28x28 = 784 pixels: the third image is over
    service = app.extensions["simsearch"]
    events: list[str] = []
    real_open, real_embed = engine_module.open_image, service.engine.embedder.embed_images
    monkeypatch.setattr(engine_module, "open_image", lambda *a, **k: events.append("decode") or real_open(*a, **k))
    monkeypatch.setattr(service.engine.embedder, "embed_images",
                        lambda images: events.append(f"embed {len(images)}") or real_embed(images))
    client = app.test_client()
    two = [(io.BytesIO(png_bytes), f"{i}.png") for i in range(2)]
    r = client.post("/api/search/batch", data={"images": two}, content_type="multipart/form-data")
    assert r.status_code == 200 and events == ["decode", "embed 1", "decode", "embed 1"]
    events.clear()
    five = [(io.BytesIO(png_bytes), f"{i}.png") for i in range(5)]
    r = client.post("/api/search/batch", data={"images": five}, content_type="multipart/form-data")
    assert r.status_code == 413 and "images[2]" in r.get_json()["error"] and "2000 pixels" in r.get_json()["error"]
    assert events == ["decode", "embed 1", "decode", "embed 1", "decode"]  # images 3 and 4 never decoded
