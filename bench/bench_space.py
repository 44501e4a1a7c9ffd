"""Space benchmark: cold start of the built Space to its first answer, run as a Space runs it.

Builds the Space folder (`python -m workbench space build`), starts it with
a fresh workbench home the way bench/space_host.py launches a Space (no
bubblewrap on PATH, namespaces refused by seccomp, a non-root user where the
interpreter allows), and times: the app answering HTTP, then a visitor's
first demo coding question answered through the API (the demo model loads
and the Landlock sandbox starts on the way). Target: first answer <= 15 s
from process start. Exits non-zero if it is missed or the answer fails.

    python bench/bench_space.py [--quick] [--json] [--repeats 3]   (--quick: one cold start)
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import space_host
from bench.report import Figure, finish
from workbench import space
from workbench.ui.assets import demo_image, demo_names

TARGET_S = 15.0


def one_cold_start(folder: Path, python: str, uid: int | None, work: Path, index: int) -> tuple[float, float, str]:
    log = work / f"app-{index}.log"
    started = time.monotonic()
    process, url = space_host.launch(folder, python, work / f"home-{index}", log, uid)
    try:
        up = space_host.wait_until_up(url, process)
        name = next(n for n in demo_names() if n.startswith("rotation180:"))
        status, _ = space_host.ask_demo_coding_item(url, name, demo_image(name).question)
        answered = time.monotonic() - started
    finally:
        space_host.stop(process)
    return up, answered, status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter with the Space's requirements (default: this one)")
    parser.add_argument("--quick", action="store_true", help="one cold start")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    parser.add_argument("--repeats", type=int)
    args = parser.parse_args()
    args.repeats = args.repeats or (1 if args.quick else 3)
    runnable = space_host.world_runnable(args.python)
    uid = space_host.space_user() if runnable else None
    with tempfile.TemporaryDirectory(prefix="bench-space-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)
        folder = space.build_space(work / "space", space.SpaceOptions(public_demo=True))
        results = [one_cold_start(folder, args.python, uid, work, i) for i in range(args.repeats)]
    ups, answers = [r[0] for r in results], [r[1] for r in results]
    print(f"Space cold start, {args.repeats} runs ({'non-root' if uid else 'as this user'}, namespaces refused, "
          f"no bubblewrap): app up {min(ups):.1f} / {statistics.median(ups):.1f} s (min / median), first answer "
          f"{min(answers):.1f} / {statistics.median(answers):.1f} s; target <= {TARGET_S:.0f} s")
    failures = [r[2] for r in results if not r[2].startswith("done")]
    first_answer = statistics.median(answers)
    figures = [Figure("space_cold_start_first_answer", first_answer, "s", f"ours <= {TARGET_S:g} s, answered",
                      first_answer <= TARGET_S and not failures,
                      note=f"median of {args.repeats}; app up after {statistics.median(ups):.1f} s"
                           + (f"; a run did not answer: {failures[0]}" if failures else ""))]
    return finish(figures, args.json)


if __name__ == "__main__":
    sys.exit(main())
