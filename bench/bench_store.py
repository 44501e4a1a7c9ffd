"""Store benchmark: write 10,000 turns with images, then open one 5-turn trace with thumbnails.

Targets (issue 2): writing 10,000 turns with images <= 10 s; opening one
5-turn trace with its thumbnails <= 50 ms. Baseline in the same run: the
plain approach of one INSERT + commit per turn row through sqlite3, without
images, to show what the batched store path costs relative to raw SQLite.
Exits non-zero when a target is missed.
"""

import io
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("WORKBENCH_HOME", tempfile.mkdtemp(prefix="bench-store-"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image

from workbench.store import Store
from workbench.trace import ToolCall, Trace, Turn

TRACES, TURNS = 2000, 5


def make_images(count: int, size: int = 128) -> list[bytes]:
    rng = random.Random(0)
    out = []
    for _ in range(count):
        image = Image.new("RGB", (size, size), tuple(rng.randrange(256) for _ in range(3)))
        image.putpixel((rng.randrange(size), rng.randrange(size)), (1, 2, 3))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def write_with_store(store: Store, images: list[bytes]) -> float:
    run = store.create_run("bench", "eval")
    started = time.perf_counter()
    batch = []
    for t in range(TRACES):
        shas = [store.put_image(images[t * TURNS + k]) for k in range(TURNS)]
        turns = [Turn(index=k, raw="<think>look</think><code>x</code>" * 4, think="look", action="code",
                      argument="x", image=shas[k], feedback="<information> ok </information>",
                      tool_call=ToolCall(name="code", argument="x", output_images=[shas[k]], stdout="ok"))
                 for k in range(TURNS)]
        batch.append(Trace(question=f"question {t}", images=[shas[0]], turns=turns, run_id=run,
                           item_id=str(t), stop_reason="max_turns", rewards={"total": 0.5}))
        if len(batch) == 64:  # the runner saves finished episodes per turn, in batches like this
            store.save_traces(batch)
            batch = []
    store.save_traces(batch)
    return time.perf_counter() - started


def write_naive(path: Path) -> float:
    conn = sqlite3.connect(path)
    conn.execute("create table turns (trace_id text, idx int, raw text, image text)")
    started = time.perf_counter()
    for t in range(TRACES):
        for k in range(TURNS):
            conn.execute("insert into turns values (?, ?, ?, ?)", (str(t), k, "<think>look</think>" * 4, "x"))
            conn.commit()
    return time.perf_counter() - started


def open_trace(store: Store, trace_id: str) -> float:
    started = time.perf_counter()
    trace = store.get_trace(trace_id)
    for turn in trace.turns:
        Path(store.get_image(turn.image)["thumbnail"]).read_bytes()
    return time.perf_counter() - started


def main() -> int:
    images = make_images(TRACES * TURNS)
    store = Store()
    write_s = write_with_store(store, images)
    naive_s = write_naive(Path(tempfile.mkdtemp()) / "naive.db")
    ids = [row["id"] for row in store.list_traces(limit=50)]
    open_ms = statistics.median(open_trace(Store(store.path), i) for i in ids) * 1000
    print(f"{'measure':44} {'value':>10}")
    print(f"{'write 10,000 turns + 10,000 images (store)':44} {write_s:9.2f}s")
    print(f"{'baseline: 10,000 bare rows, commit each':44} {naive_s:9.2f}s")
    print(f"{'ratio store / baseline':44} {write_s / naive_s:9.2f}x")
    print(f"{'open 5-turn trace + thumbnails (median)':44} {open_ms:8.1f}ms")
    ok = write_s <= 10 and open_ms <= 50
    print("targets: write <= 10 s, open <= 50 ms:", "met" if ok else "MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
