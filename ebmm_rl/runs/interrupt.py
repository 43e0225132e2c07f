"""Stopping a training run cleanly on SIGINT (Ctrl-C) or SIGTERM (``kill``, schedulers, containers).

The first signal asks the run to stop at its next environment step (an evaluation under way is abandoned, to be redone
when the run resumes); the run then saves the state at the start of its rollout, which is exact. A second signal stops
it at once, keeping only the checkpoints already written; one that arrives while that save is being written stops the
run as soon as it is written. A worker whose parent has ended (:func:`stop_with_parent`) takes no second signal: no
one is left to ask it to stop at once, and the process that adopts it (an init process) may send SIGTERM again.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator

from stable_baselines3.common.callbacks import BaseCallback

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Whether a stop signal has arrived, and which."""

    def __init__(self) -> None:
        self.signal: signal.Signals | None = None
        self.saving = False
        """Whether the save the signal asked for is being written (a second signal waits for it)."""
        self.second_signal = False

    def __call__(self) -> bool:
        """Whether the run was asked to stop."""
        return self.signal is not None

    @property
    def exit_code(self) -> int:
        """The shell's code for a process ended by the signal: 128 + its number (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + int(self.signal) if self.signal is not None else 0

    @contextlib.contextmanager
    def save_before_stopping(self) -> Iterator[None]:
        """Write the stopped run's state in the ``with`` block: a second signal meanwhile raises ``KeyboardInterrupt``
        once it is written, not half-way through."""
        self.saving = True
        try:
            yield
        finally:
            self.saving = False
        if self.second_signal:
            raise KeyboardInterrupt


@contextlib.contextmanager
def _handling_stop_signals(handle: Callable[[int, object], None]) -> Iterator[None]:
    """``handle`` SIGINT and SIGTERM in the ``with`` block, then restore the handlers that were there."""
    previous = {number: signal.signal(number, handle) for number in STOP_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Handle SIGINT and SIGTERM in the ``with`` block: the first sets the :class:`StopRequest` it yields, a second
    raises ``KeyboardInterrupt``. Outside the main thread, where Python cannot handle signals, nothing is installed."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handle(number: int, frame: object) -> None:
        if request.signal is not None:
            if _orphaned():
                return
            request.second_signal = True
            if not request.saving:
                raise KeyboardInterrupt
            return
        request.signal = signal.Signals(number)
        print(
            f"\n{request.signal.name}: stopping at the next environment step to save the run; send it again to stop at "
            "once (keeping only the checkpoints already written)",
            file=sys.stderr,
            flush=True,
        )

    with _handling_stop_signals(handle):
        yield request


@contextlib.contextmanager
def forward_stop_signals(
    worker_pids: Callable[[], Iterable[int | None]], message: str, on_signal: Callable[[], None] = lambda: None
) -> Iterator[list[signal.Signals]]:
    """In a process whose workers train runs: on SIGINT or SIGTERM, call ``on_signal`` (e.g. start no other run), pass
    SIGTERM on to each worker and print ``<SIGNAL>: <message>``. SIGTERM must be forwarded, as ``kill`` reaches only the
    process it names; SIGINT is not, as Ctrl-C already reaches every process of the terminal's foreground group and a
    second signal would stop a run at once.

    :param worker_pids: the workers' process ids when a signal arrives (``None``: not started).
    :return: (yields) the signals received, empty when none.
    """
    received: list[signal.Signals] = []

    def handle(number: int, frame: object) -> None:
        received.append(signal.Signals(number))
        on_signal()
        if number == signal.SIGTERM:
            for pid in worker_pids():
                if pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, number)
        print(f"\n{received[-1].name}: {message}", file=sys.stderr, flush=True)

    with _handling_stop_signals(handle):
        yield received


_watched_parent: int | None = None
"""In a worker: the parent process whose end stops its run (:func:`stop_with_parent`)."""


def _orphaned() -> bool:
    return _watched_parent is not None and os.getppid() != _watched_parent


PR_SET_PDEATHSIG = 1
"""prctl(2)'s option: the signal a process receives when the thread that started it ends (Linux)."""


def stop_with_parent(parent_pid: int) -> bool:
    """Make this worker process receive SIGTERM when its parent process ends, however it ends (SIGKILL, a crash, the
    out-of-memory killer), so that a run it trains stops as on ``kill`` (saving its state) instead of training on
    orphaned. Linux only, through ``prctl(PR_SET_PDEATHSIG)``: call it in the worker, first thing; the parent must
    have started the worker from its main thread (the signal follows the thread that started the process).

    :param parent_pid: the parent's process id as the parent saw it (``os.getpid()`` there): if the parent ended
        before this call, the worker already has another parent and gets SIGTERM at once.
    :return: whether the request was made (False on other systems, where nothing changes)
    """
    global _watched_parent
    if not sys.platform.startswith("linux"):
        return False
    _watched_parent = parent_pid
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return False
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGTERM)
    return True


class StopOnRequest(BaseCallback):
    """Stop training at the next environment step once a :class:`StopRequest` is set."""

    def __init__(self, request: StopRequest) -> None:
        super().__init__()
        self.request = request
        self.stopped = False
        """Whether it stopped training (mid-rollout, before the rollout's update)."""

    def _on_step(self) -> bool:
        self.stopped = self.stopped or self.request()
        return not self.stopped
