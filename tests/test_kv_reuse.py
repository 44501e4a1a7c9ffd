"""Prefix KV-cache reuse across turns (workbench.backends.kv_reuse) on both real tiny architectures.

Every test compares a backend with reuse against one with reuse off (full
prefill every turn): greedy tokens must be identical, and the counters show
that reuse really happened, so a wrong position, image or cache row shows up
as a different token.
"""

import numpy as np
import pytest
import torch
from PIL import Image

from workbench.agent.runner import AgentItem, AgentRunner, RunnerConfig
from workbench.backends import GenerationConfig, TransformersBackend
from workbench.backends.kv_reuse import Entry, Row, usable_prefix
from workbench.backends.tiny import build_tiny_model
from workbench.store import Store
from workbench.trace import ToolCall

ARCHES = ("qwen2_5_vl", "qwen3_vl")
SYSTEM = "You answer questions about images."


def _image(index, size=(112, 112)):
    """Seeded noise: the random tiny models' outputs depend on it more than on flat colours."""
    pixels = np.random.default_rng(index).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _conversations():
    """Four rows of different lengths (image sizes and text), so the batch is left-padded."""
    return [[{"role": "system", "content": SYSTEM},
             {"role": "user", "content": [{"type": "image", "image": _image(index, (56 + 28 * index, 112))},
                                          {"type": "text", "text": "question " + "x " * (5 * index)}]}]
            for index in range(4)]


# Qwen3-VL repeats every check on the second architecture: the full suite runs it, the fast tier does not.
@pytest.fixture(scope="module", params=[ARCHES[0], pytest.param(ARCHES[1], marks=pytest.mark.slow)])
def pair(request, tmp_path_factory):
    """(backend with reuse, backend without) on one tiny architecture."""
    folder = build_tiny_model(tmp_path_factory.mktemp(request.param) / "tiny", arch=request.param, seed=0)
    return TransformersBackend(str(folder)), TransformersBackend(str(folder), reuse_kv_cache=False)


def _assert_same(reused, full):
    assert [g.error for g in reused] == [None] * len(reused)
    assert [g.text for g in reused] == [g.text for g in full]
    assert [g.prompt_tokens for g in reused] == [g.prompt_tokens for g in full]
    assert [g.finish_reason for g in reused] == [g.finish_reason for g in full]


def test_multi_turn_batch_with_new_images_matches_full_prefill(pair):
    kv, full = pair
    conversations = _conversations()
    config = GenerationConfig(max_new_tokens=24)
    previous_prompts = 0
    for turn in range(3):
        before = kv._kv.reused_tokens
        reused, reference = kv.generate(conversations, config), full.generate(conversations, config)
        _assert_same(reused, reference)
        assert kv._kv.reused_tokens - before >= previous_prompts  # each row's whole last prompt came from the cache
        previous_prompts = sum(g.prompt_tokens for g in reference)
        for index, (conversation, generation) in enumerate(zip(conversations, reference)):
            conversation.append({"role": "assistant", "content": generation.text})
            blocks = [{"type": "text", "text": f"tool output {turn}"}]
            if turn == 0 or index % 2:  # turn 1 gives every row a new image after its cached prefix
                blocks.insert(0, {"type": "image", "image": _image(10 * turn + index + 5, (84, 56 + 28 * index))})
            conversation.append({"role": "user", "content": blocks})


@pytest.fixture
def rows_leaving(monkeypatch):
    """Counts how often the decode loop drops ended rows from its batch."""
    from workbench.backends.kv_decode import RoomyLayer

    calls = []
    move_rows = RoomyLayer.move_rows

    def counted(layer, sources, targets, count):
        calls.append(count)
        return move_rows(layer, sources, targets, count)

    monkeypatch.setattr(RoomyLayer, "move_rows", counted)
    return calls


def _stop_ending_rows_apart(backend, generations, tokens):
    """A stop string of `tokens` tokens that the rows of `generations` (made without stops) reach at
    the most different points, so that with it rows end at very different lengths."""
    tokenizer = backend.tokenizer
    rows = [tokenizer.encode(g.text, add_special_tokens=False) for g in generations]
    best, best_ends = None, 0
    for row in rows:
        for at in range(len(row) - tokens + 1):
            stop = tokenizer.decode(row[at:at + tokens])
            if len(tokenizer.encode(stop, add_special_tokens=False)) != tokens:
                continue
            ends = len({g.text.find(stop) for g in generations})
            if ends > best_ends:
                best, best_ends = stop, ends
    return best


