"""Where a training script's batches go: a local workbench home, or a running workbench over HTTP.

`LocalSink` stores each batch straight into a workbench home's database
(workbench.ingest, the same checks and the same exactly-once write the app
uses). `HttpSink` never lets the network hold up training: `submit` writes
the batch as a file into a spool folder (atomic rename, numbered in order)
and a sender thread POSTs the files oldest first to `<url>/workbench/ingest`
with the token, deleting each once the workbench answers. While the
workbench is unreachable (down, restarting, a network gap) the files wait
and are retried with backoff; a batch re-sent after a lost reply is
recognised by its id and stored once. A batch the workbench refuses (4xx:
too big, not an image...) moves to `rejected/` with the reason beside it,
reported once, never retried forever nor silently lost. `close` waits at
most `deliver_timeout_s` for the spool to drain; what is left stays on disk
and goes out with the next sink using that spool folder, or with
`python -m workbench deliver SPOOL --url URL`.
"""

import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from workbench.ingest import INGEST_PATH, LIMITS, Batch, parse_batch, split_batch, store_batch
from workbench.store import Store

REJECTED = "rejected"


class LocalSink:
    """Batches stored directly in a workbench database (the training process owns its run)."""

    def __init__(self, store: Store):
        self.store = store
        self.delivered = 0

    def submit(self, batch: Batch) -> None:
        """Check and store the batch now (the app's own checks), in parts when it is over the size limit."""
        for part in split_batch(batch, LIMITS.max_body_bytes * 3 // 4):
            store_batch(self.store, parse_batch(part.to_json().encode()))
        if batch.status:
            self.store.update_run(batch.run["id"], status=batch.status, summary=batch.summary)
        self.delivered += 1

    def pending(self) -> int:
        return 0

    def close(self, timeout_s: float | None = None) -> bool:
        return True


class HttpSink:
    """Batches spooled to disk and delivered to a workbench's ingestion endpoint by a background thread."""

    def __init__(self, url: str, token: str, spool_dir: str | Path, *, request_timeout_s: float = 20.0,
                 max_backoff_s: float = 5.0):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        if not token:
            raise ValueError("sending to a workbench needs its ingestion token (the operator's "
                             "WORKBENCH_INGEST_TOKEN); pass token= or set WORKBENCH_INGEST_TOKEN")
        self.endpoint = url.rstrip("/") + INGEST_PATH
        self.token = token
        self.spool = Path(spool_dir)
        (self.spool / REJECTED).mkdir(parents=True, exist_ok=True)
        self.request_timeout_s = request_timeout_s
        self.max_backoff_s = max_backoff_s
        self.delivered = 0
        self.rejected = 0
        self.last_error: str | None = None
        self._seq = max((int(p.name.split("-", 1)[0]) for p in self._files()), default=0)
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._send_loop, name="workbench-http-sink", daemon=True)
        self._thread.start()

    def _files(self) -> list[Path]:
        return sorted(p for p in self.spool.glob("*.json") if p.name.split("-", 1)[0].isdigit())

    def submit(self, batch: Batch) -> None:
        """Write the batch into the spool (a local disk write, never the network) and wake the sender.

        A batch over 3/4 of the server's default body limit goes as several (workbench.ingest.split_batch).
        """
        for part in split_batch(batch, LIMITS.max_body_bytes * 3 // 4):
            self._spool(part)

    def _spool(self, batch: Batch) -> None:
        with self._wake:
            self._seq += 1
            name = f"{self._seq:010d}-{batch.batch_id}.json"
        tmp = self.spool / f".{name}.tmp"
        tmp.write_text(batch.to_json(), encoding="utf-8")
        os.replace(tmp, self.spool / name)
        with self._wake:
            self._wake.notify_all()

    def pending(self) -> int:
        return len(self._files())

    def _send_loop(self) -> None:
        backoff = 0.25
        while True:
            files = self._files()
            with self._wake:
                if not files:
                    if self._stopping:
                        return
                    self._wake.wait(1.0)
                    continue
            outcome = self._send(files[0])
            if outcome == "retry":
                with self._wake:
                    if self._stopping and self._give_up:
                        return
                    self._wake.wait(backoff)
                backoff = min(self.max_backoff_s, backoff * 2)
            else:
                backoff = 0.25

    _give_up = False

    def _send(self, path: Path) -> str:
        body = path.read_bytes()
        request = urllib.request.Request(self.endpoint, data=body, method="POST", headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=self.request_timeout_s) as response:
                response.read()
            path.unlink(missing_ok=True)
            self.delivered += 1
            self.last_error = None
            return "sent"
        except urllib.error.HTTPError as exc:
            reason = _reason(exc)
            if exc.code in (401, 403, 404) or exc.code >= 500 or exc.code == 429:
                self._report(f"the workbench answered {exc.code}: {reason}; batches wait in {self.spool}")
                return "retry"  # a token or deployment the operator can fix: keep the batches
            target = self.spool / REJECTED / path.name
            os.replace(path, target)
            target.with_suffix(".reason.txt").write_text(f"HTTP {exc.code}: {reason}\n", encoding="utf-8")
            self.rejected += 1
            print(f"[workbench] batch {path.name} refused ({exc.code}: {reason}); kept in {target}",
                  file=sys.stderr, flush=True)
            return "rejected"
        except (urllib.error.URLError, OSError) as exc:
            self._report(f"cannot reach {self.endpoint} ({getattr(exc, 'reason', exc)}); batches wait in {self.spool}")
            return "retry"

    def _report(self, message: str) -> None:
        if message != self.last_error:
            print(f"[workbench] {message}", file=sys.stderr, flush=True)
        self.last_error = message

    def flush(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for every spooled batch to be delivered (or refused); False if some remain."""
        deadline = time.monotonic() + timeout_s
        while self._files():
            if time.monotonic() >= deadline or not self._thread.is_alive():
                return False
            with self._wake:
                self._wake.notify_all()
            time.sleep(0.05)
        return True

    def close(self, timeout_s: float = 30.0) -> bool:
        """Deliver for at most `timeout_s`, then stop; batches not delivered stay in the spool folder."""
        delivered = self.flush(timeout_s)
        with self._wake:
            self._stopping, self._give_up = True, True
            self._wake.notify_all()
        self._thread.join(timeout=self.request_timeout_s + 1)
        left = self.pending()
        if left:
            print(f"[workbench] {left} batch(es) not delivered yet; they stay in {self.spool} and go out with the "
                  f"next run using that spool, or now with: python -m workbench deliver {self.spool} --url "
                  f"{self.endpoint[:-len(INGEST_PATH)]}", file=sys.stderr, flush=True)
        return delivered


def _reason(error: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(error.read()).get("error") or error.reason)
    except (ValueError, AttributeError, OSError):
        return str(error.reason)
