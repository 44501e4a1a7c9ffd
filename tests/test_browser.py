"""The app in Debian's Chromium through Playwright: playground run on a demo image, trace stepping, runs chart.

Screenshots go to test-artifacts/ (gitignored) so a person can look at what
the browser showed. Skips cleanly when /usr/bin/chromium is absent.
"""

import re
import socket
from pathlib import Path

import pytest

from tests.ui_fixtures import seed_metric_runs
from workbench.store import Store
from workbench.ui.app import create_app, launch_options
from workbench.ui.assets import demo_image, demo_names
from workbench.ui.demo_runs import GRPO_RUN

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [pytest.mark.browser, pytest.mark.slow]
UPSIDE_DOWN = next(name for name in demo_names() if name.startswith("rotation180:"))


@pytest.fixture
def app_url():
    store = Store()
    app, ctx = create_app(public_demo=False, store=store)  # seeds the example runs into the empty store
    seed_metric_runs(store)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    options = launch_options(ctx.policy)
    options.pop("auth")
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **options)
    yield f"http://127.0.0.1:{port}/"
    app.close()


@pytest.fixture
def public_url():
    store = Store()
    app, ctx = create_app(public_demo=True, store=store)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    options = launch_options(ctx.policy)
    options.pop("auth")
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **options)
    yield f"http://127.0.0.1:{port}/", store
    app.close()


@pytest.fixture
def page():
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        yield page
        browser.close()


def pick(page, dropdown_id: str, option: str) -> None:
    page.locator(f"#{dropdown_id} input").click()
    page.get_by_role("option", name=option).click()


def test_playground_trace_stepper_and_runs_chart(app_url, page):
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    page.goto(app_url)

    # Playground: a demo item fills the question and shows its preview; the demo model names the problem,
    # writes code the sandbox runs and answers; the trace opens in Traces, where we step to the code turn.
    pick(page, "pg-demo", UPSIDE_DOWN)
    expect(page.locator("#pg-question textarea")).to_have_value(demo_image(UPSIDE_DOWN).question)
    expect(page.locator("#pg-preview img").first).to_be_visible()
    page.locator("#pg-run").click()
    expect(page.get_by_role("tab", name="Traces", selected=True)).to_be_visible(timeout=120_000)
    expect(page.locator("#tr-position")).to_contain_text("turn 1 of 3")
    expect(page.locator("#tr-header")).to_contain_text(demo_image(UPSIDE_DOWN).question)
    expect(page.locator("#tr-turn-html")).to_contain_text("<problem>")
    expect(page.locator("#tr-gallery img").first).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "browser-1-playground-trace.png"), full_page=True)
    page.locator("#tr-next").click()
    expect(page.locator("#tr-position")).to_contain_text("turn 2 of 3")
    expect(page.locator("#tr-code")).to_contain_text("cv2.rotate")
    expect(page.locator("#tr-gallery")).to_contain_text("after: tool output 1")
    page.screenshot(path=str(ARTIFACTS / "browser-2-trace-code-turn.png"), full_page=True)
    page.locator("#tr-prev").click()
    expect(page.locator("#tr-position")).to_contain_text("turn 1 of 3")

    # Runs opens with the newest runs that logged metrics (the two example training runs) drawn.
    page.get_by_role("tab", name="Runs").click()
    expect(page.locator("#rn-runs")).to_contain_text("curves A")
    expect(page.locator("#rn-runs")).to_contain_text("curves B")
    expect(page.locator("#rn-metric-plot .js-plotly-plot")).to_be_visible()
    expect(page.locator("#rn-warning")).to_contain_text("Tool use is collapsing")
    page.screenshot(path=str(ARTIFACTS / "browser-3-runs-chart.png"), full_page=True)


