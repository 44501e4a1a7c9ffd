"""The sandboxed Python image tool: protocol handling, real MAT-Coding cases, results, API and CLI.

Hostile programs are in tests/test_sandbox_adversarial.py.
"""

import ctypes
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from tools import _sandbox_confine as confine
from tools._sandbox_code import extract_source, rewrite_crop_slices
from tools._sandbox_process import kill_tree
from tools.code_sandbox import CodeResult, CodeSandbox, SandboxLimits, SandboxUnavailable, denormalize_box, run_code

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def sandbox():
    try:
        box = CodeSandbox()
    except SandboxUnavailable as exc:  # neither bwrap nor Landlock + seccomp on this machine
        pytest.skip(str(exc))
    with box:
        yield box


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    """A 320x240 test card: left half dark grey, right half white, a red square at (40..80, 30..70)."""
    card = np.zeros((240, 320, 3), np.uint8)
    card[:, :160] = 40
    card[:, 160:] = 255
    card[30:70, 40:80] = (0, 0, 255)
    path = tmp_path_factory.mktemp("images") / "card.png"
    cv2.imwrite(str(path), card)
    return path


def _blurred_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference after a slight blur, so JPEG noise counts little and misplacement a lot."""
    def blur(x):
        return cv2.GaussianBlur(x, (0, 0), 1.5).astype(np.int16)
    return float(np.abs(blur(a) - blur(b)).mean())


# --- protocol helpers ------------------------------------------------------------------------

def test_extract_source_strips_fence_tags_and_indentation():
    raw = "<code>\n  ```python\n  import cv2\n  print(1)\n  ```\n</code>"
    assert extract_source(raw) == "import cv2\nprint(1)\n"
    assert extract_source("print(2)") == "print(2)\n"
    assert extract_source("```\nx = 1\n```") == "x = 1\n"


def test_denormalize_box_rounds_down_like_the_paper_and_clamps():
    assert denormalize_box([366, 723, 506, 851], 500, 332) == (183, 240, 253, 282)
    assert denormalize_box([489, 155, 595, 259], 1280, 720) == (625, 111, 761, 186)
    assert denormalize_box([900, 900, 100, 100], 1000, 1000) == (100, 100, 900, 900)  # corners ordered
    assert denormalize_box([-50, 0, 2000, 1000], 200, 100) == (0, 0, 200, 100)  # clamped
    assert denormalize_box([1000, 1000, 1000, 1000], 10, 10) == (9, 9, 10, 10)  # never empty
    with pytest.raises(ValueError):
        denormalize_box([1, 2, 3], 10, 10)


def test_crop_slice_rewrite_follows_the_paper_and_keeps_line_numbers():
    code = ("box = [366, 723, 506, 851]\n"
            "a = img[723:851, 366:506]\n"
            "b = img[box[1]:box[3], box[0]:box[2]]\n"
            "c = img[y_min : y_max , x_min:x_max]\n"
            "d = img[1:2]\n")
    rewritten = rewrite_crop_slices(code, (183, 240, 253, 282))
    lines = rewritten.splitlines()
    assert len(lines) == 5
    assert lines[1:4] == ["a = img[240:282, 183:253]", "b = img[240:282, 183:253]", "c = img[240:282, 183:253]"]
    assert lines[0] == "box = [366, 723, 506, 851]" and lines[4] == "d = img[1:2]"


# --- the six real MAT-Coding cases --------------------------------------------------------------

ROTATE_BACK_180 = """```python
import cv2
image = cv2.imread('path_to_input_image.jpg')
image = cv2.rotate(image, cv2.ROTATE_180)
cv2.imwrite('path_to_output_image.jpg', image)
```"""
BRIGHTEN = """```python
import cv2
image = cv2.imread('path_to_input_image.jpg')
image = cv2.convertScaleAbs(image, alpha=2.0, beta=40)
cv2.imwrite('path_to_output_image.jpg', image)
```"""
ROTATE_CLOCKWISE_AND_BRIGHTEN = """```python
import cv2
image = cv2.imread('path_to_input_image.jpg')
image = cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)
image = cv2.convertScaleAbs(image, alpha=2.0, beta=40)
cv2.imwrite('path_to_output_image.jpg', image)
```"""
COPY = """```python
from PIL import Image
Image.open('path_to_input_image.jpg').convert('RGB').save('path_to_output_image.jpg')
```"""
# As the released checkpoints write it: slice with the question's numbers; the sandbox fills in pixels.
CROP_PAPER_STYLE = """```python
import cv2
image = cv2.imread("path_to_input_image.jpg")
x_min, y_min, x_max, y_max = {box}
cropped_image = image[y_min:y_max, x_min:x_max]
cv2.imwrite("path_to_output_image.jpg", cropped_image)
```"""
# Explicit conversion with the helper every job gets.
CROP_WITH_HELPER = """```python
import cv2
image = cv2.imread("path_to_input_image.jpg")
x0, y0, x1, y1 = denormalize_box({box})
assert (INPUT_WIDTH, INPUT_HEIGHT) == (image.shape[1], image.shape[0])
cv2.imwrite("path_to_output_image.jpg", image[y0:y1, x0:x1])
```"""


def _brighten(image: np.ndarray) -> np.ndarray:
    return np.clip(image.astype(np.float64) * 2.0 + 40, 0, 255).round().astype(np.uint8)


def _case_box(question: str) -> list[int]:
    return [int(v) for v in re.search(r"\[(\d+), (\d+), (\d+), (\d+)\]", question).groups()]


@pytest.mark.parametrize("case_id", [12, 22, 63, 71, 119, 124])
def test_real_mat_coding_cases_give_the_right_image(case_id, sandbox, shared_reference, tmp_path):
    cases = {case["id"]: case for case in json.loads((shared_reference / "mat-coding-cases" /
                                                      "coding_case.json").read_text())}
    case = cases[case_id]
    kind = case["type"]
    # The model sees the processed image, except for crop items, which use the original.
    name = case["ori_image_path"] if kind == ["crop"] else case["processed_image_path"]
    source = shared_reference / "mat-coding-cases" / name
    original = cv2.imread(str(source))
    crop_box = None
    if kind == ["rotation180"]:
        code, expected, wrong = ROTATE_BACK_180, np.rot90(original, 2), original
    elif kind == ["dark"]:
        code, expected, wrong = BRIGHTEN, _brighten(original), original
    elif kind == ["none"]:
        code, expected, wrong = COPY, original, 255 - original
    elif kind == ["rotation90", "dark"]:
        code, expected, wrong = ROTATE_CLOCKWISE_AND_BRIGHTEN, _brighten(np.rot90(original, -1)), \
            _brighten(np.rot90(original, 1))
    else:
        box = _case_box(case["question"])
        paper_style = case_id == 119
        code = (CROP_PAPER_STYLE if paper_style else CROP_WITH_HELPER).format(box=box)
        crop_box = box if paper_style else None
        x0, y0, x1, y1 = {119: (183, 240, 253, 282), 124: (625, 111, 761, 186)}[case_id]
        expected = original[y0:y1, x0:x1]
        shift_x, shift_y = (x1 - x0) // 2, (y1 - y0) // 2
        wrong = original[y0 + shift_y:y1 + shift_y, x0 + shift_x:x1 + shift_x]
    result = sandbox.run(code, source, tmp_path / "job", crop_box=crop_box)
    assert result.ok, (result.error, result.stderr)
    assert len(result.output_images) == 1
    output_path = Path(result.output_images[0])
    assert output_path.is_absolute() and output_path.parent == (tmp_path / "job").resolve()
    output = cv2.imread(str(output_path))
    assert output.shape == expected.shape
    close, far = _blurred_difference(output, expected), _blurred_difference(output, wrong)
    assert close < 3.0 and far > 3 * close, (close, far)


def test_crop_box_from_the_question_works_both_ways(sandbox, image, tmp_path):
    """The red square of the test card is the 0..1000 box [125, 125, 250, 292]."""
    box = [125, 125, 250, 292]
    paper = sandbox.run(CROP_PAPER_STYLE.format(box=box), image, tmp_path / "paper", crop_box=box)
    helper = sandbox.run(CROP_WITH_HELPER.format(box=box), image, tmp_path / "helper")
    for result in (paper, helper):
        assert result.ok, result.error
        crop = cv2.imread(result.output_images[0])
        assert crop.shape == (40, 40, 3)
        assert np.abs(crop.astype(int) - (0, 0, 255)).max() < 30  # all red, nothing of the grey around it
    plain = sandbox.run(CROP_PAPER_STYLE.format(box=box), image, tmp_path / "plain")  # no box: slice as written
    assert plain.ok and cv2.imread(plain.output_images[0]).shape == (240 - 125, 250 - 125, 3)


# --- results --------------------------------------------------------------------------------

def test_error_line_is_the_line_in_the_models_code(sandbox, image):
    fenced = "```python\nimport cv2\nx = 1\ny = x / 0\n```"
    result = sandbox.run(fenced, image)
    assert not result.ok and result.error.startswith("ZeroDivisionError") and result.error_line == 3
    assert "<model_code>" in result.stderr and "y = x / 0" in result.stderr
    broken = sandbox.run("a = 1\nb = (\nc = 2\n", image)
    assert not broken.ok and broken.error.startswith("SyntaxError") and broken.error_line == 2
    nested = sandbox.run("def f():\n    return [][1]\n\nf()\n", image)
    assert nested.error.startswith("IndexError") and nested.error_line == 2


def test_stdout_and_stderr_are_captured_and_capped(sandbox, image):
    result = sandbox.run("import sys\nprint('hello', INPUT_WIDTH, INPUT_HEIGHT)\nprint('oops', file=sys.stderr)",
                         image)
    assert result.ok and result.stdout == "hello 320 240\n" and result.stderr == "oops\n"
    assert result.output_images == [] and result.error is None
    long = sandbox.run("print('x' * 5000)", image, limits=SandboxLimits(max_output_chars=100))
    assert long.stdout.startswith("x" * 100) and "truncated" in long.stdout and len(long.stdout) < 200


def test_outputs_are_reencoded_and_extra_images_kept(sandbox, image, tmp_path):
    code = ("import cv2\nimage = cv2.imread('path_to_input_image.jpg')\n"
            "cv2.imwrite('path_to_output_image.jpg', image)\n"
            "cv2.imwrite('mask.png', image[:, :, 2])\n"
            "open('mask.png', 'ab').write(b'TRAILING-PAYLOAD')\n"
            "open('notes.txt', 'w').write('not an image')\n")
    result = sandbox.run(code, image, tmp_path)
    assert result.ok, result.error
    assert [Path(p).name for p in result.output_images] == ["output.jpg", "mask.png"]
    mask = Path(result.output_images[1]).read_bytes()
    assert b"TRAILING-PAYLOAD" not in mask and mask.startswith(b"\x89PNG")
    assert cv2.imread(result.output_images[1], cv2.IMREAD_UNCHANGED).shape == (240, 320)
    again = sandbox.run(code, image, tmp_path)  # same folder: nothing is overwritten
    assert [Path(p).name for p in again.output_images] == ["output-1.jpg", "mask-1.png"]


def test_default_job_dir_is_a_fresh_folder(sandbox, image):
    result = sandbox.run("import shutil\nshutil.copy('path_to_input_image.jpg', 'path_to_output_image.jpg')", image)
    assert result.ok and len(result.output_images) == 1
    folder = Path(result.output_images[0]).parent
    assert folder.is_dir() and folder != image.parent
    shutil.rmtree(folder)


def test_memory_limit_counts_beyond_the_preloaded_libraries(sandbox, image):
    limits = SandboxLimits(memory_mb=200)
    assert sandbox.run("import numpy as np\nx = np.ones(100 * 2**20, np.uint8)", image, limits=limits).ok
    over = sandbox.run("import numpy as np\nx = np.ones(400 * 2**20, np.uint8)", image, limits=limits)
    assert not over.ok and over.memory_exceeded and not over.timed_out and over.error_line == 2


def test_large_inputs_are_measured_and_open_normally(sandbox, tmp_path):
    """The output pixel cap must not leak into the code's own Pillow (36 MP input > 2 x 16.7 MP)."""
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), np.zeros((6000, 6000), np.uint8))
    refused = sandbox.run("import cv2, numpy as np\ncv2.imwrite('big.png', np.zeros((5000, 5000), np.uint8))", big)
    assert "pixel" in refused.error  # the worker has just applied its output cap
    result = sandbox.run("from PIL import Image\nprint(Image.open('path_to_input_image.jpg').size, INPUT_WIDTH)", big)
    assert result.ok and result.stdout == "(6000, 6000) 6000\n", (result.error, result.stderr)


