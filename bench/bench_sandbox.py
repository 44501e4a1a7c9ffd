"""Benchmark: a sandboxed OpenCV call against in-process exec and a cold interpreter per call.

Runs the same rotate + brighten program on a 720x720 image three ways in one
run (interleaved, so machine load hits all three alike):
- plain in-process `exec` (the floor; no isolation at all),
- `CodeSandbox.run` (warm worker, isolation "auto", plus the Landlock fallback
  when it is available, reported but not the target),
- a cold `python -c` subprocess per call that imports numpy, cv2 and PIL.
Targets (issue 3): sandbox median <= 10x exec and >= 5x faster than cold.
Exit status 1 when a target is missed.

    python bench/bench_sandbox.py [--calls 40] [--cold-calls 12]
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tools.code_sandbox import CodeSandbox, SandboxUnavailable

PROGRAM = """\
import cv2
import numpy as np
from PIL import Image
image = cv2.imread('path_to_input_image.jpg')
image = cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)
image = cv2.convertScaleAbs(image, alpha=1.4, beta=25)
cv2.imwrite('path_to_output_image.jpg', image)
"""
MAX_SLOWDOWN_VS_EXEC = 10.0
MIN_SPEEDUP_VS_COLD = 5.0


def make_image(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 255, (720, 720, 3), dtype=np.uint8), (9, 9), 3)
    cv2.putText(image, "SINCE 1994", (120, 360), cv2.FONT_HERSHEY_SIMPLEX, 2.5, (255, 255, 255), 5)
    path = folder / "input.jpg"
    cv2.imwrite(str(path), image)
    return path


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--cold-calls", type=int, default=12)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as scratch:
        return measure(args, Path(scratch))


def measure(args, folder: Path) -> int:
    """Time the three ways, print the table, return the exit status."""
    image = make_image(folder)
    in_process = PROGRAM.replace("path_to_input_image.jpg", str(image)).replace(
        "path_to_output_image.jpg", str(folder / "exec-output.jpg"))
    cold = ["import numpy, cv2, PIL.Image"] + [in_process]
    sandboxes = {"sandbox (auto)": CodeSandbox()}
    if sandboxes["sandbox (auto)"].isolation_in_use != "landlock":
        try:
            sandboxes["sandbox (landlock fallback)"] = CodeSandbox(isolation="landlock")
        except SandboxUnavailable:
            pass
    times: dict[str, list[float]] = {"in-process exec": [], "cold python -c": []}
    times.update({name: [] for name in sandboxes})
    counter = iter(range(10 ** 9))

    def sandbox_call(sandbox):
        result = sandbox.run(PROGRAM, image, folder / f"job-{next(counter)}")
        if not (result.ok and result.output_images):
            raise SystemExit(f"sandboxed call failed: {result.error} {result.stderr}")

    for sandbox in sandboxes.values():  # warm-up: first fork, page cache
        for _ in range(3):
            sandbox_call(sandbox)
    exec(compile(in_process, "<bench>", "exec"), {})
    for call in range(args.calls):
        times["in-process exec"].append(timed(lambda: exec(compile(in_process, "<bench>", "exec"), {})))
        for name, sandbox in sandboxes.items():
            times[name].append(timed(lambda sandbox=sandbox: sandbox_call(sandbox)))
        if call < args.cold_calls:
            times["cold python -c"].append(timed(lambda: subprocess.run(
                [sys.executable, "-c", "\n".join(cold)], check=True)))
    for sandbox in sandboxes.values():
        sandbox.close()

    medians = {name: statistics.median(values) for name, values in times.items()}
    exec_median, cold_median = medians["in-process exec"], medians["cold python -c"]
    print(f"720x720 rotate + brighten, {args.calls} calls ({args.cold_calls} cold); "
          f"isolation auto = {sandboxes['sandbox (auto)'].isolation_in_use}")
    print(f"{'way':30s} {'median ms':>10s} {'p90 ms':>8s} {'x exec':>8s} {'cold / this':>12s}")
    for name, values in times.items():
        p90 = sorted(values)[int(0.9 * (len(values) - 1))]
        print(f"{name:30s} {medians[name] * 1000:10.1f} {p90 * 1000:8.1f} {medians[name] / exec_median:8.1f} "
              f"{cold_median / medians[name]:12.1f}")
    target = medians["sandbox (auto)"]
    missed = []
    if target > MAX_SLOWDOWN_VS_EXEC * exec_median:
        missed.append(f"sandbox is {target / exec_median:.1f}x exec (target <= {MAX_SLOWDOWN_VS_EXEC}x)")
    if cold_median < MIN_SPEEDUP_VS_COLD * target:
        missed.append(f"sandbox is only {cold_median / target:.1f}x faster than cold "
                      f"(target >= {MIN_SPEEDUP_VS_COLD}x)")
    print("targets: " + ("MISSED: " + "; ".join(missed) if missed else
                         f"met (<= {MAX_SLOWDOWN_VS_EXEC:g}x exec, >= {MIN_SPEEDUP_VS_COLD:g}x faster than cold)"))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
