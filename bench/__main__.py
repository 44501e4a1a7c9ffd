"""python -m bench [--quick] [--json] [--only NAME ...]: run every benchmark and print one table.

Each bench/bench_*.py runs in its own process, one after another (never two
at once: they would measure each other), with --json (and --quick: a quick
size each, the whole set in about 4 minutes on 2 cores); every figure it
reports -- measured beside its baseline and its anchor in that same process
run -- goes into one table: figure, ours, baseline, anchor, ratio, target,
met. --json prints instead one JSON object {figure: {"ours", "baseline",
"anchor", "ratio", "target", "met", "unit", "note"}}. A bench that fails to
run is reported as a figure `<bench>_ran` that is not met. Exit status 1
when any target is missed. The anchors come from bench/requirements.txt.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))

from bench.report import JSON_MARK, Figure, table  # noqa: E402

# Fast and load-sensitive first; the long model benches last.
ORDER = ("metrics", "search", "runs_poll", "runs_redraw", "store", "scoring", "sandbox", "hardening",
         "paper_artifacts", "rollout", "space", "demo_model", "callback", "train")


def bench_names() -> list[str]:
    found = {path.stem.removeprefix("bench_") for path in BENCH_DIR.glob("bench_*.py")}
    return [name for name in ORDER if name in found] + sorted(found - set(ORDER))


def run_bench(name: str, quick: bool) -> tuple[dict, float, str]:
    """Run bench/bench_<name>.py --json; its figures, seconds taken, and the tail of its output on failure."""
    argv = [sys.executable, str(BENCH_DIR / f"bench_{name}.py"), "--json"] + (["--quick"] if quick else [])
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=BENCH_DIR.parent, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    lines = [line for line in done.stdout.splitlines() if line.startswith(JSON_MARK)]
    if not lines:
        return {}, seconds, (done.stdout + done.stderr)[-2000:]
    return json.loads(lines[-1][len(JSON_MARK):]), seconds, ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="each bench at its quick size")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--only", nargs="+", metavar="NAME", help=f"run only these ({', '.join(bench_names())})")
    args = parser.parse_args(argv)
    names = bench_names()
    unknown = sorted(set(args.only or ()) - set(names))
    if unknown:
        parser.error(f"unknown bench {', '.join(unknown)}; known: {', '.join(names)}")
    figures: dict[str, dict] = {}
    timings = []
    started = time.perf_counter()
    for name in args.only or names:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        found, seconds, failure = run_bench(name, args.quick)
        timings.append(f"{name} {seconds:.0f} s")
        if failure:
            print(f"[bench] {name} did not report figures:\n{failure}", file=sys.stderr, flush=True)
            found = {f"{name}_ran": Figure(f"{name}_ran", 0.0, "", "runs to the end", False,
                                            note="the bench failed; see its output").as_json()}
        figures.update(found)
    total = time.perf_counter() - started
    if args.json:
        print(json.dumps(figures, indent=1))
    else:
        print(table([Figure(name, **values) for name, values in figures.items()]))
        for name, values in figures.items():
            if values.get("note"):
                print(f"  {name}: {values['note']}")
        print(f"{'quick' if args.quick else 'full'} run: {total:.0f} s ({', '.join(timings)})")
    return 0 if all(values["met"] for values in figures.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
