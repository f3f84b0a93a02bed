"""Figure: near-duplicate detection quality of each signal, on a constructed set of real images.

500 TrashNet-150 photos and 500 Fashion-MNIST images (the originals) each get six copies: a lossless PNG
re-encode (exact duplicate), a resize (x0.5 to x2), a JPEG re-save (quality 30-90), a crop (2-10% off each
axis), a brightness change (5-15% up or down) and a horizontal flip, counted separately.  5,000 distinct images
(the rest of TrashNet-150, then more Fashion-MNIST training images) are mixed in.  Every copy goes through
bytes and :func:`similarity.imageio.open_image`, as an upload would.

Signals: ``exact`` (sha256 of the decoded pixels), ``phash`` and ``dhash`` (Hamming distance of 64-bit hashes),
``phash+mirror`` (the smaller distance to the image or its mirror), and ``cosine`` of the embeddings: the demo
checkpoint for Fashion-MNIST, and for TrashNet (no trained photo model in the repository) the ImageNet
EfficientNet-Lite0 backbone's pooled features, L2-normalised.  An embedding only compares images of its own
domain; cross-domain pairs never match by cosine.

Definitions: recall = original-copy pairs matched / pairs, per transformation.  Image FPR = images of the set
matched to at least one image of another family (a family: an original with its copies, or one distinct image)
/ all images; pair FPR = cross-family pairs matched / cross-family pairs.  Image FPR is the one calibrated:
it is the share of a collection that would be wrongly flagged.

    .venv/bin/python -m bench.dedup_quality [--checkpoint runs/demo/index/model.pt] [--per-domain 500]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from dataclasses import dataclass, field

import imagehash
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance, ImageOps

from bench.machine import emit
from similarity.checkpoint import load_checkpoint
from similarity.config import ModelConfig
from similarity.data import load_fashion_mnist, load_image_folder
from similarity.hygiene import hamming, hash_int, perceptual_hashes
from similarity.imageio import open_image
from similarity.models import default_preprocess, efficientnet_lite0
from similarity.transforms import eval_transform

TRASHNET = "/work/shared/datasets/trashnet-150"
KINDS = ("lossless", "resize", "jpeg", "crop", "brightness", "flip")
NEAR_KINDS = ("resize", "jpeg", "crop", "brightness")  # the target: recall >= 0.95 on these, image FPR <= 1%
TARGET_RECALL, TARGET_FPR = 0.95, 0.01
COSINE_BINS = np.linspace(-1.0, 1.0, 2001)


def _roundtrip(image: Image.Image, fmt: str, **options) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return open_image(buffer.getvalue())


def make_copy(image: Image.Image, kind: str, rng: np.random.Generator) -> tuple[Image.Image, str]:
    """One transformed copy of a decoded image, through encoded bytes; returns it and its parameters."""
    w, h = image.size
    if kind == "lossless":
        return _roundtrip(image, "PNG"), "png"
    if kind == "resize":
        scale = float(rng.choice([rng.uniform(0.5, 0.9), rng.uniform(1.1, 2.0)]))
        size = (max(8, round(w * scale)), max(8, round(h * scale)))
        return _roundtrip(image.resize(size, Image.Resampling.LANCZOS), "PNG"), f"x{scale:.2f}"
    if kind == "jpeg":
        quality = int(rng.integers(30, 91))
        return _roundtrip(image, "JPEG", quality=quality), f"q{quality}"
    if kind == "crop":
        fraction = float(rng.uniform(0.02, 0.10))
        cw, ch = round(w * (1 - fraction)), round(h * (1 - fraction))
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        return _roundtrip(image.crop((left, top, left + cw, top + ch)), "PNG"), f"{fraction:.3f}"
    if kind == "brightness":
        factor = float(1 + rng.choice([-1, 1]) * rng.uniform(0.05, 0.15))
        return _roundtrip(ImageEnhance.Brightness(image).enhance(factor), "PNG"), f"{factor:.3f}"
    if kind == "flip":
        return _roundtrip(ImageOps.mirror(image), "PNG"), "h"
    raise ValueError(f"unknown kind {kind!r}")


@dataclass
class ConstructedSet:
    """The images (decoded) with their family (an original and its copies share one), kind and domain."""

    images: list[Image.Image] = field(default_factory=list)
    family: list[int] = field(default_factory=list)
    kind: list[str] = field(default_factory=list)
    domain: list[str] = field(default_factory=list)

    def add(self, image: Image.Image, family: int, kind: str, domain: str) -> None:
        self.images.append(image)
        self.family.append(family)
        self.kind.append(kind)
        self.domain.append(domain)


def build_set(per_domain: int, distinct: int, rng: np.random.Generator) -> ConstructedSet:
    trash = load_image_folder(TRASHNET, verify=False)
    order = rng.permutation(len(trash))
    fmnist = load_fashion_mnist(None, "train")
    n_trash_distinct = min(len(trash) - per_domain, distinct)
    fm_order = rng.choice(len(fmnist), per_domain + distinct - n_trash_distinct, replace=False)
    out = ConstructedSet()
    family = 0
    for domain, data, picks in (("trashnet", trash, order[:per_domain + n_trash_distinct]),
                                ("fashion-mnist", fmnist, fm_order)):
        for rank, i in enumerate(picks):
            image = data.load(int(i))
            if rank < per_domain:
                out.add(image, family, "original", domain)
                for kind in KINDS:
                    out.add(make_copy(image, kind, rng)[0], family, kind, domain)
            else:
                out.add(image, family, "distinct", domain)
            family += 1
    return out


def embed(images: list[Image.Image], domain: str, checkpoint: str, batch: int = 64) -> np.ndarray:
    """``(n, d)`` float32, L2-normalised: the checkpoint's embedder (Fashion-MNIST), or EfficientNet-Lite0's
    ImageNet features (TrashNet: no trained photo model in the repository)."""
    if domain == "fashion-mnist":
        return load_checkpoint(checkpoint).embedder().embed_images(images)
    spec = default_preprocess(ModelConfig(backbone="efficientnet_lite0"))
    transform = eval_transform(spec)
    features = efficientnet_lite0(True, spec.image_size).features.eval()
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(images), batch):
            x = torch.stack([transform(image) for image in images[start:start + batch]])
            chunks.append(F.normalize(features(x), dim=1).numpy())
    return np.concatenate(chunks).astype(np.float32)


def cross_family_stats(ph: np.ndarray, phm: np.ndarray, dh: np.ndarray, emb: dict[str, np.ndarray],
                       family: np.ndarray, domain: np.ndarray, chunk: int = 1000) -> dict:
    """Per image: the smallest Hamming distance and the largest cosine to any image of another family, and for
    each pHash distance h the largest cosine among such images within h (for AND rules); and the histograms of
    all cross-family pairs (each pair once)."""
    n = len(family)
    cos_all = np.full(n, -1.0)
    rows_of = {name: np.flatnonzero(domain == name) for name in emb}
    pos_in_domain = np.empty(n, dtype=np.int64)
    for name, rows in rows_of.items():
        pos_in_domain[rows] = np.arange(len(rows))
    stats = {s: np.full(n, 65, dtype=np.int64) for s in ("phash", "phash+mirror", "dhash")}
    stats["cosine"] = cos_all
    cos_within_phash = np.full((n, 65), -1.0)  # [i, h]: max cosine to another family within pHash+mirror h
    hist = {s: np.zeros(65, dtype=np.int64) for s in ("phash", "phash+mirror", "dhash")}
    hist["cosine"] = np.zeros(len(COSINE_BINS) - 1, dtype=np.int64)
    for start in range(0, n, chunk):
        rows = np.arange(start, min(n, start + chunk))
        other = family[rows][:, None] != family[None, :]
        upper = other & (rows[:, None] < np.arange(n)[None, :])
        d_ph = hamming(ph[rows][:, None], ph[None, :]).astype(np.int64)
        d_phm = np.minimum(d_ph, np.minimum(hamming(phm[rows][:, None], ph[None, :]),
                                            hamming(ph[rows][:, None], phm[None, :])))
        d_dh = hamming(dh[rows][:, None], dh[None, :]).astype(np.int64)
        cos = np.full((len(rows), n), -1.0, dtype=np.float32)
        for name, cols in rows_of.items():
            mine = rows[domain[rows] == name]
            if len(mine):
                cos[np.ix_(mine - start, cols)] = emb[name][pos_in_domain[mine]] @ emb[name].T
        for name, d in (("phash", d_ph), ("phash+mirror", d_phm), ("dhash", d_dh)):
            stats[name][rows] = np.where(other, d, 65).min(axis=1)
            hist[name] += np.bincount(d[upper].astype(np.int64), minlength=65)
        cos_other = np.where(other, cos, -1.0)
        cos_all[rows] = cos_other.max(axis=1)
        same_domain_upper = upper & (domain[rows][:, None] == domain[None, :])
        hist["cosine"] += np.histogram(cos[same_domain_upper], COSINE_BINS)[0]
        r, c = np.nonzero(other & (d_phm <= 64))
        np.maximum.at(cos_within_phash, (rows[r], d_phm[r, c].astype(np.int64)), cos_other[r, c])
    cos_within_phash = np.maximum.accumulate(cos_within_phash, axis=1)
    same = (family[:, None] == family[None, :]).sum()
    pairs = {"all": n * (n - 1) // 2 - (same - n) // 2,
             "same_domain": sum(len(r) * (len(r) - 1) // 2 for r in rows_of.values()) - (same - n) // 2}
    return {"min_distance": stats, "cos_within_phash": cos_within_phash, "hist": hist, "pairs": pairs}


def positive_pairs(data: ConstructedSet, ph, phm, dh, emb, digests) -> dict[str, dict[str, np.ndarray]]:
    """For each copy kind, each signal's value on the (original, copy) pairs."""
    kind = np.array(data.kind)
    family = np.array(data.family)
    domain = np.array(data.domain)
    original_of = {f: i for i, (f, k) in enumerate(zip(family, kind)) if k == "original"}
    emb_row = {}
    for name in emb:
        for pos, i in enumerate(np.flatnonzero(domain == name)):
            emb_row[i] = (name, pos)
    out = {}
    for k in KINDS:
        copies = np.flatnonzero(kind == k)
        originals = np.array([original_of[f] for f in family[copies]])
        cos = np.array([float(emb[emb_row[o][0]][emb_row[o][1]] @ emb[emb_row[c][0]][emb_row[c][1]])
                        for o, c in zip(originals, copies)])
        d_ph = hamming(ph[originals], ph[copies]).astype(np.int64)
        out[k] = {"exact": np.array([digests[o] == digests[c] for o, c in zip(originals, copies)]),
                  "phash": d_ph, "dhash": hamming(dh[originals], dh[copies]).astype(np.int64),
                  "phash+mirror": np.minimum(d_ph, np.minimum(hamming(phm[originals], ph[copies]),
                                                              hamming(ph[originals], phm[copies]))).astype(np.int64),
                  "cosine": cos, "domain": domain[copies]}
    return out


