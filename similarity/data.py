"""Image collections: a folder of class folders, a ``path,label`` CSV, Fashion-MNIST IDX files, or a flat folder of
images without labels.

A :class:`LabelledImages` is either file-backed (``paths``) or in-memory (``pixels``, uint8). Both
decode to the same ``PIL.Image`` through :meth:`LabelledImages.load`, so training, indexing and
the API see identical pixels. An unlabelled collection (:func:`load_unlabelled_folder`) has no class names and
every label ``UNLABELLED``; only the copy objective trains on it (:func:`load_images` loads either kind).
"""

from __future__ import annotations

import csv
import gzip
import logging
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.model_selection import train_test_split

from durablefile import atomic_path
from similarity.imageio import ImageDecodeError, is_image_path, open_image

log = logging.getLogger(__name__)

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_PNG_ROOT = Path("data") / "fashion-mnist-png"  # relative to the working directory
UNLABELLED = -1  # the label of every image of an unlabelled collection


class DatasetError(ValueError):
    """The dataset cannot be used as given (missing, empty, too few images per class...)."""


@dataclass(frozen=True)
class SkippedFile:
    path: str
    reason: str


@dataclass
class LabelledImages:
    """Images with integer labels ``0..len(class_names)-1``, or, unlabelled (no ``class_names``), all ``UNLABELLED``.

    Exactly one of ``paths`` (file-backed) and ``pixels`` (uint8, (N, H, W) or (N, H, W, 3)) is set.
    ``ids`` name each image for people (a relative path, or ``split/index`` for IDX data).
    """

    labels: np.ndarray
    class_names: list[str]
    ids: list[str]
    paths: list[str] | None = None
    pixels: np.ndarray | None = None
    source: str = ""
    skipped: list[SkippedFile] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if (self.paths is None) == (self.pixels is None):
            raise ValueError("exactly one of paths and pixels must be given")
        n = len(self.paths) if self.paths is not None else len(self.pixels)  # type: ignore[arg-type]
        if len(self.labels) != n or len(self.ids) != n:
            raise ValueError(f"labels ({len(self.labels)}), ids ({len(self.ids)}) and images ({n}) differ")
        if not self.class_names and n and np.any(self.labels != UNLABELLED):
            raise ValueError(f"a collection without class names must have every label {UNLABELLED} (unlabelled)")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def labelled(self) -> bool:
        """Whether the images have classes (an unlabelled collection has no ``class_names``)."""
        return bool(self.class_names)

    @property
    def in_memory(self) -> bool:
        return self.pixels is not None

    def load(self, i: int) -> Image.Image:
        """Decode image ``i`` (raises :class:`ImageDecodeError` for a bad file)."""
        if self.pixels is not None:
            array = self.pixels[i]
            return Image.fromarray(array, mode="L" if array.ndim == 2 else "RGB")
        return open_image(self.paths[i])  # type: ignore[index]

    def subset(self, indices: np.ndarray) -> LabelledImages:
        indices = np.asarray(indices, dtype=np.int64)
        return LabelledImages(
            labels=self.labels[indices],
            class_names=self.class_names,
            ids=[self.ids[i] for i in indices],
            paths=[self.paths[i] for i in indices] if self.paths is not None else None,
            pixels=self.pixels[indices] if self.pixels is not None else None,
            source=self.source,
        )

    def class_counts(self) -> dict[str, int]:
        """Images per class name ({} for an unlabelled collection)."""
        if not self.labelled:
            return {}
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        return {name: int(c) for name, c in zip(self.class_names, counts)}

    def summary(self) -> str:
        if not self.labelled:
            text = f"{len(self)} unlabelled images from {self.source}"
            return text + (f"; skipped {len(self.skipped)} unreadable file(s)" if self.skipped else "")
        counts = ", ".join(f"{k}={v}" for k, v in self.class_counts().items())
        text = f"{len(self)} images in {len(self.class_names)} classes from {self.source} ({counts})"
        if self.skipped:
            text += f"; skipped {len(self.skipped)} unreadable file(s)"
        return text


# ----------------------------------------------------------------------------- file-backed loaders


