"""A backend that replays recorded model turns, so tools can be re-run on a recorded trace.

Given each episode's recorded turns (e.g. from an imported Visual-ARFT chain
or a stored trace), it answers every generation request with the next turn
the model actually wrote, while the runner executes the tools for real. The
turn to replay is recovered from the conversation itself, so several samples
and both layouts work. Turns are keyed by question, or by (question, SHA of
the input image) when several items share a question text (chat layout).
"""

import re
from dataclasses import dataclass, field

from workbench.backends import Generation, GenerationConfig
from workbench.images import sha_of_path

_QUERY = re.compile(r"<query> (.*?) </query>", re.S)


def _first_image_sha(conversation: list[dict]) -> str | None:
    for message in conversation:
        if message["role"] == "user" and isinstance(message["content"], list):
            for block in message["content"]:
                if block.get("type") == "image":
                    return sha_of_path(str(block["image"])).removeprefix("sha256:")
    return None


def _user_text(conversation: list[dict]) -> str:
    parts = []
    for message in conversation:
        if message["role"] == "user":
            content = message["content"]
            if isinstance(content, str):
                parts.append(content)
            else:
                parts.extend(block.get("text", "") for block in content if block.get("type") == "text")
    return "\n".join(parts)


@dataclass
class ReplayBackend:
    """Replays `turns[question]` one turn per call; runs out with an error generation."""

    turns: dict[str | tuple[str, str], list[str]]
    model_id: str = "replay"
    adapter: str | None = None
    calls: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        # The runner shows the question stripped, so look keys up the same way.
        self._keys = {(key[0].strip(), key[1]) if isinstance(key, tuple) else key.strip(): key for key in self.turns}

    def _key(self, conversation: list[dict]) -> str | tuple[str, str] | None:
        match = _QUERY.search(_user_text(conversation))
        if not match:
            return None
        question, sha = match.group(1), _first_image_sha(conversation)
        for key in ((question, sha), question):
            if key in self._keys:
                return self._keys[key]
        return None

    def _turn_index(self, conversation: list[dict], recorded: list[str]) -> int:
        assistant = [m for m in conversation if m["role"] == "assistant"]
        if assistant:
            return len(assistant)
        chain, position, count = _user_text(conversation), 0, 0
        for turn in recorded:
            found = chain.find(turn, position)
            if found < 0:
                break
            position, count = found + len(turn), count + 1
        return count

    def generate(self, conversations: list[list[dict]], config: GenerationConfig,
                 tools: list[dict] | None = None) -> list[Generation]:
        self.calls += 1
        out = []
        for conversation in conversations:
            key = self._key(conversation)
            recorded = self.turns.get(key, []) if key is not None else []
            index = self._turn_index(conversation, recorded)
            if index >= len(recorded):
                out.append(Generation("", 0, 0, "error", error="no recorded turn left to replay"))
                continue
            text = recorded[index]
            out.append(Generation(text, len(_user_text(conversation).split()), len(text.split()), "stop"))
        return out
