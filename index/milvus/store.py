"""``MilvusStore``: the store interface (:class:`index.base.VectorStore`) on a Milvus collection (see
:mod:`index.milvus` for the layout, the environment and the guarantees)."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import replace

import numpy as np

from index import persist
from index.arrays import check_ids, check_positive_int, check_strings, check_vectors, normalized
from index.base import MAX_LABEL_CHARS, ItemMeta, Neighbor, check_label_filter, check_labels
from index.config import IndexConfig, auto_nlist, choose_index_type
from index.errors import IndexStoreError
from index.location import MilvusLocation
from index.milvus.client import connect, import_pymilvus, timeout_s
from index.milvus.errors import NotLoaded, call
from index.milvus.labels import MilvusLabels, label_literal
from index.milvus.replica import MilvusReplication

logger = logging.getLogger(__name__)

META_PROPERTY = "simsearch.meta"
FORMAT = "simsearch-milvus"
FORMAT_VERSION = 1
ID_LOW, ID_HIGH = 2**40, 2**53
LABEL_BYTES = 4 * MAX_LABEL_CHARS  # VARCHAR lengths are in UTF-8 bytes
PATH_BYTES = 4096
SOURCE_BYTES = 512
INSERT_ROWS = 2_000  # rows per insert call (a 128-d batch is ~1 MB on the wire)
QUERY_IDS = 1_000  # ids per ``id in [...]`` expression
ITER_BATCH = 5_000
MAX_TOPK = 16_384  # Milvus's limit on k
CONSISTENCY_LEVELS = ("Strong", "Bounded")
_META_FIELDS = ["id", "label", "path", "added_at", "source"]


def _id_list(ids) -> str:
    return "[" + ",".join(str(int(i)) for i in ids) + "]"


def milvus_index_params(index_type: str, config: IndexConfig, n: int) -> tuple[str, dict]:
    """The Milvus index (type, build params) for one of simsearch's index types, from the same config as
    FAISS: ``flat`` -> FLAT, ``hnsw`` -> HNSW(M, efConstruction), ``ivfpq`` -> IVF_FLAT(nlist) (Milvus Lite
    has no IVF_PQ; a server's IVF_PQ/DiskANN can be set on the collection directly)."""
    if index_type == "flat":
        return "FLAT", {}
    if index_type == "hnsw":
        return "HNSW", {"M": config.hnsw_m, "efConstruction": config.ef_construction}
    return "IVF_FLAT", {"nlist": config.ivf_nlist or auto_nlist(max(n, 1))}


class MilvusStore(MilvusReplication, MilvusLabels):
    """Create with :meth:`create`, reopen with :meth:`open`; thread-safe, one per process is enough.  Also
    :class:`index.base.Replicable` (see :mod:`index.milvus.replica`); labels are counted as
    :mod:`index.milvus.labels` describes."""

    backend = "milvus"

    def __init__(self, location: MilvusLocation, client, meta: dict) -> None:
        self._location = location
        self._client = client
        self._meta = meta
        self._dim = int(meta["dim"])
        self._config = IndexConfig.from_dict(meta["config"])
        self._timeout = timeout_s()

    # ------------------------------------------------------------------ construction
    @staticmethod
    def connect(location: MilvusLocation):
        """A ``MilvusClient`` for ``location`` (see :func:`index.milvus.client.connect`)."""
        return connect(location)

    @classmethod
    def create(cls, location: MilvusLocation, dim: int, *, config: IndexConfig = IndexConfig(), model_info: dict,
               home: str) -> "MilvusStore":
        """A new, empty collection (refused when it exists).  ``home``: the folder every server reaches for
        ``model.pt`` and uploaded images (stored absolute with the collection)."""
        dim = check_positive_int(dim, "dim")
        model = persist.validate_model_info(model_info, dim)
        pymilvus = import_pymilvus()
        client = cls.connect(location)
        try:
            if call(location, "check the collection", client.has_collection, location.collection):
                raise IndexStoreError(f"{location.display} already holds a collection; open it, drop it or pick "
                                      "another name")
            index_type = choose_index_type(config.expected_size or 0, dim, config)
            milvus_type, params = milvus_index_params(index_type, config, config.expected_size or 0)
            meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "dim": dim, "model": model,
                    "config": config.to_dict(), "index_type": index_type, "milvus_index": milvus_type,
                    "index_params": params, "home": os.path.abspath(home),
                    "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            DataType = pymilvus.DataType
            schema = client.create_schema(auto_id=False, enable_dynamic_field=False, description="simsearch items")
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
            schema.add_field("label", DataType.VARCHAR, max_length=LABEL_BYTES)
            schema.add_field("path", DataType.VARCHAR, max_length=PATH_BYTES)
            schema.add_field("added_at", DataType.DOUBLE)
            schema.add_field("source", DataType.VARCHAR, max_length=SOURCE_BYTES)
            index_params = client.prepare_index_params()
            index_params.add_index(field_name="vector", index_type=milvus_type, metric_type="IP", params=params)
            call(location, "create the collection", client.create_collection, location.collection,
                  schema=schema, index_params=index_params, consistency_level="Strong",
                  properties={META_PROPERTY: json.dumps(meta, sort_keys=True)})
        except BaseException:
            client.close()
            raise
        logger.info("created Milvus collection %s (%s %s, dim %d)", location.display, milvus_type, params, dim)
        return cls.open(location, client=client)

    @classmethod
    def open(cls, location: MilvusLocation, *, expect_model: dict | None = None, client=None) -> "MilvusStore":
        """Open an existing collection and load it.  Raises ``IndexMismatchError`` when ``expect_model``
        differs from the stored model stamp, ``IndexStoreError`` when the collection is missing or was not
        made by simsearch, ``IndexUnavailableError`` when the server cannot be reached.

        A Milvus alias opens the collection it names now: the store never follows a later switch of the alias
        into a collection embedded by another model (a server follows the alias by reopening)."""
        client = client or cls.connect(location)
        try:
            if not call(location, "check the collection", client.has_collection, location.collection):
                raise IndexStoreError(f"{location.display}: no such collection; build it with "
                                      f"simsearch index build --index {location.display} ...")
            described = call(location, "describe the collection", client.describe_collection, location.collection)
            named = described.get("collection_name") or location.collection
            if named != location.collection:
                logger.info("%s is an alias of %s", location.display, named)
                location = replace(location, collection=named)
            raw = (described.get("properties") or {}).get(META_PROPERTY)
            if raw is None:
                raise IndexStoreError(f"{location.display} is not a simsearch collection (no {META_PROPERTY} "
                                      "property)")
            meta = json.loads(raw)
            if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
                raise IndexStoreError(f"{location.display} has format {meta.get('format')!r} version "
                                      f"{meta.get('format_version')!r}; this simsearch reads {FORMAT} {FORMAT_VERSION}")
            if expect_model is not None:
                persist.check_model(meta["model"], expect_model)
            call(location, "load the collection", client.load_collection, location.collection)
        except BaseException:
            client.close()
            raise
        store = cls(location, client, meta)
        logger.info("opened Milvus collection %s: %s", location.display, meta["milvus_index"])
        return store

    @staticmethod
    def exists(location: MilvusLocation) -> bool:
        """Whether the collection exists (raises ``IndexUnavailableError`` when the server is down)."""
        client = MilvusStore.connect(location)
        try:
            return bool(call(location, "check the collection", client.has_collection, location.collection))
        finally:
            client.close()

    @staticmethod
    def drop(location: MilvusLocation) -> bool:
        """Drop the collection (for tests and ``simsearch index drop``); returns whether it existed."""
        client = MilvusStore.connect(location)
        try:
            if not call(location, "check the collection", client.has_collection, location.collection):
                return False
            call(location, "drop the collection", client.drop_collection, location.collection)
            return True
        finally:
            client.close()

    # ------------------------------------------------------------------ properties
    @property
    def location(self) -> str:
        return self._location.display

    @property
    def home(self) -> str:
        """The folder shared by every server: ``model.pt`` and uploaded images."""
        return self._meta["home"]

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def config(self) -> IndexConfig:
        return self._config

    @property
    def index_type(self) -> str | None:
        return self._meta["index_type"]

    @property
    def factory(self) -> str | None:
        params = ",".join(f"{k}={v}" for k, v in sorted(self._meta["index_params"].items()))
        return f"milvus:{self._meta['milvus_index']}({params})"

    @property
    def model_info(self) -> dict:
        return dict(self._meta["model"])

    def __len__(self) -> int:
        rows = self._run("count the items", self._client.query, self._location.collection, filter="",
                         output_fields=["count(*)"], consistency_level="Strong")
        return int(rows[0]["count(*)"]) if rows else 0

    # ------------------------------------------------------------------ writes
    @property
    def descriptors(self) -> None:
        """A collection keeps one vector per item (Milvus 2.3 allows one vector field): no copy descriptor."""
        return None

    def add(self, vectors: np.ndarray, *, labels: list[str], paths: list[str], sources: list[str] | None = None,
            ids: np.ndarray | None = None, added_at: np.ndarray | None = None,
            descriptors: np.ndarray | None = None) -> np.ndarray:
        """Insert ``vectors: (n, d) float32`` with their labels and paths; returns their ids.  ``ids`` and
        ``added_at`` (only for :func:`engine.build.copy_items`) keep given ids and times instead of new ones.  A
        batch goes in chunks of ``INSERT_ROWS``; if one fails, every chunk tried is deleted again before the error
        is raised, the failed one included (an insert that timed out may still have been applied; a delete by
        primary key is safe to repeat), so a failed add leaves no item behind."""
        if descriptors is not None:
            raise ValueError(f"{self.location} keeps no second vector per item; pass no descriptors")
        xb, labels, paths, sources = self._rows(vectors, labels, paths, sources)
        n = len(xb)
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        ids = self._new_ids(n) if ids is None else check_ids(ids)
        if len(ids) != n:
            raise ValueError(f"got {len(ids)} ids for {n} vectors")
        times = np.full(n, time.time()) if added_at is None else np.asarray(added_at, dtype=np.float64)
        if len(times) != n:
            raise ValueError(f"got {len(times)} times for {n} vectors")
        self._check_primary()
        self._insert(xb, ids, labels, paths, sources, times)
        return ids

    def _rows(self, vectors: np.ndarray, labels: list[str], paths: list[str], sources: list[str] | None):
        """The checked (and normalised) columns of a batch: ``(xb (n, d) float32, labels, paths, sources)``."""
        xb = check_vectors(vectors, self._dim, "vectors")
        n = len(xb)
        labels = check_labels(check_strings(labels, n, "labels"))
        paths = check_strings(paths, n, "paths")
        sources = check_strings(sources, n, "sources", optional=True)
        _check_bytes(labels, LABEL_BYTES, "label")
        _check_bytes(paths, PATH_BYTES, "path")
        _check_bytes([s for s in sources if s], SOURCE_BYTES, "source")
        if n and self._config.normalize:
            xb = normalized(xb, "vectors")
        return xb, labels, paths, sources

    def _insert(self, xb: np.ndarray, ids: np.ndarray, labels: list[str], paths: list[str],
                sources: list[str] | None, times: np.ndarray) -> None:
        """Insert checked rows under ``ids`` (see :meth:`add`: a failed insert deletes what it sent)."""
        n = len(xb)
        self._note_labels(labels)  # before the rows: a crash leaves a label recorded with no item, never the reverse
        tried = 0  # rows sent so far, the failing chunk included: it may have been applied before a timeout
        try:
            for start in range(0, n, INSERT_ROWS):
                stop = min(start + INSERT_ROWS, n)
                rows = [{"id": int(ids[i]), "vector": xb[i].tolist(), "label": labels[i], "path": paths[i],
                         "added_at": float(times[i]), "source": (sources[i] if sources else None) or ""}
                        for i in range(start, stop)]
                tried = stop
                self._run("insert items", self._client.insert, self._location.collection, rows)
        except BaseException:
            self._undo_insert(ids[:tried], n)
            raise

    def _undo_insert(self, ids: np.ndarray, n: int) -> None:
        """Delete the rows of a failed add (those inserted and those whose insert may have been applied)."""
        if not len(ids):
            return
        logger.warning("add of %d items failed: deleting the %d sent so far again", n, len(ids))
        try:
            self._run("undo a failed insert", self._client.delete, self._location.collection,
                      ids=[int(i) for i in ids])
        except IndexStoreError:
            logger.exception("could not delete the rows of a failed add; ids %s: run simsearch index remove "
                             "on those that exist", [int(i) for i in ids[:10]])

    def _new_ids(self, n: int) -> np.ndarray:
        """``n`` fresh ids, uniform in [ID_LOW, ID_HIGH), none of them already in the collection."""
        ids = np.unique(np.frombuffer(os.urandom(8 * n), dtype=np.uint64) % np.uint64(ID_HIGH - ID_LOW)
                        ).astype(np.int64) + ID_LOW
        while len(ids) < n:
            ids = np.unique(np.concatenate([ids, self._new_ids(n - len(ids))]))
        # Bounded, not Strong: a collision needs a concurrent add to draw the same 53-bit id within the
        # staleness window (~n * size / 2**53 even without it), and Strong costs a server time tick per call
        taken = set(self.get_many(ids, consistency="Bounded"))
        if taken:  # practically never, but an id must never name two items
            ids = np.array([i for i in ids if int(i) not in taken], dtype=np.int64)
            ids = np.concatenate([ids, self._new_ids(n - len(ids))])
        return np.random.default_rng().permutation(ids[:n])

    def remove(self, ids) -> list[ItemMeta]:
        """Delete items by id (unknown ids are ignored); returns the items that were live."""
        ids = check_ids(ids)
        if not len(ids):
            return []
        self._check_primary()
        return self._remove(ids)

    def _remove(self, ids: np.ndarray) -> list[ItemMeta]:
        found = self.get_many(ids)
        if found:
            self._run("delete items", self._client.delete, self._location.collection, ids=sorted(found))
        return [found[i] for i in sorted(found)]

    # ------------------------------------------------------------------ search
    def search(self, xq: np.ndarray, k: int, *, ef_search: int | None = None, nprobe: int | None = None,
               label: str | None = None, consistency: str = "Strong") -> list[list[Neighbor]]:
        """The ``k`` nearest items of each query, best first; ``label`` filters inside Milvus.  ``consistency``
        (Milvus only): "Strong" sees every acknowledged write (one server time tick per call); "Bounded" may
        miss the writes of the last moments, for callers to whom that is harmless."""
        if consistency not in CONSISTENCY_LEVELS:
            raise ValueError(f"consistency must be one of {CONSISTENCY_LEVELS}, got {consistency!r}")
        xq = check_vectors(xq, self._dim, "xq")
        k = min(check_positive_int(k, "k"), MAX_TOPK)
        ef_search = check_positive_int(ef_search, "ef_search", allow_none=True) or self._config.ef_search
        nprobe = check_positive_int(nprobe, "nprobe", allow_none=True) or self._config.nprobe
        label = check_label_filter(label)
        if not len(xq):
            return []
        if self._config.normalize:
            xq = normalized(xq, "xq")
        kind = self._meta["milvus_index"]
        params = {"ef": max(ef_search, k)} if kind == "HNSW" else {"nprobe": nprobe} if kind.startswith("IVF") else {}
        found = self._run("search", self._client.search, self._location.collection, data=xq.tolist(), limit=k,
                          filter="" if label is None else f"label == {label_literal(label)}",
                          output_fields=["label", "path", "source"],
                          search_params={"metric_type": "IP", "params": params},
                          consistency_level=consistency)
        results = []
        for hits in found:
            row = []
            for hit in hits:
                entity = hit.get("entity", {})
                meta = ItemMeta(int(hit["id"]), entity.get("path", ""), entity.get("label", ""), 0.0,
                                entity.get("source") or None)
                row.append(Neighbor.of(hit["id"], hit["distance"], meta))
            results.append(row)
        return results

    # ------------------------------------------------------------------ items
    def get(self, item_id: int) -> ItemMeta | None:
        return self.get_many([item_id]).get(int(item_id))

    def get_many(self, ids, *, consistency: str = "Strong") -> dict[int, ItemMeta]:
        """Metadata of the live items among ``ids``, keyed by id (one query per QUERY_IDS ids)."""
        wanted = sorted({int(i) for i in ids if 0 <= int(i) < 2**63})
        out: dict[int, ItemMeta] = {}
        for start in range(0, len(wanted), QUERY_IDS):
            chunk = wanted[start:start + QUERY_IDS]
            for row in self._run("read items", self._client.query, self._location.collection,
                                 filter=f"id in {_id_list(chunk)}", output_fields=_META_FIELDS,
                                 consistency_level=consistency):
                out[int(row["id"])] = _meta(row)
        return out

    def random_ids(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``min(n, len(self))`` distinct ids drawn with ``rng``, without a scan: ids are uniform random in
        [ID_LOW, ID_HIGH) (and ids copied from an index directory fill the range recorded by
        :func:`engine.build.copy_items`), so the items of a random id window are a random sample.  A window is sized for
        ~4n items and widened 4x after each miss; a scan is the last resort (a tiny or very sparse range)."""
        n = check_positive_int(n, "n")
        total = len(self)
        want = min(n, total)
        if want == 0:
            return np.zeros(0, dtype=np.int64)
        imported = self._meta.get("imported")
        ranges = [(ID_LOW, ID_HIGH, total - (imported["count"] if imported else 0))]
        if imported:
            ranges.append((imported["low"], imported["high"] + 1, imported["count"]))
        weights = np.array([max(count, 0) for _, _, count in ranges], dtype=float) + 1e-9
        growth = [1] * len(ranges)
        picked: set[int] = set()
        for _ in range(12):
            r = int(rng.choice(len(ranges), p=weights / weights.sum()))
            low, high, count = ranges[r]
            span = high - low
            width = min(span, max(1, int(span * 4 * want * growth[r] / max(count, 1))))
            start = int(rng.integers(low, high - width + 1))
            rows = self._run("sample items", self._client.query, self._location.collection,
                             filter=f"id >= {start} and id < {start + width}", output_fields=["id"],
                             limit=16 * want, consistency_level="Strong")
            found = {int(row["id"]) for row in rows}
            if len(picked | found) >= want:
                picked |= found
                break
            picked |= found
            growth[r] *= 4
        else:
            picked |= {item.id for item in self.iter_items()}
        return rng.choice(np.array(sorted(picked), dtype=np.int64), size=min(want, len(picked)), replace=False)

    def record_import(self, ids: np.ndarray) -> None:
        """Remember the range of ids copied in from another index (see :meth:`random_ids`), widening the range
        already recorded (read afresh from the server); ids in the random range [ID_LOW, ID_HIGH) need no record."""
        ids = np.asarray(ids, dtype=np.int64)
        ids = ids[ids < ID_LOW]
        if not len(ids):
            return
        described = self._run("read the collection", self._client.describe_collection, self._location.collection)
        meta = json.loads((described.get("properties") or {}).get(META_PROPERTY) or json.dumps(self._meta))
        old = meta.get("imported") or {"low": int(ids.min()), "high": int(ids.max()), "count": 0}
        imported = {"low": min(old["low"], int(ids.min())), "high": max(old["high"], int(ids.max())),
                    "count": int(old["count"]) + int(len(ids))}
        meta = dict(meta, imported=imported)
        self._run("record the copied ids", self._client.alter_collection_properties, self._location.collection,
                  properties={META_PROPERTY: json.dumps(meta, sort_keys=True)})
        self._meta = meta

    def iter_items(self) -> Iterator[ItemMeta]:
        """Every item (in Milvus's order, not by id), ``ITER_BATCH`` per round trip."""
        for row in self._iterate(_META_FIELDS):
            yield _meta(row)

    def all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ids (n,) int64, xb (n, d) float32)`` of every item sorted by id, as stored (normalised)."""
        chunks = list(self.iter_vectors())
        if not chunks:
            return np.zeros(0, np.int64), np.zeros((0, self._dim), np.float32)
        ids = np.concatenate([c[0] for c in chunks])
        order = np.argsort(ids, kind="stable")
        return ids[order], np.concatenate([c[1] for c in chunks])[order]

    def iter_vectors(self, batch: int = 10_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every item as chunks ``(ids (c,) int64, xb (c, d) float32)`` of at most ``batch``, in Milvus's order
        (not by id), one chunk in memory at a time."""
        ids, vectors = [], []
        for row in self._iterate(["id", "vector"]):
            ids.append(int(row["id"]))
            vectors.append(np.asarray(row["vector"], dtype=np.float32))
            if len(ids) == batch:
                yield np.array(ids, dtype=np.int64), np.stack(vectors)
                ids, vectors = [], []
        if ids:
            yield np.array(ids, dtype=np.int64), np.stack(vectors)

    def vectors(self, ids) -> dict[int, np.ndarray]:
        """The stored vectors of the live items among ``ids``, keyed by id (one query per QUERY_IDS ids)."""
        wanted = sorted({int(i) for i in ids if 0 <= int(i) < 2**63})
        out: dict[int, np.ndarray] = {}
        for start in range(0, len(wanted), QUERY_IDS):
            for row in self._run("read vectors", self._client.query, self._location.collection,
                                 filter=f"id in {_id_list(wanted[start:start + QUERY_IDS])}",
                                 output_fields=["vector"], consistency_level="Strong"):
                out[int(row["id"])] = np.asarray(row["vector"], dtype=np.float32)
        return out

    def reconstruct(self, item_id: int) -> np.ndarray:
        rows = self._run("read a vector", self._client.query, self._location.collection,
                         filter=f"id == {int(item_id)}", output_fields=["vector"], consistency_level="Strong")
        if not rows:
            raise KeyError(f"no item with id {item_id}")
        return np.asarray(rows[0]["vector"], dtype=np.float32)

    def stats(self) -> dict:
        return {"backend": self.backend, "ntotal": len(self), "label_counts": self.label_counts(),
                "index_type": self.index_type, "factory": self.factory, "dim": self._dim,
                "metric": self._config.metric, "model": dict(self._meta["model"]), "config": self._config.to_dict(),
                "created_at": self._meta["created_at"], "location": self.location, "home": self.home,
                "collection": self._location.collection, "replica_of": _state_dict(self.replica_state())}

    # ------------------------------------------------------------------ maintenance (Milvus's own)
    # Not :class:`index.base.Maintainable`: Milvus keeps its own log and compacts its segments by itself.
    def flush(self) -> None:
        """Seal the growing segments (Milvus's ``flush``) so that a restart does not replay them."""
        self._run("flush", self._client.flush, self._location.collection)

    def request_compaction(self) -> str:
        """Ask Milvus to compact the collection now (:class:`index.base.ServerCompacted`): it merges small
        segments and purges deleted rows in the background; returns what was asked, in words."""
        job = self._run("compact", self._client.compact, self._location.collection)
        return (f"Milvus compaction job {job} requested: the server merges segments and purges deleted rows "
                "in the background")

    def wait_for_background(self, timeout: float | None = None) -> None:
        return None

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # noqa: BLE001 - closing a client of a dead server must not fail
            logger.debug("closing the Milvus client failed", exc_info=True)

    # ------------------------------------------------------------------ plumbing
    def _run(self, what: str, fn, *args, **kwargs):
        kwargs.setdefault("timeout", self._timeout)
        try:
            return call(self._location, what, fn, *args, **kwargs)
        except NotLoaded:  # the server restarted (Milvus Lite forgets loads): load once and retry
            call(self._location, "load the collection", self._client.load_collection, self._location.collection,
                  timeout=self._timeout)
            return call(self._location, what, fn, *args, **kwargs)

    def _iterate(self, fields: list[str]) -> Iterator[dict]:
        iterator = self._run("iterate", self._client.query_iterator, self._location.collection,
                             batch_size=ITER_BATCH, filter="", output_fields=fields, consistency_level="Strong")
        try:
            while True:
                batch = call(self._location, "iterate", iterator.next)
                if not batch:
                    return
                yield from batch
        finally:
            iterator.close()



def _check_bytes(values: list[str], limit: int, what: str) -> None:
    for value in values:
        if len(value.encode("utf-8")) > limit:
            raise ValueError(f"a {what} is longer than {limit} UTF-8 bytes: {value[:60]!r}...")


def _state_dict(state) -> dict | None:
    return None if state is None else state.to_dict()


def _meta(row: dict) -> ItemMeta:
    return ItemMeta(int(row["id"]), row.get("path", ""), row.get("label", ""), float(row.get("added_at") or 0.0),
                    row.get("source") or None)