def load_image_folder(root: str | os.PathLike, *, verify: bool = True, min_per_class: int = 2,
                      workers: int = 8) -> LabelledImages:
    """One sub-folder per class under ``root``; files without an image extension are ignored.

    With ``verify`` every file is decoded once and corrupt ones are listed in ``skipped``.
    """
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"data folder not found: {root}")
    if not root.is_dir():
        raise DatasetError(f"not a folder: {root} (give a folder with one sub-folder per class, or a CSV)")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DatasetError(f"{root} has no class sub-folders (expected {root}/<class>/<image>); a flat folder of "
                           "images has no labels: train a copy descriptor on it (--objective copies)")
    paths, names = [], []
    for class_dir in class_dirs:
        for file in sorted(class_dir.rglob("*")):
            if file.is_file() and is_image_path(file):
                paths.append(str(file))
                names.append(class_dir.name)
    if not paths:
        raise DatasetError(f"no image files found under {root}")
    ids = [os.path.relpath(p, root) for p in paths]
    return _finish_file_dataset(paths, names, ids, source=str(root), verify=verify,
                                min_per_class=min_per_class, workers=workers)


def load_unlabelled_folder(root: str | os.PathLike, *, verify: bool = True, workers: int = 8) -> LabelledImages:
    """The image files directly in ``root`` (no sub-folders), as an unlabelled collection; with ``verify`` every
    file is decoded once and corrupt ones are listed in ``skipped``."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"data folder not found: {root}")
    paths = [str(file) for file in sorted(root.iterdir()) if file.is_file() and is_image_path(file)]
    if not paths:
        raise DatasetError(f"no image files found in {root}")
    ids = [os.path.relpath(p, root) for p in paths]
    return _finish_file_dataset(paths, None, ids, source=str(root), verify=verify, min_per_class=0, workers=workers)


def load_csv(csv_path: str | os.PathLike, *, verify: bool = True, min_per_class: int = 2,
             workers: int = 8) -> LabelledImages:
    """A CSV of ``path,label`` rows (a header row is allowed); relative paths are resolved against
    the CSV's folder. Missing files are an error that lists them."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetError(f"CSV file not found: {csv_path}")
    base = csv_path.parent
    paths, names, ids, missing = [], [], [], []
    with open(csv_path, newline="", encoding="utf-8") as handle:
        for line_no, row in enumerate(csv.reader(handle), start=1):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) < 2:
                raise DatasetError(f"{csv_path}:{line_no}: expected 'path,label', got {row!r}")
            rel, label = row[0].strip(), row[1].strip()
            if line_no == 1 and rel.lower() in ("path", "file", "filename", "image") :
                continue
            if not label:
                raise DatasetError(f"{csv_path}:{line_no}: empty label for {rel!r}")
            full = (base / rel) if not os.path.isabs(rel) else Path(rel)
            if not full.is_file():
                missing.append(rel)
                continue
            paths.append(str(full))
            names.append(label)
            ids.append(rel)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DatasetError(f"{csv_path}: {len(missing)} listed file(s) do not exist: {shown}")
    if not paths:
        raise DatasetError(f"{csv_path} lists no images")
    return _finish_file_dataset(paths, names, ids, source=str(csv_path), verify=verify,
                                min_per_class=min_per_class, workers=workers)


def _check_decodes(path: str) -> str | None:
    try:
        open_image(path)
    except ImageDecodeError as exc:
        return str(exc)
    return None


def _finish_file_dataset(paths: list[str], names: list[str] | None, ids: list[str], *, source: str,
                         verify: bool, min_per_class: int, workers: int) -> LabelledImages:
    """The collection of the ``paths`` that decode (all of them without ``verify``); ``names`` None: unlabelled."""
    skipped: list[SkippedFile] = []
    if verify:
        from tqdm.auto import tqdm

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            errors = list(tqdm(pool.map(_check_decodes, paths, chunksize=64), total=len(paths),
                               desc="checking images", unit="img", leave=False,
                               disable=len(paths) < 2000))
        keep = [i for i, err in enumerate(errors) if err is None]
        skipped = [SkippedFile(paths[i], errors[i]) for i in range(len(paths)) if errors[i] is not None]
        for item in skipped:
            log.warning("skipping unreadable image %s", item.reason)
        paths = [paths[i] for i in keep]
        names = [names[i] for i in keep] if names is not None else None
        ids = [ids[i] for i in keep]
    if not paths:
        raise DatasetError(f"none of the images in {source} could be decoded")
    if names is None:
        return LabelledImages(labels=np.full(len(paths), UNLABELLED, dtype=np.int64), class_names=[], ids=ids,
                              paths=paths, source=source, skipped=skipped)
    class_names = sorted(set(names))
    index = {name: i for i, name in enumerate(class_names)}
    labels = np.array([index[n] for n in names], dtype=np.int64)
    data = LabelledImages(labels=labels, class_names=class_names, ids=ids, paths=paths, source=source,
                          skipped=skipped)
    check_min_per_class(data, min_per_class)
    return data


