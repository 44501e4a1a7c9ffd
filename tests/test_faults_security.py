"""No key leaves the server, no server file is read or confirmed from the UI, no unbounded input is taken.

The API-key tests run a real OpenAI-compatible endpoint on 127.0.0.1 that
records the Authorization header of every request, and point the
Playground (its plain callback, as the UI calls it) and the eval CLI at it.
"""

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.fault_helpers import orphaned_runs
from workbench import settings, upkeep
from workbench.agent.config import RunnerConfig
from workbench.agent.runner import MAX_QUESTION_CHARS, AgentItem
from workbench.store import Store
from workbench.ui import tab_eval, tab_playground, tab_train
from workbench.ui.context import UIContext
from workbench.ui.deployment import DeploymentPolicy, Viewer

ROOT = Path(__file__).resolve().parent.parent
DEMO_IMAGE = next((ROOT / "workbench/demo/items/images").iterdir())
SERVER_KEY = "sk-SERVER-SECRET-0451"
USER_KEY = "sk-USERS-OWN-KEY-7788"
pytestmark = pytest.mark.faults


class Endpoint:
    """A chat-completions endpoint that answers every request and remembers each Authorization header."""

    def __init__(self):
        self.seen: list[str | None] = []
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                seen.append(self.headers.get("Authorization"))
                body = json.dumps({"choices": [{"message": {"content": "<answer>red</answer>"},
                                                "finish_reason": "stop"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SERVER_KEY)
    monkeypatch.delenv("WORKBENCH_OPENAI_BASE_URLS", raising=False)
    served = Endpoint()
    yield served
    served.close()


def _playground(endpoint: Endpoint, api_key: str | None = None) -> list:
    ctx = UIContext(store=Store(), policy=DeploymentPolicy())
    config = RunnerConfig(tools=(), max_turns=1, max_new_tokens=16)
    return list(tab_playground.run_playground(ctx, Viewer(), [str(DEMO_IMAGE)], None, "What colour?",
                                              f"openai:some-model@{endpoint.url}", None, config, api_key=api_key))


def _no_run_left_going() -> None:
    store = Store()
    upkeep.at_start(store)
    assert orphaned_runs(store) == [] and all(run["status"] == "succeeded" for run in store.list_runs())


def _stored_bytes() -> bytes:
    return b"".join(path.read_bytes() for path in settings.home().rglob("*") if path.is_file())


def test_the_servers_key_is_not_sent_to_an_endpoint_a_user_typed(endpoint):
    updates = _playground(endpoint)
    assert updates[-1].traces and updates[-1].traces[0].final_answer == "red"
    assert endpoint.seen and all(SERVER_KEY not in (header or "") for header in endpoint.seen), endpoint.seen
    _no_run_left_going()


def test_the_users_own_key_is_sent_for_the_run_and_never_stored(endpoint):
    _playground(endpoint, api_key=USER_KEY)
    assert endpoint.seen and set(endpoint.seen) == {f"Bearer {USER_KEY}"}
    Store().db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert USER_KEY.encode() not in _stored_bytes()
    _no_run_left_going()


def test_the_servers_key_goes_to_an_endpoint_the_operator_listed(endpoint, monkeypatch):
    monkeypatch.setenv("WORKBENCH_OPENAI_BASE_URLS", f"https://api.openai.com/v1, {endpoint.url}/")
    _playground(endpoint)
    assert endpoint.seen and set(endpoint.seen) == {f"Bearer {SERVER_KEY}"}


def test_an_eval_job_does_not_send_the_servers_key_to_an_unlisted_endpoint(endpoint, tmp_path):
    from workbench.benchmarks import mat_coding_mini

    data = mat_coding_mini.generate(tmp_path / "mini", count=1)
    done = subprocess.run([sys.executable, "-m", "workbench", "eval", "--benchmark", "mat-coding", "--data",
                           str(data), "--model", f"openai:m@{endpoint.url}", "--tools", "", "--max-turns", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert endpoint.seen and all(SERVER_KEY not in (header or "") for header in endpoint.seen)


# --- server files through UI paths ------------------------------------------------------------

SERVER_FILES = ["/etc/shadow", "/etc/passwd", "/etc/no-such-file", "/root", "../../../../etc/hostname"]


@pytest.mark.parametrize("path", SERVER_FILES)
def test_a_corpus_path_outside_the_allowed_folders_is_refused_without_confirming_it_exists(path):
    ctx = UIContext(store=Store(), policy=DeploymentPolicy())
    config = RunnerConfig(tools=("search",), max_turns=1, max_new_tokens=8)
    with pytest.raises(tab_playground.PlaygroundError) as refused:
        list(tab_playground.run_playground(ctx, Viewer(), [str(DEMO_IMAGE)], None, "Who?", "demo", None, config,
                                           corpus=path))
    message = str(refused.value)
    assert "outside the folders this server reads files from" in message and "WORKBENCH_FILE_ROOTS" in message
    assert "JSON" not in message and "line 1" not in message and "exist" not in message


@pytest.mark.parametrize("path", SERVER_FILES[:3])
def test_train_and_eval_paths_outside_the_allowed_folders_are_refused_alike(path):
    with pytest.raises(ValueError, match="outside the folders this server reads files from"):
        tab_train.train_config("grpo", {"data_files": path})
    with pytest.raises(ValueError, match="outside the folders this server reads files from"):
        tab_eval.eval_configs({"benchmark": "mat-coding", "data": path})
    with pytest.raises(ValueError, match="outside the folders this server reads files from"):
        tab_train.train_config("grpo", {"data_files": str(DEMO_IMAGE), "search_corpus": path})


def test_an_image_path_outside_the_allowed_folders_is_skipped_with_the_reason():
    stored, problems = tab_playground.accept_images(Store(), ["/etc/passwd"], None)
    assert stored == [] and len(problems) == 1 and "outside the folders" in problems[0]


def test_an_operator_can_add_a_folder(tmp_path, monkeypatch):
    outside = tmp_path.parent / f"{tmp_path.name}-corpus"
    outside.mkdir()
    (outside / "docs.jsonl").write_text('{"id": "1", "title": "t", "text": "x"}\n')
    monkeypatch.setenv("WORKBENCH_FILE_ROOTS", str(outside))
    from workbench.file_roots import confine

    assert confine(outside / "docs.jsonl", "search corpus") == str((outside / "docs.jsonl").resolve())
    with pytest.raises(ValueError):
        confine(tmp_path / "elsewhere.jsonl", "search corpus")


# --- unbounded input ----------------------------------------------------------------------------

def test_a_megabyte_question_is_refused_with_the_limit():
    with pytest.raises(ValueError, match=f"{MAX_QUESTION_CHARS}"):
        AgentItem(question="x" * 1_000_000, images=[str(DEMO_IMAGE)])
    ctx = UIContext(store=Store(), policy=DeploymentPolicy())
    with pytest.raises(tab_playground.PlaygroundError, match="shorten"):
        list(tab_playground.run_playground(ctx, Viewer(), [str(DEMO_IMAGE)], None, "x" * 1_000_000, "demo", None,
                                           RunnerConfig(tools=())))
    assert Store().list_runs(kind="playground") == []  # nothing was stored
