"""Chat messages as written by TRL and OpenAI-style agent logs, turned into the one `Trace` shape.

The messages are what TRL's GRPOTrainer logs for a rollout (prompt + completion:
assistant messages with `tool_calls`, `tool` messages whose content may hold
{"type": "image", "image": PIL} blocks) and what most agent logs write
(OpenAI chat: `tool_calls` with JSON-string arguments, `tool` messages,
{"type": "image_url", "image_url": {"url": "data:..."}} parts). Each
assistant message is a `Turn`: its text is `raw`, its first tool call the
action and argument, and the tool messages that follow are that call's
result (text and images). The trace keeps every message, images replaced by
"sha256:" references, so whatever a turn cannot hold (a second parallel
tool call, an unknown role) is still in `messages` and is named in `notes`.

Images go through `put_image(source) -> sha`, so the same code stores them
(a Store), or only hashes them for sending (workbench.ingest). A source is a
PIL image, bytes, a file path (relative to `base_dir`), a data URL or a
"sha256:" reference already stored.
"""

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.trace import ToolCall, Trace, Turn, image_ref, ref_sha

ImagePut = Callable[[Any], str]


@dataclass
class ChatTrace:
    """A converted conversation and what could not be mapped onto turns (kept in its messages)."""

    trace: Trace
    notes: list[str] = field(default_factory=list)


def decode_data_url(url: str) -> bytes:
    """The bytes of a base64 data URL.

    >>> decode_data_url("data:image/png;base64,aGk=")
    b'hi'
    """
    head, sep, body = url.partition(",")
    if not sep or not head.startswith("data:") or ";base64" not in head:
        raise ValueError("only base64 data URLs (data:image/...;base64,...) can be read")
    try:
        return base64.b64decode(body, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"the data URL's base64 is damaged ({exc})") from None


