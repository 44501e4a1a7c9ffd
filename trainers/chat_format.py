"""How training conversations are rendered and parsed, per protocol.

Owns the chat template used for the tag protocol in multi-turn training, the
response template that lets TRL's tool loop read `<search>`/`<code>`/
`<problem>` tags as tool calls, the closing tags that end a turn right after
its action (trainers.action_stops stops generation at them), and
`prepare_processor`, which applies all of it to a processor.

Tag protocol (`tags`): the template is ChatML like Qwen's. Tool results come
back as a user turn holding exactly the tool's text (`<information> ..`,
`<tips> ..`) and its output image, which is what the workbench runner shows a
model in the chat layout. The tools block (`tools=`) is not rendered: the
system prompt already describes the tags. An assistant tool call renders as
`<name>argument</name>`, so SFT on literal text and RL see the same tokens.
Generation markers make it usable for assistant-only SFT loss.

Native protocol (`native`): the Qwen3-VL template (tool calls as
`<tool_call>` JSON, results in `<tool_response>`); TRL knows its response
format. A processor whose template cannot render tool calls (Qwen2.5-VL's)
gets the Qwen3-VL one, as FIELD-NOTES measured.
"""

from pathlib import Path
from typing import Any

from workbench import protocol
from workbench.backends.tiny import QWEN3_VL_CHAT_TEMPLATE

TAG_TOOL_ARGUMENT = "argument"  # one argument name for every tag tool: a response template cannot vary keys
ACTION_CLOSE_TAGS = {"tags": ("</search>", "</code>", "</problem>", "</answer>"), "native": ()}

# ChatML like Qwen's, tool results as user turns, generation markers for assistant-only loss (module docstring).
TAGS_CHAT_TEMPLATE = (Path(__file__).parent / "tags_chat_template.jinja").read_text(encoding="utf-8")

# transformers' response_template format: tag actions become tool_calls, the rest stays content.
TAGS_RESPONSE_TEMPLATE: dict[str, Any] = {
    "defaults": {"role": "assistant"},
    "start_anchor": "<|im_start|>assistant\n",
    "fields": {
        "tool_calls": {
            "open_pattern": r"<(?P<name>search|code|problem)>",
            "close_pattern": r"</(?:search|code|problem)>\s*",
            "repeats": True,
            "content": "text",
            "content_args": {"strip": False},
            "transform": {"type": "function",
                          "function": {"name": "{name}", "arguments": {TAG_TOOL_ARGUMENT: "{content}"}}},
        },
        "content": {"close_pattern": r"<\|im_end\|>\s*", "content": "text"},
    },
}


def tool_call_text(name: str, arguments: Any, protocol_name: str) -> str:
    """The literal text of a tool call as the model writes it (tags or native JSON).

    >>> tool_call_text("search", {"argument": "eiffel tower"}, "tags")
    '<search>eiffel tower</search>'
    """
    if protocol_name == "tags":
        value = arguments.get(TAG_TOOL_ARGUMENT, "") if isinstance(arguments, dict) else str(arguments or "")
        return f"<{name}>{value}</{name}>"
    import json

    return f'<tool_call>\n{{"name": "{name}", "arguments": {json.dumps(arguments, ensure_ascii=False)}}}\n</tool_call>'


def assistant_turn_text(message: dict[str, Any], protocol_name: str) -> str:
    """One parsed assistant message back as the raw text of its turn (thought, content, tool calls).

    >>> assistant_turn_text({"role": "assistant", "content": "<think>dark</think>", "tool_calls": [
    ...     {"type": "function", "function": {"name": "problem", "arguments": {"argument": "{'dark'}"}}}]}, "tags")
    "<think>dark</think><problem>{'dark'}</problem>"
    """
    content = message.get("content") or ""
    if isinstance(content, list):
        content = "".join(b.get("text") or "" for b in content if isinstance(b, dict) and b.get("type") == "text")
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning and "<think>" not in content:
        content = f"<think>{reasoning}</think>" + content  # the native parser lifts the thought out
    parts = [content]
    for call in message.get("tool_calls") or []:
        function = call.get("function", call)
        parts.append(tool_call_text(function.get("name", ""), function.get("arguments"), protocol_name))
    return "".join(parts)


def prepare_processor(processor: Any, protocol_name: str, *, tool_calls: bool) -> None:
    """Give the processor the chat/response templates the protocol needs (in place).

    `tool_calls`: tools run inside rollouts (TRL must parse tool calls from completions).
    """
    tokenizer = getattr(processor, "tokenizer", processor)
    if protocol_name == "tags":
        if tool_calls:
            processor.chat_template = tokenizer.chat_template = TAGS_CHAT_TEMPLATE
            tokenizer.response_template = TAGS_RESPONSE_TEMPLATE
        return
    from trl.chat_template_utils import supports_tool_calling

    if tool_calls and not supports_tool_calling(processor):
        processor.chat_template = tokenizer.chat_template = QWEN3_VL_CHAT_TEMPLATE


def tool_docstring(name: str, protocol_name: str) -> tuple[str, str]:
    """(argument name, Google-style docstring) of a rollout tool, from the workbench's tool schemas."""
    if name == "problem":
        labels = ", ".join(protocol.PROBLEM_LABELS)
        return TAG_TOOL_ARGUMENT, ("Name what is wrong with the image and get a hint.\n\nArgs:\n"
                                   f"    {TAG_TOOL_ARGUMENT}: A set of labels from {labels}.\n")
    function = protocol.tool_schemas((name,))[0]["function"]
    native_argument = function["parameters"]["required"][0]
    argument = TAG_TOOL_ARGUMENT if protocol_name == "tags" else native_argument
    argument_help = function["parameters"]["properties"][native_argument]["description"]
    return argument, f"{function['description']}\n\nArgs:\n    {argument}: {argument_help}\n"


def system_prompt_with_tools(processor: Any, system: str, tools: tuple[str, ...], protocol_name: str) -> str:
    """The system text as the template renders it with the tool schemas (native), for SFT rows.

    TRL's SFT collator renders conversations without `tools=`, so the tools
    block the native template would add is folded into the system text.
    """
    if protocol_name != "native" or not tools:
        return system
    rendered = processor.apply_chat_template([{"role": "system", "content": [{"type": "text", "text": system}]}],
                                             tools=protocol.tool_schemas(tools), tokenize=False)
    start, end = "<|im_start|>system\n", "<|im_end|>\n"
    if not (rendered.startswith(start) and rendered.endswith(end)):
        raise ValueError("the chat template does not render the system message as ChatML; native-protocol SFT "
                         "needs a Qwen-style template")
    return rendered[len(start):-len(end)]
