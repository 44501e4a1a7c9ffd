"""Train, Eval and Search-cache tabs: callbacks as plain functions, then real jobs driven through gradio_client.

The plain tests use the real store, job runner, search cache and scoring.
The app tests launch the app headless and, through its API as a remote user
would: run an eval job on a generated 2-item MAT-Coding file with the tiny
model and read its scores, import a result file, refuse a bad training
config, train one SFT step to the end, cancel a running job, resume it from
its checkpoint and cancel the resumed job.
"""

import json
import os
import re
import shlex
import signal
import socket
import time
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from tools.search import SearchTool
from tools.search_cache import SearchCache
from trainers.config import SftJobConfig
from trainers.service import LaunchError, prepare_demo_training, resume_training
from workbench import jobs, settings
from workbench.benchmarks import mat_coding_mini
from workbench.jobs.watch import JobWatch
from workbench.run_charts import MetricSeriesCache
from workbench.search_service import search_overview
from workbench.store import Store
from workbench.ui import jobs_panel, tab_eval, tab_search, tab_train
from workbench.ui.app import create_app, launch_options

TINY_PIXELS = {"max_pixels": 56 * 56, "min_pixels": 28 * 28}
ENDED = ("succeeded", "failed", "cancelled")


@pytest.fixture
def store():
    return Store()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout=120.0, every=0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout:.0f} s")


# -- Train tab callbacks ------------------------------------------------------------------------
def test_click_to_train_fills_the_form_with_the_shipped_runs_settings(tmp_path):
    """The form holds exactly click_to_train_config (which trainers.demo_model made the shipped run with)."""
    from trainers.demo_data import click_to_train_config

    demo = {"items_file": str(tmp_path / "items.json"), "eval_file": str(tmp_path / "held_out.json"),
            "expert_run": "r", "start_adapter": str(tmp_path / "adapter")}
    for path in (demo["items_file"], demo["eval_file"]):
        Path(path).write_text("[]")
    Path(demo["start_adapter"]).mkdir()
    values = tab_train.demo_values(demo)
    form = {name: value for (scope, name), value in values.items() if scope in ("common", "grpo")}
    config = tab_train.train_config("grpo", form)
    assert config == click_to_train_config("demo", demo["items_file"], demo["eval_file"],
                                           init_adapter=demo["start_adapter"])
    assert config.finetune == "lora" and config.init_adapter == demo["start_adapter"] and config.tools == ["code"]


def test_train_form_makes_configs_previews_the_command_and_says_what_to_fix(store, tmp_path):
    demo = prepare_demo_training(store, count=4)
    assert prepare_demo_training(store)["expert_run"] == demo["expert_run"], "demo data is made once"
    # click-to-train prompts are not items the demo model was fine-tuned on (its SFT split: seed 0)
    sft_items = mat_coding_mini.generate(tmp_path / "sft", count=64, seed=0)

    def pictures(items_file):
        return {(Path(items_file).parent / r["processed_image_path"]).read_bytes()
                for r in json.loads(Path(items_file).read_text())}
    assert not pictures(demo["items_file"]) & pictures(sft_items)
    values = {"data_files": demo["steps_file"] + "\n", "num_generations": 2, "per_device_train_batch_size": 4,
              "max_steps": 3, "rewards": '{"format": 1.0, "answer_f1": 1.0}', "tools": ["code"],
              "trace_runs": "ignored: an SFT field", **TINY_PIXELS}
    config = tab_train.train_config("grpo", values)
    assert config.data_files == [demo["steps_file"]] and config.rewards == {"format": 1.0, "answer_f1": 1.0}

    command = tab_train.command_preview("grpo", values)
    assert "-m trainers.grpo --run-id NEW_RUN_ID" in command and "--max_steps 3" in command  # the settings shown
    assert f"--data_files {demo['steps_file']}" in command and "--rewards" in command

    refusals = {
        "divisible by num_generations": {**values, "per_device_train_batch_size": 3},
        "does not exist": {**values, "data_files": str(tmp_path / "missing.json")},
        "Rewards: not valid JSON": {**values, "rewards": "{format: 1"},
        "Max steps: 2.5 is not a whole number": {**values, "max_steps": 2.5},
    }
    for message, bad in refusals.items():
        with pytest.raises(ValueError, match=message):
            tab_train.train_config("grpo", bad)
        assert tab_train.command_preview("grpo", bad).startswith("# not ready to launch:")
        with pytest.raises(ValueError, match=message):
            tab_train.launch_from_form(store, "grpo", bad)
    assert store.list_jobs() == [], "nothing was launched"
    sft = tab_train.train_config("sft", {"trace_runs": demo["expert_run"], "max_steps": 2})
    assert isinstance(sft, SftJobConfig) and sft.trace_runs == [demo["expert_run"]]


