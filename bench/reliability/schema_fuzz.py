"""Schema fuzzing: schemathesis against a real server's ``/openapi.json``, every phase and every check.

Schemathesis fills a ``format: binary`` field with random bytes, which the server rightly answers 400 ("not a
recognised image format"), so a positive test of an upload would never get past the decoder.
:func:`register_image_media_types` makes every image the spec asks for a real PNG or JPEG file of 1..64 × 1..64
pixels drawn by hypothesis (the ``image/*`` and ``application/octet-stream`` bodies, the ``image`` part through
its ``encoding.contentType``, the ``images`` parts of a batch), so positive cases reach the model and the index.
:func:`run_schema_fuzz` runs schemathesis' engine in process and returns JSON-able counts.
"""

from __future__ import annotations

import io
import tempfile
import time
from collections import Counter
from email.parser import BytesParser
from email.policy import HTTP

import hypothesis.configuration
import jsonschema_rs
import schemathesis
from hypothesis import strategies as st
from PIL import Image
from schemathesis.core.failures import AcceptedNegativeData
from schemathesis.core.parameters import ParameterLocation
from schemathesis.openapi.checks import RejectedPositiveData

MAX_SIDE = 64
TILE_SIDE = 8  # hypothesis draws at most TILE_SIDE² pixels; they are scaled up to the image's size

# the checks that judge the server's answers against the spec
CONFORMANCE_CHECKS = frozenset({"status_code_conformance", "content_type_conformance",
                                "response_schema_conformance", "response_headers_conformance"})
# schemathesis check name -> why it is off (none is: every check holds)
EXCLUDED_CHECKS: dict[str, str] = {}


@st.composite
def image_files(draw, fmt: str) -> bytes:
    """A ``fmt`` ("PNG" or "JPEG") file of ``w × h`` pixels, ``1 <= w, h <= MAX_SIDE``, grey or RGB.

    The pixels come from a tile of at most ``TILE_SIDE × TILE_SIDE`` drawn bytes scaled to the size (nearest
    neighbour): at most 192 drawn bytes per image keep hypothesis fast and its shrinking useful.
    """
    width, height = draw(st.integers(1, MAX_SIDE)), draw(st.integers(1, MAX_SIDE))
    mode = draw(st.sampled_from(["L", "RGB"]))
    tile_w, tile_h = min(width, TILE_SIDE), min(height, TILE_SIDE)
    size = tile_w * tile_h * len(mode)
    tile = Image.frombytes(mode, (tile_w, tile_h), draw(st.binary(min_size=size, max_size=size)))
    buffer = io.BytesIO()
    tile.resize((width, height), Image.Resampling.NEAREST).save(buffer, fmt)
    return buffer.getvalue()


def register_image_media_types() -> None:
    """Make schemathesis send real images wherever the spec asks for one (idempotent; schemathesis' registries
    are process-wide).

    * ``image/png``, ``image/jpeg``, ``application/octet-stream``: media types, for raw bodies and for multipart
      parts with ``encoding.contentType``.  ``image/*`` itself is not registered: schemathesis resolves a
      wildcard to the registered concrete types, so such a body or part goes out as ``image/png`` or
      ``image/jpeg`` with bytes of that format.
    * ``format: binary``: the items of the batch's ``images`` array, which has no ``encoding`` because
      schemathesis 4.32 fills an array property that has one with a single part instead of a list.
    """
    png, jpeg = image_files("PNG"), image_files("JPEG")
    schemathesis.openapi.media_type("image/png", png)
    schemathesis.openapi.media_type("image/jpeg", jpeg)
    schemathesis.openapi.media_type("application/octet-stream", st.one_of(png, jpeg))
    schemathesis.openapi.format("binary", st.one_of(png, jpeg))


