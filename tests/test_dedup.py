"""``simsearch index dedup`` and ``Engine.find_duplicates`` on the real fixture index (600 Fashion-MNIST PNGs and
a really trained model), with real copies added through the upload path: an exact copy, near copies (JPEG,
resize), and a copy under another label."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from engine.engine import Engine
from similarity.hygiene import DuplicateRule
from simsearch.cli import main

from imagecopies import reencode

# The fixture's model groups classes tightly: distinct images of one class reach cosine 0.9999, so the cosine
# only proposes candidates and the pHash confirms them (pixels=True); alone, only a threshold above that works.
THRESHOLD = 0.99
IDENTICAL = 0.99999



@pytest.fixture
def with_copies(index_copy, fmnist_folder, ids):
    """``index_copy`` plus copies of three of its images; returns (index, {name: (original id, copy ids)})."""
    paths, labels = fmnist_folder.paths, fmnist_folder.class_names
    a, b, c = 10, 250, 480
    engine = Engine.open(index_copy)
    try:
        exact = engine.add_image(Path(paths[a]).read_bytes(), labels[fmnist_folder.labels[a]]).item.id
        jpeg = engine.add_image(reencode(paths[b], "JPEG", quality=70), labels[fmnist_folder.labels[b]]).item.id
        bigger = engine.add_image(reencode(paths[b], "PNG", size=(40, 40)), labels[fmnist_folder.labels[b]]).item.id
        wrong = (fmnist_folder.labels[c] + 1) % len(labels)
        relabelled = engine.add_image(reencode(paths[c], "BMP"), labels[wrong]).item.id
    finally:
        engine.close()
    return index_copy, {"exact": (ids[a], [exact]), "near": (ids[b], [jpeg, bigger]),
                        "relabelled": (ids[c], [relabelled])}


def _group_of(report, item_id):
    return next(g for g in report.groups if item_id in [m.id for m in g.members])


def test_exact_and_near_groups_are_found_and_labelled(with_copies):
    index, added = with_copies
    engine = Engine.open(index)
    try:
        report = engine.find_duplicates(rule=DuplicateRule(cosine=THRESHOLD), pixels=True)
        cosine_only = engine.find_duplicates(rule=DuplicateRule(cosine=IDENTICAL))
    finally:
        engine.close()
    exact = _group_of(report, added["exact"][0])
    assert [m.id for m in exact.members] == [added["exact"][0], *added["exact"][1]] and exact.exact  # oldest first
    near = _group_of(report, added["near"][0])  # JPEG copy and resized copy: one group, transitively
    assert [m.id for m in near.members] == [added["near"][0], *added["near"][1]]
    assert not near.exact and not near.mixed_labels and near.keep == added["near"][0]
    assert all(m.similarity >= THRESHOLD for m in near.members)
    relabelled = _group_of(report, added["relabelled"][0])  # a lossless BMP: same pixels, another label
    assert relabelled.exact and relabelled.mixed_labels
    assert report.duplicates == sorted(i for _, copies in added.values() for i in copies)
    assert report.exact_pairs == 2 and not report.unreadable
    # the embeddings alone, at a threshold only identical pixels reach: the two exact groups, not marked exact
    assert sorted(g.keep for g in cosine_only.groups) == sorted([added["exact"][0], added["relabelled"][0]])
    assert not any(g.exact for g in cosine_only.groups)


def test_no_group_among_distinct_images(built_index):
    """The 600 fixture images are distinct: at the threshold no pair of them is grouped, with or without
    pixels; and groups are stable from run to run."""
    engine = Engine.open(built_index)
    try:
        first = engine.find_duplicates(rule=DuplicateRule(cosine=THRESHOLD), pixels=True)
        again = engine.find_duplicates(rule=DuplicateRule(cosine=THRESHOLD), pixels=True)
    finally:
        engine.close()
    assert first.items == 600 and first.groups == [] and first.near_pairs == 0 and first.exact_pairs == 0
    assert again.to_dict()["groups"] == first.to_dict()["groups"]


def test_cli_dedup_is_a_dry_run_unless_told_to_remove(with_copies, tmp_path, capsys):
    index, added = with_copies
    copies = sorted(i for _, c in added.values() for i in c)
    out = tmp_path / "listing"
    args = ["index", "dedup", index, "--threshold", str(THRESHOLD), "--pixels", "--out", str(out)]
    assert main(args) == 0
    dry = json.loads(capsys.readouterr().out)
    assert dry["dry_run"] and dry["would_remove"] == copies and dry["groups"] == 3
    assert dry["exact_groups"] == 2 and dry["near_groups"] == 1 and dry["mixed_label_groups"] == 1
    listing = json.loads((out / "duplicates.json").read_text())
    assert sorted(g["keep"] for g in listing["groups"]) == sorted(original for original, _ in added.values())
    page = (out / "duplicates.html").read_text()
    assert page.count("<figure") == 7 and page.count("data:image/") == 7 and "different labels" in page
    engine = Engine.open(index)
    try:
        assert len(engine) == 604  # nothing removed by the dry run
    finally:
        engine.close()

    assert main([*args, "--remove"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert not done["dry_run"] and done["removed"] == copies
    assert main(args) == 0
    after = json.loads(capsys.readouterr().out)
    assert after["groups"] == 0 and after["items"] == 600
    # dense verification (opt-in) must be a correlation; a bad one is a clear error, not a traceback
    assert main([*args, "--min-correlation", "1.5"]) == 2
    assert "min_correlation" in capsys.readouterr().err
    assert main(["index", "dedup", index, "--threshold", str(THRESHOLD)]) == 0  # default listing folder
    default = json.loads(capsys.readouterr().out)
    engine = Engine.open(index)
    try:
        assert os.path.dirname(default["json"]) == os.path.join(engine.directory, "dedup")
    finally:
        engine.close()


def test_a_sampled_search_finds_the_groups_of_its_sampled_items_only(with_copies):
    """The report's duplicate search visits a seeded sample: each group it finds is a group of the full search
    with a sampled member, and a sample as large as the index finds exactly the full search's groups."""
    index, _ = with_copies
    engine = Engine.open(index)
    try:
        rule = DuplicateRule(cosine=THRESHOLD)
        full = engine.find_duplicates(rule=rule, pixels=True)
        everything = engine.find_duplicates(rule=rule, pixels=True, sample=len(engine.store))
        sampled = engine.find_duplicates(rule=rule, pixels=True, sample=200, seed=1)
        with pytest.raises(ValueError, match="sample"):
            engine.find_duplicates(rule=rule, sample=0)
    finally:
        engine.close()
    groups = lambda report: {tuple(m.id for m in g.members) for g in report.groups}  # noqa: E731
    assert groups(everything) == groups(full) and everything.summary()["queried"] == full.items
    assert sampled.summary()["queried"] == 200 and sampled.near_pairs <= full.near_pairs
    assert all(any(set(g) <= set(f) for f in groups(full)) for g in groups(sampled))
