"""The agent runner: batched multi-turn rollouts of N questions x G samples.

Per turn, every live episode's conversation is generated in one backend call;
the tool calls that turn asked for then run concurrently in a thread pool.
An episode stops on an answer, after `max_turns`, on a backend error, or (by
config) on a parse error. Finished traces are written to the store as soon
as they finish, so a killed process loses only the episodes still running.
Callers can iterate `AgentRunner.stream()` to see each turn as it happens.
"""

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench import protocol as proto
from workbench import settings
from workbench.agent.config import RunnerConfig
from workbench.agent.tools import AgentTool, ToolContext, call_tool, problem_feedback
from workbench.backends import ChatBackend, GenerationConfig
from workbench.images import image_path, sha_of_path
from workbench.store import Store
from workbench.trace import ToolCall, Trace, Turn, image_ref

MAX_QUESTION_CHARS = 10_000  # far above any benchmark question; a longer one is refused, never stored


def question_problem(question: str) -> str | None:
    """What is wrong with a question (empty, or longer than MAX_QUESTION_CHARS), or None.

    >>> question_problem("x" * 10_001)
    'the question has 10001 characters, over the limit of 10000; shorten it'
    """
    if not question or not question.strip():
        return "the question is empty; type a question about the image"
    if len(question) > MAX_QUESTION_CHARS:
        return f"the question has {len(question)} characters, over the limit of {MAX_QUESTION_CHARS}; shorten it"
    return None


@dataclass
class AgentItem:
    """One question for the agent: text, input image(s) and optional gold answers."""

    question: str
    images: list[str | Path]
    item_id: str | None = None
    gold: list[str] = field(default_factory=list)
    clean_image: str | Path | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problem = question_problem(self.question)
        if problem:
            raise ValueError(problem)
        if not self.images:
            raise ValueError("no image given; upload or pick an image")


@dataclass
class TurnEvent:
    """Streamed after every turn of every live episode."""

    trace: Trace
    turn: Turn
    done: bool


@dataclass
class _Episode:
    item: AgentItem
    trace: Trace
    original_image: Path
    image: Path
    workdir: Path
    steps: list[proto.Step] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    @property
    def done(self) -> bool:
        return self.trace.stop_reason is not None


