"""Model backends on the real tiny model: batching, images, stop strings, seeds, LoRA, errors, and
OpenAIBackend against a real local `transformers serve` process."""

import base64
import io
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from PIL import Image

from workbench import protocol
from workbench.backends import GenerationConfig, OpenAIBackend, TransformersBackend, resolve_model, trim_at_stop
from workbench.backends.remote import _restore_stop, _tool_calls_text, chat_completions_url, to_openai_messages
from workbench.backends.tiny import build_tiny_model
from workbench.images import put_image
from workbench.trace import image_ref

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40)]
SIZES = [(300, 200), (40, 120), (112, 112), (500, 90)]
SEARCH_TOOL = [{"type": "function", "function": {
    "name": "search", "description": "Search the web.",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}}]


def _conversation(image, text="<query> What is shown? </query>"):
    return [{"role": "system", "content": "You answer questions about images."},
            {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": text}]}]


def _images():
    return [Image.new("RGB", size, colour) for size, colour in zip(SIZES, COLOURS)]


def _data_url(image):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _clean_piece(text, start=2, length=4):
    """A printable-ASCII substring of `text` from `start` on, to use as a stop string."""
    for begin in range(start, len(text) - length):
        piece = text[begin:begin + length]
        if piece.isascii() and piece.isprintable() and piece.strip():
            return piece
    return None


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("backend") / "tiny", seed=0)


@pytest.fixture(scope="module")
def backend(tiny_dir):
    return TransformersBackend(str(tiny_dir))


def test_trim_at_stop_keeps_the_earliest_ending_stop_string():
    assert trim_at_stop("<think>a</think><search>q</search> junk", ["</answer>", "</search>"]) == (
        "<think>a</think><search>q</search>", True)
    assert trim_at_stop("abc </code> x </answer>", ["</answer>", "</code>"]) == ("abc </code>", True)
    assert trim_at_stop("no stop here", ["</answer>"]) == ("no stop here", False)


def test_batch_with_different_image_sizes_matches_one_at_a_time(backend, tmp_path):
    images = _images()
    images[0].save(tmp_path / "first.png")
    stored = put_image(images[3])
    sources = [str(tmp_path / "first.png"), images[1], _data_url(images[2]), image_ref(stored.sha)]
    conversations = [_conversation(source, "q" * (index * 7 + 1)) for index, source in enumerate(sources)]
    config = GenerationConfig(max_new_tokens=16)
    batched = backend.generate(conversations, config)
    alone = [backend.generate([conversation], config)[0] for conversation in conversations]
    for together, single in zip(batched, alone):
        assert together.error is None and together.finish_reason in ("stop", "length")
        assert together.text == single.text  # left padding does not change what a row generates
        assert together.prompt_tokens == single.prompt_tokens
        assert 0 < together.completion_tokens <= 16
    assert len({generation.prompt_tokens for generation in batched}) > 1  # sizes give different token counts


def test_stop_strings_cut_each_row_right_after_its_first_stop(backend):
    conversations = [_conversation(image, f"question {index}") for index, image in enumerate(_images())]
    free = backend.generate(conversations, GenerationConfig(max_new_tokens=32))
    stops = [piece for piece in (_clean_piece(g.text, start=3 + i) for i, g in enumerate(free)) if piece]
    assert len(stops) >= 2
    stopped = backend.generate(conversations, GenerationConfig(max_new_tokens=32, stop=stops))
    for before, after in zip(free, stopped):
        expected, found = trim_at_stop(before.text, stops)
        assert after.text == expected
        if found:
            assert after.finish_reason == "stop"
            assert after.completion_tokens < before.completion_tokens  # generation itself stopped early
    assert any(trim_at_stop(g.text, stops)[1] for g in free)


def test_sampling_is_reproducible_with_a_seed(backend):
    conversations = [_conversation(image) for image in _images()[:2]]
    sampled = GenerationConfig(max_new_tokens=20, temperature=1.0, seed=7)
    first = backend.generate(conversations, sampled)
    assert [g.text for g in backend.generate(conversations, sampled)] == [g.text for g in first]
    reseeded = backend.generate(conversations, GenerationConfig(max_new_tokens=20, temperature=1.0, seed=8))
    assert [g.text for g in reseeded] != [g.text for g in first]
    greedy = GenerationConfig(max_new_tokens=20)
    assert [g.text for g in backend.generate(conversations, greedy)] == [
        g.text for g in backend.generate(conversations, greedy)]


def test_tool_schemas_reach_the_prompt(backend):
    conversation = [_conversation(_images()[0])]
    config = GenerationConfig(max_new_tokens=2)
    plain = backend.generate(conversation, config)[0]
    with_tools = backend.generate(conversation, config, tools=SEARCH_TOOL)[0]
    assert with_tools.error is None and with_tools.prompt_tokens > plain.prompt_tokens + 20


def test_a_bad_image_fails_only_its_own_row(backend, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    results = backend.generate([_conversation(str(broken)), _conversation(_images()[0]),
                                _conversation(str(tmp_path / "missing.png"))], GenerationConfig(max_new_tokens=4))
    assert results[0].finish_reason == "error" and "broken.png" in results[0].error
    assert results[1].error is None and results[1].completion_tokens > 0
    assert results[2].finish_reason == "error" and "no such file" in results[2].error


def test_max_pixels_is_respected(tiny_dir, backend):
    small = TransformersBackend(str(tiny_dir), max_pixels=56 * 56, batch_size=2)
    assert small.pixel_range == (56 * 56, 56 * 56)
    conversation = [_conversation(Image.new("RGB", (640, 480), "white"))]
    config = GenerationConfig(max_new_tokens=1)
    # 640x480 shrinks to 84x112 (3x4 = 12 tokens of 28x28) under the default cap, to 28x56 (2 tokens) under 56*56
    assert backend.generate(conversation, config)[0].prompt_tokens - small.generate(
        conversation, config)[0].prompt_tokens == 12 - 2


def test_lora_adapter_loads_and_changes_output_only_when_non_zero(tiny_dir, backend, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    target = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)"  # keeps the vision tower out
    for name, init in (("zero", True), ("trained", False)):
        base = AutoModelForImageTextToText.from_pretrained(tiny_dir, local_files_only=True)
        lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=16, target_modules=target, init_lora_weights=init))
        lora.save_pretrained(tmp_path / name)
    conversations = [_conversation(image) for image in _images()[:2]]
    config = GenerationConfig(max_new_tokens=16)
    base_texts = [g.text for g in backend.generate(conversations, config)]
    zero = TransformersBackend(str(tiny_dir), adapter=str(tmp_path / "zero"))
    trained = TransformersBackend(str(tiny_dir), adapter=str(tmp_path / "trained"))
    assert trained.adapter == str(tmp_path / "trained")
    assert [g.text for g in zero.generate(conversations, config)] == base_texts
    assert [g.text for g in trained.generate(conversations, config)] != base_texts


