"""``LiveEngine``: the engine of an index, or of whichever index an alias names, followed as the alias switches.

A thread polls the alias (one cheap read every ``poll_s``).  When it names another index, that index and its
model are opened beside the one in use, and only then does the reference swap: a request takes the engine once
and is answered wholly by it, and requests in flight finish on the engine they started with.  The previous
engine stays open, so a rollback swaps back at once; older ones are closed after a grace period.

A write that reaches an index after a switch sealed it gets :class:`index.IndexSupersededError`, having
written nothing; it waits here until this process follows the alias, then runs again on the new engine.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from engine.engine import Engine
from index import IndexStoreError, IndexSupersededError
from index.alias import Alias, open_alias
from similarity.runtime import EmbedRuntime

logger = logging.getLogger(__name__)

T = TypeVar("T")
POLL_S = 0.5
WRITE_WAIT_S = 30.0
CLOSE_GRACE_S = 120.0  # longer than any request: an engine left behind is closed only after this


class LiveEngine:
    """Thread-safe; one per process (an API worker, a CLI command)."""

    def __init__(self, location: str | os.PathLike, checkpoint: str | os.PathLike | None = None, *,
                 runtime: EmbedRuntime = EmbedRuntime(), poll_s: float = POLL_S,
                 write_wait_s: float = WRITE_WAIT_S) -> None:
        self.location = os.fspath(location)
        self._runtime = runtime
        self._poll_s = poll_s
        self._write_wait_s = write_wait_s
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._alias: Alias | None = open_alias(location)
        self._previous: tuple[str, Engine] | None = None
        self._retired: list[tuple[float, Engine]] = []
        self.switches = 0
        if self._alias is None:
            self._target = self.location
            self._engine = Engine.open(location, checkpoint, runtime=runtime)
            return
        if checkpoint is not None:
            raise ValueError("each index an alias names has its own model.pt: --checkpoint does not apply to an alias")
        self._version = self._alias.version()
        target = self._alias.target()
        if target is None:
            raise IndexStoreError(f"alias {self.location} names no index yet; set it with: simsearch alias set "
                                  f"{self.location} INDEX")
        self._target = target
        self._engine = Engine.open(target, runtime=runtime)
        self._thread = threading.Thread(target=self._follow, name="simsearch-alias", daemon=True)
        self._thread.start()

    @classmethod
    def of(cls, engine: Engine) -> "LiveEngine":
        """A fixed engine in the same wrapper (no alias, nothing followed)."""
        live = cls.__new__(cls)
        live.location = engine.location
        live._runtime, live._poll_s, live._write_wait_s = EmbedRuntime(), POLL_S, 0.0
        live._changed, live._stop, live._thread = threading.Condition(), threading.Event(), None
        live._alias, live._previous, live._retired, live.switches = None, None, [], 0
        live._target, live._engine = engine.location, engine
        return live

    @property
    def engine(self) -> Engine:
        """The engine in use now: take it once per request."""
        return self._engine

    @property
    def alias(self) -> str | None:
        return None if self._alias is None else self._alias.location

    @property
    def target(self) -> str:
        return self._target

    def write(self, fn: Callable[[Engine], T]) -> T:
        """``fn(engine)``; when the engine's index was sealed by a switch, wait until this process follows the
        alias (at most ``write_wait_s``) and run ``fn`` once more on the new engine."""
        engine = self._engine
        try:
            return fn(engine)
        except IndexSupersededError:
            if self._alias is None:
                raise
            logger.info("a write reached %s after a switch sealed it: waiting to follow the alias", engine.location)
        return fn(self._wait_past(engine))

    def _wait_past(self, engine: Engine) -> Engine:
        deadline = time.monotonic() + self._write_wait_s
        with self._changed:
            while self._engine is engine:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise IndexSupersededError(engine.location, f"the alias {self.location} (not switched within "
                                               f"{self._write_wait_s:.0f} s: finish it with simsearch alias set)")
                self._changed.wait(min(left, self._poll_s))
            return self._engine

    # ------------------------------------------------------------------ following the alias
    def _follow(self) -> None:
        while not self._stop.wait(self._poll_s):
            try:
                self._check()
            except Exception:  # noqa: BLE001 - keep serving the engine in use; try again at the next poll
                logger.exception("following alias %s failed; still serving %s", self.location, self._target)
            self._close_retired()

    def _check(self) -> None:
        assert self._alias is not None
        version = self._alias.version()
        if version == self._version:
            return
        target = self._alias.target()
        if target is not None and target != self._target:
            self._switch_to(target)
        self._version = version

    def _switch_to(self, target: str) -> None:
        started = time.perf_counter()
        if self._previous is not None and self._previous[0] == target:
            engine = self._previous[1]
        else:
            engine = Engine.open(target, runtime=self._runtime)
            if self._previous is not None:
                self._retired.append((time.monotonic(), self._previous[1]))
        with self._changed:
            self._previous = (self._target, self._engine)
            self._target, self._engine = target, engine
            self.switches += 1
            self._changed.notify_all()
        logger.info("alias %s now serves %s (opened in %.2f s)", self.location, target, time.perf_counter() - started)

    def _close_retired(self) -> None:
        now = time.monotonic()
        while self._retired and now - self._retired[0][0] > CLOSE_GRACE_S:
            self._retired.pop(0)[1].close()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        engines = [self._engine] + ([self._previous[1]] if self._previous else []) + [e for _, e in self._retired]
        for engine in engines:
            engine.close()
        if self._alias is not None:
            self._alias.close()
