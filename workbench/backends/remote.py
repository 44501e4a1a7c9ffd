"""Any OpenAI-compatible /v1/chat/completions endpoint as a backend (GPT-4o, vLLM, `transformers serve`).

Images are sent inline as base64 data URLs. The server's own API key (read
from the environment at request time, never stored on the object, logged or
put in error messages) is sent only to base URLs the operator trusts:
WORKBENCH_OPENAI_BASE_URLS (comma-separated; default the OpenAI API). Any
other endpoint gets the user's own key if one was given (kept in memory for
this backend only, never written anywhere) or no key at all; redirects are
not followed, so a trusted endpoint cannot forward the key either. A batch
is sent as concurrent requests (threads). Every failure (connection refused,
timeout, HTTP error, malformed reply) becomes `Generation(finish_reason=
"error")` instead of an exception.

Servers differ on stop strings: OpenAI drops the matched stop string from
the text, `transformers serve` keeps it, vLLM reports it in `stop_reason`.
The text is normalised so it always ends with the stop string, as the local
backend returns it.
"""

import base64
import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from workbench.backends.base import (
    Generation,
    GenerationConfig,
    block_image_source,
    error_generation,
    is_image_block,
    load_block_image,
    trim_at_stop,
)
from workbench.images import ImageError
from workbench.trace import ref_sha

_PASS_THROUGH_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


def chat_completions_url(base_url: str) -> str:
    """`http://host:8000` and `http://host:8000/v1` both mean `http://host:8000/v1/chat/completions`."""
    base = base_url.rstrip("/")
    if urlsplit(base).path in ("", "/"):
        base += "/v1"
    return base + "/chat/completions"


DEFAULT_TRUSTED_BASE_URLS = ("https://api.openai.com/v1",)


def _endpoint(base_url: str) -> tuple[str, str, int | None, str]:
    """(scheme, host, port, path) of a base URL's chat endpoint, for comparing two spellings of one endpoint."""
    parts = urlsplit(chat_completions_url(base_url.strip()))
    scheme = parts.scheme.lower()
    port = parts.port or {"https": 443, "http": 80}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port, parts.path.rstrip("/")


def trusted_base_urls() -> list[str]:
    """Base URLs the server's own API key may be sent to: WORKBENCH_OPENAI_BASE_URLS, else the OpenAI API."""
    configured = [url.strip() for url in os.environ.get("WORKBENCH_OPENAI_BASE_URLS", "").split(",") if url.strip()]
    return configured or list(DEFAULT_TRUSTED_BASE_URLS)


def is_trusted_endpoint(base_url: str) -> bool:
    """Whether the server's own key may go to `base_url` (same scheme, host, port and path as a trusted one).

    >>> is_trusted_endpoint("https://API.openai.com:443/v1/"), is_trusted_endpoint("http://api.openai.com/v1")
    (True, False)
    """
    try:
        wanted = _endpoint(base_url)
        return any(_endpoint(url) == wanted for url in trusted_base_urls())
    except ValueError:  # an unparsable URL (e.g. a bad port) is trusted by nobody
        return False


def image_data_url(source: Any) -> str:
    """A validated image as a data URL; JPEG/PNG/WebP files are sent as they are, others as PNG."""
    if isinstance(source, str) and source.startswith("data:"):
        load_block_image(source)  # validates size, pixels and format
        return source
    image = load_block_image(source)
    path = _local_path(source)
    if path is not None:
        with open(path, "rb") as handle:
            header = handle.read(16)
        mime = _sniff_mime(header)
        if mime:
            return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _local_path(source: Any) -> Path | None:
    from workbench.images import image_path

    if isinstance(source, Path):
        return source
    if isinstance(source, str):
        sha = ref_sha(source)
        return image_path(sha) if sha else Path(source.removeprefix("file://"))
    return None


def _sniff_mime(header: bytes) -> str | None:
    if header.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if header.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if header[:4] == b"RIFF" and header[8:12] == b"WEBP":
        return "image/webp"
    return None


