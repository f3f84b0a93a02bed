"""The walkthrough notebook runs top to bottom with no network and shows what it promises."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "walkthrough.ipynb"


def test_walkthrough_runs(tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    env_root = Path(__file__).resolve().parent.parent
    client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(env_root)}})
    os.environ.pop("MPLBACKEND", None)  # the kernel must use the inline backend to show figures
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "3000 images in 10 classes" in text and "epoch 2:" in text and "predicted:" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # pairs, neighbours, t-SNE
    final = notebook.cells[-1].outputs[0]["data"]["text/plain"]
    assert "precision_at_1" in final and "knn_accuracy@10" in final
