"""SIGINT, SIGTERM and SIGHUP for the command line: one clean stop, then an immediate one.

A farm wrapper or ``timeout`` sends SIGTERM, a closed terminal SIGHUP, a person
Ctrl-C: all three raise :class:`Stopped` in the main thread, so ``submit`` cancels
its own prompts, prints its summary and exits ``128 + signal`` (130, 143, 129).
A second signal while that cleanup runs exits at once with the same code:
whoever sends it twice wants the process gone now.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Any, Dict, Iterator


class Stopped(KeyboardInterrupt):
    """A stop signal arrived; ``exit_code`` is the shell convention 128 + signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.exit_code = 128 + signum

    @property
    def name(self) -> str:
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"


def _stop_signals() -> Dict[str, int]:
    found = {}
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        number = getattr(signal, name, None)
        if number is not None:
            found[name] = int(number)
    return found


def _exit_now(signum: int, _frame: Any) -> None:
    try:
        sys.stderr.write(f"\n{signal.Signals(signum).name} again: exiting now, without cleaning up\n")
        sys.stderr.flush()
    except Exception:  # noqa: BLE001 - the exit below matters, the message does not
        pass
    os._exit(128 + signum)


def _first(signum: int, _frame: Any) -> None:
    for number in _stop_signals().values():
        if signal.getsignal(number) is _first:
            with contextlib.suppress(OSError, ValueError):
                signal.signal(number, _exit_now)
    raise Stopped(signum)


@contextlib.contextmanager
def stop_signals_raise() -> Iterator[None]:
    """While inside, SIGINT/SIGTERM/SIGHUP raise :class:`Stopped` (main thread only; a no-op elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for number in _stop_signals().values():
        # an ignored signal stays ignored: nohup (SIGHUP) and `cmd &` in a script (SIGINT) mean it
        if signal.getsignal(number) is signal.SIG_IGN:
            continue
        try:
            previous[number] = signal.signal(number, _first)
        except (OSError, ValueError):
            continue
    try:
        yield
    finally:
        for number, handler in previous.items():
            with contextlib.suppress(OSError, ValueError, TypeError):
                signal.signal(number, handler)