def test_job_watch_reads_changed_rows_only_and_settles_runs_of_cancelled_jobs(store):
    watch = JobWatch(("sft",))
    run_id = store.create_run("sft run", "train", status="running")
    sleeper = jobs.submit(store, "sft", {}, ["sleep", "60"], run_id=run_id)
    jobs.submit(store, "eval", {}, ["true"])
    first = watch.poll(store)
    assert [row["id"] for row in first] == [sleeper], "only the watched kind"
    assert watch.poll(store) == [], "nothing changed since"
    table, chosen, box = jobs_panel.poll_jobs(store, JobWatch(("sft",)), "", False)
    assert chosen == box == sleeper and table["job id"].tolist() == [sleeper], "a new page re-attaches"

    jobs.cancel(store, sleeper)
    changed = watch.poll(store)
    assert [row["status"] for row in changed] == ["cancelled"]
    assert store.get_run(run_id)["status"] == "cancelled", "the run follows its cancelled job"
    assert watch.poll(store) == [], "nothing changed since"
    assert jobs.settle_run(store, store.get_job(sleeper)) is False, "already settled"


def test_a_dead_jobs_run_is_settled_by_reconcile_without_any_tab(store):
    """A job killed outright leaves its run 'running'; the next tick (app start) settles it, no UI involved."""
    run_id = store.create_run("sft run", "train", status="running")
    sleeper = jobs.submit(store, "sft", {}, ["sleep", "60"], run_id=run_id)
    os.killpg(store.get_job(sleeper)["pid"], signal.SIGKILL)
    deadline = time.time() + 10
    while store.get_run(run_id)["status"] == "running" and time.time() < deadline:
        jobs.tick(store)
        time.sleep(0.1)
    assert store.get_job(sleeper)["status"] == "failed"
    run = store.get_run(run_id)
    assert run["status"] == "failed" and run["summary"]["error"]


def test_cancel_job_checks_the_kind_the_tab_shows_and_refuses_ended_jobs(store):
    sleeper = jobs.submit(store, "eval", {}, ["sleep", "60"])
    with pytest.raises(ValueError, match="pick an sft job to cancel"):
        jobs_panel.cancel_job(store, sleeper, kind="sft")
    assert store.get_job(sleeper)["status"] == "running"
    assert jobs_panel.cancel_job(store, sleeper, kind="eval") == f"Cancelled eval job {sleeper}."
    assert store.get_job(sleeper)["status"] == "cancelled"
    with pytest.raises(ValueError, match="already ended"):
        jobs_panel.cancel_job(store, sleeper)
    with pytest.raises(ValueError, match="pick a job to cancel"):
        jobs_panel.cancel_job(store, "")


