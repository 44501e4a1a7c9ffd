"""Runs tab: what selecting one more run costs, today's code against the code before the redraw work.

Issue 19's target: with 50 runs x 5,000 steps x 4 metrics selected, adding a
run to the selection redraws in <= 0.5 s. Each side runs in its own process
with its own fresh store filled by its own `populate` (the two store formats
differ): it selects 49 runs, then times adding the 50th -- `select_runs`,
`build_view` and turning the three charts into the JSON Gradio sends
(`gr.Plot.postprocess`) -- five times, and reports the median. The baseline
is the commit named in BASELINE (`git archive` into a temporary folder), so
both are measured in the same run on the same machine; without git history
(a shallow clone, a Space) only our figure is reported.

When Debian's Chromium and Playwright are installed, the three charts each
side sends are also drawn with plotly.js in a headless page (software
rendering, as on a machine without a GPU), median of five: what the browser
pays before the user sees the new line.

    python bench/bench_runs_redraw.py [--quick] [--json]     (--quick: 20 runs x 2,000 steps)
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import Figure, finish, ratio  # noqa: E402

BASELINE = "0a8eaf0"  # main when issue 19 was filed: plotly figure objects, WebGL lines
TARGET_SECONDS = 0.5
CHROMIUM = "/usr/bin/chromium"
REPEATS = 5


def measure(tree: Path, runs: int, steps: int, payload_path: Path) -> dict:
    """In this process: fill a store with the code at `tree`, time adding the last run; write its payload."""
    sys.path.insert(0, str(tree))
    sys.path.insert(0, str(tree / "bench"))
    os.environ["WORKBENCH_HOME"] = tempfile.mkdtemp(prefix="bench-runs-redraw-")
    import gradio as gr
    from bench_runs_poll import populate

    from workbench.store import Store
    from workbench.ui import tab_runs
    from workbench.ui.deployment import Viewer

    store = Store()
    run_ids = populate(store, runs, steps)
    plot = gr.Plot()

    def redraw(session, chosen_ids):
        session, chosen = tab_runs.select_runs(store, Viewer(), session, chosen_ids)
        view = tab_runs.build_view(session, chosen, None, 0.6)
        charts = (view.metric_figure, view.rewards_figure, view.tool_figure)
        # today's charts are plain JSON (`.plot()`); the baseline's are plotly figures Gradio serialises
        return session, [plot.postprocess(c.plot() if hasattr(c, "plot") else c).plot for c in charts]

    session, _ = redraw(None, run_ids[:-1])
    seconds = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        _, payload = redraw(session, run_ids)
        seconds.append(time.perf_counter() - started)
        redraw(session, run_ids[:-1])
    payload_path.write_text(json.dumps([json.loads(chart) for chart in payload]))
    return {"seconds": statistics.median(seconds), "bytes": sum(map(len, payload))}


def run_side(tree: Path, runs: int, steps: int, payload_path: Path) -> dict:
    argv = [sys.executable, __file__, "--measure", str(tree), "--runs", str(runs), "--steps", str(steps),
            "--payload", str(payload_path)]
    done = subprocess.run(argv, cwd=tree, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"measuring {tree} failed: {(done.stdout + done.stderr)[-1500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def baseline_tree(into: Path) -> Path | None:
    """The BASELINE commit's files under `into`, or None without git or that commit."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", BASELINE], capture_output=True)
    if archive.returncode:
        return None
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def render_ms(payload_paths: list[Path]) -> list[float] | None:
    """Median ms for plotly.js to draw each payload's three charts in headless Chromium; None without it."""
    try:
        import plotly
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not Path(CHROMIUM).exists():
        return None
    script = (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_text()
    draw = """async (figs) => { const out = [];
      for (let k = 0; k < REPEATS; k++) { const t = performance.now();
        for (const [i, id] of ['a', 'b', 'c'].entries()) await Plotly.react(id, figs[i].data, figs[i].layout);
        await new Promise(r => requestAnimationFrame(() => r())); out.push(performance.now() - t);
        for (const id of ['a', 'b', 'c']) Plotly.purge(id); }
      return out; }""".replace("REPEATS", str(REPEATS))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_content("<div id=a style='width:1300px'></div><div id=b style='width:640px'></div>"
                         "<div id=c style='width:640px'></div>")
        page.add_script_tag(content=script)
        medians = [statistics.median(page.evaluate(draw, json.loads(path.read_text()))) for path in payload_paths]
        browser.close()
    return medians


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 runs x 2,000 steps")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    parser.add_argument("--runs", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--payload", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    runs = args.runs or (20 if args.quick else 50)
    steps = args.steps or (2000 if args.quick else 5000)
    if args.measure:
        print(json.dumps(measure(args.measure, runs, steps, args.payload)))
        return 0

    work = Path(tempfile.mkdtemp(prefix="bench-runs-redraw-"))
    ours = run_side(ROOT, runs, steps, work / "ours.json")
    (work / "baseline").mkdir()
    base_dir = baseline_tree(work / "baseline")
    base = run_side(base_dir, runs, steps, work / "baseline.json") if base_dir else None
    size = f"{runs} runs x {steps:,} steps x 4 metrics"
    print(f"adding the {runs}th run ({size}): ours {ours['seconds']:.3f} s ({ours['bytes'] / 1e6:.1f} MB sent)"
          + (f", baseline {BASELINE} {base['seconds']:.3f} s ({base['bytes'] / 1e6:.1f} MB)" if base else
             f", baseline {BASELINE} not available (no git history)"))
    figures = [Figure("runs_redraw_one_more_run", ours["seconds"], "s", f"ours <= {TARGET_SECONDS} s",
                      ours["seconds"] <= TARGET_SECONDS, baseline=base["seconds"] if base else None,
                      ratio=ratio(ours["seconds"], base["seconds"]) if base else None,
                      note=f"{size}; select + build_view + the JSON Gradio sends, median of {REPEATS}; "
                           f"baseline = commit {BASELINE}, same run; ratio = ours / baseline")]
    drawn = render_ms([work / "ours.json"] + ([work / "baseline.json"] if base else []))
    if drawn:
        figures.append(Figure("runs_render_chromium", drawn[0], "ms", "ratio <= 1.0 (ours / baseline)",
                              len(drawn) < 2 or drawn[0] <= drawn[1], baseline=drawn[1] if len(drawn) > 1 else None,
                              ratio=ratio(drawn[0], drawn[1]) if len(drawn) > 1 else None,
                              note="plotly.js drawing the three charts in headless Chromium without a GPU, "
                                   f"median of {REPEATS}"))
    return finish(figures, args.json)


if __name__ == "__main__":
    sys.exit(main())
