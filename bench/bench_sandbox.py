"""Benchmark: a sandboxed OpenCV call against in-process exec and a cold (isolated) interpreter per call.

Runs the same rotate + brighten program on a 720x720 image four ways in one
run (interleaved, so machine load hits all alike):
- plain in-process `exec` (the floor; no isolation at all),
- `CodeSandbox.run` (warm worker, isolation "auto", plus the Landlock fallback
  when it is available, reported but not the target),
- a cold `bwrap ... python -c` per call: the same bubblewrap namespaces and
  mounts as the sandbox, a fresh interpreter importing numpy, cv2 and PIL
  (what isolating each call naively costs; skipped where bwrap cannot run),
- a cold plain `python -c` per call, for reference.
Targets (issues 3 and 21): sandbox median <= 3.5x exec and >= 5x faster than
the cold bwrap call. Exit status 1 when a target is missed.

    python bench/bench_sandbox.py [--quick] [--json] [--calls 40] [--cold-calls 12]
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
from bench.report import Figure, finish, ratio
from tools import _sandbox_launch as launch
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
MAX_SLOWDOWN_VS_EXEC = 3.5
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


def cold_bwrap_argv(code: str, folder: Path) -> list[str] | None:
    """`bwrap <the sandbox's namespaces and mounts> python -c code`, the folder bound; None without bwrap."""
    try:
        plan = launch.plan("bwrap", 256 * 1024 * 1024)
    except SandboxUnavailable:
        return None
    argv = plan.argv[:plan.argv.index("--")] + ["--bind", str(folder), str(folder)]
    argv += ["--", launch.interpreter(), "-c", code]
    return argv if subprocess.run(argv[:-1] + ["pass"], capture_output=True).returncode == 0 else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 calls, 6 cold")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    parser.add_argument("--calls", type=int)
    parser.add_argument("--cold-calls", type=int)
    args = parser.parse_args()
    args.calls = args.calls or (20 if args.quick else 40)
    args.cold_calls = args.cold_calls or (6 if args.quick else 12)
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as scratch:
        return measure(args, Path(scratch))


def measure(args, folder: Path) -> int:
    """Time the four ways, print the table, return the exit status."""
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
    cold_bwrap = cold_bwrap_argv("\n".join(cold), folder)
    times: dict[str, list[float]] = {"in-process exec": [], "cold python -c": []}
    if cold_bwrap:
        times["cold bwrap python -c"] = []
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
            if cold_bwrap:
                times["cold bwrap python -c"].append(timed(lambda: subprocess.run(cold_bwrap, check=True)))
    for sandbox in sandboxes.values():
        sandbox.close()

    medians = {name: statistics.median(values) for name, values in times.items()}
    exec_median, cold_median = medians["in-process exec"], medians.get("cold bwrap python -c")
    print(f"720x720 rotate + brighten, {args.calls} calls ({args.cold_calls} cold); "
          f"isolation auto = {sandboxes['sandbox (auto)'].isolation_in_use}")
    print(f"{'way':30s} {'median ms':>10s} {'p90 ms':>8s} {'x exec':>8s}")
    for name, values in times.items():
        p90 = sorted(values)[int(0.9 * (len(values) - 1))]
        print(f"{name:30s} {medians[name] * 1000:10.1f} {p90 * 1000:8.1f} {medians[name] / exec_median:8.1f}")
    target = medians["sandbox (auto)"]
    figures = [
        Figure("sandbox_vs_exec", target * 1000, "ms", f"ratio <= {MAX_SLOWDOWN_VS_EXEC:g} (sandbox / exec)",
               target <= MAX_SLOWDOWN_VS_EXEC * exec_median, baseline=exec_median * 1000,
               ratio=ratio(target, exec_median), note="baseline = the same program exec'd in-process"),
    ]
    if cold_median is not None:
        figures.append(Figure(
            "sandbox_vs_cold_bwrap", target * 1000, "ms", f"ratio >= {MIN_SPEEDUP_VS_COLD:g} (cold bwrap / sandbox)",
            cold_median >= MIN_SPEEDUP_VS_COLD * target, baseline=cold_median * 1000, ratio=ratio(cold_median, target),
            note=f"baseline = a fresh bwrap + python -c per call; plain cold python -c: "
                 f"{medians['cold python -c'] * 1000:.0f} ms"))
    else:
        figures.append(Figure("sandbox_vs_cold_bwrap", target * 1000, "ms", "bwrap unavailable here", False,
                              note="bubblewrap cannot create namespaces on this machine"))
    return finish(figures, args.json)


if __name__ == "__main__":
    sys.exit(main())
