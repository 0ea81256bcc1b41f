"""Worker supervision: each model runs in its own spawned process, at most ``jobs`` at a time.

A worker that dies (segfault, out-of-memory kill, ``os._exit``) or runs past its timeout is
recorded as *crashed* with the reason, and the others go on. A worker runs in its own process
group (a timeout also kills what it started) and dies with the parent; its output goes to
``worker.log`` and a native crash leaves its Python stack there. An exception the worker raises
is written to ``error.json`` and recorded as *failed* with its type and message. A worker that
crashes or times out while it evaluates task metrics has already written its report: the model
keeps its results and the evaluation is recorded as failed.

While a worker runs, the parent polls the progress file it writes (:class:`.worker.ProgressFile`)
and shows its latest line.

Each worker fills a :class:`~onnx2fx.atomic_folder.StagedFolder`; when it ends, the parent
turns what it left into the model's result (:func:`collect`), adds ``batch.json`` and installs
the folder. An interrupt (Ctrl-C, or SIGTERM under :func:`sigterm_as_interrupt`) kills the
running workers and discards their staging folders.
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import json
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..atomic_folder import StagedFolder
from ..pipeline import PipelineOptions
from ..reports import write_atomic, write_report
from .evaluation import EVALUATION_FOLDER, EvaluationTask, failed_section
from .records import (
    ModelResult,
    batch_record,
    fallback_report,
    quantization_results,
    read_json,
    result_from_report,
)
from .staging import remove_leftovers
from .worker import EVALUATION_STAGE, ProgressFile, Worker, WorkerTask

PROGRESS_NAME = "progress.json"  # in the staging area, beside the model folder: never installed

__all__ = ["Job", "cpu_count", "run_jobs", "sigterm_as_interrupt"]


@dataclass
class Job:
    """One model to run: where it comes from, where it goes, and its worker while it runs."""

    rel: str
    out: str
    model_path: Path
    final: Path
    options: PipelineOptions
    fingerprint: dict[str, Any]
    timeout: float | None
    evaluation: EvaluationTask | None = None
    staged: StagedFolder | None = None
    process: Any = None
    started: float = 0.0
    progress: dict[str, str] | None = None  # the worker's last stage and line of progress

    @property
    def built(self) -> Path:
        """The model folder the worker fills (inside its staging folder)."""
        assert self.staged is not None
        return self.staged.path


def cpu_count() -> int:
    """The CPUs this process may use."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


class Display(Protocol):
    """What :func:`run_jobs` reports to while it runs."""

    def started(self, rel: str) -> None: ...

    def finished(self, result: ModelResult) -> None: ...

    def progress(self, rel: str, text: str) -> None: ...


def run_jobs(jobs: list[Job], parallel: int, worker: Worker, ptq: bool, qft: bool, threads: int,
             display: Display) -> list[ModelResult]:
    """Run ``jobs`` in worker processes, at most ``parallel`` at a time; results in finishing order."""
    context = multiprocessing.get_context("spawn")
    pending = deque(jobs)
    running: list[Job] = []
    results: list[ModelResult] = []
    try:
        while pending or running:
            while pending and len(running) < parallel:
                job = pending.popleft()
                _start(job, context, worker, ptq, qft, threads)
                running.append(job)
                display.started(job.rel)
            deadlines = [j.started + j.timeout for j in running if j.timeout is not None]
            wait = min([0.5] + [max(0.0, d - time.monotonic()) for d in deadlines])
            ready = set(multiprocessing.connection.wait([j.process.sentinel for j in running], timeout=wait))
            now = time.monotonic()
            for job in running:
                _poll_progress(job, display)
            for job in list(running):
                if job.process.sentinel in ready:
                    _kill(job.process)  # it has exited: this reaps it and stops anything it left running
                    result = _collect(job, ptq, qft, timed_out=False)
                elif job.timeout is not None and now - job.started > job.timeout:
                    _kill(job.process)
                    result = _collect(job, ptq, qft, timed_out=True)
                else:
                    continue
                running.remove(job)
                results.append(result)
                display.finished(result)
    finally:  # interrupted (Ctrl-C, SIGTERM) or failed: stop the workers, drop their unfinished folders
        for job in running:
            _kill(job.process)
            if job.staged is not None:
                job.staged.discard()
    return results


def _poll_progress(job: Job, display: Display) -> None:
    """Show the worker's latest line of progress, when it changed."""
    assert job.staged is not None
    state = ProgressFile.read(job.staged.area / PROGRESS_NAME)
    if state is not None and state != job.progress:
        job.progress = state
        display.progress(job.rel, str(state.get("text", "")))