def _rate(x: np.ndarray) -> float:
    return round(float(np.mean(x)), 4) if len(x) else float("nan")


def hash_curve(name: str, positives, cross, domain: np.ndarray) -> list[dict]:
    """Recall and FPR at each Hamming threshold (pHash distances are even: each hash has 32 bits set), overall
    and per domain."""
    rows = []
    pair_cum = np.cumsum(cross["hist"][name])
    near = np.concatenate([positives[k][name] for k in NEAR_KINDS])
    near_domain = np.concatenate([positives[k]["domain"] for k in NEAR_KINDS])
    for h in range(0, 25):
        matched = cross["min_distance"][name] <= h
        rows.append({"max_bits": h, "recall_near": _rate(near <= h),
                     "recall_flip": _rate(positives["flip"][name] <= h), "image_fpr": _rate(matched),
                     "pair_fpr": float(pair_cum[h] / cross["pairs"]["all"]),
                     **{f"recall_near[{d}]": _rate(near[near_domain == d] <= h) for d in np.unique(domain)},
                     **{f"image_fpr[{d}]": _rate(matched[domain == d]) for d in np.unique(domain)}})
    return rows


def cosine_curve(positives, cross, domain: np.ndarray, name: str) -> list[dict]:
    rows = []
    mine = domain == name
    for c in np.round(np.arange(0.80, 1.0001, 0.005), 3):
        near = np.concatenate([positives[k]["cosine"][positives[k]["domain"] == name] for k in NEAR_KINDS])
        flip = positives["flip"]["cosine"][positives["flip"]["domain"] == name]
        rows.append({"min_cosine": float(c), "recall_near": _rate(near >= c), "recall_flip": _rate(flip >= c),
                     "image_fpr": _rate(cross["min_distance"]["cosine"][mine] >= c)})
    return rows