def test_unusable_model_sources_say_what_to_pass(tmp_path):
    with pytest.raises(ValueError, match="(?i)tiny.*config.json.*hub id"):
        TransformersBackend(str(tmp_path / "no-such-model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no config.json"):
        TransformersBackend(str(tmp_path / "empty"))
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    with pytest.raises(ValueError, match="LoRA adapter, not a model"):
        resolve_model(str(tmp_path / "adapter"))
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="is a file"):
        resolve_model(str(tmp_path / "file.bin"))
    with pytest.raises(ValueError, match="not a hub id"):
        resolve_model("not a/valid/hub id")
    with pytest.raises(ValueError, match="no model given"):
        resolve_model("  ")


def test_hub_id_that_is_not_cached_fails_fast_when_offline(monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    started = time.monotonic()
    with pytest.raises(ValueError, match="not in the local hub cache"):
        resolve_model("someorg/not-a-cached-model")
    assert time.monotonic() - started < 5  # no minutes of download retries


def test_bad_adapter_is_a_clear_error(tiny_dir, tmp_path):
    with pytest.raises(ValueError, match="adapter_config.json"):
        TransformersBackend(str(tiny_dir), adapter=str(tmp_path / "missing-adapter"))


def test_resolve_model_specs(tmp_path):
    from workbench import settings

    tiny = resolve_model("tiny", batch_size=4)
    assert isinstance(tiny, TransformersBackend) and tiny.model_id == "tiny-qwen2.5-vl"
    assert (settings.models_dir() / "tiny-qwen2_5_vl" / "config.json").is_file()
    remote = resolve_model("openai:Qwen/Qwen2.5-VL-3B@main@http://127.0.0.1:9/v1", max_concurrency=2)
    assert isinstance(remote, OpenAIBackend)
    assert (remote.model_id, remote.url) == ("Qwen/Qwen2.5-VL-3B@main", "http://127.0.0.1:9/v1/chat/completions")
    assert resolve_model("openai:gpt-4o").url == "https://api.openai.com/v1/chat/completions"
    assert chat_completions_url("http://h:8000") == "http://h:8000/v1/chat/completions"
    with pytest.raises(ValueError, match="openai:<model>@<base_url>"):
        resolve_model("openai:")
    with pytest.raises(ValueError, match="adapter"):
        resolve_model("openai:gpt-4o", adapter=str(tmp_path))


def test_openai_messages_carry_images_as_data_urls_and_text_tool_results_as_user_turns(tmp_path):
    image = _images()[0]
    image.save(tmp_path / "a.jpg")
    conversation = _conversation(str(tmp_path / "a.jpg")) + [
        {"role": "assistant", "content": "<think>t</think><code>x</code>"},
        {"role": "tool", "content": [{"type": "image", "image": image}, {"type": "text", "text": "done"}]}]
    messages = to_openai_messages(conversation)
    assert messages[0] == {"role": "system", "content": "You answer questions about images."}
    assert messages[1]["content"][0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert messages[2] == {"role": "assistant", "content": "<think>t</think><code>x</code>"}
    assert messages[3]["role"] == "user"
    assert [part["type"] for part in messages[3]["content"]] == ["text", "image_url", "text", "text"]
    assert messages[3]["content"][2]["text"] == "done"
    assert messages[3]["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")


def test_server_replies_are_normalised_to_end_with_their_stop_string():
    stops = protocol.TAG_STOP_STRINGS
    stopped = {"finish_reason": "stop"}
    # OpenAI removes the matched stop string; the open tag tells which one it was
    assert _restore_stop("<think>t</think><answer> 42", stopped, stops) == "<think>t</think><answer> 42</answer>"
    # vLLM names it
    assert _restore_stop("<think>t</think> q", {**stopped, "stop_reason": "</search>"}, stops).endswith("</search>")
    assert _restore_stop("<think>t</think><code>x</code>", stopped, stops) == "<think>t</think><code>x</code>"
    assert _restore_stop("<think>t</think><answer> 4", {"finish_reason": "length"}, stops).endswith("4")
    assert _restore_stop("<think>done</think>", stopped, stops) == "<think>done</think>"  # ended on end-of-turn


def test_structured_tool_calls_become_protocol_text():
    calls = [{"id": "c1", "type": "function",
              "function": {"name": "search", "arguments": '{"query": "tower architect"}'}}]
    parsed = protocol.parse_turn("<think>look it up</think>\n" + _tool_calls_text(calls), "native")
    assert (parsed.error, parsed.action, parsed.argument) == (None, "search", "tower architect")


# --- a real `transformers serve` process serving the tiny model folder ---

def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def served(tiny_dir, tmp_path_factory):
    """(base_url, model name) of `transformers serve` pinned to the tiny model; killed at the end."""
    port = _free_port()
    folder = tmp_path_factory.mktemp("serve")
    env = {**os.environ, "HF_HUB_CACHE": str(folder / "hub-cache"), "HF_HUB_OFFLINE": "1"}
    log = open(folder / "serve.log", "wb")  # noqa: SIM115  (the server writes to it until the fixture ends)
    process = subprocess.Popen(
        [sys.executable, "-m", "transformers.cli.transformers", "serve", str(tiny_dir),
         "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                pytest.fail(f"transformers serve exited: {(folder / 'serve.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"transformers serve not healthy in 90 s: {(folder / 'serve.log').read_text()[-2000:]}")
            time.sleep(0.25)
        yield base_url, str(tiny_dir)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


@pytest.mark.slow
def test_openai_backend_chats_with_an_image_through_transformers_serve(served):
    base_url, model = served
    backend = OpenAIBackend(base_url, model, timeout_s=60, max_concurrency=3)
    images = _images()[:3]
    conversations = [_conversation(_data_url(images[0])), _conversation(images[1]), _conversation(images[2])]
    results = backend.generate(conversations, GenerationConfig(max_new_tokens=12))
    for result in results:
        assert result.error is None, result.error
        assert result.text and result.finish_reason in ("stop", "length")
        assert result.prompt_tokens > 0 and 0 < result.completion_tokens <= 12
    with_tools = backend.generate(conversations[:1], GenerationConfig(max_new_tokens=12), tools=SEARCH_TOOL)[0]
    assert with_tools.error is None, with_tools.error
    assert with_tools.prompt_tokens > results[0].prompt_tokens  # the tool schema reached the prompt


def test_openai_backend_stop_strings_through_transformers_serve(served):
    base_url, model = served
    backend = OpenAIBackend(base_url, model, timeout_s=60)
    conversation = [_conversation(_images()[0])]
    free = backend.generate(conversation, GenerationConfig(max_new_tokens=24))[0]
    stop = _clean_piece(free.text, start=3)
    assert stop, free.text
    stopped = backend.generate(conversation, GenerationConfig(max_new_tokens=24, stop=[stop]))[0]
    assert stopped.error is None, stopped.error
    assert stopped.text == trim_at_stop(free.text, [stop])[0] and stopped.text.endswith(stop)
    assert stopped.finish_reason == "stop"
    assert backend.stop_supported in (True, False)  # learnt: later calls skip a failing first attempt


def test_openai_backend_errors_come_back_as_error_generations(served, monkeypatch):
    base_url, _ = served
    monkeypatch.setenv("WORKBENCH_TEST_KEY", "sk-secret-never-shown")
    wrong_model = OpenAIBackend(base_url, "no/such-model", api_key_env="WORKBENCH_TEST_KEY")
    result = wrong_model.generate([_conversation(_images()[0])], GenerationConfig(max_new_tokens=4))[0]
    assert result.finish_reason == "error" and "HTTP 4" in result.error
    down = OpenAIBackend(f"http://127.0.0.1:{_free_port()}/v1", "m", api_key_env="WORKBENCH_TEST_KEY", timeout_s=5)
    results = down.generate([_conversation(_images()[0])] * 2, GenerationConfig(max_new_tokens=4))
    assert [r.finish_reason for r in results] == ["error", "error"]
    assert "Connect" in results[0].error
    for text in (result.error, results[0].error, repr(down)):
        assert "sk-secret-never-shown" not in text
