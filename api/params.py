"""Reading and checking request parameters and uploads; every bad value becomes an ``InvalidRequest``."""

from __future__ import annotations

import re

from flask import Request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wsgi import LimitedStream

from api.config import ApiConfig
from api.errors import InvalidRequest, UnsupportedMediaType

_DIGITS = re.compile(r"^[0-9]{1,9}$")
TRUE_WORDS = ("true", "1", "yes", "on")  # what a boolean query parameter may say (case-insensitive)
FALSE_WORDS = ("false", "0", "no", "off", "")
RAW_BODY_TYPES = ("application/octet-stream",)


def positive_int(args, name: str, *, default: int, maximum: int) -> int:
    """Query parameter ``name`` as an integer in ``[1, maximum]``."""
    raw = args.get(name)
    if raw is None:
        return default
    raw = raw.strip()
    if not _DIGITS.match(raw) or not 1 <= int(raw) <= maximum:
        raise InvalidRequest(f"{name} must be an integer from 1 to {maximum}, got {raw[:40]!r}")
    return int(raw)


def get_k(args, config: ApiConfig) -> int:
    return positive_int(args, "k", default=config.default_k, maximum=config.max_k)


def get_bool(args, name: str, default: bool = False) -> bool:
    raw = args.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise InvalidRequest(f"{name} must be true or false, got {raw[:40]!r}")


def get_label_filter(args) -> str | None:
    """The optional ``?label=`` search filter, checked like a label (stripped, 1..MAX_LABEL_CHARS printable
    characters); absent means no filter."""
    from api.service import SearchService

    raw = args.get("label")
    return None if raw is None else SearchService.check_label(raw, "query parameter 'label'")


def get_choice(args, name: str, choices: tuple[str, ...], default: str) -> str:
    raw = args.get(name, default).strip().lower()
    if raw not in choices:
        raise InvalidRequest(f"{name} must be one of {list(choices)}, got {raw[:40]!r}")
    return raw


def get_exact_choice(args, name: str, choices: tuple[str, ...], default: str) -> str:
    """Query parameter ``name`` as one of ``choices``, spelled exactly (no case folding or stripping)."""
    raw = args.get(name, default)
    if raw not in choices:
        raise InvalidRequest(f"{name} must be one of {list(choices)}, got {raw[:40]!r}")
    return raw


def _check_streamed_size(request: Request) -> None:
    """A body sent without ``Content-Length`` (chunked) is cut off by werkzeug at the upload limit without
    an error; answer 413 instead of working on (or blaming) a truncated body."""
    stream = request.stream
    if request.content_length is None and isinstance(stream, LimitedStream) and stream.is_exhausted:
        raise RequestEntityTooLarge()


def multipart_form(request: Request):
    """``(form, files)`` of a multipart request; a body that does not parse is an :class:`InvalidRequest`."""
    try:
        form, files = request.form, request.files
        _check_streamed_size(request)
        return form, files
    except ValueError as exc:  # werkzeug: bad boundary, truncated part, part headers that are not UTF-8
        _check_streamed_size(request)
        reason = "part headers must be UTF-8" if isinstance(exc, UnicodeDecodeError) else str(exc)[:200]
        raise InvalidRequest(f"malformed multipart/form-data body ({reason})") from None


def single_upload(request: Request, field: str = "image") -> bytes:
    """The image of a request: multipart field ``field``, or the raw body (``image/*``,
    ``application/octet-stream`` or no content type)."""
    mimetype = request.mimetype
    if mimetype == "multipart/form-data":
        uploads = multipart_form(request)[1].getlist(field)
        if not uploads:
            raise InvalidRequest(f"multipart field {field!r} is missing (send the image file in it)")
        if len(uploads) > 1:
            raise InvalidRequest(f"multipart field {field!r} holds {len(uploads)} files; send exactly one "
                                 f"(use /api/search/batch for several)")
        data = uploads[0].read()
        if not data:
            raise InvalidRequest(f"multipart field {field!r} holds an empty file")
        return data
    if mimetype.startswith("image/") or mimetype in RAW_BODY_TYPES or not mimetype:
        data = request.get_data(cache=False)
        _check_streamed_size(request)
        if not data:
            raise InvalidRequest(f"no image: send it as multipart field {field!r} or as the request body")
        return data
    raise UnsupportedMediaType(f"unsupported content type {mimetype!r}: send multipart/form-data with an "
                               f"{field!r} field, or the image itself (image/*, application/octet-stream)")


def many_uploads(request: Request, config: ApiConfig, field: str = "images") -> list[bytes]:
    """The images of a batch request: multipart fields named ``field`` (at most ``config.max_batch``)."""
    if request.mimetype != "multipart/form-data":
        raise UnsupportedMediaType(f"send multipart/form-data with one or more {field!r} file fields")
    uploads = multipart_form(request)[1].getlist(field)
    if not uploads:
        raise InvalidRequest(f"multipart field {field!r} is missing (send one file per {field!r} field)")
    if len(uploads) > config.max_batch:
        raise InvalidRequest(f"at most {config.max_batch} images per batch, got {len(uploads)}")
    blobs = [upload.read() for upload in uploads]
    for i, data in enumerate(blobs):
        if not data:
            raise InvalidRequest(f"{field}[{i}] is an empty file")
    return blobs


def form_label(request: Request) -> str | None:
    """The ``label`` form field as sent, or None when the form has none (an image without a label)."""
    if request.mimetype != "multipart/form-data":
        raise UnsupportedMediaType("send multipart/form-data with an 'image' file and, optionally, a 'label' field")
    return multipart_form(request)[0].get("label")