def test_job_detail_redraws_log_and_curves_only_when_they_change(store):
    run_id = store.create_run("grpo run", "train", status="running")
    job_id = store.create_job("grpo", {"max_steps": 10}, ["python"], log_path=str(settings.jobs_dir() / "j.log"),
                              run_id=run_id)
    store.update_job(job_id, status="running", progress=0.2)
    (settings.jobs_dir() / "j.log").write_text("step 1\nstep 2\n", encoding="utf-8")
    store.log_metrics(run_id, 1, {"reward": 0.1, "rewards/format/mean": 0.5})
    store.log_metrics(run_id, 2, {"reward": 0.3, "rewards/format/mean": 0.7})
    session = tab_train.TrainSession()

    detail = tab_train.job_detail(store, session, job_id)
    assert "running · 20 %" in detail.progress and "step 2 of 10" in detail.progress
    assert detail.log == "step 1\nstep 2" and detail.figures is not None
    assert list(detail.figures[0].data[0]["y"]) == [0.1, 0.3]
    again = tab_train.job_detail(store, session, job_id)
    assert again.log is None and again.figures is None, "nothing new: nothing redrawn"
    store.log_metrics(run_id, 3, {"reward": 0.6})
    assert list(tab_train.job_detail(store, session, job_id).figures[0].data[0]["y"]) == [0.1, 0.3, 0.6]
    assert isinstance(session.cache, MetricSeriesCache) and session.cache.last_row_id[run_id] > 0
    # a held-out evaluation arrives: the first chart becomes tool use beside held-out answer F1
    store.log_metrics(run_id, 4, {"tools/call_rate": 0.9, "eval_rewards/answer_f1/mean": 0.7,
                                  "eval_tools/call_rate_degraded": 1.0})
    names = [line.get("name") for line in tab_train.job_detail(store, session, job_id).figures[0].data]
    assert names == ["grpo run · tools/call_rate (train)", "grpo run · held-out tool calls, degraded images",
                     "grpo run · held-out answer F1"]
    table = jobs_panel.jobs_table([store.get_job(job_id)])
    assert table.iloc[0].tolist()[:4] == ["running", "20 %", "grpo", run_id]
    with pytest.raises(ValueError, match="no job"):
        tab_train.job_detail(store, session, "nope")


