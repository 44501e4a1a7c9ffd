"""The workbench database: the only module that talks SQL.

One SQLite file (WAL mode, busy timeout, sqlite-utils migrations) holds runs,
jobs, metrics (their table and methods: workbench/store_metrics.py), traces,
turns, tool calls and the image index. Image bytes
live in the content-addressed folder managed by `workbench.images`; this
module only records them. Every reader gets plain dicts or `Trace` objects.

Several processes share the file (the app, training jobs, eval jobs): each
`Store` opens one connection per thread, and writers keep transactions short.
A file SQLite cannot read raises `DatabaseDamaged` (what to do is in its
message); `check_integrity` and `back_up` are the app's start-up check and
periodic backup (workbench.database_file).
"""

import contextlib
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlite_utils

from workbench import database_file, settings
from workbench import images as image_files
from workbench.database_file import DatabaseDamaged
from workbench.processes import current_process
from workbench.store_metrics import MetricStore, pack_columns
from workbench.store_schema import MIGRATIONS, record_legacy_version
from workbench.trace import ToolCall, Trace, Turn

RUN_KINDS = ("playground", "eval", "train", "imported")
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
ACTIVE_RUN_STATUSES = ("queued", "running")
# Per process, by (database, run id): runs this process marked as going and has not ended, and endings it
# could not write (e.g. the disk was full), which `retry_unsaved_endings` writes once it can.
_running_here: set[tuple[str, str]] = set()
_unsaved_endings: dict[tuple[str, str], tuple[str, dict | None]] = {}
_JSON_TRACE_COLUMNS = ("images", "gold", "rewards", "messages", "metadata")


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def _loads(value: str | None, default: Any = None) -> Any:
    return default if value is None else json.loads(value)


