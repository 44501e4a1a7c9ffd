"""A training job killed with SIGKILL: seen as failed within 5 s, no metric row lost, resume keeps the step count."""

import os
import signal
import time

import pytest

from trainers.config import SftJobConfig
from trainers.demo_data import TINY_PIXELS, prepare_demo_data
from trainers.service import launch_training, resume_training
from workbench import jobs, settings
from workbench.store import Store


def wait_until(predicate, timeout=240.0, every=0.25):
    deadline = time.time() + timeout
    while time.time() < deadline:
        jobs.tick(Store())
        if predicate():
            return True
        time.sleep(every)
    return False


@pytest.mark.slow
def test_kill_9_then_resume_from_the_last_checkpoint():
    store = Store()
    data = prepare_demo_data(settings.home() / "demo-data", store, count=4)
    config = SftJobConfig(trace_runs=[data.expert_run], finetune="full", max_steps=40, per_device_train_batch_size=2,
                          learning_rate=1e-4, save_steps=2, save_total_limit=0, run_name="kill test", **TINY_PIXELS)
    launched = launch_training(store, config)
    run_id = launched.run_id
    assert wait_until(lambda: len(store.list_checkpoints(run_id)) >= 2), jobs.log_tail(store, launched.job_id)

    before = store.metrics_since(run_id)
    os.kill(store.get_job(launched.job_id)["pid"], signal.SIGKILL)
    killed_at = time.time()
    assert wait_until(lambda: store.get_job(launched.job_id)["status"] == "failed", timeout=5, every=0.1)
    assert time.time() - killed_at <= 5
    after = store.metrics_since(run_id)
    assert {row["id"] for row in before} <= {row["id"] for row in after}, "metric rows written before the kill"

    checkpoint = max(row["step"] for row in store.list_checkpoints(run_id)
                     if os.path.isdir(row["path"]))
    resumed = resume_training(store, launched.job_id)
    assert resumed.resumed_from_step == checkpoint
    assert wait_until(lambda: store.get_job(resumed.job_id)["status"] in ("succeeded", "failed"))
    assert store.get_job(resumed.job_id)["status"] == "succeeded", jobs.log_tail(store, resumed.job_id)
    new_steps = sorted({row["step"] for row in store.metrics_since(run_id, after_id=after[-1]["id"])
                        if row["name"] == "loss"})
    assert new_steps[0] == checkpoint + 1 and new_steps[-1] == config.max_steps