def evaluate_rule(positives, cross, domain: np.ndarray, *, phash_bits: int, cosine: dict[str, float],
                  mode: str) -> dict:
    """Recall per kind and image FPR of ``pHash+mirror <= phash_bits`` combined (``or``/``and``) with the
    per-domain ``cosine`` threshold."""
    cos_thr = np.array([cosine[d] for d in domain])
    md = cross["min_distance"]
    if mode == "or":
        fp = (md["phash+mirror"] <= phash_bits) | (md["cosine"] >= cos_thr)
    else:
        fp = cross["cos_within_phash"][:, phash_bits] >= cos_thr
    per_kind, hits = {}, {}
    for k in KINDS:
        p = positives[k]
        thr = np.array([cosine[d] for d in p["domain"]])
        by_hash, by_cos = p["phash+mirror"] <= phash_bits, p["cosine"] >= thr
        hits[k] = (by_hash | by_cos) if mode == "or" else (by_hash & by_cos)
        per_kind[k] = {"all": _rate(hits[k]), **{d: _rate(hits[k][p["domain"] == d]) for d in cosine}}
    near = np.concatenate([hits[k] for k in NEAR_KINDS])
    return {"rule": f"pHash+mirror <= {phash_bits} {mode.upper()} cosine >= {cosine}", "recall_near": _rate(near),
            "recall_per_kind": per_kind, "image_fpr": _rate(fp),
            "image_fpr_per_domain": {d: _rate(fp[domain == d]) for d in cosine}}