def run_schema_fuzz(base_url: str, token: str | None, max_examples: int, seed: int, *,
                    max_time: int | None = None, request_timeout: float = 30.0) -> dict:
    """Run schemathesis (every phase; every check but :data:`EXCLUDED_CHECKS`) against ``base_url``.

    ``token``: the server's write token (None: the write operations are only tested unauthenticated).
    ``max_examples``: hypothesis examples per operation and phase; ``max_time``: seconds for the whole run;
    ``request_timeout``: seconds per request.
    The server's index is written to (adds and deletes): point it at a copy.

    Returns ``{"operations" (tested), "cases_generated", "cases_sent", "status_counts",
    "status_counts_by_operation", "server_errors" (5xx answers), "failures": [{"code", "title", "check",
    "operation", "status", "phase", "example", "reproduce", "count"}], "responses_conform" (no conformance check
    failed), "discounted_failures" (see :meth:`_Tally.failure_filter`), "errors", "excluded_checks",
    "duration_s", "seed", "max_examples"}``.  Nothing is written outside a temporary directory: no report, no
    hypothesis example database, no schemathesis cache; hypothesis' own caches are redirected while it runs.
    """
    from schemathesis.config import SchemathesisConfig
    from schemathesis.config._checks import NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES
    from schemathesis.engine import events, from_schema

    register_image_media_types()
    settings: dict = {
        "seed": seed, "base-url": base_url, "request-timeout": request_timeout,
        "cache": {"enabled": False},
        "generation": {"max-examples": max_examples, "database": "none"},
        "checks": {"enabled": True, **{name: {"enabled": False} for name in EXCLUDED_CHECKS},
                   # a body over the limit (413) or a request line over the HTTP server's (414) is refused too
                   "negative_data_rejection": {"expected-statuses": [*NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES,
                                                                     "413", "414"]}},
    }
    if token:
        settings["auth"] = {"openapi": {"bearerAuth": {"bearer": token}}}
    if max_time is not None:
        settings["max-time"] = max_time
    tally = _Tally()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="simsearch-schemathesis-") as scratch:
        home = hypothesis.configuration.storage_directory(intent_to_write=False).home_directory
        hypothesis.configuration.set_hypothesis_home_dir(scratch)  # else <cwd>/.hypothesis
        try:
            schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json",
                                                   config=SchemathesisConfig.from_dict(settings))
            schema.hook("filter_failure")(tally.failure_filter())
            for event in from_schema(schema).execute():
                if isinstance(event, (events.ScenarioFinished, events.FuzzScenarioFinished)):
                    tally.add_scenario(event.recorder)
                elif isinstance(event, events.NonFatalError):
                    tally.errors.append(f"{event.label}: {event.info.title}: {event.info.message}"[:500])
                elif isinstance(event, events.FatalError):
                    tally.errors.append(f"fatal: {event.exception!r}"[:500])
                elif isinstance(event, events.EngineFinished):
                    for failure in event.failures:
                        tally.add_failure(failure, check=None, status=None, phase=None, example="", reproduce="")
        finally:
            hypothesis.configuration.set_hypothesis_home_dir(home)
    return {**tally.summary(), "excluded_checks": dict(EXCLUDED_CHECKS),
            "duration_s": round(time.perf_counter() - started, 1), "seed": seed, "max_examples": max_examples}