class Store(MetricStore):
    """Typed access to the workbench database at `path` (default: settings.db_path()); metrics: MetricStore."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else settings.db_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        try:
            self._migrate()
        except sqlite3.DatabaseError as exc:
            if not database_file.is_damage(exc):
                raise
            self.close()
            raise DatabaseDamaged(database_file.damaged_message(self.path, str(exc))) from None

    # -- connection and schema -------------------------------------------------
    @property
    def db(self) -> sqlite_utils.Database:
        db = getattr(self._local, "db", None)
        if db is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA synchronous=NORMAL")
            db = self._local.db = sqlite_utils.Database(conn)
        return db

    def _migrate(self) -> None:
        with self._transaction() as db:  # one process migrates at a time; the next finds nothing pending
            if db.execute("PRAGMA user_version").fetchone()[0] and not MIGRATIONS.applied(db):
                record_legacy_version(db)
            MIGRATIONS.apply(db)

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.conn.close()
            self._local.db = None

    def check_integrity(self) -> None:
        """SQLite's quick check of the whole file; DatabaseDamaged says what to do when it fails."""
        problem = database_file.integrity_problem(self.db.conn)
        if problem:
            raise DatabaseDamaged(database_file.damaged_message(self.path, problem))

    def back_up(self) -> Path:
        """A checked online backup in settings.backups_dir() (the newest few are kept)."""
        return database_file.back_up(self.db.conn)

    @property
    def schema_version(self) -> int:
        """How many schema migrations this database has had."""
        return len(MIGRATIONS.applied(self.db))

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite_utils.Database]:
        """A write transaction taken eagerly (BEGIN IMMEDIATE), so concurrent writers wait for the lock.

        sqlite-utils' `atomic()` begins lazily: a transaction that reads before it
        writes can then fail at once with "database is locked" under a second writer.
        """
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # -- runs ------------------------------------------------------------------
    def create_run(self, name: str, kind: str, *, config: dict | None = None, model_id: str | None = None,
                   benchmark: str | None = None, reward_spec: dict | None = None, job_id: str | None = None,
                   status: str = "running", run_id: str | None = None) -> str:
        if kind not in RUN_KINDS:
            raise ValueError(f"run kind {kind!r} is unknown; use one of {RUN_KINDS}")
        run_id = run_id or uuid.uuid4().hex[:12]
        now = time.time()
        owner_pid, owner_start = current_process()
        with self._transaction() as db:
            db["runs"].insert({
                "id": run_id, "name": name, "kind": kind, "status": status, "model_id": model_id,
                "benchmark": benchmark, "config": _dumps(config or {}), "reward_spec": _dumps(reward_spec),
                "summary": _dumps({}), "job_id": job_id, "created_at": now, "updated_at": now,
                "owner_pid": owner_pid, "owner_start": owner_start,
            })
        if status in ACTIVE_RUN_STATUSES:
            _running_here.add((str(self.path), run_id))
        return run_id

    def update_run(self, run_id: str, *, status: str | None = None, summary: dict | None = None,
                   config: dict | None = None, reward_spec: dict | None = None) -> None:
        """Change a run; marking it queued/running makes this process its owner, any other status ends it.

        An ending that cannot be written (e.g. the disk is full) is remembered and written by
        `retry_unsaved_endings` once it can (the app's upkeep calls it every few seconds).
        """
        key = (str(self.path), run_id)
        changes: dict[str, Any] = {"updated_at": time.time()}
        if status in ACTIVE_RUN_STATUSES:
            changes["owner_pid"], changes["owner_start"] = current_process()
            _running_here.add(key)
        elif status is not None:
            _running_here.discard(key)
            _unsaved_endings[key] = (status, summary)
        if status is not None:
            changes["status"] = status
        if summary is not None:
            changes["summary"] = _dumps(summary)
        if config is not None:
            changes["config"] = _dumps(config)
        if reward_spec is not None:
            changes["reward_spec"] = _dumps(reward_spec)
        with self._transaction() as db:
            db["runs"].update(run_id, changes)
        _unsaved_endings.pop(key, None)

    def retry_unsaved_endings(self) -> list[str]:
        """Write the endings of this process's runs that failed to be written before; returns the runs written."""
        written = []
        for (path, run_id), (status, summary) in list(_unsaved_endings.items()):
            if path == str(self.path):
                self.update_run(run_id, status=status, summary=summary)
                written.append(run_id)
        return written

    def unfinished_runs(self) -> list[dict]:
        """Runs that still say queued or running, each with `running_here` (going in this very process)."""
        rows = self.db["runs"].rows_where("status in ('queued', 'running')", order_by="created_at")
        return [{**self._run_row(row), "running_here": (str(self.path), row["id"]) in _running_here}
                for row in rows]

    def get_run(self, run_id: str) -> dict | None:
        rows = list(self.db["runs"].rows_where("id = ?", [run_id]))
        return self._run_row(rows[0]) if rows else None

    def list_runs(self, kind: str | None = None, limit: int = 500) -> list[dict]:
        where, args = ("kind = ?", [kind]) if kind else (None, None)
        rows = self.db["runs"].rows_where(where, args, order_by="created_at desc", limit=limit)
        return [self._run_row(row) for row in rows]

    def delete_run(self, run_id: str) -> None:
        with self._transaction() as db:
            trace_ids = [r[0] for r in db.execute("select id from traces where run_id = ?", [run_id])]
            for table, column in (("turns", "trace_id"), ("tool_calls", "trace_id")):
                db.conn.executemany(f"delete from {table} where {column} = ?", [(t,) for t in trace_ids])
            for table in ("traces", "metric_batches"):
                db.execute(f"delete from {table} where run_id = ?", [run_id])
            db.execute("delete from runs where id = ?", [run_id])

    @staticmethod
    def _run_row(row: dict) -> dict:
        for key in ("config", "summary", "reward_spec"):
            row[key] = _loads(row[key])
        return row

    def runs_changed_since(self, timestamp: float) -> list[dict]:
        rows = self.db["runs"].rows_where("updated_at > ?", [timestamp], order_by="updated_at")
        return [self._run_row(row) for row in rows]

    # -- images ----------------------------------------------------------------
    def put_image(self, source: Any, name: str | None = None) -> str:
        """Validate and store an image file/bytes/PIL image; returns its SHA-256."""
        stored = image_files.put_image(source, name)
        with self._transaction() as db:  # plain SQL: sqlite-utils' insert() costs ~0.3 ms of Python per image
            db.execute("insert or ignore into images (sha, width, height, format, bytes, created_at) "
                       "values (?, ?, ?, ?, ?, ?)", [stored.sha, stored.width, stored.height, stored.format,
                                                     stored.bytes, time.time()])
        return stored.sha

    def get_image(self, sha: str) -> dict | None:
        rows = list(self.db["images"].rows_where("sha = ?", [sha]))
        if not rows:
            return None
        row = rows[0]
        row["path"] = str(image_files.image_path(sha))
        row["thumbnail"] = str(image_files.thumbnail_path(sha))
        return row

    # -- traces ----------------------------------------------------------------
    def save_traces(self, traces: list[Trace]) -> None:
        """Insert or replace whole traces (with turns and tool calls) in one transaction."""
        with self._transaction() as db:
            self._write_traces(db, traces)

    def ingest_batch(self, batch_id: str, run: dict, metrics: dict, traces: list[Trace],
                     status: str | None = None, summary: dict | None = None) -> bool:
        """Store one ingested batch (workbench.ingest) exactly once: False when `batch_id` was stored before.

        `run` is the run's row to create when it is new (id, name, kind, config, model_id, reward_spec);
        `metrics` is {name: (steps, values)}. Batch id, run, metrics and traces commit in one transaction,
        so a batch re-sent after a lost reply is recognised and never stored twice.
        """
        now = time.time()
        with self._transaction() as db:
            if db.execute("select 1 from ingested_batches where batch_id = ?", [batch_id]).fetchone():
                return False
            if not db.execute("select 1 from runs where id = ?", [run["id"]]).fetchone():
                db["runs"].insert({
                    "id": run["id"], "name": run["name"], "kind": run["kind"], "status": "running",
                    "model_id": run.get("model_id"), "benchmark": None, "config": _dumps(run.get("config") or {}),
                    "reward_spec": _dumps(run.get("reward_spec")), "summary": _dumps({}), "job_id": None,
                    "created_at": now, "updated_at": now, "owner_pid": None, "owner_start": None})
            changes: dict[str, Any] = {"updated_at": now}
            if status is not None:
                changes["status"] = status
            if summary is not None:
                changes["summary"] = _dumps(summary)
            db["runs"].update(run["id"], changes)
            if metrics:
                db.conn.execute("insert into metric_batches (run_id, names, counts, steps, metric_values, "
                                "created_at) values (?, ?, ?, ?, ?, ?)", (run["id"], *pack_columns(metrics), now))
            self._write_traces(db, traces)
            db["ingested_batches"].insert({"batch_id": batch_id, "run_id": run["id"], "received_at": now,
                                           "traces": len(traces)})
        return True

    @staticmethod
    def _write_traces(db: sqlite_utils.Database, traces: list[Trace]) -> None:
        trace_rows, turn_rows, call_rows = [], [], []
        now = time.time()
        for trace in traces:
            trace.created_at = trace.created_at or now
            trace_rows.append({
                "id": trace.id, "run_id": trace.run_id, "item_id": trace.item_id,
                "group_id": trace.group_id, "sample_index": trace.sample_index, "step": trace.step,
                "question": trace.question, "final_answer": trace.final_answer,
                "stop_reason": trace.stop_reason, "reward_total": trace.reward_total,
                "advantage": trace.advantage, "model_id": trace.model_id, "adapter": trace.adapter,
                "protocol": trace.protocol, "layout": trace.layout, "num_turns": len(trace.turns),
                "prompt_tokens": trace.prompt_tokens, "completion_tokens": trace.completion_tokens,
                "duration_s": trace.duration_s, "created_at": trace.created_at,
                **{key: _dumps(getattr(trace, key)) for key in _JSON_TRACE_COLUMNS},
            })
            for turn in trace.turns:
                turn_rows.append({
                    "trace_id": trace.id, "idx": turn.index, "raw": turn.raw, "think": turn.think,
                    "action": turn.action, "argument": turn.argument, "parse_error": turn.parse_error,
                    "image": turn.image, "feedback": turn.feedback, "prompt_tokens": turn.prompt_tokens,
                    "completion_tokens": turn.completion_tokens, "latency_s": turn.latency_s,
                })
                call = turn.tool_call
                if call:
                    call_rows.append({
                        "trace_id": trace.id, "turn_idx": turn.index, "name": call.name,
                        "argument": call.argument, "output_text": call.output_text,
                        "output_images": _dumps(call.output_images), "ok": int(call.ok),
                        "error": call.error, "stdout": call.stdout, "stderr": call.stderr,
                        "details": _dumps(call.details), "latency_s": call.latency_s,
                    })
        ids = [(trace.id,) for trace in traces]
        db.conn.executemany("delete from turns where trace_id = ?", ids)
        db.conn.executemany("delete from tool_calls where trace_id = ?", ids)
        db["traces"].insert_all(trace_rows, replace=True, batch_size=500)
        db["turns"].insert_all(turn_rows, batch_size=500)
        db["tool_calls"].insert_all(call_rows, batch_size=500)

    def save_trace(self, trace: Trace) -> str:
        self.save_traces([trace])
        return trace.id

    def get_trace(self, trace_id: str) -> Trace | None:
        rows = list(self.db["traces"].rows_where("id = ?", [trace_id]))
        if not rows:
            return None
        row = rows[0]
        calls = {r["turn_idx"]: r for r in self.db["tool_calls"].rows_where("trace_id = ?", [trace_id])}
        turns = []
        for t in self.db["turns"].rows_where("trace_id = ?", [trace_id], order_by="idx"):
            call = calls.get(t["idx"])
            tool_call = None
            if call:
                tool_call = ToolCall(
                    name=call["name"], argument=call["argument"], output_text=call["output_text"] or "",
                    output_images=_loads(call["output_images"], []), ok=bool(call["ok"]),
                    error=call["error"], stdout=call["stdout"] or "", stderr=call["stderr"] or "",
                    details=_loads(call["details"], {}), latency_s=call["latency_s"] or 0.0)
            turns.append(Turn(
                index=t["idx"], raw=t["raw"], think=t["think"], action=t["action"],
                argument=t["argument"], parse_error=t["parse_error"], image=t["image"],
                tool_call=tool_call, feedback=t["feedback"], prompt_tokens=t["prompt_tokens"] or 0,
                completion_tokens=t["completion_tokens"] or 0, latency_s=t["latency_s"] or 0.0))
        return Trace(
            id=row["id"], question=row["question"], turns=turns, final_answer=row["final_answer"],
            stop_reason=row["stop_reason"], model_id=row["model_id"] or "", adapter=row["adapter"],
            protocol=row["protocol"] or "tags", layout=row["layout"] or "single_user",
            run_id=row["run_id"], item_id=row["item_id"], group_id=row["group_id"],
            sample_index=row["sample_index"] or 0, step=row["step"], advantage=row["advantage"],
            duration_s=row["duration_s"] or 0.0, created_at=row["created_at"] or 0.0,
            **{key: _loads(row[key], [] if key in ("images", "gold", "messages") else {})
               for key in _JSON_TRACE_COLUMNS},
        )

    def list_traces(self, *, run_id: str | None = None, item_id: str | None = None,
                    stop_reason: str | None = None, group_id: str | None = None,
                    min_reward: float | None = None, max_reward: float | None = None,
                    with_turns: bool | None = None, limit: int = 200, offset: int = 0) -> list[dict]:
        """Trace summaries (no messages or turns), newest first, filtered.

        `with_turns` True keeps episodes, False only scored answers without turns (imported result files).
        """
        clauses, args = [], []
        for column, value in (("run_id", run_id), ("item_id", item_id), ("stop_reason", stop_reason),
                              ("group_id", group_id)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        if min_reward is not None:
            clauses.append("reward_total >= ?")
            args.append(min_reward)
        if max_reward is not None:
            clauses.append("reward_total <= ?")
            args.append(max_reward)
        if with_turns is not None:
            clauses.append("num_turns > 0" if with_turns else "num_turns = 0")
        columns = ("id, run_id, item_id, group_id, sample_index, step, question, final_answer, "
                   "stop_reason, reward_total, advantage, model_id, num_turns, created_at, rewards")
        sql = f"select {columns} from traces"
        if clauses:
            sql += " where " + " and ".join(clauses)
        sql += " order by created_at desc, sample_index limit ? offset ?"
        cursor = self.db.execute(sql, args + [limit, offset])
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, row)) for row in cursor]
        for row in rows:
            row["rewards"] = _loads(row["rewards"], {})
        return rows

    def count_traces(self, run_id: str | None = None) -> int:
        if run_id is None:
            return self.db.execute("select count(*) from traces").fetchone()[0]
        return self.db.execute("select count(*) from traces where run_id = ?", [run_id]).fetchone()[0]

    def trace_item_ids(self, run_id: str) -> set[str]:
        """Items of a run that already have a trace (lets evaluation resume)."""
        sql = "select distinct item_id from traces where run_id = ? and item_id is not null"
        return {row[0] for row in self.db.execute(sql, [run_id])}

    # -- checkpoints -----------------------------------------------------------
    def record_checkpoint(self, run_id: str, step: int, path: str | Path) -> None:
        with self._transaction() as db:
            db["checkpoints"].insert({"run_id": run_id, "step": int(step), "path": str(path),
                                      "created_at": time.time()}, replace=True)

    def list_checkpoints(self, run_id: str) -> list[dict]:
        """The run's recorded checkpoints whose folder is still on disk (save_total_limit deletes old ones)."""
        rows = self.db["checkpoints"].rows_where("run_id = ?", [run_id], order_by="step")
        return [row for row in rows if Path(row["path"]).is_dir()]

    # -- jobs ------------------------------------------------------------------
    def create_job(self, kind: str, config: dict, command: list[str], log_path: str,
                   run_id: str | None = None, job_id: str | None = None) -> str:
        job_id = job_id or uuid.uuid4().hex[:12]
        now = time.time()
        with self._transaction() as db:
            db["jobs"].insert({
                "id": job_id, "kind": kind, "status": "queued", "pid": None, "config": _dumps(config),
                "command": _dumps(command), "log_path": log_path, "run_id": run_id, "exit_code": None,
                "error": None, "progress": 0.0, "created_at": now, "started_at": None,
                "finished_at": None, "updated_at": now,
            })
        return job_id

    def update_job(self, job_id: str, **changes: Any) -> None:
        if "status" in changes and changes["status"] not in JOB_STATUSES:
            raise ValueError(f"job status {changes['status']!r} is unknown; use one of {JOB_STATUSES}")
        changes["updated_at"] = time.time()
        with self._transaction() as db:
            db["jobs"].update(job_id, changes)

    def get_job(self, job_id: str) -> dict | None:
        rows = list(self.db["jobs"].rows_where("id = ?", [job_id]))
        return self._job_row(rows[0]) if rows else None

    def list_jobs(self, status: str | None = None, limit: int = 200) -> list[dict]:
        where, args = ("status = ?", [status]) if status else (None, None)
        rows = self.db["jobs"].rows_where(where, args, order_by="created_at desc", limit=limit)
        return [self._job_row(row) for row in rows]

    def jobs_changed_since(self, timestamp: float) -> list[dict]:
        rows = self.db["jobs"].rows_where("updated_at > ?", [timestamp], order_by="updated_at")
        return [self._job_row(row) for row in rows]

    def ended_jobs_with_running_runs(self) -> list[dict]:
        """Failed or cancelled jobs whose run still says queued/running (a killed process cannot settle it)."""
        sql = ("select jobs.* from jobs join runs on runs.id = jobs.run_id where jobs.status in "
               "('failed', 'cancelled') and runs.status in ('queued', 'running') order by jobs.created_at")
        cursor = self.db.execute(sql)
        names = [d[0] for d in cursor.description]
        return [self._job_row(dict(zip(names, row))) for row in cursor.fetchall()]

    @staticmethod
    def _job_row(row: dict) -> dict:
        row["config"] = _loads(row["config"], {})
        row["command"] = _loads(row["command"], [])
        return row