def best_under_target(curve: list[dict], key: str) -> dict | None:
    ok = [row for row in curve if row["image_fpr"] <= TARGET_FPR]
    return max(ok, key=lambda row: (row["recall_near"], -row["image_fpr"])) if ok else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="runs/demo/index/model.pt", help="a Fashion-MNIST model")
    parser.add_argument("--per-domain", type=int, default=500, help="originals per dataset")
    parser.add_argument("--distinct", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench/results/dedup_quality.json")
    args = parser.parse_args()
    if not os.path.exists(args.checkpoint):
        raise SystemExit(f"{args.checkpoint}: not found; run scripts/demo.sh or pass --checkpoint")
    torch.set_num_threads(os.cpu_count() or 1)
    timings = {}
    started = time.perf_counter()
    data = build_set(args.per_domain, args.distinct, np.random.default_rng(args.seed))
    timings["build_set_s"] = round(time.perf_counter() - started, 1)

    started = time.perf_counter()
    hashes = [perceptual_hashes(image) for image in data.images]
    timings["hash_s"] = round(time.perf_counter() - started, 1)
    timings["hash_ms_per_image"] = round(1000 * timings["hash_s"] / len(hashes), 2)
    ph = np.array([h.phash for h in hashes], dtype=np.uint64)
    phm = np.array([h.phash_mirror for h in hashes], dtype=np.uint64)
    dh = np.array([hash_int(imagehash.dhash(image)) for image in data.images], dtype=np.uint64)  # measured only
    digests = [h.exact for h in hashes]

    domain = np.array(data.domain)
    family = np.array(data.family)
    emb = {}
    for name in ("fashion-mnist", "trashnet"):
        started = time.perf_counter()
        emb[name] = embed([data.images[i] for i in np.flatnonzero(domain == name)], name, args.checkpoint)
        timings[f"embed_{name}_s"] = round(time.perf_counter() - started, 1)
        print(f"embedded {name}: {timings[f'embed_{name}_s']} s", file=sys.stderr)

    started = time.perf_counter()
    positives = positive_pairs(data, ph, phm, dh, emb, digests)
    cross = cross_family_stats(ph, phm, dh, emb, family, domain)
    timings["pairs_s"] = round(time.perf_counter() - started, 1)

    # exact: a cross-family exact match is a real duplicate inside the source datasets, not a detector error
    by_digest: dict[str, set[int]] = {}
    for digest, f in zip(digests, family):
        by_digest.setdefault(digest, set()).add(int(f))
    exact_cross = sum(1 for d, f in zip(digests, family) if len(by_digest[d]) > 1)

    curves = {name: hash_curve(name, positives, cross, domain) for name in ("phash", "phash+mirror", "dhash")}
    cos_curves = {name: cosine_curve(positives, cross, domain, name) for name in emb}
    calibrated = {name: best_under_target(curve, "recall_near") for name, curve in {**curves, **{
        f"cosine[{d}]": c for d, c in cos_curves.items()}}.items()}
    rules = {}
    for h in (6, 8, 10, 12):
        cos_or = {d: (calibrated[f"cosine[{d}]"] or {"min_cosine": 1.0})["min_cosine"] for d in emb}
        rules[f"or_h{h}"] = evaluate_rule(positives, cross, domain, phash_bits=h, cosine=cos_or, mode="or")
    for h in (12, 16, 20):
        for c in (0.90, 0.95):
            rules[f"and_h{h}_c{c}"] = evaluate_rule(positives, cross, domain, phash_bits=h,
                                                    cosine={d: c for d in emb}, mode="and")
    per_kind = {k: {"exact": _rate(positives[k]["exact"]),
                    **{f"median_{s}": round(float(np.median(positives[k][s])), 4)
                       for s in ("phash", "phash+mirror", "dhash", "cosine")}} for k in KINDS}
    n_images = len(family)
    emit({"figure": "near-duplicate detection: recall and false-positive rate per signal on a constructed set",
          "command": f"python -m bench.dedup_quality --per-domain {args.per_domain} --distinct {args.distinct}",
          "set": {"images": n_images, "originals_per_domain": args.per_domain, "copies_per_original": len(KINDS),
                  "distinct": args.distinct,
                  "per_domain": {d: int((domain == d).sum()) for d in emb},
                  "cross_family_pairs": {k: int(v) for k, v in cross["pairs"].items()}},
          "embeddings": {"fashion-mnist": f"checkpoint {args.checkpoint}",
                         "trashnet": "EfficientNet-Lite0 ImageNet backbone features (1280-d, no trained head)"},
          "definitions": {"recall": "original-copy pairs matched / pairs, per transformation",
                          "image_fpr": "images matched to >= 1 image of another family / all images",
                          "pair_fpr": "cross-family pairs matched / cross-family pairs"},
          "exact": {"recall_lossless": per_kind["lossless"]["exact"],
                    "recall_other_kinds": {k: per_kind[k]["exact"] for k in KINDS if k != "lossless"},
                    "images_with_exact_copy_in_another_family": exact_cross,
                    "image_fpr": round(exact_cross / n_images, 5)},
          "median_per_kind": per_kind,
          "calibrated_single_signal": calibrated,
          "combined_rules": rules,
          "curves": {**curves, **{f"cosine[{d}]": c for d, c in cos_curves.items()}},
          "timings": timings}, args.out)


if __name__ == "__main__":
    main()