def test_result_to_dict_has_every_field(sandbox, image):
    data = sandbox.run("print(1)", image).to_dict()
    assert set(data) == {"ok", "stdout", "stderr", "error", "error_line", "timed_out", "memory_exceeded",
                         "output_images", "duration_s"}
    assert json.loads(json.dumps(data)) == data and data["duration_s"] > 0


# --- the API: threads, restarts, isolation modes -------------------------------------------------

def test_concurrent_calls_from_threads_get_their_own_results(sandbox, image, tmp_path):
    results: dict[int, CodeResult] = {}

    def call(value: int):
        code = (f"import numpy as np, cv2\nprint({value})\n"
                f"cv2.imwrite('path_to_output_image.jpg', np.full((8, 8, 3), {value}, np.uint8))")
        results[value] = sandbox.run(code, image, tmp_path / f"job-{value}")

    threads = [threading.Thread(target=call, args=(value,)) for value in (10, 60, 110, 160, 210, 250)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for value, result in results.items():
        assert result.ok and result.stdout == f"{value}\n"
        assert abs(int(cv2.imread(result.output_images[0]).mean()) - value) <= 2
    assert len(results) == 6


def test_a_dead_worker_is_replaced_on_the_next_call(image):
    with CodeSandbox() as box:
        first = box._worker
        kill_tree(first.proc.pid)  # bwrap, its namespace init and the worker
        first.proc.wait()
        first.reader.join(timeout=10)
        assert not first.alive
        result = box.run("print('back')", image)
        assert result.ok and result.stdout == "back\n" and box._worker is not first


@pytest.mark.skipif(confine.landlock_abi() == 0, reason="kernel without Landlock")
def test_landlock_fallback_enforces_without_namespaces(image):
    with CodeSandbox(isolation="landlock") as box:
        assert box.isolation_in_use == "landlock"
        assert box.isolation_details["landlock_abi"] > 0 and box.isolation_details["seccomp"]
        assert box.isolation_details["capabilities"] == 0
        result = box.run("import os\nprint(os.getppid() != 1)\nos.listdir('/root')", image)
        assert not result.ok and "PermissionError" in result.error


@pytest.mark.skipif(confine.landlock_abi() == 0, reason="kernel without Landlock")
def test_auto_falls_back_to_landlock_when_bwrap_is_missing(image, monkeypatch, caplog):
    from tools import code_sandbox

    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(code_sandbox, "_fallbacks_noted", set())
    for _ in range(2):
        with CodeSandbox() as box:
            assert box.isolation_in_use == "landlock"
            assert box.run("print(1)", image).ok
    said = [r.getMessage() for r in caplog.records if "fallback" in r.getMessage()]
    assert len(said) == 1 and "bubblewrap (bwrap) is not installed" in said[0]  # one clear line per process


def test_an_explicit_isolation_that_is_unavailable_is_refused(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SandboxUnavailable, match="bwrap"):
        CodeSandbox(isolation="bwrap")
    with pytest.raises(ValueError):
        CodeSandbox(isolation="none")


BROKEN_INTERPRETER = """#!/bin/sh
echo "python3: error while loading shared libraries: libpython3.so: cannot open shared object file: \\
No such file or directory" >&2
exit 127
"""


def test_when_the_interpreter_cannot_start_the_advice_is_about_the_interpreter(monkeypatch, tmp_path):
    from tools import _sandbox_launch

    broken = tmp_path / "python3"
    broken.write_text(BROKEN_INTERPRETER)
    broken.chmod(0o755)
    monkeypatch.setattr(_sandbox_launch, "interpreter", lambda: str(broken))
    with pytest.raises(SandboxUnavailable) as refused:
        CodeSandbox()
    advice = str(refused.value).split(").", 1)[-1]  # after the per-mode reasons
    assert str(broken) in advice and "every user may read" in advice
    assert "namespaces" not in advice and "Landlock" not in advice and "unsafe-none" not in advice


def test_unsafe_none_is_opt_in_and_still_another_process(image):
    with CodeSandbox(isolation="unsafe-none") as box:
        assert box.isolation_in_use == "unsafe-none"
        result = box.run("import os\nprint(os.getpid())", image)
        assert result.ok and int(result.stdout) != os.getpid()


def test_bad_arguments_raise_and_a_closed_sandbox_refuses(image, tmp_path):
    box = CodeSandbox()
    with pytest.raises(FileNotFoundError):
        box.run("print(1)", tmp_path / "missing.jpg")
    box.close()
    with pytest.raises(RuntimeError):
        box.run("print(1)", image)


def test_the_host_hides_its_environ_and_memory(sandbox):
    prctl = ctypes.CDLL(None).prctl
    assert prctl(3, 0, 0, 0, 0) == 0  # PR_GET_DUMPABLE


def test_run_code_uses_a_shared_sandbox(image, tmp_path):
    first = run_code("print('a')", image, tmp_path / "a")
    second = run_code("print('b')", image, tmp_path / "b", limits=SandboxLimits(wall_time_s=5))
    assert first.stdout == "a\n" and second.stdout == "b\n"


def test_seccomp_numbers_match_the_kernel_headers():
    headers = {"x86_64": Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h"),
               "aarch64": Path("/usr/include/asm-generic/unistd.h")}
    checked = 0
    for arch, header in headers.items():
        if not header.exists():
            continue
        text = header.read_text()
        for name in confine.SYSCALLS:
            number = confine.syscall_number(name, arch)
            found = re.search(rf"#define __NR(?:3264)?_{name}\s+(\d+)", text)
            assert (int(found.group(1)) if found else None) == number, (arch, name)
            checked += 1
    if not checked:
        pytest.skip("no kernel headers installed")


# --- CLI ------------------------------------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tools.code_sandbox", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_cli_prints_one_json_object_and_exits_zero_when_code_fails(image, tmp_path):
    code = tmp_path / "code.py"
    code.write_text("import cv2\ncv2.imwrite('path_to_output_image.jpg', cv2.imread('path_to_input_image.jpg'))\n"
                    "raise RuntimeError('after writing')\n")
    done = _cli("--input", str(image), "--code", str(code), "--job-dir", str(tmp_path / "job"), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["ok"] is False and result["error"] == "RuntimeError: after writing" and result["error_line"] == 3
    assert result["output_images"] == [str((tmp_path / "job" / "output.jpg").resolve())]


def test_cli_removes_its_temporary_folder_unless_asked_to_keep_it(image, tmp_path):
    code = tmp_path / "code.py"
    code.write_text("import shutil\nshutil.copy('path_to_input_image.jpg', 'path_to_output_image.jpg')\n")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = dict(os.environ, TMPDIR=str(scratch))
    run = [sys.executable, "-m", "tools.code_sandbox", "--input", str(image), "--code", str(code), "--json"]
    done = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["output_images"] == [] and "--keep" in done.stderr
    assert list(scratch.iterdir()) == []  # no code-job-* (nor the worker's jobs folder) left behind
    kept = subprocess.run(run + ["--keep"], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    outputs = json.loads(kept.stdout)["output_images"]
    assert len(outputs) == 1 and Path(outputs[0]).is_file() and Path(outputs[0]).parent.parent == scratch


def test_cli_usage_errors_exit_non_zero(image, tmp_path):
    assert _cli("--input", str(image), "--code", str(tmp_path / "none.py"), "--json").returncode == 2
    code = tmp_path / "code.py"
    code.write_text("print(1)")
    assert _cli("--input", str(tmp_path / "none.jpg"), "--code", str(code), "--json").returncode == 2
    assert _cli("--code", str(code)).returncode == 2


def test_a_sandbox_starts_in_a_process_holding_more_than_1024_descriptors(image, tmp_path):
    # select() cannot watch descriptors above 1023; recording thousands of expert episodes got there
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        sandbox = CodeSandbox()
        try:
            result = sandbox.run("print('hi')", image, job_dir=tmp_path)
            assert result.ok and result.stdout.strip() == "hi"
        finally:
            sandbox.close()
    finally:
        for fd in held:
            os.close(fd)
