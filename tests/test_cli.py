"""The ``simsearch`` command line end to end: train, index build/add/remove/stats, query, and errors."""

from __future__ import annotations

import json
import shutil

import pytest

from index import IndexStore
from simsearch.cli import main


def test_train_on_an_image_folder(fmnist_folder, tmp_path, capsys):
    small = tmp_path / "data"
    for i in range(0, 600, 5):  # 120 images, 12 per class
        target = small / fmnist_folder.class_names[fmnist_folder.labels[i]].replace("/", "-")
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(fmnist_folder.paths[i], target / f"{i}.png")
    out = tmp_path / "run"
    code = main(["train", "--data", str(small), "--out", str(out), "--preset", "fashion-mnist-demo",
                 "--epochs", "1", "--batch-size", "32", "--val-fraction", "0.25", "--loss", "contrastive",
                 "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed[printed.index("\n{\n") + 1:])  # the last thing printed: the result
    assert summary["checkpoint"] == str(out / "model.pt") and (out / "curves.png").stat().st_size > 1000
    assert 0.0 <= summary["val"]["precision_at_1"] <= 1.0
    assert json.loads((out / "history.json").read_text())[0]["epoch"] == 1


def test_index_build_add_query_remove(checkpoint_path, fmnist_folder, tmp_path, capsys):
    out = tmp_path / "idx"
    assert main(["index", "build", "--checkpoint", checkpoint_path, "--data", fmnist_folder.source,
                 "--out", str(out), "--type", "hnsw", "--quiet"]) == 0
    built = json.loads(capsys.readouterr().out)
    assert built["added"] == 600 and built["type"] == "hnsw"

    extra = tmp_path / "extra" / "Bag"
    extra.mkdir(parents=True)
    bag = [p for p, y in zip(fmnist_folder.paths, fmnist_folder.labels) if y == 8][:2]
    for i, path in enumerate(bag):
        shutil.copy(path, extra / f"new{i}.png")
    (tmp_path / "extra" / "Dress").mkdir()
    shutil.copy(bag[0], tmp_path / "extra" / "Dress" / "x.png")
    shutil.copy(bag[1], tmp_path / "extra" / "Dress" / "y.png")
    assert main(["index", "add", str(out), "--data", str(tmp_path / "extra"), "--quiet"]) == 0
    added = json.loads(capsys.readouterr().out)
    assert added["added"] == 4 and added["ntotal"] == 604 and added["first_id"] == 600

    assert main(["query", str(extra / "new0.png"), "--index", str(out), "-k", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)[0]
    assert result["neighbors"][0]["similarity"] == pytest.approx(1.0, abs=1e-4)
    assert result["neighbors"][0]["path"].endswith(("new0.png", "x.png"))

    assert main(["index", "remove", str(out), "600", "602", "99999"]) == 0
    assert json.loads(capsys.readouterr().out) == {"removed": [600, 602], "requested": 3}
    assert main(["index", "remove", str(out), "5"]) == 0  # an item of the last snapshot: a tombstone
    assert json.loads(capsys.readouterr().out)["removed"] == [5]
    assert main(["index", "compact", str(out), "--force"]) == 0
    compacted = json.loads(capsys.readouterr().out)
    # 600 and 602 came and went after the snapshot: the compacting process's view never held them
    assert compacted["index"]["rebuilt"] and compacted["index"]["dropped_tombstones"] == 1
    assert compacted["orphans_removed"] == 0 and compacted["backend"] == "faiss-sqlite"
    assert main(["index", "stats", str(out)]) == 0
    stats = json.loads(capsys.readouterr().out)
    bags = sum(fmnist_folder.labels[i] == 8 for i in range(600) if i != 5) + 1  # + new1.png
    assert stats["ntotal"] == 601 and stats["label_counts"]["Bag"] == bags and stats["tombstones"] == 0
    store = IndexStore.open(str(out))
    assert store.get(600) is None and store.get(601).path.endswith("new1.png")


def test_errors_are_messages_not_tracebacks(checkpoint_path, built_index, tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "missing"), "--quiet"]) == 2
    assert "data folder not found" in capsys.readouterr().err
    assert main(["index", "build", "--checkpoint", str(tmp_path / "nope.pt"), "--data", str(tmp_path),
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "error" in err and "Traceback" not in err
    assert main(["query", str(tmp_path / "nope.png"), "--index", built_index]) == 2
    assert "file not found" in capsys.readouterr().err
    assert main(["query", checkpoint_path, "--index", built_index, "-k", "0"]) == 2
    assert "-k must be >= 1" in capsys.readouterr().err
    assert main(["index", "build", "--checkpoint", checkpoint_path, "--data", str(tmp_path),
                 "--out", built_index]) == 2


def test_index_refuses_another_model(built_index, trained, tmp_path, capsys):
    from similarity.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(checkpoint_path := trained.checkpoint_path)
    other = tmp_path / "other.pt"
    save_checkpoint(other, ckpt.model, ckpt.config, ckpt.class_names, extra={"note": "retrained"})
    assert main(["query", checkpoint_path, "--index", built_index, "--checkpoint", str(other)]) == 2
    assert "checkpoint_sha256" in capsys.readouterr().err


def test_in_memory_images_are_refused_for_an_index(checkpoint_path, fmnist_small, tmp_path):
    from engine.build import build_index

    with pytest.raises(ValueError, match="needs image files"):
        build_index(checkpoint_path, fmnist_small, tmp_path / "idx", progress=False)
    assert not (tmp_path / "idx").exists()


def test_version_is_the_installed_package_version(capsys):
    import importlib.metadata

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"simsearch {importlib.metadata.version('simsearch')}"


@pytest.mark.parametrize("flags, sampler", [
    ([], "random"),  # the preset's
    (["--loss", "contrastive"], "pairs"),
    (["--loss", "triplet"], "m_per_class"),
    (["--loss", "triplet", "--sampler", "random"], "random"),  # an explicit sampler wins
])
def test_train_picks_the_sampler_the_loss_needs(fmnist_small, flags, sampler):
    from simsearch.cli import build_parser
    from simsearch.cmd_train import build_config

    args = build_parser().parse_args(["train", "--data", "fashion-mnist", *flags])
    assert build_config(args, fmnist_small).sampler.kind == sampler


def test_milvus_from_the_command_line(built_index, new_milvus_index, sample_png, fmnist_folder, tmp_path, capsys):
    """copy an index into Milvus (ids kept), then stats, query --label, add, remove and drop on it."""
    location, home = new_milvus_index("cli")
    assert main(["index", "copy", built_index, location, "--home", str(home), "--quiet"]) == 0
    copied = json.loads(capsys.readouterr().out)
    assert copied["copied"] == 600 and copied["index"] == location and (home / "model.pt").is_file()
    assert main(["index", "stats", location]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["backend"] == "milvus" and stats["ntotal"] == 600 and stats["home"] == str(home)
    label = fmnist_folder.class_names[fmnist_folder.labels[7]]
    assert main(["query", str(sample_png), "--index", location, "--label", label, "-k", "4", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)[0]
    assert [n["label"] for n in answer["neighbors"]] == [label] * 4
    assert main(["query", str(sample_png), "--index", built_index, "-k", "1", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)[0]["neighbors"][0]["id"]
    assert main(["query", str(sample_png), "--index", location, "-k", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["neighbors"][0]["id"] == first  # the copy kept the ids
    extra = tmp_path / "extra" / "Bag"
    extra.mkdir(parents=True)
    shutil.copy(fmnist_folder.paths[3], extra / "new.png")
    assert main(["index", "add", location, "--data", str(tmp_path / "extra"), "--quiet", "--workers", "0"]) == 0
    added = json.loads(capsys.readouterr().out)
    assert added["added"] == 1 and added["ntotal"] == 601
    assert main(["index", "remove", location, str(first), str(added["first_id"])]) == 0
    assert sorted(json.loads(capsys.readouterr().out)["removed"]) == sorted([first, added["first_id"]])
    assert main(["index", "copy", built_index, location, "--quiet"]) == 2  # it exists now
    assert "already" in capsys.readouterr().err
    assert main(["index", "drop", location]) == 2 and "--yes" in capsys.readouterr().err
    assert main(["index", "drop", location, "--yes"]) == 0 and json.loads(capsys.readouterr().out)["dropped"]
    assert main(["index", "stats", location]) == 2
    err = capsys.readouterr().err
    assert "no such collection" in err and "Traceback" not in err


def test_build_into_milvus_lite(checkpoint_path, fmnist_folder, tmp_path, capsys):
    """``--out PATH.db``: a Milvus Lite data directory, model.pt and uploads in PATH-files."""
    subset = tmp_path / "data" / "Bag"
    subset.mkdir(parents=True)
    for i in range(12):
        shutil.copy(fmnist_folder.paths[i], subset / f"{i}.png")
    db = tmp_path / "vectors.db"
    assert main(["index", "build", "--checkpoint", checkpoint_path, "--data", str(tmp_path / "data"),
                 "--out", str(db), "--quiet", "--workers", "0"]) == 0
    built = json.loads(capsys.readouterr().out)
    assert built["added"] == 12 and built["index"] == str(db) and (tmp_path / "vectors-files" / "model.pt").is_file()
    assert main(["query", str(subset / "0.png"), "--index", str(db), "-k", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["neighbors"][0]["path"] == str(subset / "0.png")


def test_python_dash_m_reports_command_errors_without_a_traceback(tmp_path):
    """`python -m simsearch.cli` (as the benchmarks run it) must catch the commands' UserError like the installed
    `simsearch` does, though the module then exists twice (as __main__ and as simsearch.cli)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "simsearch.cli", "tune", "--data", str(tmp_path), "--max-trials",
                           "0", "--quiet"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "max_trials must be >= 1" in done.stderr and "Traceback" not in done.stderr
