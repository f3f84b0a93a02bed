"""The search engine: an index directory together with the checkpoint it was built with.

Everything that turns images into answers lives here, once: opening an index with its model, building and
growing it (:mod:`engine.build`), the single search path, decode -> embed -> search -> vote
(:mod:`engine.engine`), duplicates at ingestion, inside an index and of outside files (:mod:`engine.ingestion`,
:mod:`engine.dedup`, :mod:`engine.copies`; the rule itself is :mod:`similarity.judge`), the names inside an index folder (:mod:`engine.layout`), reports
(:mod:`engine.reporting`), ONNX export (:mod:`engine.export`) and backups (:mod:`engine.backup`).  The API, the
CLI, the notebook and the report call it; none of them repeats a step.  Import from those modules: this
package re-exports nothing.
"""
