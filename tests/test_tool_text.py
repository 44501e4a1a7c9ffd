"""A model sees byte-identical tool text at inference (the agent runner) and in training (the GRPO environment).

Both paths call tools through `workbench.agent.tools.call_tool`; this runs the
same code tool through each and compares what comes back to the model, on a
success, a tool that raises, and a sandbox timeout.
"""

import pytest
from PIL import Image

from tools.code_sandbox import CodeSandbox, SandboxLimits, SandboxUnavailable
from trainers.tool_env import ToolBox, environment_class
from workbench.agent.runner import AgentItem, AgentRunner, RunnerConfig
from workbench.agent.tools import CodeTool
from workbench.backends.replay import ReplayBackend
from workbench.store import Store

QUESTION = "Which way does the arrow point?"
SUCCESS = "```python\nimport cv2\nimg = cv2.imread('path_to_input_image.jpg')\nprint(img.shape)\n" \
          "cv2.imwrite('path_to_output_image.jpg', cv2.rotate(img, cv2.ROTATE_180))\n```"
TIMEOUT = "```python\nimport time\ntime.sleep(30)\n```"


class Exploding:
    name = "code"

    def __call__(self, argument, context):
        raise RuntimeError("the tool itself broke")


@pytest.fixture(scope="module")
def code_tool():
    try:
        sandbox = CodeSandbox(SandboxLimits(wall_time_s=1.0, cpu_time_s=5))
    except SandboxUnavailable as exc:
        pytest.skip(str(exc))
    with sandbox:
        yield CodeTool(sandbox)


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "arrow.png"
    Image.new("RGB", (64, 48), (90, 120, 200)).save(path)
    return path


def at_inference(tool, image, code: str) -> str:
    turns = {QUESTION: [f"<think> fix it </think>\n<code>\n{code}\n</code>",
                        "<think> ok </think>\n<answer> up </answer>"]}
    runner = AgentRunner(ReplayBackend(turns), {"code": tool}, RunnerConfig(tools=("code",), layout="chat"),
                         store=Store())
    [trace] = runner.run([AgentItem(QUESTION, [image])])
    return trace.turns[0].tool_call.output_text


def in_training(tool, image, code: str) -> str:
    environment = environment_class(("code",), "tags")(ToolBox(("code",), tools={"code": tool}))
    environment.reset(question=QUESTION, image_file=str(image))
    result = environment.code(f"\n{code}\n")
    return result if isinstance(result, str) else next(b["text"] for b in result if b["type"] == "text")


@pytest.mark.parametrize("case", ["success", "tool error", "timeout"])
def test_the_model_sees_the_same_tool_text_at_inference_and_in_training(case, code_tool, image):
    tool, code = {"success": (code_tool, SUCCESS), "tool error": (Exploding(), SUCCESS),
                  "timeout": (code_tool, TIMEOUT)}[case]
    seen_at_inference, seen_in_training = at_inference(tool, image, code), in_training(tool, image, code)
    assert seen_at_inference.encode() == seen_in_training.encode()
    expected = {"success": "(48, 64, 3)", "tool error": "tool error: RuntimeError: the tool itself broke",
                "timeout": "wall time limit of 1.0 s exceeded"}[case]
    assert expected in seen_at_inference