def test_train_form_fills_demo_data_and_previews_the_command(app_url, page):
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    page.goto(app_url)
    page.get_by_role("tab", name="Train").click()
    page.locator("#tn-demo").click()
    command = page.locator("#tn-command")
    expect(command).to_contain_text("-m trainers.grpo --run-id NEW_RUN_ID", timeout=60_000)
    expect(command).to_contain_text("--mode episodes")
    page.get_by_label("SFT: cold start on recorded traces").check()
    expect(command).to_contain_text("-m trainers.sft --run-id NEW_RUN_ID")
    expect(page.get_by_label("Trace runs")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "browser-4-train-form.png"), full_page=True)
    page.get_by_role("tab", name="Search cache").click()
    expect(page.locator("#sc-summary")).to_contain_text("Nothing has been searched yet")


def test_runs_chart_shows_the_shipped_grpo_runs_held_out_reward(app_url, page):
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    page.goto(app_url)
    page.get_by_role("tab", name="Runs").click()
    expect(page.locator("#rn-runs")).to_contain_text(GRPO_RUN)  # opened with it: among the newest with metrics
    expect(page.locator("#rn-metric input")).to_have_value("eval_reward")
    expect(page.locator("#rn-metric-plot .js-plotly-plot")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "browser-5-demo-grpo-held-out-reward.png"), full_page=True)


# The colour of the Runs chart's tick labels and of the chart's page background, as the browser renders them.
CHART_COLOURS = """() => {
  const tick = document.querySelector('#rn-metric-plot .yaxislayer-above text');
  const page = document.querySelector('.gradio-container');
  return {tick: getComputedStyle(tick).fill, page: getComputedStyle(page).backgroundColor,
          paper: getComputedStyle(document.querySelector('#rn-metric-plot .main-svg')).backgroundColor};
}"""


def brightness(css_colour: str) -> float:
    """0 (black) to 255 (white) for an rgb()/rgba() colour."""
    red, green, blue = (float(part) for part in re.findall(r"[\d.]+", css_colour)[:3])
    return 0.299 * red + 0.587 * green + 0.114 * blue


def test_runs_charts_follow_dark_mode(app_url, page):
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    page.goto(app_url + "?__theme=dark")
    page.get_by_role("tab", name="Runs").click()
    expect(page.locator("#rn-metric-plot .yaxislayer-above text").first).to_be_visible(timeout=30_000)
    colours = page.evaluate(CHART_COLOURS)
    assert brightness(colours["page"]) < 80, colours  # the page is dark ...
    assert brightness(colours["tick"]) > 180, colours  # ... and the chart's labels are light on it
    assert colours["paper"] in ("rgba(0, 0, 0, 0)", "transparent"), colours  # no white paper behind the chart
    page.screenshot(path=str(ARTIFACTS / "browser-9-runs-dark-mode.png"), full_page=True)


