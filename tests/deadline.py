"""A deadline for a test that could hang: SIGALRM raises :class:`Stalled` in the main thread."""

from __future__ import annotations

import contextlib
import signal
import threading

import pytest


class Stalled(Exception):
    """A call still waiting at its deadline (not an OSError, which code under test may take
    for a network error)."""


@contextlib.contextmanager
def deadline(seconds: float):
    """Raise :class:`Stalled` in this (main) thread after ``seconds``: a hang fails the test
    instead of blocking the suite (skipped off the main thread, where SIGALRM cannot reach)."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("needs the main thread for SIGALRM")

    def stop(*_):
        raise Stalled(f"still waiting after {seconds} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