@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("stop_tokens", [1, 2])  # 2: a stop string over two tokens (StopStringCriteria)
def test_rows_ending_at_different_lengths_leave_the_batch_with_the_same_tokens(pair, rows_leaving, temperature,
                                                                              stop_tokens):
    """Over turns with new images, rows that stop early leave the decode batch; every row's tokens, and
    so the prompts of later turns, stay those of generate without reuse."""
    kv, full = pair
    conversations = _conversations() + _conversations()[:2]  # the last two: siblings of the first two
    lengths = set()
    for turn in range(3):
        config = GenerationConfig(max_new_tokens=24, temperature=temperature, seed=7 + turn)
        config.stop = [_stop_ending_rows_apart(full, full.generate(conversations, config), stop_tokens)]
        reused, reference = kv.generate(conversations, config), full.generate(conversations, config)
        _assert_same(reused, reference)
        assert [g.completion_tokens for g in reused] == [g.completion_tokens for g in reference]
        lengths |= {g.completion_tokens for g in reference}
        for index, (conversation, generation) in enumerate(zip(conversations, reference)):
            conversation.append({"role": "assistant", "content": generation.text})
            blocks = [{"type": "text", "text": f"tool output {turn}"}]
            if index % 2:
                blocks.insert(0, {"type": "image", "image": _image(30 * turn + index + 7, (56, 84))})
            conversation.append({"role": "user", "content": blocks})
    assert len(lengths) >= 3, lengths  # rows really ended apart...
    assert rows_leaving  # ...and left the batch while others went on


def test_decode_cache_that_outgrows_its_room_gives_the_same_tokens(pair, monkeypatch, rows_leaving):
    from workbench.backends import kv_reuse

    monkeypatch.setattr(kv_reuse, "DECODE_ROOM", 3)  # the cache buffer grows several times per call
    kv, full = pair
    conversations = _conversations()
    for _ in range(2):
        config = GenerationConfig(max_new_tokens=20, temperature=1.0, seed=3)
        config.stop = [_stop_ending_rows_apart(full, full.generate(conversations, config), 1)]  # rows leave too
        reused, reference = kv.generate(conversations, config), full.generate(conversations, config)
        _assert_same(reused, reference)
        for conversation, generation in zip(conversations, reference):
            conversation += [{"role": "assistant", "content": generation.text},
                             {"role": "user", "content": [{"type": "text", "text": "more"}]}]
    assert rows_leaving  # rows also left the batch of the growing cache


def test_a_different_image_with_the_same_tokens_is_prefilled_again(pair):
    """The single_user layout swaps the image in place: same token ids, other pixels."""
    kv, full = pair
    question = [{"type": "text", "text": "what changed?"}]
    first = [[{"role": "system", "content": SYSTEM},
              {"role": "user", "content": [{"type": "image", "image": _image(101)}, *question]}]]
    swapped = [[first[0][0], {"role": "user", "content": [{"type": "image", "image": _image(102)}, *question]}]]
    config = GenerationConfig(max_new_tokens=24)
    _assert_same(kv.generate(first, config), full.generate(first, config))
    before = kv._kv.reused_tokens
    reused, reference = kv.generate(swapped, config), full.generate(swapped, config)
    _assert_same(reused, reference)
    image_start = kv._kv.prepare(*kv._prepare(swapped[0], None)).spans[0][0]
    assert 0 < kv._kv.reused_tokens - before <= image_start  # only the text before the image
    assert reused[0].text != kv.generate(first, config)[0].text  # the image matters to the output


def test_sampling_with_reuse_is_seeded_and_matches_full_prefill(pair):
    kv, full = pair
    conversations = _conversations()[:3]
    sampled = GenerationConfig(max_new_tokens=24, temperature=1.0, seed=11)
    for _ in range(2):
        reused, reference = kv.generate(conversations, sampled), full.generate(conversations, sampled)
        _assert_same(reused, reference)
        _assert_same(kv.generate(conversations, sampled), reference)  # again, now from the cache
        for conversation, generation in zip(conversations, reference):
            conversation += [{"role": "assistant", "content": generation.text},
                             {"role": "user", "content": [{"type": "text", "text": "go on"}]}]
    other_seed = kv.generate(conversations, GenerationConfig(max_new_tokens=24, temperature=1.0, seed=12))
    assert [g.text for g in other_seed] != [g.text for g in full.generate(conversations, sampled)]


