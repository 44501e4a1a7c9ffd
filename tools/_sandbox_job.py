"""What runs inside a forked sandbox job: the model's code, then its report to the worker.

Owns `execute` (runs the code as `__main__` with stdout/stderr on the job's
capped files, waits for its threads, finds the line of the model's code an
exception came from, tells a memory error apart) and the report it writes on
fd 3 (`write_report`): a small JSON object the worker validates and bounds
before it believes any of it (`tools._sandbox_worker.parse_report`).
Standard library only at import: the worker imports it as a top-level module.
"""

import io
import json
import os
import stat
import sys
import traceback

MODEL_FILENAME = "<model_code>"
RESULT_FD = 3
MAX_ERROR_CHARS = 2000
MAX_RESULT_BYTES = 32 * 1024  # a genuine report (error cut at MAX_ERROR_CHARS) is far smaller


def execute(code: str, namespace: dict) -> int:
    """Run the model's code in this (already confined) process; returns the exit status to use."""
    import builtins
    import linecache

    import _sandbox_code as code_prep  # already loaded by the worker: sys.path holds the sandbox folder
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8",
                                  errors="backslashreplace", line_buffering=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8",
                                  errors="backslashreplace", line_buffering=True)
    sys.argv = [MODEL_FILENAME]
    linecache.cache[MODEL_FILENAME] = (len(code), None, code.splitlines(True), MODEL_FILENAME)
    width, height = namespace["INPUT_WIDTH"], namespace["INPUT_HEIGHT"]

    def denormalize_box(box, width=width, height=height):
        """A 0..1000 [x_min, y_min, x_max, y_max] box as pixels (x0, y0, x1, y1) of the input image."""
        return code_prep.denormalize_box(box, width, height)

    namespace.update(__name__="__main__", __builtins__=builtins, denormalize_box=denormalize_box)
    report = {"ok": True, "error": None, "error_line": None, "memory_error": False}
    try:
        exec(compile(code, MODEL_FILENAME, "exec"), namespace)
        _join_threads()
    except SystemExit as exc:
        if exc.code not in (None, 0):
            report.update(ok=False, error=f"SystemExit: {exc.code}")
    except BaseException as exc:
        report.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS], error_line=_model_line(exc),
                      memory_error=_is_memory_error(exc))
        try:
            traceback.print_exception(type(exc), exc, exc.__traceback__.tb_next)
        except BaseException:
            pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    write_report(report)
    return 0 if report["ok"] else 1  # tells the worker even when the report pipe was closed by the code


def _join_threads() -> None:
    """Wait for the code's non-daemon threads, as a normal interpreter exit would."""
    threading = sys.modules.get("threading")
    if threading is None:
        return
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()


def write_report(report: dict) -> None:
    """Send the report and close the pipe: the worker then stops and answers at once."""
    try:
        if not stat.S_ISFIFO(os.fstat(RESULT_FD).st_mode):
            return  # the code closed the report pipe (and maybe reused fd 3): do not write into its files
        data = memoryview(json.dumps(report).encode()[:MAX_RESULT_BYTES])
        while data:
            data = data[os.write(RESULT_FD, data):]
        os.close(RESULT_FD)
    except BaseException:
        pass


def _model_line(exc: BaseException) -> int | None:
    if isinstance(exc, SyntaxError) and exc.filename == MODEL_FILENAME:
        return exc.lineno
    line, tb = None, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == MODEL_FILENAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _is_memory_error(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return type(exc).__name__ == "error" and ("insufficient memory" in text or "failed to allocate" in text)
