"""The database schema, as sqlite-utils migrations applied in order by `workbench.store.Store`.

A migration is never edited once released: a change of schema is a new
migration at the end. `record_legacy_version` adopts a database made before
the workbench used sqlite-utils migrations (it counted its schema in PRAGMA
user_version).
"""

import datetime
import time

import sqlite_utils
from sqlite_utils.migrations import Migrations

from workbench.store_metrics import group_rows, pack_columns

MIGRATIONS = Migrations("workbench")


@MIGRATIONS(name="001_runs_jobs_metrics_traces_images")
def _migration_1(db: sqlite_utils.Database) -> None:
    db["runs"].create(
        {"id": str, "name": str, "kind": str, "status": str, "model_id": str, "benchmark": str,
         "config": str, "reward_spec": str, "summary": str, "job_id": str,
         "created_at": float, "updated_at": float},
        pk="id",
    )
    db["jobs"].create(
        {"id": str, "kind": str, "status": str, "pid": int, "config": str, "command": str,
         "log_path": str, "run_id": str, "exit_code": int, "error": str, "progress": float,
         "created_at": float, "started_at": float, "finished_at": float, "updated_at": float},
        pk="id",
    )
    db["metrics"].create(
        {"id": int, "run_id": str, "step": int, "name": str, "value": float, "created_at": float},
        pk="id",
    )
    db["metrics"].create_index(["run_id", "name", "step"])
    db["metrics"].create_index(["run_id", "id"])
    db["traces"].create(
        {"id": str, "run_id": str, "item_id": str, "group_id": str, "sample_index": int, "step": int,
         "question": str, "images": str, "final_answer": str, "stop_reason": str, "gold": str,
         "rewards": str, "reward_total": float, "advantage": float, "model_id": str, "adapter": str,
         "protocol": str, "layout": str, "num_turns": int, "prompt_tokens": int,
         "completion_tokens": int, "duration_s": float, "created_at": float, "messages": str,
         "metadata": str},
        pk="id",
    )
    for columns in (["run_id", "created_at"], ["run_id", "item_id"], ["group_id"], ["stop_reason"]):
        db["traces"].create_index(columns)
    db["turns"].create(
        {"trace_id": str, "idx": int, "raw": str, "think": str, "action": str, "argument": str,
         "parse_error": str, "image": str, "feedback": str, "prompt_tokens": int,
         "completion_tokens": int, "latency_s": float},
        pk=("trace_id", "idx"),
    )
    db["tool_calls"].create(
        {"trace_id": str, "turn_idx": int, "name": str, "argument": str, "output_text": str,
         "output_images": str, "ok": int, "error": str, "stdout": str, "stderr": str,
         "details": str, "latency_s": float},
        pk=("trace_id", "turn_idx"),
    )
    db["images"].create(
        {"sha": str, "width": int, "height": int, "format": str, "bytes": int, "created_at": float},
        pk="sha",
    )


@MIGRATIONS(name="002_checkpoints_and_job_start_times")
def _migration_2(db: sqlite_utils.Database) -> None:
    db["checkpoints"].create(
        {"run_id": str, "step": int, "path": str, "created_at": float}, pk=("run_id", "step"))
    db["jobs"].add_column("pid_start", str)  # process start time, so a reused PID is not mistaken for the job




def record_legacy_version(db: sqlite_utils.Database) -> None:
    """A database made before the workbench used sqlite-utils migrations counted its schema in PRAGMA
    user_version: record that many migrations as applied, so they never run twice."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    MIGRATIONS.ensure_migrations_table(db)
    now = str(datetime.datetime.now(datetime.UTC))
    db[Migrations.migrations_table].insert_all(
        {"migration_set": MIGRATIONS.name, "name": migration.name, "applied_at": now}
        for migration in MIGRATIONS.pending(db)[:version])


@MIGRATIONS(name="003_run_owner_process")
def _migration_3(db: sqlite_utils.Database) -> None:
    # the process running a run, so a run whose process died can be settled by whoever finds it
    db["runs"].add_column("owner_pid", int)
    db["runs"].add_column("owner_start", str)


@MIGRATIONS(name="004_job_phase_note")
def _migration_4(db: sqlite_utils.Database) -> None:
    db["jobs"].add_column("note", str)  # what the job is doing now, e.g. "step-0 evaluation: 32/200 ..."


@MIGRATIONS(name="005_metric_batches")
def _migration_5(db: sqlite_utils.Database) -> None:
    """Metrics as batches of columns (one row per write, not per value); the rows so far move over.

    The old rows are packed in memory (16 bytes a value) and the old table dropped before the new one is
    made, so the schema never holds both: it stays on the file's first page, where damage elsewhere in the
    file cannot make it unreadable (tests/test_faults_database.py).
    """
    batches = []
    for (run_id,) in db.execute("select distinct run_id from metrics").fetchall():
        rows = db.execute("select run_id, step, name, value from metrics where run_id = ? order by id", [run_id])
        batches += [(run, *pack_columns(columns), time.time()) for run, columns in group_rows(rows).items()]
    db.execute("drop table metrics")
    db.execute("create table metric_batches (id integer primary key, run_id text not null, names text not null, "
               "counts blob not null, steps blob not null, metric_values blob not null, created_at float)")
    db.execute("create index metric_batches_run_id on metric_batches (run_id, id)")
    db.conn.executemany("insert into metric_batches (run_id, names, counts, steps, metric_values, created_at) "
                        "values (?, ?, ?, ?, ?, ?)", batches)


@MIGRATIONS(name="006_ingested_batches")
def _migration_6(db: sqlite_utils.Database) -> None:
    # batches received from training scripts elsewhere (workbench.ingest): a re-sent batch is recognised by its id
    db["ingested_batches"].create({"batch_id": str, "run_id": str, "received_at": float, "traces": int},
                                  pk="batch_id")


@MIGRATIONS(name="007_job_cluster_id")
def _migration_7(db: sqlite_utils.Database) -> None:
    db["jobs"].add_column("cluster_job_id", str)  # e.g. "slurm:4242" for a job that runs on a cluster
