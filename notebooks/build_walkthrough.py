"""Writes walkthrough.ipynb from the cells below (keeps the notebook reviewable as plain Python).

    .venv/bin/python notebooks/build_walkthrough.py
"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS = [
    ("md", """# simsearch walkthrough

Train a small embedding network on a Fashion-MNIST subset with **Siamese pair sampling**, index the
embeddings with FAISS, search with an image, and look at the embedding space with t-SNE. Every step
is a public simsearch function, the same code the CLI, the API and the reports use. On 2 CPU cores
it runs in about two minutes, with no network."""),
    ("code", """import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import matplotlib.pyplot as plt

from similarity.config import LossConfig, SamplerConfig
from similarity.data import export_to_folder, load_fashion_mnist
from similarity.presets import fashion_mnist_full
from similarity.samplers import PairSampler
from similarity.train import train
from engine.build import build_index
from engine.engine import Engine

work = Path(tempfile.mkdtemp(prefix="simsearch-walkthrough-"))
rng = np.random.default_rng(0)"""),
    ("md", "## 1. Data: 3,000 training images, written as real PNG files (one folder per class)"),
    ("code", """full = load_fashion_mnist(None, "train")
subset = full.subset(np.sort(rng.choice(len(full), 3000, replace=False)))
images = export_to_folder(subset, work / "images")
print(images.summary())"""),
    ("md", """## 2. Pair sampling, the Siamese core
A batch of P pairs is `[a_0..a_{P-1}, b_0..b_{P-1}]`. Pair i is `(a_i, b_i)`, and exactly half of the
pairs are positive (same class)."""),
    ("code", """sampler = PairSampler(images.labels, pairs_per_batch=6, positive_fraction=0.5, rng=np.random.default_rng(1))
batch = sampler.sample_batch()
fig, axes = plt.subplots(2, 6, figsize=(9, 3.2))
for i in range(6):
    a, b = batch[i], batch[6 + i]
    same = images.labels[a] == images.labels[b]
    for row, idx in enumerate((a, b)):
        axes[row, i].imshow(images.load(idx), cmap="gray")
        axes[row, i].set_axis_off()
    axes[0, i].set_title("same" if same else "different", color="green" if same else "red", fontsize=9)
plt.tight_layout()"""),
    ("md", "## 3. Train with the contrastive loss on those pairs (2 epochs)"),
    ("code", """config = replace(fashion_mnist_full(), loss=LossConfig(name="contrastive"), sampler=SamplerConfig(kind="pairs"),
                 epochs=2, val_fraction=0.2, patience=0, max_minutes=0.0, compile=False)
result = train(images, config, work / "run", progress=False)
for row in result.history:
    print(f"epoch {row['epoch']}: loss {row['train_loss']:.3f}, val precision@1 {row['val_precision_at_1']:.3f}, "
          f"val kNN accuracy {row['val_knn_accuracy']:.3f}")"""),
    ("md", "## 4. Build a FAISS index of all 3,000 images, then search it with an unseen test image"),
    ("code", """summary = build_index(result.checkpoint_path, images, work / "index", progress=False)
engine = Engine.open(work / "index")  # the index with the checkpoint it was built with
store = engine.store
print(f"{summary.added} images indexed ({summary.index_type})")

test = load_fashion_mnist(None, "test")
query = test.load(0)"""),
    ("code", """import io

def png_bytes(image):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()

hit = engine.search([png_bytes(query)], k=8)[0]
print(f"true class: {test.class_names[test.labels[0]]}; predicted: {hit.vote.label} "
      f"(confidence {hit.vote.confidence:.2f}, votes {hit.vote.votes})")
fig, axes = plt.subplots(1, 9, figsize=(12, 1.9))
axes[0].imshow(query, cmap="gray"); axes[0].set_title("query", fontsize=9)
for ax, n in zip(axes[1:], hit.neighbors):
    ax.imshow(plt.imread(n.path), cmap="gray")
    ax.set_title(f"{n.label}\\n{n.similarity:.2f}", fontsize=8)
for ax in axes:
    ax.set_axis_off()"""),
    ("md", "## 5. The embedding space: t-SNE coloured by class"),
    ("code", """from report.tsne import tsne_map

ids, vectors = store.all_vectors()
labels = np.array([images.class_names.index(store.get(int(i)).label) for i in ids])
tsne = tsne_map(vectors, sample=1500, perplexity=30.0, pca_dims=50, max_iter=500, seed=0)
plt.figure(figsize=(6, 5))
scatter = plt.scatter(tsne.coords[:, 0], tsne.coords[:, 1], c=labels[tsne.rows], cmap="tab10", s=6)
plt.legend(scatter.legend_elements()[0], images.class_names, fontsize=7, loc="best", markerscale=0.8)
plt.title("t-SNE of the index")
plt.axis("off");"""),
    ("md", """## 6. How good is it?
Retrieval metrics of the 10k test images against the index. The full report (`simsearch report`) adds
cluster quality, a confusion matrix and example queries."""),
    ("code", """from similarity.metrics import retrieval_metrics

queries = engine.embedder.embed_data(test, progress=False).embeddings
metrics = retrieval_metrics(queries, test.labels, vectors, labels, k=10)
{name: round(value, 4) for name, value in metrics.items()}"""),
]


def main() -> None:
    cells = [new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in CELLS]
    notebook = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                  "language": "python"}})
    path = Path(__file__).with_name("walkthrough.ipynb")
    nbformat.write(notebook, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
