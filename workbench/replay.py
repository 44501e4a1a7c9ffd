"""A backend that replays recorded model turns, so tools can be re-run on a recorded trace.

Given each question's recorded turns (e.g. from an imported Visual-ARFT chain
or a stored trace), it answers every generation request with the next turn
the model actually wrote, while the runner executes the tools for real. The
turn to replay is recovered from the conversation itself, so several samples
and both layouts work.
"""

from dataclasses import dataclass, field

from workbench.backends import Generation, GenerationConfig


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

    turns: dict[str, list[str]]
    model_id: str = "replay"
    adapter: str | None = None
    calls: int = field(default=0, init=False)

    def _question(self, conversation: list[dict]) -> str | None:
        text = _user_text(conversation)
        return next((q for q in self.turns if f"<query> {q.strip()} </query>" in text), None)

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
            question = self._question(conversation)
            recorded = self.turns.get(question, []) if question else []
            index = self._turn_index(conversation, recorded)
            if index >= len(recorded):
                out.append(Generation("", 0, 0, "error", error="no recorded turn left to replay"))
                continue
            text = recorded[index]
            out.append(Generation(text, len(_user_text(conversation).split()), len(text.split()), "stop"))
        return out
