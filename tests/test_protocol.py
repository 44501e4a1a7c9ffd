"""The tag protocol: parse cases, layouts, native tool calls, raw chain import."""

import pytest

from workbench import protocol
from workbench.protocol import Step, build_messages, parse_chain, parse_problem_labels, parse_turn


@pytest.mark.parametrize("text, action, argument, error", [
    ("<think>a</think><search>Eiffel tower height</search>", "search", "Eiffel tower height", None),
    ("<think>a</think>\n<answer> 42 </answer>", "answer", "42", None),
    ("<think>a</think><problem>{'dark', 'rotation90'}</problem>", "problem", "{'dark', 'rotation90'}", None),
    ("<think>a</think><code>```python\nprint(1)\n```</code>", "code", "```python\nprint(1)\n```", None),
    ("<answer>no thought</answer>", "answer", "no thought", None),
    ("<think>a</think><code>```python\nprint(1)", None, None, "<code> is never closed"),
    ("<think>a</think> I think the answer is 4", None, None, "no action"),
    ("", None, None, "no action"),
    ("<think>unterminated", None, None, "no action"),
    ("\x00\xff<think>\ud800</think><answer>x</answer>", "answer", "x", None),
])
def test_parse_turn_cases(text, action, argument, error):
    parsed = parse_turn(text)
    assert parsed.action == action and parsed.argument == argument
    assert (parsed.error is None) if error is None else (error in parsed.error)


def test_parse_turn_refuses_unavailable_action():
    parsed = parse_turn("<think>x</think><search>q</search>", allowed=("answer", "code"))
    assert parsed.action == "search" and "not available" in parsed.error


@pytest.mark.parametrize("text, action, argument, error", [
    ('<think>t</think><tool_call>{"name": "search", "arguments": {"query": "Rijksmuseum"}}</tool_call>',
     "search", "Rijksmuseum", None),
    ('<tool_call>{"name": "code", "arguments": "{\\"code\\": \\"print(1)\\"}"}</tool_call>', "code", "print(1)", None),
    ("<tool_call>{not json}</tool_call>", None, None, "not valid JSON"),
    ('<tool_call>{"name": "shell", "arguments": {}}</tool_call>', None, None, "unknown tool"),
    ('<tool_call>{"name": "search", "arguments": {"q": 1}}</tool_call>', None, None, "string argument"),
    ("<think>t</think><answer>Yes</answer>", "answer", "Yes", None),
    ('<tool_call>{"name": "search"', None, None, "never closed"),
])
def test_parse_native_cases(text, action, argument, error):
    parsed = parse_turn(text, protocol="native")
    assert (parsed.action, parsed.argument) == (action, argument)
    assert (parsed.error is None) if error is None else (error in parsed.error)


def test_problem_labels():
    assert parse_problem_labels("{'rotation180'}") == (["rotation180"], None)
    assert parse_problem_labels("dark, blur") == (["blur", "dark"], None)
    labels, error = parse_problem_labels("{'sepia'}")
    assert labels == ["sepia"] and "unknown" in error
    assert parse_problem_labels("")[1].startswith("empty")


def test_tips_follow_the_labels():
    assert "crop" in protocol.tips_for(["crop"]) and "0-1000" in protocol.tips_for(["crop"])
    assert "directly" in protocol.tips_for(["none"])
    assert "dark, rotation90" in protocol.tips_for(["dark", "rotation90"])


def test_find_box():
    assert protocol.find_box("Recognize the text within the [366, 723, 506, 851] of the image") == (366, 723, 506, 851)
    assert protocol.find_box("no box here") is None


def test_single_user_layout_grows_one_message():
    steps = [Step("<think>a</think><search>q</search>", "<information> 1. Content: x </information>")]
    messages = build_messages("Who?", "img.png", steps, system="S", layout="single_user")
    assert [m["role"] for m in messages] == ["system", "user"]
    text = messages[1]["content"][1]["text"]
    assert text.startswith("<query> Who? </query>") and text.endswith("</information>")


def test_chat_layout_alternates_and_carries_tool_images():
    steps = [Step("<think>a</think><code>c</code>", "done", "out.png", "code")]
    messages = build_messages("Q", "in.png", steps, system="S", layout="chat", protocol="native")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool"]
    assert messages[3]["content"][0] == {"type": "image", "image": "out.png"}
    tags = build_messages("Q", "in.png", steps, system="S", layout="chat", protocol="tags")
    assert tags[3]["role"] == "user"


def test_parse_raw_chain_with_problem_tips_and_code():
    raw = ("<query>What is written?</query><think>upside down</think><problem>{'rotation180'}</problem>"
           "<tips>write code</tips><think>rotate</think><code>```python\nx=1\n```</code>"
           "<think>now readable</think><answer>SALE</answer>")
    chain = parse_chain(raw)
    assert chain.question == "What is written?" and chain.preamble == "" and chain.stray == []
    assert [t.action for t in chain.turns] == ["problem", "code", "answer"]
    assert chain.turns[0].feedback == [("tips", "write code")]
    assert chain.turns[0].feedback_raw == "<tips>write code</tips>"
    assert chain.turns[2].raw == "<think>now readable</think><answer>SALE</answer>"


def test_system_prompt_names_only_enabled_tools():
    assert "<search>" not in protocol.system_prompt(("code",))
    assert "<code>" not in protocol.system_prompt(("search",))
    assert "tool_call" in protocol.system_prompt(("search",), protocol="native")