class _Tally:
    """Counts over the recorded scenarios of one run."""

    def __init__(self) -> None:
        self.generated = self.sent = 0
        self.statuses: dict[str, Counter] = {}  # operation -> status -> answers
        self.failures: dict[tuple, dict] = {}
        self.discounted: Counter = Counter()  # (code, operation, reason) -> failures dropped
        self.errors: list[str] = []

    def failure_filter(self):
        """A schemathesis ``filter_failure`` hook that drops two kinds of failure which say nothing about the
        server, counting each in ``discounted_failures``:

        * ST202 "schema-valid request rejected" when the body sent was not schema-valid.  Schemathesis' coverage
          phase builds one multipart body from the ``encoding`` strategies
          (``_generate_multipart_body_from_custom_strategies`` in schemathesis 4.32) that sends ``""`` for
          every other required field whatever its schema says (here ``label``), and calls it positive.
        * ST201 "schema-violating request accepted" when the negated part is a multipart body that is valid as
          sent: a ``label`` drawn as ``true`` or ``42`` goes on the wire as the valid text ``"true"``.
          Schemathesis means to recognise this, but its check hands the file part (a ``Binary``) to
          jsonschema_rs, which refuses the type, and it then counts the case as invalid.
        """
        def filter_failure(context, failure, case, response) -> bool:
            if isinstance(failure, RejectedPositiveData) and not _body_is_valid(case):
                reason = "positive case whose body is not schema-valid"
            elif isinstance(failure, AcceptedNegativeData) and _only_body_is_negative(case) \
                    and _sent_form_is_valid(case, response):
                reason = "negative case whose multipart body is schema-valid as sent"
            else:
                return True
            self.discounted[(failure.code, case.operation.label, reason)] += 1
            return False

        return filter_failure

    def add_scenario(self, recorder) -> None:
        self.generated += len(recorder.cases)
        for case_id, node in recorder.cases.items():
            statuses = self.statuses.setdefault(node.value.operation.label, Counter())
            interaction = recorder.interactions.get(case_id)
            if interaction is not None and interaction.response is not None:
                self.sent += 1
                statuses[interaction.response.status_code] += 1
        for case_id, checks in recorder.checks.items():
            interaction = recorder.interactions.get(case_id)
            response = interaction.response if interaction is not None else None
            for check in checks:
                if check.failure_info is None:
                    continue
                self.add_failure(check.failure_info.failure, check=check.name,
                                 status=response.status_code if response is not None else None,
                                 phase=_phase(recorder, case_id), example=_describe(response),
                                 reproduce=check.failure_info.code_sample)

    def add_failure(self, failure, *, check: str | None, status: int | None, phase: str | None, example: str,
                    reproduce: str) -> None:
        key = (failure.code, failure.title, failure.operation, status)
        entry = self.failures.setdefault(key, {
            "code": failure.code, "title": failure.title, "check": check, "operation": failure.operation,
            "status": status, "phase": phase, "example": example, "reproduce": reproduce[:600], "count": 0})
        entry["count"] += 1

    def summary(self) -> dict:
        failures = sorted(self.failures.values(), key=lambda f: (f["operation"] or "", f["code"]))
        total = sum(self.statuses.values(), Counter())
        return {
            "operations": len(self.statuses), "cases_generated": self.generated, "cases_sent": self.sent,
            "status_counts": {str(code): n for code, n in sorted(total.items())},
            "status_counts_by_operation": {label: {str(code): n for code, n in sorted(counts.items())}
                                           for label, counts in sorted(self.statuses.items())},
            "server_errors": sum(n for code, n in total.items() if code >= 500),
            "failures": failures,
            "responses_conform": not any(f["check"] in CONFORMANCE_CHECKS for f in failures),
            "discounted_failures": [{"code": code, "operation": label, "reason": reason, "count": n}
                                    for (code, label, reason), n in sorted(self.discounted.items())],
            "errors": self.errors,
        }


def _body_is_valid(case) -> bool:
    """Whether ``case``'s body (if any) is valid against its media type's schema; file contents count as
    strings (they are ``format: binary`` strings to the spec)."""
    if case.body is None or case.media_type is None:
        return True
    body = case.operation.get_body_for_media_type(case.media_type)
    schema = body.resolved_schema if body is not None else None
    if schema is None:
        return True
    return jsonschema_rs.validator_for(schema).is_valid(_as_json(case.body))


def _only_body_is_negative(case) -> bool:
    meta = case.meta
    return meta is not None and all(info.mode.is_negative == (location == ParameterLocation.BODY)
                                    for location, info in meta.components.items())


def _sent_form_is_valid(case, response) -> bool:
    """Whether the multipart body that was sent, read as the server (Werkzeug) reads it, is schema-valid:
    a part with a filename is a file, any other part a text field, and repeated parts a list."""
    if case.media_type != "multipart/form-data" or response is None or not response.request.body:
        return False
    body = case.operation.get_body_for_media_type(case.media_type)
    schema = body.resolved_schema if body is not None else None
    if schema is None:
        return False
    content = response.request.body
    content = content.encode() if isinstance(content, str) else content
    header = f"Content-Type: {response.request.headers.get('Content-Type', '')}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(header + content)
    fields: dict[str, list[str]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        value = "<file>" if part.get_filename() is not None else payload.decode("utf-8", "replace")
        fields.setdefault(name, []).append(value)
    properties = schema.get("properties", {})
    sent = {name: values if properties.get(name, {}).get("type") == "array" else values[0]
            for name, values in fields.items()}
    return jsonschema_rs.validator_for(schema).is_valid(sent)


def _as_json(value):
    if isinstance(value, (bytes, bytearray)) or hasattr(value, "data"):  # raw bytes or schemathesis' Binary
        return "<file>"
    if isinstance(value, dict):
        return {key: _as_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_json(item) for item in value]
    return value


def _phase(recorder, case_id: str) -> str | None:
    """``"<phase>/<positive|negative>"`` of a recorded case."""
    node = recorder.cases.get(case_id)
    meta = node.value.meta if node is not None else None
    if meta is None:
        return None
    return f"{meta.phase.name.value}/{meta.generation.mode.value}"


def _describe(response) -> str:
    """The start of a response body, for a failure's description."""
    if response is None:
        return "no response"
    return response.content[:200].decode("utf-8", "replace").strip()
