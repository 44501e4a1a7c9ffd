"""Run ingestion: batches checked and stored exactly once, the app's route and its token, the on-disk spool."""

import base64
import hashlib
import io
import json
import socket
import threading
import time

import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.testclient import TestClient

from workbench.chat_traces import trace_from_chat
from workbench.ingest import Batch, IngestError, Limits, parse_batch, store_batch
from workbench.integrations.sinks import HttpSink
from workbench.store import Store
from workbench.ui.deployment import DeploymentPolicy, PolicyError
from workbench.ui.ingest_route import ingest_routes

TOKEN = "ingest-token-for-tests-0123"


def _png(colour=(1, 2, 3)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _batch(step: int = 1, run_id: str = "remote1") -> Batch:
    data = _png()
    sha = hashlib.sha256(data).hexdigest()
    converted = trace_from_chat([
        {"role": "user", "content": [{"type": "image", "image": "sha256:" + sha}, {"type": "text", "text": "Q?"}]},
        {"role": "assistant", "content": "", "tool_calls": [{"type": "function",
                                                             "function": {"name": "zoom", "arguments": {"f": 2}}}]},
        {"role": "tool", "name": "zoom", "content": [{"type": "image", "image": "sha256:" + sha},
                                                     {"type": "text", "text": "zoomed"}]},
        {"role": "assistant", "content": "red"}], put_image=lambda source: sha, step=step, rewards={"r": 1.0},
        group_id=f"{run_id}:step{step}")
    return Batch(run={"id": run_id, "name": "remote run", "config": {"lr": 1e-4}},
                 metrics=[(step, "loss", 0.5), (step, "reward", 1.0)], traces=[converted.trace], images={sha: data})


def _body(batch: Batch, **changes) -> bytes:
    data = json.loads(batch.to_json())
    data.update(changes)
    return json.dumps(data).encode()


def test_a_batch_is_stored_once_even_when_sent_twice():
    store = Store()
    batch = _batch()
    first = store_batch(store, parse_batch(batch.to_json().encode()))
    again = store_batch(store, parse_batch(batch.to_json().encode()))
    assert (first["duplicate"], again["duplicate"]) == (False, True)
    assert [(r["step"], r["name"]) for r in store.metrics_since("remote1")] == [(1, "loss"), (1, "reward")]
    (row,) = store.list_traces(run_id="remote1")
    trace = store.get_trace(row["id"])
    assert trace.turns[0].tool_call.output_images and trace.turns[1].action == "answer"
    run = store.get_run("remote1")
    assert run["status"] == "running" and run["config"] == {"lr": 1e-4, "ingested": True}
    from workbench.jobs import settle_orphaned_runs

    assert settle_orphaned_runs(store) == []  # a remote run has no local process to outlive
    store_batch(store, parse_batch(_body(_batch(step=2), batch_id="final-batch-1", status="succeeded")))
    assert store.get_run("remote1")["status"] == "succeeded"


@pytest.mark.parametrize("change, message, status", [
    ({"version": 2}, "version", 400),
    ({"batch_id": "x"}, "batch_id", 400),
    ({"run": {"id": "../etc"}}, "run must be", 400),
    ({"metrics": [[1, "loss", "nan"]]}, "metric row 0", 400),
    ({"metrics": [[-1, "loss", 1.0]]}, "metric row 0", 400),
    ({"status": "exploded"}, "status must be", 400),
    ({"traces": [{"question": 3}]}, "trace 0 is not a workbench trace", 400),
])
def test_a_malformed_batch_is_refused_with_what_to_change(change, message, status):
    with pytest.raises(IngestError, match=message) as caught:
        parse_batch(_body(_batch(), **change))
    assert caught.value.status == status


def test_images_must_be_real_images_that_match_their_hash():
    batch = _batch()
    (sha,) = batch.images
    text = b"#!/bin/sh\necho not an image\n"
    with pytest.raises(IngestError, match="do not hash") as caught:
        parse_batch(_body(batch, images={sha: base64.b64encode(text).decode()}))
    fake = hashlib.sha256(text).hexdigest()
    with pytest.raises(IngestError, match="not an image file") as caught:
        parse_batch(_body(batch, images={sha: base64.b64encode(batch.images[sha]).decode(),
                                         fake: base64.b64encode(text).decode()}))
    assert caught.value.status == 415
    with pytest.raises(IngestError, match="does not carry"):
        parse_batch(_body(batch, images={}))


def test_an_oversized_batch_is_refused_before_it_is_parsed():
    with pytest.raises(IngestError, match="over the 0 MB limit") as caught:
        parse_batch(_batch().to_json().encode(), Limits(max_body_bytes=100))
    assert caught.value.status == 413


def _client(store: Store, limits: Limits = Limits()) -> TestClient:
    return TestClient(Starlette(routes=ingest_routes(store, TOKEN, limits)))


def test_the_route_needs_the_token_and_answers_clear_errors():
    store = Store()
    client = _client(store)
    body = _batch().to_json().encode()
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": TOKEN}):
        answer = client.post("/workbench/ingest", content=body, headers=headers)
        assert answer.status_code == 401 and "WORKBENCH_INGEST_TOKEN" in answer.json()["error"]
    assert store.list_runs() == []
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.post("/workbench/ingest", content=body, headers=auth).json()["duplicate"] is False
    assert client.post("/workbench/ingest", content=body, headers=auth).json()["duplicate"] is True
    small = _client(store, Limits(max_body_bytes=1000))
    answer = small.post("/workbench/ingest", content=body, headers=auth)
    assert answer.status_code == 413 and "WORKBENCH_INGEST_MAX_MB" in answer.json()["error"]
    answer = client.post("/workbench/ingest", content=b"\x89PNG not json", headers=auth)
    assert answer.status_code == 400 and "not JSON" in answer.json()["error"]


def test_ingestion_is_off_by_default_and_never_on_in_a_public_demo(monkeypatch):
    monkeypatch.delenv("WORKBENCH_INGEST_TOKEN", raising=False)
    assert DeploymentPolicy.from_env(public_demo=False).ingest_token is None
    monkeypatch.setenv("WORKBENCH_INGEST_TOKEN", TOKEN)
    assert DeploymentPolicy.from_env(public_demo=False).ingest_token == TOKEN
    assert DeploymentPolicy.from_env(public_demo=True).ingest_token is None
    monkeypatch.setenv("WORKBENCH_INGEST_TOKEN", "short")
    with pytest.raises(PolicyError, match="at least 16 characters"):
        DeploymentPolicy.from_env(public_demo=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_batches_wait_on_disk_while_the_workbench_is_down_and_arrive_once_it_is_up(tmp_path):
    import uvicorn

    store, port = Store(), _free_port()
    sink = HttpSink(f"http://127.0.0.1:{port}", TOKEN, tmp_path / "spool", max_backoff_s=0.2)
    started = time.perf_counter()
    for step in (1, 2, 3):
        sink.submit(_batch(step=step))
    assert time.perf_counter() - started < 1.0  # a disk write each, never the network
    assert sink.flush(0.5) is False and sink.pending() == 3 and "cannot reach" in sink.last_error
    server = uvicorn.Server(uvicorn.Config(Starlette(routes=ingest_routes(store, TOKEN)), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        assert sink.close(30) is True
    finally:
        server.should_exit = True
        thread.join(10)
    assert sink.delivered == 3 and sink.pending() == 0
    steps = sorted(r["step"] for r in store.metrics_since("remote1", names=["loss"]))
    assert steps == [1, 2, 3]


def test_a_refused_batch_is_kept_with_its_reason_and_the_rest_go_on(tmp_path):
    import uvicorn

    store, port = Store(), _free_port()
    server = uvicorn.Server(uvicorn.Config(Starlette(routes=ingest_routes(store, TOKEN)), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        sink = HttpSink(f"http://127.0.0.1:{port}", TOKEN, tmp_path / "spool")
        bad = _batch(step=1)
        bad.metrics = [(1, "loss", 1.0)] * 2 + [(1, "", 2.0)]  # an empty metric name
        sink.submit(bad)
        sink.submit(_batch(step=2))
        assert sink.close(30) is True
    finally:
        server.should_exit = True
        thread.join(10)
    (reason,) = (tmp_path / "spool" / "rejected").glob("*.reason.txt")
    assert "HTTP 400" in reason.read_text() and "metric row 2" in reason.read_text()
    assert sink.rejected == 1 and [r["step"] for r in store.metrics_since("remote1", names=["loss"])] == [2]


def test_a_trace_with_wrong_types_is_refused_and_a_big_batch_is_split():
    batch = _batch()
    data = json.loads(batch.to_json())
    data["traces"][0]["rewards"] = {"r": "high"}
    with pytest.raises(IngestError, match="rewards must map names to finite numbers"):
        parse_batch(json.dumps(data).encode())
    data["traces"][0]["rewards"], data["traces"][0]["step"] = {}, "3"
    with pytest.raises(IngestError, match="step must be an int"):
        parse_batch(json.dumps(data).encode())
    from workbench.ingest import split_batch

    big = _batch()
    big.traces = [_batch(step=s).traces[0] for s in range(8)]
    big.status = "succeeded"
    parts = split_batch(big, len(big.to_json()) // 3)
    assert len(parts) >= 3 and all(len(p.to_json()) <= len(big.to_json()) // 3 for p in parts)
    assert [t.step for p in parts for t in p.traces] == list(range(8))
    assert parts[0].metrics == big.metrics and all(not p.metrics for p in parts[1:])
    assert parts[-1].status == "succeeded" and all(p.status is None for p in parts[:-1])
    assert all(parse_batch(p.to_json().encode()) for p in parts)  # each part carries its own images


def test_a_remote_run_silent_for_hours_is_settled_as_failed():
    from workbench.jobs import INGESTED_QUIET_S, settle_orphaned_runs

    store = Store()
    store_batch(store, parse_batch(_batch().to_json().encode()))
    assert settle_orphaned_runs(store) == []
    store.db.execute("update runs set updated_at = ? where id = 'remote1'", [time.time() - INGESTED_QUIET_S - 1])
    assert settle_orphaned_runs(store) == ["remote1"]
    run = store.get_run("remote1")
    assert run["status"] == "failed" and "sent nothing for 6 hours" in run["summary"]["error"]


def test_the_app_serves_ingestion_only_with_a_token_and_never_in_a_public_demo(monkeypatch):
    from workbench.ui.app import extra_routes

    store = Store()
    monkeypatch.setenv("WORKBENCH_INGEST_TOKEN", TOKEN)
    assert [route.path for route in extra_routes(DeploymentPolicy.from_env(public_demo=False), store)] == [
        "/workbench/ingest"]
    assert extra_routes(DeploymentPolicy.from_env(public_demo=True), store) == []
    monkeypatch.delenv("WORKBENCH_INGEST_TOKEN")
    assert extra_routes(DeploymentPolicy.from_env(public_demo=False), store) == []


def test_the_deliver_command_sends_what_a_callback_left_in_its_spool(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    import uvicorn

    store, port = Store(), _free_port()
    left = HttpSink(f"http://127.0.0.1:{port}", TOKEN, tmp_path / "spool")
    left.submit(_batch(step=1))
    left.submit(_batch(step=2))
    assert left.close(0.3) is False and left.pending() == 2  # nobody listening: the batches stay on disk
    server = uvicorn.Server(uvicorn.Config(Starlette(routes=ingest_routes(store, TOKEN)), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        done = subprocess.run([sys.executable, "-m", "workbench", "deliver", str(tmp_path / "spool"), "--url",
                               f"http://127.0.0.1:{port}", "--token", TOKEN, "--timeout", "30"],
                              cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True)
    finally:
        server.should_exit = True
        thread.join(10)
    assert done.returncode == 0 and "delivered 2 of 2 batches, refused 0, left 0" in done.stdout, done.stderr
    assert sorted(r["step"] for r in store.metrics_since("remote1", names=["loss"])) == [1, 2]


def test_an_ingested_trace_shows_in_the_traces_stepper_with_its_tool_image():
    from workbench.ui.deployment import Viewer
    from workbench.ui.tab_traces import group_view, turn_view

    store = Store()
    store_batch(store, parse_batch(_batch().to_json().encode()))
    (row,) = store.list_traces(run_id="remote1")
    trace = store.get_trace(row["id"])
    view = turn_view(trace, 0)
    assert view.count == 2 and "zoom" in view.turn and "zoomed" in view.turn
    assert any(caption == "after: tool output 1" for _, caption in view.images)
    assert "red" in turn_view(trace, 1).turn
    group = group_view(store, Viewer(), trace)
    assert "no GRPO group" not in group and "red" in group
