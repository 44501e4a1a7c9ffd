"""Trace import and export: JSONL files with an image folder, and raw Visual-ARFT chains.

Export writes one `Trace.to_dict()` per line and copies every referenced image
into `<file>.images/<sha>.<ext>`, so a file moves between machines intact.
Import validates each line and re-stores the images (same bytes, same SHA).
Raw reasoning chains from the original Visual-ARFT code import through
workbench/chains.py.
A whole run (its row, every metric and its traces) moves as a folder with
`export_run_bundle` / `import_run_bundle`: how the shipped demo GRPO run
reaches a fresh workbench.
"""

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from workbench import settings
from workbench.images import image_path
from workbench.store import Store
from workbench.trace import Trace


def export_traces(store: Store, traces: Iterable[Trace], path: str | Path) -> int:
    """Write traces as JSONL plus an image folder beside it, replacing what an earlier export left there
    (its images too); returns how many were written."""
    path = Path(path)
    folder = images_folder(path)
    staging = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    count = 0
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            for trace in traces:
                for sha in trace.image_shas():
                    source = image_path(sha)
                    target = staging / source.name
                    if not target.exists():
                        shutil.copyfile(source, target)
                handle.write(trace.to_json() + "\n")
                count += 1
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:  # e.g. a full disk: leave the earlier export as it was, and nothing half-written
        tmp.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    tmp.replace(path)
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return count


def images_folder(path: str | Path) -> Path:
    """Where the images of an exported traces file live: `<file>.images/` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".images")


def export_run(store: Store, run_id: str, path: str | Path) -> int:
    ids = [row["id"] for row in store.list_traces(run_id=run_id, limit=10**9)]
    return export_traces(store, (store.get_trace(i) for i in ids), path)


def without_machine_paths(value: Any) -> Any:
    """A config or summary with absolute paths made portable: relative to the repository, else their last two parts.

    >>> without_machine_paths({"data_files": ["/tmp/h5/world/coding_rl/items.json"], "beta": 0.04})
    {'data_files': ['…/coding_rl/items.json'], 'beta': 0.04}
    """
    if isinstance(value, dict):
        return {key: without_machine_paths(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_machine_paths(item) for item in value]
    if isinstance(value, str) and value.startswith("/") and "\n" not in value:
        path = Path(value)
        if path.is_relative_to(settings.REPO_ROOT):
            return path.relative_to(settings.REPO_ROOT).as_posix()
        return "…/" + "/".join(path.parts[-2:])
    return value


def export_run_bundle(store: Store, run_id: str, folder: str | Path) -> Path:
    """Write run.json (the run row and all its metrics) and traces.jsonl (+ images) into `folder`.

    Absolute paths in the run's config and summary are made portable: a shipped bundle names no machine's folders.
    """
    run = store.get_run(run_id)
    if run is None:
        raise ValueError(f"no run {run_id!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    metrics = [[row["step"], row["name"], row["value"]] for row in store.metrics_since(run_id)]
    record = {key: run.get(key) for key in ("name", "kind", "status", "model_id", "benchmark", "config", "summary",
                                            "reward_spec")}
    record["config"], record["summary"] = without_machine_paths(record["config"]), without_machine_paths(
        record["summary"])
    (folder / "run.json").write_text(json.dumps({**record, "metrics": metrics}, indent=0), encoding="utf-8")
    export_run(store, run_id, folder / "traces.jsonl")
    return folder


def import_run_bundle(store: Store, folder: str | Path, run_id: str | None = None,
                      config: dict | None = None) -> str:
    """Create a run from an `export_run_bundle` folder (extra `config` keys merged in); returns its id."""
    folder = Path(folder)
    record = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    run_id = store.create_run(record["name"], record["kind"], run_id=run_id, status=record["status"],
                              model_id=record.get("model_id"), benchmark=record.get("benchmark"),
                              reward_spec=record.get("reward_spec"),
                              config={**(record.get("config") or {}), **(config or {})})
    if record.get("summary"):
        store.update_run(run_id, summary=record["summary"])
    store.log_metric_rows((run_id, int(step), name, float(value)) for step, name, value in record["metrics"])
    traces = folder / "traces.jsonl"
    if traces.is_file():
        import_traces(store, traces, run_id)
    return run_id


def import_traces(store: Store, path: str | Path, run_id: str | None = None) -> list[str]:
    """Read a JSONL export (validating every line first) and store its traces."""
    path = Path(path)
    folder = images_folder(path)
    traces = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            trace = Trace.from_dict(json.loads(line))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path.name} line {number}: not a trace ({exc})") from exc
        for sha in trace.image_shas():
            matches = list(folder.glob(f"{sha}.*"))
            if not matches:
                raise ValueError(f"{path.name} line {number}: image {sha[:12]} is missing from {folder}")
            stored = store.put_image(matches[0])
            if stored != sha:
                raise ValueError(f"{path.name} line {number}: image {sha[:12]} does not match its hash")
        if run_id is not None:
            trace.run_id = run_id
        traces.append(trace)
    store.save_traces(traces)
    return [trace.id for trace in traces]


def import_jsonl(store: Store, path: str | Path, name: str = "imported") -> list[str]:
    """Import a trace export as a new run; a file that fails to import leaves no run behind."""
    if not Path(path).is_file():
        raise FileNotFoundError(2, "No such file", str(path))
    run_id = store.create_run(name, "imported", config={"source": str(path)}, status="succeeded")
    try:
        return import_traces(store, path, run_id)
    except BaseException:
        store.delete_run(run_id)
        raise
