"""Ingestion batches: what a training script elsewhere sends, how it is checked, and how it is stored once.

A `Batch` is one delivery from a training run: the run it belongs to (created
on its first batch), metric rows (step, TRL's metric name, value), whole
traces (`Trace.to_dict()`, images as "sha256:" references) and the bytes of
every image they reference, plus an optional final status. On the wire it is
one JSON object (version 1):

    {"version": 1, "batch_id": "...", "run": {"id", "name", "config", "model_id", "reward_spec"},
     "metrics": [[step, name, value], ...], "traces": [...], "images": {"<sha>": "<base64>"},
     "status": null | "succeeded" | "failed", "summary": null | {...}}

`parse_batch` refuses, with a message saying what to change, a body over the
size limit, a wrong shape, a non-finite metric, a trace that is not a trace,
an image that Pillow cannot decode or whose format is not allowed (the image
intake of workbench.images), image bytes whose SHA-256 is not their key and a
trace pointing at an image the batch does not carry. `store_batch` writes a
batch in one transaction keyed by its `batch_id` (Store.ingest_batch): a
batch sent again after a lost reply is answered "duplicate" and stored once.
The token check lives here too (`token_ok`), so the app's route stays thin.
"""

import base64
import binascii
import hashlib
import hmac
import json
import math
import os
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from workbench import images as image_files
from workbench.store import Store
from workbench.trace import Trace, ref_sha

VERSION = 1
INGEST_PATH = "/workbench/ingest"  # the app's route (workbench/ui/ingest_route.py)
BATCH_ID = re.compile(r"[A-Za-z0-9_.:-]{8,128}")
RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
FINAL_STATUSES = ("succeeded", "failed", "cancelled")
TOKEN_ENV = "WORKBENCH_INGEST_TOKEN"
MIN_TOKEN_CHARS = 16


@dataclass(frozen=True)
class Limits:
    """What one batch may hold; the body limit is checked before the body is read."""

    max_body_bytes: int = int(os.environ.get("WORKBENCH_INGEST_MAX_MB", "32")) * 1024 * 1024
    max_metric_rows: int = 100_000
    max_traces: int = 512
    max_images: int = 512
    max_name_chars: int = 200


LIMITS = Limits()


