"""Test fixtures for the Runs tab: two training runs with generated metric curves.

Made only by tests (never seeded into a real workbench), so chart, smoothing,
export and tool-collapse code has known data to work on.
"""

import math
import random

from workbench.store import Store

CURVE_RUNS = ("demo-curves-a", "demo-curves-b")


def synthetic_curves(run_id: str, steps: int, collapse: bool, seed: int) -> list[tuple[str, int, str, float]]:
    """Noisy, plausible GRPO curves (metric rows) for the example training runs."""
    rng = random.Random(seed)
    rows = []
    for step in range(1, steps + 1):
        progress = 1 - math.exp(-step / (steps / 4))
        tool_rate = 0.85 - (0.83 * min(1.0, max(0.0, (step - steps * 0.4) / (steps * 0.3))) if collapse else 0.0)
        values = {
            "rewards/format/mean": min(1.0, 0.3 + 0.65 * progress + rng.gauss(0, 0.05)),
            "rewards/accuracy/mean": max(0.0, 0.1 + (0.35 if collapse else 0.5) * progress + rng.gauss(0, 0.07)),
            "tools/call_frequency": max(0.0, min(1.0, tool_rate + rng.gauss(0, 0.04))),
            "loss": 0.02 * math.exp(-step / steps) + rng.gauss(0, 0.004),
            "kl": 0.002 + 0.02 * progress + abs(rng.gauss(0, 0.002)),
        }
        values["reward"] = values["rewards/format/mean"] + values["rewards/accuracy/mean"]
        rows += [(run_id, step, name, value) for name, value in values.items()]
    return rows


def seed_metric_runs(store: Store, steps: int = 120) -> list[str]:
    """Two finished training runs with generated curves; the second one's tool use collapses."""
    for position, run_id in enumerate(CURVE_RUNS):
        if store.get_run(run_id) is None:
            collapse = position == 1
            store.create_run(f"test curves {'B (tool use collapses)' if collapse else 'A'}", "train",
                             run_id=run_id, status="succeeded", model_id="test fixture",
                             config={"demo": True, "learning_rate": 1e-5 if collapse else 5e-6,
                                     "beta": 0.0 if collapse else 0.04, "num_generations": 8})
            store.log_metric_rows(synthetic_curves(run_id, steps, collapse, seed=position))
    return list(CURVE_RUNS)