def _content_parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    parts = []
    for block in content or []:
        if is_image_block(block):
            parts.append({"type": "image_url", "image_url": {"url": image_data_url(block_image_source(block))}})
        elif isinstance(block, dict) and "text" in block:
            parts.append({"type": "text", "text": str(block["text"])})
    return parts


def to_openai_messages(conversation: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """HF chat messages → OpenAI chat messages.

    A tool result without a `tool_call_id` (the runner's text protocol), or one
    carrying an image, is sent as a user message wrapped in <tool_response>,
    which is how the Qwen templates render tool results anyway; strict
    endpoints reject tool messages that do not answer a structured tool call.
    """
    messages = []
    for message in conversation:
        role = message.get("role")
        content = message.get("content")
        if role == "tool":
            parts = _content_parts(content)
            has_image = any(part["type"] == "image_url" for part in parts)
            if message.get("tool_call_id") and not has_image:
                messages.append({"role": "tool", "tool_call_id": message["tool_call_id"],
                                 "content": "".join(part["text"] for part in parts)})
            else:
                wrapped = [{"type": "text", "text": "<tool_response>\n"}, *parts,
                           {"type": "text", "text": "\n</tool_response>"}]
                messages.append({"role": "user", "content": wrapped})
            continue
        converted: dict[str, Any] = {"role": role}
        if role in ("system", "assistant"):
            # Plain text here: many servers reject image parts outside user messages.
            converted["content"] = "".join(part.get("text", "") for part in _content_parts(content))
        else:
            converted["content"] = _content_parts(content)
        if role == "assistant" and message.get("tool_calls"):
            converted["tool_calls"] = message["tool_calls"]
        messages.append(converted)
    return messages


def _tool_calls_text(tool_calls: list[dict[str, Any]]) -> str:
    """Structured tool calls written back as the Qwen <tool_call> text the protocol parser reads."""
    rendered = []
    for call in tool_calls:
        function = call.get("function", call)
        arguments = function.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                pass  # keep the server's string as it is
        payload = json.dumps({"name": function.get("name"), "arguments": arguments}, ensure_ascii=False)
        rendered.append(f"<tool_call>\n{payload}\n</tool_call>")
    return "\n".join(rendered)


def _restore_stop(text: str, choice: dict[str, Any], stops: list[str]) -> str:
    """Put back the stop string a server removed (OpenAI does; vLLM names it in `stop_reason`)."""
    if not stops or choice.get("finish_reason") != "stop" or any(text.endswith(stop) for stop in stops):
        return text
    reported = choice.get("stop_reason")
    if isinstance(reported, str) and reported in stops:
        return text + reported
    for stop in stops:
        # A closing tag whose opening tag is still open is the stop that fired.
        if stop.startswith("</") and stop.endswith(">"):
            opening = "<" + stop[2:]
            if text.rfind(opening) > text.rfind(stop):
                return text + stop
    return text


class OpenAIBackend:
    """A model behind an OpenAI-compatible chat completions endpoint."""

    adapter: str | None = None

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 60,
                 max_concurrency: int = 8, api_key: str | None = None):
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.base_url = base_url
        self.url = chat_completions_url(base_url)
        self.model_id = model
        self.api_key_env = api_key_env
        self._own_key = (api_key or "").strip() or None  # the user's key: memory only, never repr'd or stored
        self.server_key_allowed = is_trusted_endpoint(base_url)
        self.timeout_s = timeout_s
        self.max_concurrency = max_concurrency
        self._client = httpx.Client(timeout=timeout_s, follow_redirects=False)
        self.stop_supported: bool | None = None  # learnt from the first request that sends `stop`

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.model_id!r}, url={self.url!r})"

    def close(self) -> None:
        self._client.close()

    def _headers(self) -> dict[str, str]:
        key = self._own_key or (os.environ.get(self.api_key_env, "") if self.server_key_allowed else "")
        return {"Authorization": f"Bearer {key}"} if key else {}

    def generate(self, conversations: list[list[dict]], config: GenerationConfig,
                 tools: list[dict] | None = None) -> list[Generation]:
        """One assistant turn per conversation, requested concurrently; failures are error Generations."""
        if not conversations:
            return []
        workers = min(self.max_concurrency, len(conversations))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="openai-backend") as pool:
            return list(pool.map(lambda conversation: self._generate_one(conversation, config, tools),
                                 conversations))

    def _request_body(self, conversation: list[dict], config: GenerationConfig,
                      tools: list[dict] | None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model_id, "messages": to_openai_messages(conversation),
                                "max_tokens": config.max_new_tokens, "temperature": config.temperature,
                                "top_p": config.top_p, "stream": False}
        if config.seed is not None:
            body["seed"] = config.seed
        if config.stop and self.stop_supported is not False:
            body["stop"] = list(config.stop)
        if tools:
            body["tools"] = tools
        return body

    def _post(self, body: dict[str, Any]) -> "httpx.Response | Generation":
        try:
            try:
                return self._client.post(self.url, json=body, headers=self._headers())
            except (httpx.ReadError, httpx.RemoteProtocolError):
                # A pooled keep-alive connection the server dropped (uvicorn does after a 500): once more.
                return self._client.post(self.url, json=body, headers=self._headers())
        except httpx.TimeoutException:
            return error_generation(f"{self.url}: no reply within {self.timeout_s} s")
        except httpx.HTTPError as exc:
            return error_generation(f"{self.url}: {type(exc).__name__}: {exc}")

    def _post_with_stop_fallback(self, body: dict[str, Any]) -> "httpx.Response | Generation":
        """POST; if the server breaks on `stop` (transformers serve 5.24 answers 500 for VLMs), go without.

        Without `stop` the server runs on to end-of-turn or max_tokens and the
        text is trimmed here instead, so the result is the same, only slower.
        """
        response = self._post(body)
        if isinstance(response, Generation) or "stop" not in body or self.stop_supported is not None:
            return response
        if response.status_code >= 500:
            retry = self._post({key: value for key, value in body.items() if key != "stop"})
            if not isinstance(retry, Generation) and retry.status_code == 200:
                self.stop_supported = False
                return retry
        elif response.status_code == 200:
            self.stop_supported = True
        return response

    def _generate_one(self, conversation: list[dict], config: GenerationConfig,
                      tools: list[dict] | None) -> Generation:
        try:
            body = self._request_body(conversation, config, tools)
        except (ImageError, ValueError, TypeError, OSError) as exc:
            return error_generation(f"could not build the request: {exc}")
        response = self._post_with_stop_fallback(body)
        if isinstance(response, Generation):
            return response
        if response.status_code != 200:
            return error_generation(f"{self.url}: HTTP {response.status_code}: {response.text[:300]}")
        try:
            payload = response.json()
            choice = payload["choices"][0]
            message = choice.get("message") or {}
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            return error_generation(f"{self.url}: malformed reply ({type(exc).__name__}): {response.text[:300]}")
        text = message.get("content") or ""
        if isinstance(text, list):  # some servers answer in parts
            text = "".join(part.get("text", "") for part in text if isinstance(part, dict))
        if message.get("tool_calls"):
            text = (text + "\n" if text else "") + _tool_calls_text(message["tool_calls"])
        if self.stop_supported is not False:  # only a server that got `stop` can have removed one
            text = _restore_stop(text, choice, config.stop)
        text, hit_stop = trim_at_stop(text, config.stop)
        usage = payload.get("usage") or {}
        finish = "length" if choice.get("finish_reason") == "length" and not hit_stop else "stop"
        return Generation(text=text, prompt_tokens=int(usage.get("prompt_tokens") or 0),
                          completion_tokens=int(usage.get("completion_tokens") or 0), finish_reason=finish)