def test_resume_makes_a_resume_job_and_refuses_what_cannot_resume(store, monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBENCH_MAX_JOBS", "0")  # keep submitted jobs queued: nothing really trains here
    config = SftJobConfig(trace_runs=["expert"], max_steps=4, **TINY_PIXELS)
    run_id = store.create_run("sft", "train", status="running")
    job_id = store.create_job("sft", config.to_dict(), ["python"], log_path="", run_id=run_id)
    (tmp_path / "checkpoint-4").mkdir()  # a checkpoint is listed while its folder is on disk
    store.record_checkpoint(run_id, 4, tmp_path / "checkpoint-4")

    store.update_job(job_id, status="running")
    with pytest.raises(LaunchError, match="still running"):
        resume_training(store, job_id)
    store.update_job(job_id, status="succeeded")
    with pytest.raises(LaunchError, match="raise max steps above 4"):
        resume_training(store, job_id)
    eval_job = store.create_job("eval", {}, ["python"], log_path="")
    with pytest.raises(LaunchError, match="only training jobs resume"):
        resume_training(store, eval_job)

    resumed = resume_training(store, job_id, max_steps=8)
    row = store.get_job(resumed.job_id)
    assert row["status"] == "queued" and row["run_id"] == run_id and row["config"]["max_steps"] == 8
    command = row["command"]
    assert command[command.index("--run-id") + 1] == run_id and "--resume" in command
    assert command[-2:] == ["--max_steps", "8"] and resumed.resumed_from_step == 4
    with pytest.raises(LaunchError, match=f"already being trained by job {resumed.job_id}"):
        resume_training(store, job_id, max_steps=9)


# -- Eval tab callbacks -------------------------------------------------------------------------
def test_eval_form_command_and_refusals(store, tmp_path):
    data = mat_coding_mini.generate(tmp_path / "mini", count=2)
    config, runner = tab_eval.eval_configs({"benchmark": "mat-coding", "data": str(data), "model": "tiny",
                                            "limit": 1, "tools": ["code"], "max_new_tokens": 8, "images": ""})
    command = tab_eval.eval_command(config, runner, "run123")
    assert command[1:4] == ["-m", "workbench", "eval"]
    for flag, value in (("--data", str(data.resolve())), ("--run-id", "run123"), ("--limit", "1"),
                        ("--max-new-tokens", "8"), ("--tools", "code")):
        assert command[command.index(flag) + 1] == value
    assert "--images" not in command and "--adapter" not in command

    with pytest.raises(ValueError, match="does not exist"):
        tab_eval.eval_configs({"benchmark": "mat-coding", "data": str(tmp_path / "nope.json")})
    search_config, search_runner = tab_eval.eval_configs({"benchmark": "mat-coding", "data": str(data),
                                                          "tools": ["search"]})
    with pytest.raises(ValueError, match="needs a corpus"):
        tab_eval.launch_eval(store, search_config, search_runner)
    assert store.list_jobs() == []


def test_import_result_scores_per_split_and_type(store, tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps([{"id": 1, "gt": ["Red"], "pred_answer": "red", "type": ["crop"]},
                                {"id": 2, "gt": ["blue sky"], "pred_answer": "blue", "type": ["crop", "rotate"]},
                                {"id": 3, "gt": ["7"], "pred_answer": "8", "type": ["none"]}]), encoding="utf-8")
    run_id, summary = tab_eval.import_result(store, str(path), "mat-coding", "")
    assert store.get_run(run_id)["kind"] == "imported" and store.get_run(run_id)["name"] == "imported results"
    splits = tab_eval.split_table(summary)
    assert splits.iloc[0].tolist() == ["all (n=3)", summary["all_f1"], summary["all_em"]]
    assert splits["split"].tolist() == ["all (n=3)", "simple", "hard"]
    types = {row[0]: row[1:] for row in tab_eval.type_table(summary).values.tolist()}
    assert types["crop"][0] == 2 and types["crop"][2] == 50.0 and types["none"] == [1, 0.0, 0.0]
    with pytest.raises(ValueError, match="upload a result file"):
        tab_eval.import_result(store, None, "mat-coding", "x")


def test_import_result_without_ids_or_types_says_why_tables_are_missing(store, tmp_path):
    """The released multi-hop files: no id, gold as a list; the notes say why no split/type table exists."""
    path = tmp_path / "bamboogle.json"
    path.write_text(json.dumps([{"pred_answer": "James Madison", "gt": ["james madison"], "query": "Who?"},
                                {"pred_answer": None, "gt": ["x"], "query": "What?"}]), encoding="utf-8")
    run_id, summary = tab_eval.import_result(store, str(path), "multihop", "")
    assert summary["all_em"] == 50.0 and tab_eval.type_table(summary).empty
    notes = tab_eval.score_notes(summary, "multihop")
    assert "No simple/hard split" in notes and "degradation types exist only for MAT-Coding" in notes
    assert "No item has id; such an item is known by its 0-based position in the file." in notes
    traces = {t["item_id"]: store.get_trace(t["id"]) for t in store.list_traces(run_id=run_id)}
    assert traces["1"].question == "What?" and traces["1"].metadata["item"] == {"query": "What?"}


# -- Search tab callbacks -----------------------------------------------------------------------
def test_search_view_shows_queries_hit_rate_and_paid_calls(tmp_path):
    path = settings.search_cache_path()
    empty = tab_search.search_view(None, 10)
    assert "Nothing has been searched yet" in empty.summary and not path.exists(), "viewing creates no file"

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"id": "k", "title": "Kyoto", "text": "Kyoto was the capital of Japan."}) + "\n",
                      encoding="utf-8")
    tool = SearchTool("local", corpus=corpus, cache_path=path)
    tool.search("capital of Japan")
    tool.search("capital  of Japan")  # the same query after normalising: a cache hit
    SearchCache(path).record_call("serpapi", "eiffel tower height", 4, "paid", paid_backend=True)
    SearchCache(path).record_call("serpapi", "eiffel tower height", 4, "hit", paid_backend=True)

    view = tab_search.search_view(0.02, 10)
    assert "| Cache hit rate | 50.0 % (2 answered from the cache) |" in view.summary
    assert "| Paid calls made | 1 · spent $0.02 |" in view.summary
    assert "| Paid calls saved by the cache | 1 · saved $0.02 |" in view.summary
    assert [row[2:5] for row in view.recent] == [["eiffel tower height", 4, "hit"], ["eiffel tower height", 4, "paid"],
                                                 ["capital of Japan", 4, "hit"], ["capital of Japan", 4, "free"]]
    assert {row[0]: row[-1] for row in view.backends} == {"local": 2, "serpapi": 2}
    assert search_overview(limit=1).recent[0]["outcome"] == "hit"
    with pytest.raises(ValueError, match="negative"):
        tab_search.search_view(-1, 10)


