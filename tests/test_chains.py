"""Raw chains as the paper's runner writes them import whole: every turn byte for byte, tool images, prompt.

The fixtures follow the released runner's text layout (PROTOCOL.md): the
system prompt in front, `<query> Q <query>`, each model output appended after
a newline, `<tips>` after a `<problem>`, `<information> 1. Content:..` after a
`<search>`. The words are ours.
"""

import json

import numpy as np
import pytest
from PIL import Image

from workbench.chains import import_chains, trace_from_chain
from workbench.images import image_path
from workbench.store import Store
from workbench.trace_io import export_traces, import_traces

CODING_PROMPT = ("# Role\nYou repair images one step at a time.\n# Output Format\nAlways begin with <think>. Then one "
                 "of:\n<think> What is wrong. </think>\n<problem> {'problem1', ...} </problem>\n<code>\n```python\n"
                 "Python that reads path_to_input_image.jpg\n```\n</code>\n<answer> Final answer </answer>\n"
                 "# Current reasoning chain:\n")
SEARCH_PROMPT = ("# Role  \nYou answer with web searches.  \nEither <search> one query </search> or <answer> the "
                 "answer </answer>, after <think> your reasoning </think>.  \n# Current reasoning chain:\n")
PROBLEM = "<think> The sign is upside down. </think>\n<problem> {'rotation180'} </problem>"
TIPS = "<tips> Now that we have identified the issue in the image: ['rotation180'], please write the code. </tips>"
CODE = ("<think> Turn it around.</think>\n<code>\n```python\nimport cv2\n\n"
        "image = cv2.imread('path_to_input_image.jpg')\n"
        "cv2.imwrite('path_to_output_image.jpg', cv2.rotate(image, cv2.ROTATE_180))\n```\n</code>")
ANSWER = "<think> Now it reads clearly. </think>\n<answer> OPEN </answer>"
SEARCH = "<think> I need the museum. </think>\n<search> Museum where The Milkmaid hangs </search>"
INFORMATION = "<information> 1. Content:It hangs in the Rijksmuseum.2. Content:Vermeer painted it. </information>"
SEARCH_ANSWER = "<think> Both are in the Rijksmuseum.</think>\n<answer> Yes </answer>"


def coding_chain(query_close: str = "<query>") -> str:
    """What the released coding runner's text is after its last turn."""
    return (CODING_PROMPT + f"<query> What does the sign say? {query_close}" + "\n" + PROBLEM + "\n" + TIPS + "\n"
            + "\n" + CODE + "\n" + ANSWER)


SEARCH_CHAIN = (SEARCH_PROMPT + "\n" + "<query> Is this painting in the same museum as The Night Watch? <query>"
                + "\n" + SEARCH + "\n" + INFORMATION + " " + "\n" + SEARCH_ANSWER)


def sign(path, upside_down: bool) -> None:
    pixels = np.zeros((60, 80, 3), dtype=np.uint8)
    pixels[:20, :, 0] = 255  # a red band on top reads "right way up"
    Image.fromarray(pixels[::-1, ::-1] if upside_down else pixels).save(path)


@pytest.mark.parametrize("query_close", ["<query>", "</query>"])
def test_runner_chain_keeps_every_turn_byte_for_byte_and_the_prompt(query_close):
    trace, dropped = trace_from_chain(coding_chain(query_close), gold=["OPEN"])
    assert trace.question == "What does the sign say?" and dropped == []
    assert [t.raw for t in trace.turns] == [PROBLEM, CODE, ANSWER], "no turn from the prompt's examples"
    assert [t.action for t in trace.turns] == ["problem", "code", "answer"]
    assert trace.turns[0].feedback == TIPS and trace.turns[1].argument.startswith("```python\nimport cv2")
    assert trace.final_answer == "OPEN" and trace.stop_reason == "answered"
    assert trace.layout == "chat" and trace.metadata["chain"] == coding_chain(query_close)
    assert trace.metadata["problem_labels"] == ["rotation180"]
    assert [m["role"] for m in trace.messages] == ["system", "user", "assistant", "user", "assistant", "user",
                                                  "assistant"], "turns alternate with what came back"
    assert trace.messages[0]["content"] == CODING_PROMPT
    assert [m["content"] for m in trace.messages if m["role"] == "assistant"] == [PROBLEM, CODE, ANSWER]


def test_search_chain_keeps_information_blocks_as_written():
    trace, _ = trace_from_chain(SEARCH_CHAIN)
    search, answer = trace.turns
    assert (search.raw, answer.raw) == (SEARCH, SEARCH_ANSWER)
    assert search.feedback == INFORMATION and search.tool_call.output_text == INFORMATION
    assert search.tool_call.argument == "Museum where The Milkmaid hangs" and search.tool_call.ok
    assert trace.messages[0]["content"] == SEARCH_PROMPT + "\n"


