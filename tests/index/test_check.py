"""Damaged files of a copy of the test index: a SQLite page overwritten (found by ``quick_check``, at open and by
``simsearch index check``) and a snapshot overwritten (found by its sha256, and rebuilt from the intact truth)."""

from __future__ import annotations

import json
import sqlite3

import pytest

from bench.reliability.faults import newest_snapshot_file, overwrite, root_page_offset
from index import IndexDamagedError, IndexStore
from index.check import check_store
from index.db import db_path
from simsearch.cli import main
from tests.index.test_migrate import as_format_3

pytestmark = pytest.mark.embedded_only


def _check(index_dir: str, *options: str, capsys) -> tuple[int, dict, str]:
    code = main(["index", "check", *options, index_dir])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def test_an_intact_index_checks_ok(index_copy, capsys):
    code, report, line = _check(index_copy, capsys=capsys)
    assert code == 0 and report["damaged"] is False and report["database"] == "ok"
    assert [s["status"] for s in report["snapshots"]] == ["ok"] and "ok:" in line


def test_a_damaged_snapshot_is_found_and_rebuilt_from_the_truth(index_copy, capsys, caplog):
    with _Open(index_copy) as store:
        expected = len(store)
    overwrite(newest_snapshot_file(index_copy), 4096)

    code, report, line = _check(index_copy, capsys=capsys)
    assert code == 1 and report["damaged"] is True and report["database"] == "ok"
    assert report["snapshots"][0]["status"] == "damaged" and "--repair" in report["recovery"][0]
    assert "newest snapshot 1 damaged" in line

    with _Open(index_copy) as store:  # opening builds the view from the truth meanwhile
        assert len(store) == expected
    assert "sha256 does not match" in caplog.text

    code, report, line = _check(index_copy, "--repair", capsys=capsys)
    assert code == 0 and report["damaged"] is False and report["repaired"] == ["wrote snapshot 2 from the truth"]
    assert report["snapshots"][0]["status"] == "ok" and report["snapshots"][1]["status"] == "damaged"
    with _Open(index_copy) as store:
        assert len(store) == expected and store.stats()["snapshot"]["gen"] == 2


def test_a_damaged_table_page_is_refused_at_open_and_reported(index_copy, capsys):
    overwrite(db_path(index_copy), root_page_offset(index_copy, "items") + 100, 512)

    with pytest.raises(IndexDamagedError, match="damaged|malformed"):
        IndexStore.open(index_copy).close()
    code, report, line = _check(index_copy, capsys=capsys)
    assert code == 1 and report["database"] == "damaged" and report["database_problems"]
    assert "simsearch index restore" in " ".join(report["recovery"]) and line.startswith(index_copy + ": damaged")
    code, report, _line = _check(index_copy, "--repair", capsys=capsys)  # nothing it can do in place
    assert code == 1 and report["repaired"] == []


def test_a_large_database_opens_without_quick_check_and_fails_at_the_damaged_read(index_copy, capsys, monkeypatch):
    """Past ``OPEN_CHECK_MAX_BYTES`` opening reads no page it does not need (quick_check reads them all: 35 s
    at 10M items); damage in the items table then fails the read that meets it, and ``index check`` finds it."""
    import index.check

    overwrite(db_path(index_copy), root_page_offset(index_copy, "items") + 100, 512)
    monkeypatch.setattr(index.check, "OPEN_CHECK_MAX_BYTES", 1024)
    assert not index.check.checked_at_open(db_path(index_copy))
    try:
        store = IndexStore.open(index_copy)
    except IndexDamagedError:  # the view's catch-up met the damaged page: refused all the same
        store = None
    if store is not None:
        try:
            with pytest.raises(IndexDamagedError):
                store.all_vectors()
        finally:
            store.close()
    code, report, _line = _check(index_copy, capsys=capsys)
    assert code == 1 and report["database"] == "damaged"


@pytest.mark.parametrize("version", [4, 3])
def test_a_damaged_label_index_is_recovered_from_the_tables(index_copy, capsys, version):
    """The rows are copied into a new database (label counts filled as they go); one of format 3, damaged
    before it was ever opened by this release, comes out in format 4."""
    with _Open(index_copy) as store:
        before = {m.id: (m.label, m.path) for m in store.iter_items()}
        head, counts = store.log_head(), store.label_counts()
    if version == 3:
        with sqlite3.connect(db_path(index_copy)) as conn:
            as_format_3(conn)
        conn.close()
    overwrite(db_path(index_copy), root_page_offset(index_copy, "items_label") + 8, 256)

    code, report, _line = _check(index_copy, capsys=capsys)
    assert code == 1 and report["database"] == "damaged" and report["tables_readable"] is True
    assert "copies the rows into a new database" in report["recovery"][0]
    code, report, _line = _check(index_copy, "--repair", capsys=capsys)
    assert code == 0 and report["database"] == "ok" and report["repaired"][0].startswith("copied every row")
    with _Open(index_copy) as store:  # every item back, the log head kept, the label index usable
        assert {m.id: (m.label, m.path) for m in store.iter_items()} == before and store.log_head() == head
        assert store.label_counts() == counts and store.stats()["snapshot"]["lineage"] >= 0
        label = next(iter(before.values()))[0]
        assert len(store.search(store.reconstruct(0)[None], 5, label=label)[0]) == 5


class _Open:
    def __init__(self, directory: str) -> None:
        self.store = IndexStore.open(directory)

    def __enter__(self) -> IndexStore:
        return self.store

    def __exit__(self, *exc) -> None:
        self.store.close()


def test_a_folder_that_is_no_index_is_refused_not_called_damaged(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"not an index")
    assert main(["index", "check", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "is not an index directory" in err and "damaged" not in err
