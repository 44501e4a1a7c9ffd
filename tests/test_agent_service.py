"""The agent service owns a question's run: created once the model is loaded, then succeeded, failed or cancelled."""

import pytest
from PIL import Image

from workbench.agent import service
from workbench.agent.config import RunnerConfig
from workbench.backends.replay import ReplayBackend
from workbench.store import Store

QUESTION = "What colour is the card?"


class BrokenBackend(ReplayBackend):
    def generate(self, conversations, config, tools=None):
        raise RuntimeError("the model server went away")


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "card.png"
    Image.new("RGB", (48, 32), "yellow").save(path)
    return path


def use_backend(monkeypatch, backend):
    monkeypatch.setattr(service, "get_backend", lambda model, adapter=None, api_key=None: backend)


def test_a_finished_question_leaves_a_succeeded_run_with_the_callers_tags(monkeypatch, image):
    use_backend(monkeypatch, ReplayBackend({QUESTION: ["<think> easy </think>\n<answer> yellow </answer>"]}))
    store = Store()
    traces = service.run_question(store, QUESTION, [image], config=RunnerConfig(tools=()), tags={"visitor": "v1"})
    run = store.get_run(traces[0].run_id)
    assert run["status"] == "succeeded" and run["config"]["visitor"] == "v1" and run["config"]["source"] == "playground"
    assert traces[0].final_answer == "yellow"


def test_a_failure_marks_the_run_failed_with_the_error(monkeypatch, image):
    use_backend(monkeypatch, BrokenBackend({}))
    store = Store()
    with pytest.raises(RuntimeError, match="went away"):
        service.run_question(store, QUESTION, [image], config=RunnerConfig(tools=()))
    [run] = store.list_runs(kind="playground")
    assert run["status"] == "failed" and "the model server went away" in run["summary"]["error"]


def test_a_stream_closed_early_is_cancelled(monkeypatch, image, tmp_path):
    turns = ["<think> a </think>\n<search> q </search>"] * 3
    use_backend(monkeypatch, ReplayBackend({QUESTION: turns}))
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"title": "Cards", "text": "The card is yellow."}\n')
    store = Store()
    events = service.stream_question(store, QUESTION, [image], config=RunnerConfig(tools=("search",), max_turns=3),
                                     corpus=corpus)
    first = next(events)
    events.close()  # the browser went away
    assert store.get_run(first.trace.run_id)["status"] == "cancelled"


def test_a_bad_image_is_refused_before_any_run_exists(monkeypatch, tmp_path):
    use_backend(monkeypatch, ReplayBackend({}))
    (tmp_path / "notes.png").write_text("not an image")
    store = Store()
    with pytest.raises(ValueError, match="not an image"):
        service.run_question(store, QUESTION, [tmp_path / "notes.png"])
    assert store.list_runs() == []