@pytest.mark.parametrize("samples, temperature, batch_size", [(1, 0.0, 16), (3, 1.0, 4)])
def test_runner_episodes_are_the_same_with_and_without_reuse(pair, tmp_path, monkeypatch, rows_leaving, samples,
                                                             temperature, batch_size):
    """Realistic prompts: the runner's growing single_user message with retry tips, batched episodes
    (with samples, siblings share their question's prefix, across several batches)."""
    kv, full = pair
    for backend in pair:
        monkeypatch.setattr(backend, "batch_size", batch_size)
    items = []
    for index in range(3):
        _image(index, (112, 84 + 28 * index)).save(tmp_path / f"{index}.png")
        items.append(AgentItem(f"What is written in image {index}?", [tmp_path / f"{index}.png"], item_id=str(index)))
    tools = {"code": lambda argument, context: ToolCall("code", argument, "ran")}
    config = RunnerConfig(tools=("code",), max_turns=3, max_new_tokens=24, retry_parse_errors=True,
                          samples=samples, temperature=temperature)
    before = kv._kv.reused_tokens
    traces = {name: AgentRunner(backend, tools, config, store=Store()).run(items)
              for name, backend in (("kv", kv), ("full", full))}
    assert [[t.raw for t in trace.turns] for trace in traces["kv"]] == [
        [t.raw for t in trace.turns] for trace in traces["full"]]
    assert sum(len(trace.turns) for trace in traces["kv"]) > len(items)
    assert kv._kv.reused_tokens > before
    assert rows_leaving or not temperature  # sampled episodes end turns early: their rows left the batch


def test_the_cache_stays_within_its_byte_budget(pair):
    kv, _ = pair
    folder = kv.model_id
    config = GenerationConfig(max_new_tokens=16)
    for budget in (0, 400_000):
        small = TransformersBackend(folder, kv_cache_bytes=budget)
        full = TransformersBackend(folder, reuse_kv_cache=False)
        conversations = _conversations()
        for _ in range(3):
            _assert_same(small.generate(conversations, config), reference := full.generate(conversations, config))
            assert small._kv.cache.nbytes <= budget
            for conversation, generation in zip(conversations, reference):
                conversation += [{"role": "assistant", "content": generation.text},
                                 {"role": "user", "content": [{"type": "text", "text": "next"}]}]
        assert (small._kv.reused_tokens > 0) == (budget > 0)
    small.clear_kv_cache()
    assert len(small._kv.cache) == 0 and small._kv.cache.nbytes == 0


def test_a_conversation_keeps_one_entry_as_it_grows(pair):
    """Each turn's entry replaces the previous turn's, in both layouts the runner builds."""
    kv, _ = pair
    kv.clear_kv_cache()
    config = GenerationConfig(max_new_tokens=12)
    chat = _conversations()[:2]
    single = [[{"role": "system", "content": SYSTEM},
               {"role": "user", "content": [{"type": "image", "image": _image(200 + index)},
                                            {"type": "text", "text": f"question {index}"}]}] for index in range(2)]
    counts = []
    for turn in range(4):
        for conversation, generation in zip(chat + single, kv.generate(chat + single, config)):
            if conversation in chat:
                conversation += [{"role": "assistant", "content": generation.text},
                                 {"role": "user", "content": [{"type": "text", "text": f"result {turn}"}]}]
            else:  # single_user: the reply and the result are appended to the one user message
                conversation[1]["content"][1]["text"] += f"\n{generation.text} result {turn}"
        counts.append(len(kv._kv.cache))
    assert counts == [4] * 4, counts


def test_reuse_can_be_turned_off(pair):
    _, full = pair
    assert full._kv is None and "reuse_kv_cache=False" in full.kv_reuse_off_reason


def _row(ids, spans=(), fingerprints=()):
    ids = torch.tensor(ids)
    return Row(ids, ids.expand(3, -1), list(spans), list(fingerprints), None, [], None)


def _entry(ids, spans=(), fingerprints=()):
    return Entry(np.array(ids), list(spans), list(fingerprints), [(torch.zeros(1, len(ids), 1),) * 2], len(ids))


def test_usable_prefix_is_token_exact_keeps_images_whole_and_leaves_a_token():
    row = _row([1, 2, 9, 9, 9, 3, 4, 5], spans=[(2, 5)], fingerprints=[b"a"])
    assert usable_prefix(row, _entry([1, 2, 9, 9, 9, 3, 4, 5, 6], [(2, 5)], [b"a"])) == 7  # one left to generate
    assert usable_prefix(row, _entry([1, 2, 9, 9, 9, 3, 7], [(2, 5)], [b"a"])) == 6  # first differing token
    assert usable_prefix(row, _entry([1, 2, 9, 9, 9, 3], [(2, 5)], [b"b"])) == 2  # other pixels: up to the image
    assert usable_prefix(row, _entry([1, 2, 9, 9], [], [])) == 2  # never ends inside an image
    assert usable_prefix(row, _entry([8, 2], [], [])) == 0
