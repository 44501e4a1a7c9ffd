"""Logging metrics from a busy loop: `MetricLogger.log` only appends to memory; a writer thread commits.

Owns the buffering between a training loop (or any caller logging one step at
a time) and the store. `log(run_id, step, values)` appends the values to
per-metric arrays under a lock (about a microsecond a value) and returns; the
writer thread commits what has gathered as one `Store.append_metric_columns`
transaction (one metric batch per run), at once when it was idle, else at most
every `flush_interval_s` -- so a slow loop (a training step every few seconds)
has each step committed right away and a fast one (thousands of steps a
second) pays one commit per interval, not one per step. `flush()` waits until
everything logged before it is committed; `close()` flushes and stops the
thread (also run at interpreter exit).

What a kill -9 can lose: only values not yet committed, i.e. those logged
during the last `flush_interval_s` (0.2 s by default) plus the commit in
flight at the moment of the kill. Everything committed stays (SQLite WAL).
"""

import atexit
import sys
import threading
import time
from array import array
from collections.abc import Mapping

FLUSH_INTERVAL_S = 0.2


class MetricLogger:
    """Buffered, background-committed metric logging into one store (thread-safe)."""

    def __init__(self, store, *, flush_interval_s: float = FLUSH_INTERVAL_S):
        self.store = store
        self.flush_interval_s = flush_interval_s
        self.errors: list[str] = []
        self._changed = threading.Condition()
        self._pending: dict[str, dict[str, tuple[array, array]]] = {}
        self._logged = 0  # log() calls so far
        self._committed = 0  # log() calls whose values are committed (or failed to be)
        self._writer_idle = False
        self._flush_asked = False
        self._closing = False
        self._thread = threading.Thread(target=self._write_loop, name="workbench-metric-writer", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def log(self, run_id: str, step: int, values: Mapping[str, float]) -> None:
        """Queue one step's values (None values are skipped); a non-number raises TypeError here."""
        with self._changed:
            if self._closing:
                raise RuntimeError("this MetricLogger is closed")
            columns = self._pending.get(run_id)
            if columns is None:
                columns = self._pending[run_id] = {}
            for name, value in values.items():
                if value is None:
                    continue
                column = columns.get(name)
                if column is None:
                    column = columns[name] = (array("q"), array("d"))
                column[1].append(value)  # first: a bad value must not leave a step without its value
                column[0].append(step)
            self._logged += 1
            if self._writer_idle:
                self._changed.notify_all()

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every value logged so far is committed; False on timeout."""
        with self._changed:
            target = self._logged
            self._flush_asked = True
            self._changed.notify_all()
            return self._changed.wait_for(lambda: self._committed >= target or not self._thread.is_alive(),
                                          timeout_s)

    def close(self) -> None:
        """Commit what is pending and stop the writer thread."""
        with self._changed:
            if self._closing:
                return
            self._closing = True
            self._changed.notify_all()
        self._thread.join()
        atexit.unregister(self.close)

    def _write_loop(self) -> None:
        while True:
            with self._changed:
                self._writer_idle = True
                self._changed.wait_for(lambda: self._pending or self._closing)
                self._writer_idle = False
                if not self._pending:
                    self._changed.notify_all()
                    return  # closing, nothing left
                pending, self._pending = self._pending, {}
                target, self._flush_asked = self._logged, False
            started = time.monotonic()
            self._commit(pending)
            with self._changed:
                self._committed = target
                self._changed.notify_all()
                # A busy caller: let values gather for the rest of the interval (unless a flush or close asks).
                rest = self.flush_interval_s - (time.monotonic() - started)
                if rest > 0:
                    self._changed.wait_for(lambda: self._flush_asked or self._closing, rest)

    def _commit(self, pending: dict[str, dict[str, tuple[array, array]]]) -> None:
        try:
            self.store.append_metric_columns(pending)
        except Exception as exc:  # logging must never stop training; report once and go on
            message = f"{type(exc).__name__}: {exc}"
            if message not in self.errors:
                print(f"[workbench] metric write failed: {message}", file=sys.stderr, flush=True)
            self.errors.append(message)