def _start(job: Job, context: Any, worker: Worker, ptq: bool, qft: bool, threads: int) -> None:
    """Spawn the worker of ``job`` on a new staging folder beside the model's final folder."""
    job.staged = StagedFolder(job.final)
    task = WorkerTask(model_path=str(job.model_path), out_dir=str(job.built), options=job.options, ptq=ptq, qft=qft,
                      threads=threads, evaluation=job.evaluation, final_dir=str(job.final),
                      progress_file=str(job.staged.area / PROGRESS_NAME))
    job.process = context.Process(
        target=_worker_main, name=f"onnx2fx-batch {job.rel}",
        args=(worker, task, str(job.staged.area / "worker.log"), str(job.staged.area / "error.json"), os.getpid()))
    try:
        job.process.start()
    except BaseException:
        job.staged.discard()
        raise
    job.started = time.monotonic()


def _collect(job: Job, ptq: bool, qft: bool, timed_out: bool) -> ModelResult:
    """Turn a finished (or killed) worker's staging folder into the final model folder."""
    assert job.staged is not None
    seconds = time.monotonic() - job.started
    code = job.process.exitcode
    built = job.built
    report: dict[str, Any] | None = None
    crash: str | None = None
    error: dict[str, str] | None = None
    if timed_out:
        crash = f"worker exceeded {job.timeout:g} s"
    elif code == 0 and (built / "report.json").is_file():
        report = read_json(built / "report.json")
        if not isinstance(report, dict):
            crash, report = "worker wrote an unreadable report.json", None
    elif isinstance(raised := read_json(job.staged.area / "error.json"), dict):
        error = {"type": str(raised.get("type", "Exception")), "message": str(raised.get("message", ""))}
    elif code is not None and code < 0:
        crash = f"worker crashed with signal {_signal_name(-code)}"
        if -code == signal.SIGKILL:
            crash += " (killed from outside, often by the out-of-memory killer)"
    elif code:
        crash = f"worker exited with code {code}"
    else:
        crash = "worker exited without writing report.json"
    if crash is not None and report is None:
        report = _keep_results_of_failed_evaluation(job, crash, timed_out)
        if report is not None:
            crash = None
    if report is None:
        shutil.rmtree(built, ignore_errors=True)
        failure = error or {"type": "WorkerTimeout" if timed_out else "WorkerCrashed", "message": crash or ""}
        report = fallback_report(job.model_path, failure, quantization_results(ptq, qft))
        write_report(report, built)
    log = job.staged.area / "worker.log"
    if log.is_file() and log.stat().st_size:
        os.replace(log, built / "worker.log")
    result = result_from_report(job.rel, job.out, report, status="crashed" if crash else None, seconds=seconds,
                                evaluation=job.evaluation is not None)
    record = batch_record(job.rel, report, job.fingerprint, result, seconds)
    write_atomic(built / "batch.json", json.dumps(record, indent=2) + "\n")
    job.staged.install()
    return result


def _keep_results_of_failed_evaluation(job: Job, crash: str, timed_out: bool) -> dict[str, Any] | None:
    """The report of a worker that crashed or timed out while evaluating, with the evaluation
    recorded as failed; ``None`` when it stopped before (then the model crashed)."""
    assert job.staged is not None
    _poll_progress_quietly(job)
    if job.evaluation is None or (job.progress or {}).get("stage") != EVALUATION_STAGE:
        return None
    built = job.built
    report = read_json(built / "report.json")
    if not isinstance(report, dict):
        return None
    remove_leftovers(built)  # an evaluation folder still being written
    if (report.get("task_metrics") or {}).get("status") is None:  # not finished: nothing of it is kept
        shutil.rmtree(built / EVALUATION_FOLDER, ignore_errors=True)
        doing = (job.progress or {}).get("text", "evaluating")
        report["task_metrics"] = failed_section(job.evaluation, {
            "type": "WorkerTimeout" if timed_out else "WorkerCrashed", "message": f"{crash} while {doing}"})
        write_report(report, built)
    return report


def _poll_progress_quietly(job: Job) -> None:
    assert job.staged is not None
    state = ProgressFile.read(job.staged.area / PROGRESS_NAME)
    if state is not None:
        job.progress = state


def _worker_main(worker: Worker, task: WorkerTask, log_path: str, error_path: str, parent_pid: int) -> None:
    """Entry point of a worker process: isolate it, capture its output, run ``worker``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what an interrupt stops
    if hasattr(os, "setpgrp"):
        os.setpgrp()  # its own process group, so a timeout also kills what it started
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):  # die with the parent (PR_SET_PDEATHSIG = 1)
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(3)  # the parent is already gone
    with open(log_path, "ab", buffering=0) as log:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    faulthandler.enable()  # a native crash leaves its Python stack in worker.log
    try:
        worker(task)
    except BaseException as exc:  # noqa: B036 - everything the worker raises is a result to record
        traceback.print_exc()
        with contextlib.suppress(Exception):
            Path(error_path).write_text(json.dumps({"type": type(exc).__name__, "message": str(exc)}))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.flush()
    sys.stderr.flush()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _kill(process: Any) -> None:
    """Kill a worker and its process group (what it started), then reap it."""
    with contextlib.suppress(OSError, AttributeError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(OSError, ValueError):
        process.kill()
    process.join(timeout=30)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """``kill PID`` cleans up like Ctrl-C does (workers stopped, staging folders removed)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"received {_signal_name(signum)}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
