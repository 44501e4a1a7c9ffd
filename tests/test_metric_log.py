"""MetricLogger: one call per step from a busy loop, committed in batches by its writer thread, nothing lost."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from workbench.metric_log import MetricLogger
from workbench.run_charts import MetricSeriesCache
from workbench.store import Store

ROOT = Path(__file__).resolve().parent.parent


def wait_until(predicate, timeout=30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_a_fast_loop_is_committed_in_few_batches_with_every_value_in_order():
    store = Store()
    run = store.create_run("fast", "train")
    logger = MetricLogger(store)
    for step in range(5000):
        logger.log(run, step, {"reward": step / 10, "loss": 1.0 / (step + 1), "skipped": None})
    assert logger.flush(timeout_s=30)
    batches = store.metric_batches_since({run: 0})
    assert len(batches) < 100  # one commit per interval, not one per step
    rewards = store.metrics_since(run, names=["reward"])
    assert [row["step"] for row in rewards] == list(range(5000))
    assert [row["value"] for row in rewards] == [step / 10 for step in range(5000)]
    assert store.metric_names([run]) == ["loss", "reward"]
    cache = MetricSeriesCache()
    cache.poll(store, [run])
    assert cache.get(run, "loss").steps == list(range(5000)) and cache.get(run, "loss").values[-1] == 1 / 5000
    logger.close()


def test_a_slow_loop_sees_each_step_committed_without_asking():
    store = Store()
    run = store.create_run("slow", "train")
    logger = MetricLogger(store)
    for step in range(3):
        logger.log(run, step, {"reward": float(step)})
        assert wait_until(lambda step=step: store.last_metric_values(run).get("reward") == float(step))
    logger.close()


def test_threads_logging_at_once_lose_nothing_and_runs_stay_apart():
    store = Store()
    runs = [store.create_run(f"r{n}", "train") for n in range(4)]
    logger = MetricLogger(store, flush_interval_s=0.01)

    def write(run_id: str) -> None:
        for step in range(500):
            logger.log(run_id, step, {"reward": float(step), "kl": 0.5})

    threads = [threading.Thread(target=write, args=(run,)) for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    logger.close()
    for run in runs:
        assert sorted(row["step"] for row in store.metrics_since(run, names=["reward"])) == list(range(500))
        assert store.last_metric_values(run) == {"reward": 499.0, "kl": 0.5}


def test_bad_values_fail_at_the_call_and_a_closed_logger_refuses_more():
    store = Store()
    run = store.create_run("r", "train")
    logger = MetricLogger(store)
    with pytest.raises(TypeError):
        logger.log(run, 1, {"reward": "high"})
    logger.log(run, 2, {"reward": 0.5})
    logger.close()  # commits what is pending
    assert store.last_metric_values(run) == {"reward": 0.5}
    with pytest.raises(RuntimeError, match="closed"):
        logger.log(run, 3, {"reward": 1.0})


KILLED_WRITER = """
import sys
from workbench.metric_log import MetricLogger
from workbench.store import Store
store = Store(sys.argv[1])
run = store.create_run("killed", "train", run_id="killed")
logger = MetricLogger(store)
for step in range(1000):
    logger.log(run, step, {"reward": float(step)})
logger.flush()
print("flushed", flush=True)
step = 1000
while True:  # keep logging until killed
    logger.log(run, step, {"reward": float(step)})
    step += 1
"""


def test_kill_9_keeps_everything_committed_before_it(tmp_path):
    database = tmp_path / "killed.db"
    process = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(database)], cwd=ROOT,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "flushed"
        time.sleep(0.5)  # a few more commits while it keeps logging
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
    steps = [row["step"] for row in Store(database).metrics_since("killed")]
    assert steps[:1000] == list(range(1000))  # flushed before the kill: all there
    assert steps == list(range(len(steps))) and len(steps) > 1000  # later commits: whole, in order, no gap