class IngestError(ValueError):
    """A batch the workbench refuses; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Batch:
    """One delivery: the run, metric rows, traces and image bytes by SHA-256."""

    run: dict[str, Any]
    metrics: list[tuple[int, str, float]] = field(default_factory=list)
    traces: list[Trace] = field(default_factory=list)
    images: dict[str, bytes] = field(default_factory=dict)
    status: str | None = None
    summary: dict[str, Any] | None = None
    batch_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def to_json(self) -> str:
        return json.dumps({
            "version": VERSION, "batch_id": self.batch_id, "run": self.run,
            "metrics": [list(row) for row in self.metrics], "traces": [t.to_dict() for t in self.traces],
            "images": {sha: base64.b64encode(data).decode("ascii") for sha, data in self.images.items()},
            "status": self.status, "summary": self.summary}, ensure_ascii=False)


def configured_token() -> str | None:
    """The ingestion token the operator set (WORKBENCH_INGEST_TOKEN), None when ingestion is off."""
    token = (os.environ.get(TOKEN_ENV) or "").strip()
    if not token:
        return None
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"{TOKEN_ENV} must be at least {MIN_TOKEN_CHARS} characters; make one with "
                         "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`")
    return token


def token_ok(expected: str, authorization: str | None) -> bool:
    """Whether an `Authorization: Bearer <token>` header carries the expected token (constant-time).

    >>> token_ok("s3cret-token-0123456", "Bearer s3cret-token-0123456"), token_ok("s3cret-token-0123456", None)
    (True, False)
    """
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected.encode())


def parse_batch(body: bytes, limits: Limits = LIMITS) -> Batch:
    """A checked Batch from a request body; IngestError says what is wrong."""
    if len(body) > limits.max_body_bytes:
        raise IngestError(f"the batch is {len(body) / 1e6:.1f} MB, over the {limits.max_body_bytes / 1e6:.0f} MB "
                          "limit; send fewer traces per batch or raise WORKBENCH_INGEST_MAX_MB", 413)
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IngestError(f"the batch is not JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise IngestError(f"the batch must be a JSON object with \"version\": {VERSION}")
    batch_id = data.get("batch_id")
    if not isinstance(batch_id, str) or not BATCH_ID.fullmatch(batch_id):
        raise IngestError("batch_id must be 8-128 letters, digits or _.:-")
    run = _run(data.get("run"), limits)
    images = _images(data.get("images") or {}, limits)
    traces = _traces(data.get("traces") or [], run["id"], images, limits)
    status = data.get("status")
    if status is not None and status not in FINAL_STATUSES:
        raise IngestError(f"status must be one of {FINAL_STATUSES} or null")
    summary = data.get("summary")
    if summary is not None and not isinstance(summary, dict):
        raise IngestError("summary must be an object or null")
    return Batch(run=run, metrics=_metrics(data.get("metrics") or [], limits), traces=traces, images=images,
                 status=status, summary=summary, batch_id=batch_id)


def _run(run: Any, limits: Limits) -> dict[str, Any]:
    if not isinstance(run, dict) or not isinstance(run.get("id"), str) or not RUN_ID.fullmatch(run["id"]):
        raise IngestError("run must be an object whose id is 1-64 letters, digits, _ or -")
    name = run.get("name") or run["id"]
    if not isinstance(name, str) or len(name) > limits.max_name_chars:
        raise IngestError(f"run name must be text of at most {limits.max_name_chars} characters")
    for key in ("config", "reward_spec"):
        if run.get(key) is not None and not isinstance(run[key], dict):
            raise IngestError(f"run {key} must be an object")
    model_id = run.get("model_id")
    if model_id is not None and not isinstance(model_id, str):
        raise IngestError("run model_id must be text")
    return {"id": run["id"], "name": name, "kind": "train", "model_id": model_id,
            "config": {**(run.get("config") or {}), "ingested": True}, "reward_spec": run.get("reward_spec")}


def _metrics(rows: Any, limits: Limits) -> list[tuple[int, str, float]]:
    if not isinstance(rows, list) or len(rows) > limits.max_metric_rows:
        raise IngestError(f"metrics must be a list of at most {limits.max_metric_rows} [step, name, value] rows")
    checked = []
    for number, row in enumerate(rows):
        ok = isinstance(row, list) and len(row) == 3 and isinstance(row[0], int) and row[0] >= 0 \
            and isinstance(row[1], str) and 0 < len(row[1]) <= limits.max_name_chars \
            and isinstance(row[2], (int, float)) and not isinstance(row[2], bool) and math.isfinite(row[2])
        if not ok:
            raise IngestError(f"metric row {number} must be [step >= 0, name, finite number], got {str(row)[:80]}")
        checked.append((row[0], row[1], float(row[2])))
    return checked


def _images(encoded: Any, limits: Limits) -> dict[str, bytes]:
    if not isinstance(encoded, dict) or len(encoded) > limits.max_images:
        raise IngestError(f"images must be an object of at most {limits.max_images} sha: base64 entries")
    decoded = {}
    for sha, text in encoded.items():
        try:
            data = base64.b64decode(text, validate=True) if isinstance(text, str) else None
        except binascii.Error:
            data = None
        if data is None:
            raise IngestError(f"image {sha[:12]}: not base64 text")
        if hashlib.sha256(data).hexdigest() != sha:
            raise IngestError(f"image {sha[:12]}: its bytes do not hash to its key")
        try:
            _, fmt, _ = image_files.encode_image(data, f"image {sha[:12]}")
        except image_files.ImageError as exc:
            raise IngestError(str(exc), 415) from None
        if fmt not in ("PNG", "JPEG", "WEBP"):
            raise IngestError(f"image {sha[:12]}: send {fmt} images as PNG (stored bytes must match their hash)", 415)
        decoded[sha] = data
    return decoded


def _traces(items: Any, run_id: str, images: dict[str, bytes], limits: Limits) -> list[Trace]:
    if not isinstance(items, list) or len(items) > limits.max_traces:
        raise IngestError(f"traces must be a list of at most {limits.max_traces} traces")
    traces = []
    for number, item in enumerate(items):
        try:
            trace = Trace.from_dict(item) if isinstance(item, dict) else None
        except (TypeError, ValueError) as exc:
            raise IngestError(f"trace {number} is not a workbench trace ({exc})") from None
        if trace is None:
            raise IngestError(f"trace {number} must be an object")
        problem = _shape_problem(trace)
        if problem:
            raise IngestError(f"trace {number}: {problem}")
        missing = sorted(sha for sha in trace.image_shas() | _message_shas(trace) if sha not in images)
        if missing:
            raise IngestError(f"trace {number} refers to image {missing[0][:12]} the batch does not carry")
        trace.run_id = run_id
        traces.append(trace)
    return traces


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _shape_problem(trace: Trace) -> str | None:
    """What is the wrong type in a trace that parsed (Trace.from_dict checks names, not types), or None."""
    checks = (
        (isinstance(trace.turns, list) and all(isinstance(t.raw, str) and isinstance(t.index, int)
                                               for t in trace.turns), "turns need an int index and raw text"),
        (all(t.tool_call is None or (isinstance(t.tool_call.name, str) and isinstance(t.tool_call.output_text, str)
                                     and isinstance(t.tool_call.output_images, list)) for t in trace.turns),
         "a tool call needs a name, output_text and a list of output_images"),
        (isinstance(trace.messages, list) and all(isinstance(m, dict) for m in trace.messages),
         "messages must be a list of objects"),
        (isinstance(trace.images, list) and all(isinstance(i, str) for i in trace.images), "images must be shas"),
        (isinstance(trace.rewards, dict) and all(isinstance(k, str) and _is_number(v)
                                                 for k, v in trace.rewards.items()),
         "rewards must map names to finite numbers"),
        (isinstance(trace.metadata, dict) and isinstance(trace.gold, list), "metadata must be an object, gold a list"),
        (trace.step is None or (isinstance(trace.step, int) and not isinstance(trace.step, bool)),
         "step must be an int"),
        (trace.advantage is None or _is_number(trace.advantage), "advantage must be a finite number"),
        (isinstance(trace.sample_index, int) and isinstance(trace.id, str) and 0 < len(trace.id) <= 128,
         "sample_index must be an int and id text of 1-128 characters"),
    )
    return next((message for ok, message in checks if not ok), None)


def split_batch(batch: Batch, max_bytes: int) -> list[Batch]:
    """A batch whose JSON is over `max_bytes` as several (traces halved; metrics first, the ending last)."""
    if len(batch.traces) < 2 or len(batch.to_json()) <= max_bytes:
        return [batch]
    middle = len(batch.traces) // 2
    halves = []
    for index, traces in enumerate((batch.traces[:middle], batch.traces[middle:])):
        shas = {sha for trace in traces for sha in trace.image_shas() | _message_shas(trace)}
        halves.append(Batch(run=batch.run, metrics=batch.metrics if index == 0 else [], traces=traces,
                            images={sha: data for sha, data in batch.images.items() if sha in shas},
                            status=batch.status if index == 1 else None, summary=batch.summary if index == 1 else None))
    return [part for half in halves for part in split_batch(half, max_bytes)]


def _message_shas(trace: Trace) -> set[str]:
    shas = set()
    for message in trace.messages:
        content = message.get("content") if isinstance(message, dict) else None
        for block in content if isinstance(content, list) else []:
            sha = ref_sha(block.get("image")) if isinstance(block, dict) else None
            if sha:
                shas.add(sha)
    return shas


def store_batch(store: Store, batch: Batch) -> dict[str, Any]:
    """Store a checked batch once: its images, then run, metrics and traces in one transaction."""
    for sha, data in batch.images.items():
        if store.put_image(data) != sha:
            raise IngestError(f"image {sha[:12]}: stored under another hash")
    columns: dict[str, tuple[list[int], list[float]]] = {}
    for step, name, value in batch.metrics:
        steps, values = columns.setdefault(name, ([], []))
        steps.append(step)
        values.append(value)
    stored = store.ingest_batch(batch.batch_id, batch.run, columns, batch.traces, status=batch.status,
                                summary=batch.summary)
    return {"batch_id": batch.batch_id, "run_id": batch.run["id"], "duplicate": not stored,
            "metrics": len(batch.metrics), "traces": len(batch.traces), "images": len(batch.images)}