def check_labelled(data: LabelledImages) -> None:
    """Raise :class:`DatasetError` for an unlabelled collection, which only the copy objective trains on."""
    if not data.labelled:
        raise DatasetError(f"{data.source or 'the data'} has no labels (a flat folder of images): the class objective "
                           "needs one sub-folder per class (or a CSV of path,label); train a copy descriptor on "
                           "unlabelled images with --objective copies")


def check_min_per_class(data: LabelledImages, minimum: int = 2) -> None:
    small = {k: v for k, v in data.class_counts().items() if v < minimum}
    if small:
        listed = ", ".join(f"{k!r} ({v})" for k, v in small.items())
        raise DatasetError(
            f"every class needs at least {minimum} images to form positive pairs; too few in: {listed}"
        )


def load_labelled_images(path: str | os.PathLike, **kwargs) -> LabelledImages:
    """Dispatch on what ``path`` is: a ``.csv`` file, a folder of class folders, or a folder holding
    Fashion-MNIST IDX files (train split)."""
    p = Path(path)
    if p.is_file() and p.suffix.lower() == ".csv":
        return load_csv(p, **kwargs)
    if p.is_dir() and (p / FASHION_MNIST_FILES["train"][0]).exists():
        return load_fashion_mnist(p, "train")
    if p.is_file():
        raise DatasetError(f"{p} is a file; give a folder of class folders or a .csv of path,label")
    return load_image_folder(p, **kwargs)


def load_images(path: str | os.PathLike, **kwargs) -> LabelledImages:
    """:func:`load_labelled_images`, except that a folder holding image files and no sub-folders loads as an
    unlabelled collection (:func:`load_unlabelled_folder`)."""
    p = Path(path)
    if p.is_dir() and not any(child.is_dir() and not child.name.startswith(".") for child in p.iterdir()) \
            and not (p / FASHION_MNIST_FILES["train"][0]).exists():
        return load_unlabelled_folder(p, **{k: v for k, v in kwargs.items() if k != "min_per_class"})
    return load_labelled_images(p, **kwargs)


