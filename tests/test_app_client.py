"""The app launched headless in-process and driven through gradio_client, as a remote user would.

Covers the main actions: run the playground with the demo model on a demo
item (it names the problem, runs code, answers), list traces, open a trace and step through it, view a GRPO
group, load a runs chart and export its data; and, in public-demo mode,
that a visitor cannot load another model or see another visitor's run.
"""

import socket
from contextlib import contextmanager

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError, AuthenticationError

from tests.ui_fixtures import CURVE_RUNS, seed_metric_runs
from workbench.store import Store
from workbench.ui.app import create_app, launch_options
from workbench.ui.assets import demo_image, demo_names
from workbench.ui.demo_runs import GRPO_RUN, TRACES_RUN
from workbench.ui.deployment import new_visitor_token

UPSIDE_DOWN = next(name for name in demo_names() if name.startswith("rotation180:"))
DARK = next(name for name in demo_names() if name.startswith("dark:"))
QUESTION = demo_image(UPSIDE_DOWN).question


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_app(public_demo: bool, with_auth: bool = False):
    store = Store()
    app, ctx = create_app(public_demo=public_demo, store=store)  # seeds the example runs into the empty store
    seed_metric_runs(store)
    options = launch_options(ctx.policy)
    if not with_auth:
        options.pop("auth")
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **options)
    try:
        yield f"http://127.0.0.1:{port}/", ctx
    finally:
        app.close()


def playground_args(client: Client, **overrides) -> list:
    """Positional arguments of /run_playground from its parameter labels (defaults elsewhere)."""
    info = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/run_playground"]
    args = [overrides.get(p["label"], p["parameter_default"]) for p in info["parameters"]]
    if "visitor" in overrides:  # a public demo's last input: the visitor token (a browser state has no label)
        args[-1] = overrides["visitor"]
    return args


def test_playground_traces_and_runs_through_the_api():
    with running_app(public_demo=False) as (url, ctx):
        client = Client(url, verbose=False)
        args = playground_args(client, **{"Demo image": UPSIDE_DOWN, "Question": QUESTION,
                                          "Max new tokens": 256, "Max turns": 4})
        status, transcript, run_id, trace_id = client.predict(*args, api_name="/run_playground")
        assert status.startswith("done") and trace_id and run_id
        assert "Sample 0" in transcript and "Turn 1 of" in transcript
        trace = ctx.store.get_trace(trace_id)
        assert trace.question == QUESTION and trace.model_id == "demo-tiny-qwen2.5-vl"
        assert [turn.action for turn in trace.turns] == ["problem", "code", "answer"]
        assert trace.turns[1].tool_call.ok and trace.turns[1].tool_call.output_images

        _, table = client.predict("all", "", "all", "", "", api_name="/list_traces")
        assert trace_id in [row[-1] for row in table["data"]]

        opened = client.predict(trace_id, api_name="/open_trace")
        assert opened[0] == trace_id and "turn 1 of" in opened[2] and QUESTION in opened[3]
        assert opened[5], "the gallery shows the input image"

        group_rows = [row for row in table["data"] if row[7] == GRPO_RUN]
        group = client.predict(group_rows[0][-1], api_name="/group_view")
        samples = ctx.store.get_run(GRPO_RUN)["config"]["num_generations"]  # 8 in the shipped run
        assert samples > 1 and group.count('class="wb-card"') == samples  # one card per completion of the prompt

        run_list = client.predict([], api_name="/list_runs")  # also what the Runs tab does when opened
        assert set(CURVE_RUNS) <= {value for _, value in run_list["choices"]}
        chart = client.predict(list(CURVE_RUNS), None, 0.6, api_name="/load_runs_chart")
        metric_update, metric_plot = chart[0], chart[1]
        assert metric_update["value"] == "reward" and metric_plot["type"] == "plotly"
        assert "collapsing" in chart[4]
        shipped = client.predict([GRPO_RUN], None, 0.0, api_name="/load_runs_chart")
        assert shipped[0]["value"] == "eval_reward" and shipped[1]["type"] == "plotly"
        exported = client.predict(list(CURVE_RUNS), 0.6, api_name="/export_chart_csv")
        with open(exported, encoding="utf-8") as handle:
            assert handle.readline().strip() == "run,run_id,metric,step,value,smoothed"


def test_public_demo_refuses_other_models_and_isolates_visitors():
    """A visitor is the token their browser keeps: it survives a reload, and a copied session hash is worth nothing."""
    alice_token, bob_token = new_visitor_token(), new_visitor_token()
    with running_app(public_demo=True) as (url, ctx):
        alice, bob = Client(url, verbose=False), Client(url, verbose=False)
        # Gradio's dropdown validation refuses it first; the policy check behind it is tested directly
        # in test_ui_callbacks.py.
        with pytest.raises(AppError, match="only the embedded model|not in the list of choices"):
            alice.predict(*playground_args(alice, **{"Demo image": DARK, "Question": "Which colour?",
                                                      "Model": "/models/any", "visitor": alice_token}),
                          api_name="/run_playground")
        with pytest.raises(AppError, match="no visitor token"):  # an API client must bring its own token
            alice.predict(*playground_args(alice, **{"Demo image": DARK, "Question": "Which colour?",
                                                      "visitor": "guessable"}), api_name="/run_playground")
        args = playground_args(alice, **{"Demo image": DARK, "Question": "Which colour?",
                                         "Max new tokens": 16, "Max turns": 1, "visitor": alice_token})
        _, _, run_id, trace_id = alice.predict(*args, api_name="/run_playground")
        assert ctx.store.get_run(run_id)["config"]["visitor"] == alice_token

        def rows(client, token):
            return client.predict("all", "", "all", "", "", "episodes", token, api_name="/list_traces")[1]["data"]

        assert trace_id in [row[-1] for row in rows(alice, alice_token)]
        reloaded = Client(url, verbose=False)  # a reload: a new session, the same token from localStorage
        assert reloaded.session_hash != alice.session_hash and trace_id in [r[-1] for r in rows(reloaded, alice_token)]
        bob_rows = rows(bob, bob_token)
        shipped = ctx.store.count_traces(TRACES_RUN) + ctx.store.count_traces(GRPO_RUN)
        assert trace_id not in [row[-1] for row in bob_rows] and len(bob_rows) == min(shipped, 200)
        bob.session_hash = alice.session_hash  # Bob copies Alice's session hash: still only Bob
        assert trace_id not in [row[-1] for row in rows(bob, bob_token)]
        with pytest.raises(AppError, match="no trace"):
            bob.predict(trace_id, bob_token, api_name="/open_trace")


def test_workbench_auth_guards_the_api(monkeypatch):
    monkeypatch.setenv("WORKBENCH_AUTH", "ann:s3cret")
    with running_app(public_demo=True, with_auth=True) as (url, _):
        with pytest.raises(AuthenticationError):
            Client(url, verbose=False)
        client = Client(url, auth=("ann", "s3cret"), verbose=False)
        assert "/run_playground" in client.view_api(return_format="dict", print_info=False)["named_endpoints"]