# -- the app, driven through its API ------------------------------------------------------------
class RunningApp:
    def __init__(self):
        self.app, self.ctx = create_app(public_demo=False, store=Store())
        options = launch_options(self.ctx.policy)
        options.pop("auth")
        port = free_port()
        self.app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **options)
        self.url = f"http://127.0.0.1:{port}/"
        self.client = Client(self.url, verbose=False)
        self.endpoints = self.client.view_api(return_format="dict", print_info=False)["named_endpoints"]

    def args(self, endpoint: str, overrides: dict) -> list:
        """Positional arguments by parameter label; a repeated label is (label, n) for its n-th use (from 0)."""
        seen: dict[str, int] = {}
        values = []
        for parameter in self.endpoints[endpoint]["parameters"]:
            label = parameter["label"]
            use = seen[label] = seen.get(label, -1) + 1
            if (label, use) in overrides:
                values.append(overrides[(label, use)])
            elif use == 0 and label in overrides:
                values.append(overrides[label])
            else:
                values.append(parameter["parameter_default"])
        return values

    def close(self):
        self.app.close()


@pytest.fixture
def running_app():
    running = RunningApp()
    yield running
    running.close()


def test_public_demo_builds_no_job_tabs():
    app, _ = create_app(public_demo=True, store=Store())
    names = {dep.api_name for dep in app.fns.values() if dep.api_name}
    assert not names & {"launch_training", "launch_eval", "search_costs", "cancel_training_job", "import_results"}


@pytest.mark.slow
def test_eval_job_and_import_through_the_app(running_app, tmp_path):
    client, store = running_app.client, running_app.ctx.store
    data = mat_coding_mini.generate(tmp_path / "mini", count=2)
    refused, _ = client.predict(*running_app.args("/launch_eval", {"Data": str(tmp_path / "none.json")}),
                                api_name="/launch_eval")
    assert refused.startswith("**Not launched:**") and "does not exist" in refused and store.list_jobs() == []

    message, job_id = client.predict(*running_app.args("/launch_eval", {"Data": str(data), "Max new tokens": 8}),
                                     api_name="/launch_eval")
    assert message.startswith("Launched eval job") and job_id

    wait_until(lambda: store.get_job(job_id)["status"] in ENDED, timeout=150)
    table, shown, status, progress, log, splits, types, notes = client.predict(job_id, api_name="/show_eval_jobs")
    assert "**succeeded**" in status and "2 of 2 traces" in status and "succeeded · 100 %" in progress
    assert job_id in [row[-1] for row in table["data"]] and "2/2 items" in log
    labels = {label for record in json.loads(data.read_text()) for label in record["type"]}
    assert splits["data"][0][0] == "all (n=2)" and {row[0] for row in types["data"]} == labels
    assert "No per-type table" not in notes
    run = store.get_run(store.get_job(job_id)["run_id"])
    assert run["kind"] == "eval" and run["summary"]["n"] == 2

    results = tmp_path / "preds.jsonl"
    results.write_text('{"id": 1, "gt": ["A"], "pred_answer": "a"}\n{"id": 2, "gt": ["B"], "pred_answer": "c"}\n',
                       encoding="utf-8")
    imported, import_splits, _, import_notes = client.predict(handle_file(str(results)), "mat-coding", "my results",
                                                              api_name="/import_results")
    assert imported.startswith("Imported as run") and "F1 50.0" in imported
    assert "No per-type table: the items carry no degradation `type` labels" in import_notes
    assert import_splits["data"][0] == ["all (n=2)", 50.0, 50.0]