# ----------------------------------------------------------------------------- Fashion-MNIST (IDX)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array of its declared shape and type."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:  # type: ignore[operator]
            data = handle.read()
    except FileNotFoundError as exc:
        raise DatasetError(f"IDX file not found: {path}") from exc
    except (OSError, EOFError) as exc:
        raise DatasetError(f"cannot read IDX file {path}: {exc}") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DatasetError(f"{path} is not an IDX file (bad magic number)")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise DatasetError(f"{path}: unknown IDX element type 0x{data[2]:02x}")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    array = np.frombuffer(data, dtype=dtypes[data[2]], offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise DatasetError(f"{path}: truncated IDX file ({array.size} values, header says {shape})")
    return array.reshape(shape)


def find_fashion_mnist(explicit: str | os.PathLike | None = None, *, download_to: str | None = None) -> Path:
    """Locate the four Fashion-MNIST ``.gz`` files.

    Looks at ``explicit``, ``$SIMSEARCH_FASHION_MNIST``, ``../shared/datasets/fashion-mnist`` (beside the
    checkout), then Debian's ``dataset-fashion-mnist`` location. With ``download_to`` set and nothing
    found, downloads through torchvision (needs internet).
    """
    candidates = []
    if explicit:
        candidates.append(Path(explicit))
    if os.environ.get("SIMSEARCH_FASHION_MNIST"):
        candidates.append(Path(os.environ["SIMSEARCH_FASHION_MNIST"]))
    repo = Path(__file__).resolve().parent.parent
    candidates += [repo.parent / "shared" / "datasets" / "fashion-mnist", repo / "data" / "fashion-mnist",
                   DEBIAN_FASHION_MNIST]
    needed = [name for pair in FASHION_MNIST_FILES.values() for name in pair]
    for candidate in candidates:
        if all((candidate / name).exists() for name in needed):
            return candidate
        raw = candidate / "FashionMNIST" / "raw"
        if all((raw / name).exists() for name in needed):
            return raw
    if explicit and not download_to:
        raise DatasetError(f"Fashion-MNIST files not found in {explicit} (need {', '.join(needed)})")
    if download_to:
        from torchvision.datasets import FashionMNIST

        log.info("downloading Fashion-MNIST to %s", download_to)
        FashionMNIST(download_to, train=True, download=True)
        FashionMNIST(download_to, train=False, download=True)
        return Path(download_to) / "FashionMNIST" / "raw"
    raise DatasetError(
        "Fashion-MNIST not found; install Debian's 'dataset-fashion-mnist', set SIMSEARCH_FASHION_MNIST, "
        "or pass --download when online. Looked in: " + ", ".join(str(c) for c in candidates)
    )


def load_fashion_mnist(root: str | os.PathLike | None = None, split: str = "train") -> LabelledImages:
    """Fashion-MNIST ``split`` ("train": 60k, "test": 10k) as in-memory uint8 (N, 28, 28)."""
    if split not in FASHION_MNIST_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = find_fashion_mnist(root)
    image_file, label_file = FASHION_MNIST_FILES[split]
    pixels = read_idx(folder / image_file)
    labels = read_idx(folder / label_file).astype(np.int64)
    if pixels.ndim != 3 or len(pixels) != len(labels):
        raise DatasetError(f"{folder}: images {pixels.shape} and labels {labels.shape} do not match")
    ids = [f"{split}/{i:05d}" for i in range(len(labels))]
    return LabelledImages(labels=labels, class_names=list(FASHION_MNIST_CLASSES), ids=ids,
                          pixels=np.array(pixels, copy=True), source=f"fashion-mnist:{split}")  # writable


def export_to_folder(data: LabelledImages, out: str | os.PathLike, *, prefix: str = "") -> LabelledImages:
    """Write in-memory images as PNG files ``out/<class>/<prefix><n>.png`` (lossless, so embeddings
    are unchanged) and return the file-backed collection. Existing files are reused."""
    out = Path(out)
    safe = [name.replace("/", "-") for name in data.class_names]
    for name in safe:
        (out / name).mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(len(data)):
        path = out / safe[data.labels[i]] / f"{prefix}{i:05d}.png"
        if not path.exists():
            with atomic_path(path, durable=False) as tmp:  # a cache: rebuilt if lost
                data.load(i).save(tmp, format="PNG")
        paths.append(str(path))
    return LabelledImages(labels=data.labels.copy(), class_names=list(data.class_names), ids=list(data.ids),
                          paths=paths, source=str(out))


def fashion_mnist_folder(split: str, root: str | os.PathLike = FASHION_MNIST_PNG_ROOT) -> LabelledImages:
    """Fashion-MNIST ``split`` as PNG files under ``root/split`` (written once, then reused)."""
    return export_to_folder(load_fashion_mnist(None, split), Path(root) / split)


# ----------------------------------------------------------------------------- splits


def stratified_split(labels: np.ndarray, *, val_fraction: float, test_fraction: float = 0.0,
                     seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded stratified split into index arrays ``train``, ``val`` and ``test`` (sorted, disjoint)."""
    labels = np.asarray(labels)
    all_idx = np.arange(len(labels))
    result: dict[str, np.ndarray] = {"val": np.array([], dtype=np.int64), "test": np.array([], dtype=np.int64)}
    rest = all_idx
    if test_fraction > 0:
        rest, test = train_test_split(all_idx, test_size=test_fraction, stratify=labels, random_state=seed)
        result["test"] = np.sort(test)
    if val_fraction > 0:
        relative = val_fraction / (1.0 - test_fraction)
        rest, val = train_test_split(rest, test_size=relative, stratify=labels[rest], random_state=seed + 1)
        result["val"] = np.sort(val)
    result["train"] = np.sort(rest)
    return result