class AgentRunner:
    """Runs items through a backend with tools, recording traces to a store."""

    def __init__(self, backend: ChatBackend, tools: dict[str, AgentTool], config: RunnerConfig | None = None,
                 *, store: Store, run_id: str | None = None,
                 score: Callable[[Trace, AgentItem], dict[str, float]] | None = None):
        self.backend = backend
        self.config = config or RunnerConfig()
        missing = [name for name in self.config.tools if name not in tools]
        if missing:
            raise ValueError(f"config enables tools {missing} but none were given to the runner")
        self.tools = tools
        self.store = store
        self.run_id = run_id
        self.score = score
        self.system = self.config.system_prompt or proto.system_prompt(self.config.tools, self.config.protocol)

    def run(self, items: list[AgentItem]) -> list[Trace]:
        """Roll out every item `samples` times; returns the finished traces in item order."""
        traces = [event.trace for event in self.stream(items) if event.done]
        return sorted(traces, key=lambda t: (t.metadata["position"], t.sample_index))

    def stream(self, items: list[AgentItem]) -> Iterator[TurnEvent]:
        episodes = [self._start(item, position, sample)
                    for position, item in enumerate(items) for sample in range(self.config.samples)]
        with ThreadPoolExecutor(max_workers=max(1, self.config.tool_workers)) as pool:
            for turn_index in range(self.config.max_turns):
                live = [e for e in episodes if not e.done]
                if not live:
                    break
                events = self._turn(live, turn_index, pool)
                self._save([e.trace for e in live if e.done])
                yield from events

    # -- one episode ---------------------------------------------------------
    def _start(self, item: AgentItem, position: int, sample: int) -> _Episode:
        shas = [self._put_image(image) for image in item.images]
        first = image_path(shas[0])
        group = f"{self.run_id or 'adhoc'}:{item.item_id or position}"
        trace = Trace(
            question=item.question, images=shas, gold=list(item.gold), model_id=self.backend.model_id,
            adapter=getattr(self.backend, "adapter", None), protocol=self.config.protocol,
            layout=self.config.layout, run_id=self.run_id, item_id=item.item_id, group_id=group,
            sample_index=sample, metadata={"position": position, **item.metadata},
        )
        workdir = settings.scratch_dir() / trace.id
        return _Episode(item, trace, first, first, workdir)

    def _put_image(self, image: Any) -> str:
        return self.store.put_image(image)

    def _messages(self, episode: _Episode) -> list[dict[str, Any]]:
        image = episode.image if self.config.layout == "single_user" else episode.original_image
        return proto.build_messages(episode.item.question, str(image), episode.steps, system=self.system,
                                       layout=self.config.layout, protocol=self.config.protocol)

    def _turn(self, live: list[_Episode], turn_index: int, pool: ThreadPoolExecutor) -> list[TurnEvent]:
        cfg = self.config
        gen_config = GenerationConfig(
            max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
            seed=cfg.seed + turn_index,
            stop=proto.NATIVE_STOP_STRINGS if cfg.protocol == "native" else proto.TAG_STOP_STRINGS)
        schemas = proto.tool_schemas(cfg.tools) if cfg.protocol == "native" else None
        started = time.perf_counter()
        generations = self.backend.generate([self._messages(e) for e in live], gen_config, tools=schemas)
        latency = time.perf_counter() - started
        allowed = self._allowed_actions()
        pending = []
        for episode, generation in zip(live, generations):
            turn = Turn(index=turn_index, raw=generation.text, image=sha_of_path(episode.image),
                        prompt_tokens=generation.prompt_tokens,
                        completion_tokens=generation.completion_tokens, latency_s=latency)
            episode.trace.turns.append(turn)
            if generation.finish_reason == "error":
                turn.parse_error = f"backend error: {generation.error}"
                self._finish(episode, "error")
                continue
            parsed = proto.parse_turn(generation.text, cfg.protocol, allowed)
            turn.think, turn.action, turn.argument, turn.parse_error = (
                parsed.think, parsed.action, parsed.argument, parsed.error)
            if parsed.error:
                self._on_parse_error(episode, turn)
            elif parsed.action == "answer":
                episode.trace.final_answer = parsed.argument
                episode.steps.append(proto.Step(generation.text))
                self._finish(episode, "answered")
            elif parsed.action == "problem":
                self._on_problem(episode, turn)
            else:
                context = ToolContext(episode.image, episode.original_image, episode.workdir,
                                      episode.item.question)
                pending.append((episode, turn, pool.submit(call_tool, self.tools.__getitem__, turn.action,
                                                           turn.argument or "", context)))
        for episode, turn, future in pending:
            self._apply_tool(episode, turn, future.result())
        events = []
        for episode in live:
            if not episode.done and turn_index == cfg.max_turns - 1:
                self._finish(episode, self._unfinished_reason(episode))
            events.append(TurnEvent(episode.trace, episode.trace.turns[-1], episode.done))
        return events

    def _allowed_actions(self) -> tuple[str, ...]:
        allowed = ["answer", *self.config.tools]
        if "code" in self.config.tools and self.config.protocol == "tags":
            allowed.append("problem")
        return tuple(allowed)

    def _on_parse_error(self, episode: _Episode, turn: Turn) -> None:
        if not self.config.retry_parse_errors:
            self._finish(episode, "parse_error")
            return
        turn.feedback = f"<tips> Your last turn could not be used: {turn.parse_error}. </tips>"
        episode.steps.append(proto.Step(turn.raw, turn.feedback))

    def _on_problem(self, episode: _Episode, turn: Turn) -> None:
        labels, turn.feedback, _ = problem_feedback(turn.argument or "")
        episode.trace.metadata["problem_labels"] = labels
        episode.steps.append(proto.Step(turn.raw, turn.feedback))

    def _apply_tool(self, episode: _Episode, turn: Turn, call: ToolCall) -> None:
        """Store the images the tool wrote, record the call on the turn, and show its result next turn."""
        for path in call.output_files:
            try:
                call.output_images.append(self._put_image(path))
            except ValueError as exc:  # an unreadable tool output image is a tool failure
                call.ok, call.error = False, call.error or str(exc)
        turn.tool_call = call
        turn.feedback = call.output_text
        new_image = image_path(call.output_images[-1]) if call.output_images else None
        if new_image is not None:
            episode.image = new_image
        episode.steps.append(proto.Step(turn.raw, call.output_text, str(new_image) if new_image else None,
                                        tool_name=turn.action))

    @staticmethod
    def _unfinished_reason(episode: _Episode) -> str:
        last = episode.trace.turns[-1]
        if last.tool_call is not None and not last.tool_call.ok:
            return "tool_error"
        if last.parse_error:
            return "parse_error"
        return "max_turns"

    def _finish(self, episode: _Episode, reason: str) -> None:
        trace = episode.trace
        trace.stop_reason = reason
        trace.duration_s = time.time() - episode.started
        trace.messages = self._recorded_messages(episode)
        if self.score is not None:
            trace.rewards = self.score(trace, episode.item)

    def _recorded_messages(self, episode: _Episode) -> list[dict[str, Any]]:
        """The chat form of the whole episode, with images as content references."""
        steps = [proto.Step(s.raw, s.feedback,
                               image_ref(sha_of_path(s.feedback_image)) if s.feedback_image else None,
                               s.tool_name) for s in episode.steps]
        last = episode.trace.turns[-1] if episode.trace.turns else None
        if last is not None and (not steps or steps[-1].raw != last.raw):
            steps.append(proto.Step(last.raw))
        messages = proto.build_messages(
            episode.item.question, image_ref(episode.trace.images[0]), steps, system=self.system,
            layout="chat", protocol=self.config.protocol)
        return messages

    def _save(self, traces: list[Trace]) -> None:
        if traces:
            self.store.save_traces(traces)