@pytest.mark.slow
def test_training_jobs_launch_finish_cancel_and_resume_through_the_app(running_app):
    client, store = running_app.client, running_app.ctx.store
    demo = prepare_demo_training(store, count=4)
    sft = {"Job kind": "sft", ("Trace runs", 0): demo["expert_run"], ("Max steps", 1): 1,
           "Per device batch size": 2, "Save steps": 1, "Max pixels": TINY_PIXELS["max_pixels"],
           "Min pixels": TINY_PIXELS["min_pixels"]}

    def launch(changes: dict | None = None):
        return client.predict(*running_app.args("/launch_training", {**sft, **(changes or {})}),
                              api_name="/launch_training")

    refused, _ = launch({"Lora target": "no_such_module"})
    assert refused.startswith("**Not launched:**") and "matches no module" in refused and store.list_jobs() == []

    message, job_id = launch()
    assert message.startswith("Launched job")
    command = client.predict(*running_app.args("/preview_training_command", sft), api_name="/preview_training_command")
    argv = store.get_job(job_id)["command"]
    launched = shlex.join(argv[argv.index("--run-id") + 2:])  # the settings after the run id, quoted as a shell would
    assert "-m trainers.sft --run-id NEW_RUN_ID" in command and command.endswith(launched)

    def show(job):
        return client.predict(job, api_name="/show_training_jobs")

    wait_until(lambda: store.get_job(job_id)["status"] in ENDED, timeout=150)
    table, _, status, progress, log, curve, _ = show(job_id)
    assert "**succeeded**" in status and "succeeded · 100 %" in progress and "step 1 of 1" in progress
    assert "finished" in log and curve["type"] == "plotly" and "loss" in curve["plot"]
    assert store.get_run(store.get_job(job_id)["run_id"])["summary"]["steps"] == 1
    assert store.get_job(job_id)["note"] == "finished"

    _, long_job = launch({("Max steps", 1): 200})
    run_id = store.get_job(long_job)["run_id"]
    wait_until(lambda: store.list_checkpoints(run_id), timeout=150)  # mid-training, one checkpoint saved
    reloaded = Client(running_app.url, verbose=False).predict("", api_name="/show_training_jobs")
    assert reloaded[1] == long_job and "**running**" in reloaded[2], "a new page re-attaches to the running job"
    assert re.search(r"Now: (training: step \d+ of 200 · .* left|saving a checkpoint at step \d+)", reloaded[2])
    assert client.predict(long_job, api_name="/cancel_training_job") == f"Cancelled job {long_job}."
    _, _, status, progress, *_ = show(long_job)
    assert "**cancelled**" in status and store.get_run(run_id)["status"] == "cancelled"

    resumed_message, resumed_job = client.predict(long_job, None, api_name="/resume_training_job")
    step = store.list_checkpoints(run_id)[-1]["step"]
    assert f"from the checkpoint at step {step}" in resumed_message and resumed_job != long_job
    resumed = store.get_job(resumed_job)
    assert resumed["run_id"] == run_id and "--resume" in resumed["command"]
    client.predict(resumed_job, api_name="/cancel_training_job")
    assert "**cancelled**" in show(resumed_job)[2]
    assert [row[0] for row in show(resumed_job)[0]["data"]][:3] == ["cancelled", "cancelled", "succeeded"]