# Records the first moment the transcript shows a code turn's work, and what the status line said then.
WATCH_TOOL_WORK = """() => {
  window.__toolWork = null;
  new MutationObserver(() => {
    const t = document.querySelector('#pg-transcript');
    if (!window.__toolWork && t && t.querySelector('.wb-code') && t.querySelector('.wb-figure img')) {
      window.__toolWork = {status: document.querySelector('#pg-status').innerText, html: t.innerHTML};
    }
  }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def test_playground_streams_each_tools_work_and_marks_the_answer(app_url, page):
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    page.goto(app_url)
    expect(page.locator("#pg-isolation")).to_contain_text("Model code runs isolated by")
    pick(page, "pg-demo", UPSIDE_DOWN)
    expect(page.locator("#pg-question textarea")).to_have_value(demo_image(UPSIDE_DOWN).question)
    page.evaluate(WATCH_TOOL_WORK)
    page.locator("#pg-run").click()
    expect(page.get_by_role("tab", name="Traces", selected=True)).to_be_visible(timeout=120_000)
    seen = page.evaluate("window.__toolWork")
    assert seen is not None, "the code turn's work never showed in the Playground"
    assert not seen["status"].startswith("done"), "it showed only once the run had ended"
    assert "cv2" in seen["html"] and "after" in seen["html"]  # the code and the image it wrote
    page.get_by_role("tab", name="Playground").click()
    verdict = page.locator("#pg-transcript .wb-verdict .wb-badge")
    expect(verdict).to_have_text(re.compile(r"^(right|partly right|wrong)$"))
    expect(page.locator("#pg-status")).to_contain_text("done")
    page.screenshot(path=str(ARTIFACTS / "browser-6-playground-tool-work.png"), full_page=True)


def test_a_public_visitor_keeps_their_runs_across_a_reload(public_url, page):
    from playwright.sync_api import expect

    url, store = public_url
    ARTIFACTS.mkdir(exist_ok=True)
    page.goto(url)
    pick(page, "pg-demo", UPSIDE_DOWN)
    expect(page.locator("#pg-question textarea")).to_have_value(demo_image(UPSIDE_DOWN).question)
    page.locator("#pg-run").click()
    expect(page.get_by_role("tab", name="Traces", selected=True)).to_be_visible(timeout=120_000)
    trace_id = page.locator("#tr-trace-id textarea, #tr-trace-id input").first.input_value()
    assert store.get_trace(trace_id) is not None
    page.reload()
    page.get_by_role("tab", name="Traces").click()
    expect(page.locator("#tr-table")).to_contain_text(trace_id[:12], timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "browser-7-public-visitor-after-reload.png"), full_page=True)
    other = page.context.browser.new_page()  # another browser profile: another visitor
    other.goto(url)
    other.get_by_role("tab", name="Traces").click()
    expect(other.locator("#tr-table")).to_be_visible()
    other.wait_for_timeout(2000)
    assert trace_id[:12] not in other.locator("#tr-table").inner_text()


# Every distinct text the Train tab's progress line shows, with the milliseconds since the watch began.
WATCH_PROGRESS = """() => {
  window.__progress = [];
  const t0 = performance.now();
  new MutationObserver(() => {
    const bar = document.querySelector('#tn-progress .wb-progress, #tn-progress .wb-muted');
    const text = bar ? bar.innerText : '';
    const seen = window.__progress;
    if (text && (!seen.length || seen[seen.length - 1].text !== text)) {
      seen.push({text: text, ms: performance.now() - t0});
    }
  }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def test_a_launched_demo_training_job_shows_its_progress_changing_within_15_seconds(app_url, page):
    from playwright.sync_api import expect

    from workbench.ui.context import ModelWarmup

    ModelWarmup().start().join(300)  # as `python app.py` does at start: a user's app has its libraries loaded

    ARTIFACTS.mkdir(exist_ok=True)
    page.goto(app_url)
    page.get_by_role("tab", name="Train").click()
    page.locator("#tn-demo").click()
    expect(page.locator("#tn-command")).to_contain_text("-m trainers.grpo", timeout=60_000)
    page.evaluate(WATCH_PROGRESS)
    page.locator("#tn-launch").click()
    expect(page.locator("#tn-message")).to_contain_text("Launched job", timeout=30_000)
    phase = "/starting: importing|loading|evaluation|training: step/"
    page.wait_for_function(f"window.__progress.some(p => p.ms < 15000 && {phase}.test(p.text))", timeout=20_000)
    texts = [entry["text"] for entry in page.evaluate("window.__progress")]
    assert len(texts) >= 2 and texts[0] != texts[-1], texts
    expect(page.locator("#tn-status")).to_contain_text("Now:")
    page.screenshot(path=str(ARTIFACTS / "browser-8-train-progress.png"), full_page=True)
    job = page.locator("#tn-job-id input, #tn-job-id textarea").first.input_value()

    page.reload()  # the page re-attaches to the running job and shows the settings it was launched with
    page.get_by_role("tab", name="Train").click()
    expect(page.locator("#tn-status")).to_contain_text(f"Job {job}", timeout=30_000)
    expect(page.get_by_label("Data files")).to_have_value(re.compile("mat_coding_mini.json"))
    expect(page.locator("#tn-command")).to_contain_text("--mode episodes")
    page.locator("#tn-cancel").click()
    expect(page.locator("#tn-status")).to_contain_text("cancelled", timeout=30_000)
