"""Names inside an index directory that belong to the engine (the store's own files are ``index``'s business).

    <index_dir>/model.pt     the checkpoint the index was built with (a copy, fsynced)
    <index_dir>/copy_model.pt  the copy descriptor whose vector each item carries too (an index that keeps one)
    <index_dir>/uploads/     images added through the API, referenced by their items
    <index_dir>/report/      the last report (served by the API at /report)
    <index_dir>/dedup/       the last ``simsearch index dedup`` listings (duplicates.json, duplicates.html; queries.json)
    <index_dir>/evaluation/  the last ``simsearch evaluate`` of this index against another (json, html)
    <index_dir>/evaluations/ the verdict of each evaluation, by the other model's sha256 (read by ``alias set``)
"""

from __future__ import annotations

from report.config import HTML_FILE
from similarity.checkpoint import CHECKPOINT_FILE

MODEL_FILE = CHECKPOINT_FILE  # the index keeps its model under the name training gives it
COPY_MODEL_FILE = "copy_model.pt"  # the model of the second vector (index.descriptors), beside MODEL_FILE
UPLOADS_DIR = "uploads"
REPORT_DIR = "report"
REPORT_HTML = HTML_FILE
DEDUP_DIR = "dedup"
EVALUATION_DIR = "evaluation"
VERDICTS_DIR = "evaluations"
