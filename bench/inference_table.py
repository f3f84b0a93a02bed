"""Figure: model size, latency, throughput and retrieval quality of each way to run a model, all rows of a model
measured in one run (issue 13, figure 1; the seeds' "model size against edge latency" comparison, made real).

Rows: torch eager (NCHW, contiguous), torch as the product runs it (channels-last, inference mode), that plus
``torch.compile``, ONNX Runtime fp32 and ONNX Runtime int8 (static quantisation, calibrated on 512 training
images).  Columns: single-image latency (p50 of a batch of one preprocessed image, flip TTA included when the
model uses it), batched throughput (img/s at batch 64), the model file's size, and kNN accuracy@10 on the
benchmark split (Fashion-MNIST: 10k test against the 60k training gallery; TrashNet-150: the checkpoint's 20%
test split against the other 80%).  Every row embeds the same preprocessed tensors, so the rows differ only in
what runs the model.  The accuracy is computed for torch, ORT fp32 and ORT int8; the other torch rows compute the
same function (their largest difference from the product's torch path is given).

    .venv/bin/python -m bench.inference_table --checkpoint runs/fmnist-full/model.pt --data fashion-mnist
    .venv/bin/python -m bench.inference_table --checkpoint runs/trashnet/model.pt \
        --data ../shared/datasets/trashnet-150
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from bench.machine import emit
from similarity.checkpoint import load_checkpoint
from similarity.data import LabelledImages, load_fashion_mnist, load_labelled_images
from similarity.embedder import preprocessed_batches
from similarity.metrics import retrieval_metrics
from similarity.onnx_export import export_onnx
from similarity.onnx_runtime import OnnxEmbedder

Runner = Callable[[torch.Tensor], np.ndarray]


def preprocess_all(data: LabelledImages, spec) -> torch.Tensor:
    """Every image of ``data`` preprocessed once: ``(n, C, H, W)`` float32 (the rows all embed these)."""
    chunks = []
    for _, xs, bad in preprocessed_batches(data, spec, batch_size=256):
        if bad:
            raise SystemExit(f"unreadable benchmark images: {bad[:3]}")
        chunks.append(xs)
    return torch.cat(chunks)


def torch_runner(model: torch.nn.Module, flip_tta: bool, *, channels_last: bool, compiled: bool) -> Runner:
    """The function :class:`similarity.embedder.Embedder` computes, with the chosen memory format/compilation."""
    model = model.eval().to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    net = torch.compile(model, dynamic=True) if compiled else model

    def run(x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            x = x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()
            out = net(x)
            if flip_tta:
                out = F.normalize(out + net(x.flip(3)), dim=1)
            return out.float().numpy()
    return run


def latency_ms(run: Runner, x1: torch.Tensor, repeats: int) -> dict:
    for _ in range(20):
        run(x1)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run(x1)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {"p50": round(statistics.median(times), 3), "p90": round(times[int(0.9 * (len(times) - 1))], 3)}


def throughput(run: Runner, batch: torch.Tensor, seconds: float) -> float:
    run(batch)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or done < 3 * len(batch):
        run(batch)
        done += len(batch)
    return round(done / (time.perf_counter() - started), 1)


def embed_all(run: Runner, xs: torch.Tensor, batch: int = 256) -> np.ndarray:
    return np.concatenate([run(xs[i:i + batch]) for i in range(0, len(xs), batch)])


def knn_accuracy(run: Runner, split: dict) -> float:
    query, gallery = embed_all(run, split["query_x"]), embed_all(run, split["gallery_x"])
    metrics = retrieval_metrics(query, split["query_y"], gallery, split["gallery_y"], k=10)
    return round(float(metrics["knn_accuracy@10"]), 4)


def benchmark_split(data_arg: str, ckpt) -> dict:
    spec = ckpt.preprocess
    if data_arg == "fashion-mnist":
        gallery, query = load_fashion_mnist(None, "train"), load_fashion_mnist(None, "test")
        name = "Fashion-MNIST: 10k test queries, 60k training gallery"
    else:
        data = load_labelled_images(data_arg)
        test = np.asarray(ckpt.extra["split"]["test"])
        gallery, query = data.subset(np.setdiff1d(np.arange(len(data)), test)), data.subset(test)
        name = f"{data_arg}: the checkpoint's test split ({len(test)}) against the rest ({len(gallery)})"
    return {"name": name, "gallery": gallery, "gallery_x": preprocess_all(gallery, spec),
            "gallery_y": gallery.labels, "query_x": preprocess_all(query, spec), "query_y": query.labels}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True, help="'fashion-mnist' or the folder the checkpoint was trained on")
    parser.add_argument("--name", default=None, help="result file bench/results/inference_<name>.json")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=300, help="single-image runs timed per row")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds of batch-64 runs per row")
    parser.add_argument("--skip-compile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ckpt = load_checkpoint(args.checkpoint)
    spec = ckpt.preprocess
    started = time.perf_counter()
    split = benchmark_split(args.data, ckpt)
    prep_s = round(time.perf_counter() - started, 1)
    x1, x64 = split["query_x"][:1], split["query_x"][:64]
    checkpoint_mb = round(os.path.getsize(args.checkpoint) / 1e6, 3)
    params_mb = round(sum(p.numel() * p.element_size() for p in ckpt.model.parameters()) / 1e6, 3)

    with tempfile.TemporaryDirectory(prefix="inference-table-") as work:
        fp32_path, int8_path = os.path.join(work, "model.onnx"), os.path.join(work, "model.int8.onnx")
        export_s = {}
        for path, int8 in ((fp32_path, False), (int8_path, True)):
            t = time.perf_counter()
            export_onnx(ckpt, path, int8=int8, calibration=split["gallery"] if int8 else None)
            export_s["int8" if int8 else "fp32"] = round(time.perf_counter() - t, 1)
        rows: list[tuple[str, Callable[[], Runner], float | None]] = [
            ("torch eager (NCHW)", lambda: torch_runner(ckpt.model, spec.flip_tta, channels_last=False,
                                                          compiled=False), checkpoint_mb),
            ("torch channels-last (the product's torch path)",
             lambda: ckpt.embedder().embed_tensor, checkpoint_mb),
            ("torch channels-last + torch.compile",
             lambda: torch_runner(ckpt.model, spec.flip_tta, channels_last=True, compiled=True), checkpoint_mb),
            ("ONNX Runtime fp32", lambda: OnnxEmbedder(fp32_path, threads=args.threads).embed_tensor,
             round(os.path.getsize(fp32_path) / 1e6, 3)),
            ("ONNX Runtime int8", lambda: OnnxEmbedder(int8_path, threads=args.threads).embed_tensor,
             round(os.path.getsize(int8_path) / 1e6, 3)),
        ]
        reference = ckpt.embedder().embed_tensor(x64)
        table = []
        for name, make, size_mb in rows:
            if "compile" in name and args.skip_compile:
                continue
            t = time.perf_counter()
            run = make()
            out = run(x64)  # includes compilation for torch.compile
            row = {"runtime": name, "setup_s": round(time.perf_counter() - t, 1), "file_mb": size_mb,
                   "max_abs_diff_vs_torch": float(np.abs(out - reference).max()),
                   "min_cosine_vs_torch": round(float((out * reference).sum(1).min()), 6),
                   "latency_ms_batch1": latency_ms(run, x1, args.repeats),
                   "throughput_img_s_batch64": throughput(run, x64, args.seconds)}
            if name.startswith(("ONNX", "torch channels-last (")):
                t = time.perf_counter()
                row["knn_accuracy@10"] = knn_accuracy(run, split)
                row["knn_seconds"] = round(time.perf_counter() - t, 1)
            table.append(row)
            print(f"{name}: {row}", flush=True)
    by_name = {row["runtime"]: row for row in table}
    torch_acc = by_name["torch channels-last (the product's torch path)"]["knn_accuracy@10"]
    int8_drop = round(100 * (torch_acc - by_name["ONNX Runtime int8"]["knn_accuracy@10"]), 2)
    name = args.name or ("fashion_mnist" if args.data == "fashion-mnist" else "trashnet")
    emit({"figure": "size, latency, throughput and kNN accuracy per runtime, one run",
          "command": f"python -m bench.inference_table --checkpoint {args.checkpoint} --data {args.data}",
          "checkpoint": args.checkpoint, "backbone": ckpt.config.model.backbone,
          "input": [spec.channels, spec.image_size, spec.image_size], "flip_tta": spec.flip_tta,
          "split": split["name"], "threads": args.threads, "parameters_mb_fp32": params_mb,
          "preprocess_seconds": prep_s, "export_seconds": export_s, "rows": table,
          "int8_knn_drop_points": int8_drop, "int8_kept": int8_drop <= 0.3},
         os.path.join("bench", "results", f"inference_{name}.json"))


if __name__ == "__main__":
    main()