def test_tool_output_images_are_the_images_later_turns_saw(tmp_path):
    store = Store()
    sign(tmp_path / "in.png", upside_down=True)
    sign(tmp_path / "out.png", upside_down=False)
    records = [{"id": 12, "chain": coding_chain(), "images": ["in.png", "out.png"], "answers": ["OPEN"],
                "type": ["rotation180"], "split": "simple", "ori_image_path": "sign_ori.png"}]
    (tmp_path / "chains.json").write_text(json.dumps(records))
    result = import_chains(store, tmp_path / "chains.json", "paper demo")
    trace = store.get_trace(result.trace_ids[0])
    input_sha, output_sha = trace.images[0], trace.turns[1].tool_call.output_images[0]
    assert [t.image for t in trace.turns] == [input_sha, input_sha, output_sha], "the answer saw the processed image"
    assert trace.gold == ["OPEN"] and trace.item_id == "12"
    assert trace.metadata["record"] == {"type": ["rotation180"], "split": "simple", "ori_image_path": "sign_ori.png"}
    code_feedback = trace.messages[5]["content"]
    assert code_feedback[0] == {"type": "image", "image": f"sha256:{output_sha}"}
    assert result.summary().endswith("dropped: nothing") and "output image from the file 1" in result.summary()

    path = tmp_path / "export" / "traces.jsonl"
    path.parent.mkdir()
    export_traces(store, [trace], path)
    (again,) = import_traces(Store(), path)
    assert store.get_trace(again).to_dict() == trace.to_dict(), "export and re-import is lossless"


def test_images_beyond_the_code_turns_and_stray_text_are_reported(tmp_path):
    store = Store()
    for name in ("a.png", "b.png", "c.png"):
        sign(tmp_path / name, upside_down=False)
    records = [{"chain": coding_chain() + "\nthanks", "images": ["a.png", "b.png", "c.png"]},
               {"chain": SEARCH_CHAIN, "image": "a.png", "answer": "Yes"},
               {"chain": coding_chain(), "images": ["a.png", None]}]
    (tmp_path / "chains.json").write_text(json.dumps(records))
    result = import_chains(store, tmp_path / "chains.json")
    summary = result.summary()
    assert "chains.json item 0: 1 image(s) beyond the 1 code turn(s)" in summary
    assert "chains.json item 0: 1 piece(s) of text outside any tag" in summary
    assert "without one 1" in summary and "system prompt kept apart in 3" in summary
    failed = store.get_trace(result.trace_ids[2]).turns[1].tool_call
    assert not failed.ok and "no output image" in failed.error
    assert store.get_trace(result.trace_ids[1]).gold == ["Yes"]


@pytest.mark.parametrize("record, message", [
    ({"chain": CODING_PROMPT + PROBLEM}, "text before its first tag .* no <query>"),
    ({"chain": PROBLEM + "\n" + ANSWER}, "no <query> and no question"),
    ({"chain": "<query> Q " + PROBLEM}, "<query> is never closed"),
    ({"text": PROBLEM}, "needs a 'chain' or 'response' string"),
    ({"chain": coding_chain(), "images": [None, "x.png"]}, "the input image and cannot be null"),
])
def test_chains_that_cannot_be_read_are_refused_before_any_run(tmp_path, record, message):
    store = Store()
    (tmp_path / "chains.json").write_text(json.dumps([{"chain": SEARCH_CHAIN}, record]))
    with pytest.raises(ValueError, match=f"chains.json item 1: .*{message}"):
        import_chains(store, tmp_path / "chains.json")
    assert store.list_runs() == []


def test_rerun_code_regenerates_the_missing_output_image_in_the_sandbox(tmp_path):
    from workbench.agent.tools import code_tool_status

    if code_tool_status().startswith("Code execution is off"):
        pytest.skip("no sandbox isolation works on this host")
    store = Store()
    sign(tmp_path / "in.png", upside_down=True)
    sign(tmp_path / "upright.png", upside_down=False)
    (tmp_path / "chains.json").write_text(json.dumps([{"chain": coding_chain(), "image": "in.png"}]))
    result = import_chains(store, tmp_path / "chains.json", rerun_code=True)
    trace = store.get_trace(result.trace_ids[0])
    call = trace.turns[1].tool_call
    assert call.ok and call.details["source"] == "regenerated by the sandbox on import"
    assert trace.turns[2].image == call.output_images[0] != trace.images[0]
    with Image.open(image_path(call.output_images[0])) as regenerated, Image.open(tmp_path / "upright.png") as up:
        assert np.abs(np.asarray(regenerated, dtype=int) - np.asarray(up, dtype=int)).mean() < 2
    assert "regenerated 1, without one 0" in result.summary()
    assert trace.messages[5]["content"][0]["image"] == f"sha256:{call.output_images[0]}"


def test_the_stepper_shows_each_turns_raw_text_and_the_runners_search_results():
    from workbench.ui import render

    trace, _ = trace_from_chain(SEARCH_CHAIN)
    html = render.turn_html(trace.turns[0], len(trace.turns))
    assert render.esc(SEARCH) in html, "the raw model output, byte for byte"
    assert [hit["snippet"] for hit in render.search_results(trace.turns[0].tool_call)] == [
        "It hangs in the Rijksmuseum.", "Vermeer painted it."]
