"""The agent runner: batched turns, tool calls, stop reasons, streaming and storage.

Model turns come from a ReplayBackend (recorded turns, as when re-running
tools over an imported chain) so each path is exercised deterministically;
the image tool here is a plain in-process rotate, standing in for the
sandbox only to keep these tests about the runner.
"""

from pathlib import Path

import pytest
from PIL import Image

from workbench.agent.runner import AgentItem, AgentRunner, RunnerConfig
from workbench.agent.tools import ToolContext
from workbench.backends.replay import ReplayBackend
from workbench.store import Store
from workbench.trace import ToolCall

PROBLEM = "<think>upside down</think><problem>{'rotation180'}</problem>"
CODE = "<think>rotate it</think><code>```python\nrotate\n```</code>"
ANSWER = "<think>readable now</think><answer>SALE</answer>"


class RotateTool:
    """A trivial image tool: rotates the current image 180 degrees into the episode folder."""

    name = "code"

    def __init__(self):
        self.calls = 0

    def __call__(self, argument: str, context: ToolContext) -> ToolCall:
        self.calls += 1
        if "crash" in argument:
            raise RuntimeError("tool blew up")
        context.workdir.mkdir(parents=True, exist_ok=True)
        out = context.workdir / f"out{self.calls}.png"
        Image.open(context.image).rotate(180).save(out)
        return ToolCall(self.name, argument, "", stdout="rotated", output_files=[str(out)])


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "sign.png"
    picture = Image.new("RGB", (64, 48), "white")
    picture.paste((200, 0, 0), (0, 0, 20, 10))
    picture.save(path)
    return path


def make_runner(turns, config=None, tool=None):
    store = Store()
    run = store.create_run("test", "eval")
    backend = ReplayBackend(turns)
    runner = AgentRunner(backend, {"code": tool or RotateTool()}, config or RunnerConfig(tools=("code",)),
                         store=store, run_id=run)
    return runner, backend, store, run


def test_problem_code_answer_episode(image):
    runner, backend, store, run = make_runner({"What is written?": [PROBLEM, CODE, ANSWER]})
    (trace,) = runner.run([AgentItem("What is written?", [image], item_id="a", gold=["SALE"])])
    assert trace.stop_reason == "answered" and trace.final_answer == "SALE"
    assert [t.action for t in trace.turns] == ["problem", "code", "answer"]
    assert "<tips>" in trace.turns[0].feedback
    output = trace.turns[1].tool_call.output_images[0]
    assert trace.turns[2].image == output != trace.images[0]  # the answer turn saw the tool's image
    stored = store.get_trace(trace.id)
    assert stored.to_dict() == trace.to_dict()
    assert [m["role"] for m in stored.messages][:3] == ["system", "user", "assistant"]


def test_one_generate_call_per_turn_for_the_whole_batch(image):
    turns = {"short?": [ANSWER], "long?": [PROBLEM, CODE, ANSWER]}
    config = RunnerConfig(tools=("code",), samples=3, temperature=0.7)
    runner, backend, store, run = make_runner(turns, config)
    traces = runner.run([AgentItem("short?", [image], item_id="s"), AgentItem("long?", [image], item_id="l")])
    assert len(traces) == 6 and backend.calls == 3
    assert [(t.item_id, t.sample_index) for t in traces] == [("s", 0), ("s", 1), ("s", 2),
                                                            ("l", 0), ("l", 1), ("l", 2)]
    assert len({t.group_id for t in traces}) == 2
    assert store.count_traces(run) == 6


def test_stream_yields_every_turn(image):
    runner, *_ = make_runner({"q?": [PROBLEM, CODE, ANSWER]})
    events = list(runner.stream([AgentItem("q?", [image])]))
    assert [(e.turn.index, e.done) for e in events] == [(0, False), (1, False), (2, True)]


def test_parse_error_stops_or_is_retried(image):
    bad = "<think>I will just talk</think> the answer is SALE"
    runner, *_ = make_runner({"q?": [bad, ANSWER]})
    (trace,) = runner.run([AgentItem("q?", [image])])
    assert trace.stop_reason == "parse_error" and "no action" in trace.turns[0].parse_error
    runner, *_ = make_runner({"q?": [bad, ANSWER]}, RunnerConfig(tools=("code",), retry_parse_errors=True))
    (trace,) = runner.run([AgentItem("q?", [image])])
    assert trace.stop_reason == "answered" and len(trace.turns) == 2


def test_max_turns_and_tool_errors(image):
    loop = [CODE] * 5
    runner, *_ = make_runner({"q?": loop}, RunnerConfig(tools=("code",), max_turns=3))
    (trace,) = runner.run([AgentItem("q?", [image])])
    assert trace.stop_reason == "max_turns" and len(trace.turns) == 3
    crash = "<think>x</think><code>crash</code>"
    runner, *_ = make_runner({"q?": [crash] * 2}, RunnerConfig(tools=("code",), max_turns=2))
    (trace,) = runner.run([AgentItem("q?", [image])])
    assert trace.stop_reason == "tool_error"
    assert "RuntimeError: tool blew up" in trace.turns[0].tool_call.error


def test_backend_error_ends_the_episode(image):
    runner, *_ = make_runner({"q?": [PROBLEM]})  # nothing left to replay on turn 2
    (trace,) = runner.run([AgentItem("q?", [image])])
    assert trace.stop_reason == "error" and "backend error" in trace.turns[-1].parse_error


def test_unavailable_action_is_a_parse_error(image):
    runner, *_ = make_runner({"q?": ["<think>x</think><search>who</search>"]})
    (trace,) = runner.run([AgentItem("q?", [image])])
    assert trace.stop_reason == "parse_error" and "not available" in trace.turns[0].parse_error


def test_chat_layout_runs_the_same_episode(image):
    config = RunnerConfig(tools=("code",), layout="chat")
    runner, *_ = make_runner({"q?": [PROBLEM, CODE, ANSWER]}, config)
    (trace,) = runner.run([AgentItem("q?", [image])])
    assert trace.stop_reason == "answered" and trace.layout == "chat"


@pytest.mark.parametrize("kwargs, message", [
    ({"tools": ("shell",)}, "unknown"),
    ({"samples": 4}, "temperature"),
    ({"max_turns": 0}, "max_turns"),
    ({"protocol": "xml"}, "protocol"),
])
def test_bad_config_says_what_to_change(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RunnerConfig(**kwargs)


def test_bad_items_are_refused(image, tmp_path):
    with pytest.raises(ValueError, match="question is empty"):
        AgentItem("  ", [image])
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    runner, *_ = make_runner({"q?": [ANSWER]})
    with pytest.raises(ValueError, match="corrupt.jpg"):
        runner.run([AgentItem("q?", [corrupt])])