def content_blocks(content: Any) -> list[dict[str, Any]]:
    """A message's content as a list of blocks (a plain string is one text block)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [b if isinstance(b, dict) else {"type": "text", "text": str(b)} for b in content]
    return [{"type": "text", "text": str(content)}]


def block_text(content: Any) -> str:
    return "".join(b.get("text") or "" for b in content_blocks(content) if b.get("type") in ("text", None))


def image_source(block: dict[str, Any]) -> Any:
    """What an image block points at (PIL image, path, data URL, reference), or None for another block."""
    kind = block.get("type")
    if kind == "image":
        return block.get("image") if block.get("image") is not None else block.get("url") or block.get("path")
    if kind == "image_url":
        value = block.get("image_url")
        return value.get("url") if isinstance(value, dict) else value
    return None


def tool_arguments(call: dict[str, Any]) -> tuple[str, str]:
    """(name, argument text) of an OpenAI/TRL tool call; a lone argument is shown bare, several as JSON.

    >>> tool_arguments({"type": "function", "function": {"name": "zoom", "arguments": '{"factor": 2}'}})
    ('zoom', '2')
    >>> tool_arguments({"function": {"name": "crop", "arguments": {"x": 1, "y": 2}}})
    ('crop', '{"x": 1, "y": 2}')
    """
    function = call.get("function") if isinstance(call.get("function"), dict) else call
    name = str(function.get("name") or "")
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return name, arguments
    if isinstance(arguments, dict) and len(arguments) == 1:
        (value,) = arguments.values()
        return name, value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return name, json.dumps(arguments, ensure_ascii=False) if arguments is not None else ""


class _Images:
    """Stores each image source once per conversation; failures become notes, never exceptions."""

    def __init__(self, put_image: ImagePut, base_dir: Path | None, notes: list[str]):
        self.put_image, self.base_dir, self.notes = put_image, base_dir, notes
        self._seen: dict[int, str] = {}

    def sha(self, source: Any) -> str | None:
        key = id(source)
        if key in self._seen:
            return self._seen[key]
        try:
            sha = self._store(source)
        except (ValueError, OSError) as exc:  # ImageError is a ValueError
            self.notes.append(f"image not stored ({exc})")
            return None
        self._seen[key] = sha
        return sha

    def _store(self, source: Any) -> str:
        if isinstance(source, str):
            if ref_sha(source):
                return ref_sha(source)
            if source.startswith("data:"):
                return self.put_image(decode_data_url(source))
            if source.startswith(("http://", "https://")):
                raise ValueError(f"{source[:60]} is a web address; the workbench does not download images")
            path = Path(source)
            if not path.is_absolute() and self.base_dir is not None:
                path = self.base_dir / path
            return self.put_image(path)
        if isinstance(source, dict) and isinstance(source.get("bytes"), bytes):  # datasets' / parquet's image
            return self.put_image(source["bytes"])
        return self.put_image(source)


def _stored_content(content: Any, images: _Images) -> tuple[Any, list[str]]:
    """Content with images swapped for references, and the shas in order."""
    if not isinstance(content, list):
        return (content if content is None or isinstance(content, str) else str(content)), []
    blocks, shas = [], []
    for block in content_blocks(content):
        source = image_source(block)
        if source is not None:
            sha = images.sha(source)
            if sha:
                shas.append(sha)
                blocks.append({"type": "image", "image": image_ref(sha)})
            else:
                blocks.append({"type": "text", "text": "[image not stored]"})
        elif block.get("type") == "image":
            blocks.append({"type": "image", "image": None})  # a placeholder whose image came separately
        else:
            blocks.append({"type": block.get("type") or "text", "text": block.get("text") or ""})
    return blocks, shas


def trace_from_chat(messages: list[dict[str, Any]], *, put_image: ImagePut, base_dir: str | Path | None = None,
                    prompt_images: list[Any] | None = None, **trace_fields: Any) -> ChatTrace:
    """The Trace of one conversation; `prompt_images` fill image placeholders the messages left empty."""
    notes: list[str] = []
    images = _Images(put_image, Path(base_dir) if base_dir else None, notes)
    stored_messages, input_shas, turns = [], [], []
    pending_calls: list[tuple[Turn, dict]] = []
    question = ""
    extra_images = [images.sha(image) for image in prompt_images or []]
    for number, message in enumerate(messages):
        if not isinstance(message, dict):
            notes.append(f"message {number} is not an object")
            continue
        role = message.get("role")
        content, shas = _stored_content(message.get("content"), images)
        stored = {"role": role, "content": content}
        for key in ("name", "tool_call_id", "tool_calls"):
            if message.get(key) is not None:
                stored[key] = message[key]
        stored_messages.append(stored)
        text = block_text(message.get("content"))
        if role in ("system", "developer"):
            continue
        if role == "user" and not turns:
            question = question + ("\n" if question else "") + text
            input_shas += shas
            continue
        if role == "assistant":
            turn = Turn(index=len(turns), raw=text, image=input_shas[0] if input_shas else None)
            calls = [c for c in message.get("tool_calls") or [] if isinstance(c, dict)]
            if calls:
                turn.action, turn.argument = tool_arguments(calls[0])
                if not text.strip():  # TRL parsed the call out of the text: show it as the model wrote it
                    turn.raw = "\n".join(_call_text(call) for call in calls)
                pending_calls = [(turn, call) for call in calls]
                if len(calls) > 1:
                    notes.append(f"{len(calls) - 1} parallel tool call(s) kept in messages only")
            else:
                turn.action, turn.argument = "answer", text
                pending_calls = []
            turns.append(turn)
            continue
        if role == "tool" and turns:
            turn = turns[-1]
            turn.feedback = (turn.feedback or "") + text
            if turn.tool_call is None:
                call = pending_calls[0][1] if pending_calls else {"function": {"name": message.get("name")}}
                name, argument = tool_arguments(call)
                turn.tool_call = ToolCall(name=message.get("name") or name, argument=argument, output_text=text,
                                          output_images=shas, ok=not _is_error(text))
                if not turn.tool_call.ok:
                    turn.tool_call.error = text
            else:  # the result of a parallel call: shown with the first one's
                turn.tool_call.output_text += "\n" + text
                turn.tool_call.output_images += shas
            continue
        if role == "user":  # a tool result sent back as a user turn (Visual-ARFT's layout)
            turns[-1].feedback = (turns[-1].feedback or "") + text
            if turns[-1].tool_call is not None:
                turns[-1].tool_call.output_images += shas
            continue
        notes.append(f"a {role!r} message kept in messages only")
    if not input_shas:
        input_shas = [sha for sha in extra_images if sha]
        for turn in turns:
            turn.image = input_shas[0] if input_shas else None
        _fill_placeholders(stored_messages, list(input_shas))
    last = turns[-1] if turns else None
    answered = last is not None and last.action == "answer"
    fields_ = {"stop_reason": "answered" if answered else ("max_turns" if last else "length"),
               "final_answer": last.argument if answered else None, "protocol": "native", "layout": "chat",
               **trace_fields}
    trace = Trace(question=question, images=input_shas, turns=turns, messages=stored_messages, **fields_)
    return ChatTrace(trace, notes)


def _fill_placeholders(messages: list[dict[str, Any]], shas: list[str]) -> None:
    """Put images given beside the messages into their empty image blocks, in order."""
    for message in messages:
        for block in message["content"] if isinstance(message.get("content"), list) else []:
            if shas and block.get("type") == "image" and not block.get("image"):
                block["image"] = image_ref(shas.pop(0))


def _is_error(text: str) -> bool:
    """TRL reports a failed tool as {'error': '...'} (str of a dict); OpenAI logs often start with "Error"."""
    head = text.lstrip()[:12].lower()
    return head.startswith("{'error'") or head.startswith('{"error"') or head.startswith("error")


def _call_text(call: dict[str, Any]) -> str:
    """A parsed tool call written back as Qwen/Hermes-style text.

    >>> _call_text({"function": {"name": "zoom", "arguments": {"factor": 2}}})
    '<tool_call>{"name": "zoom", "arguments": {"factor": 2}}</tool_call>'
    """
    function = call.get("function") if isinstance(call.get("function"), dict) else call
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            pass
    body = json.dumps({"name": function.get("name"), "arguments": arguments}, ensure_ascii=False)
    return f"<tool_call>{body}</tool_call>"
