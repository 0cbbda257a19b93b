"""Ctrl-C and SIGTERM during training: stop at once, but never inside a public update.

:class:`Interrupts` turns SIGINT and SIGTERM into :class:`KeyboardInterrupt` (SIGTERM would
otherwise kill the process without its ``finally`` blocks: role processes left behind, no
checkpoint). Inside :meth:`Interrupts.update` (applying an opened update, stepping the schedule
and the accountant) the signal is held and raised right after, so the weights, the optimiser
and the step count a checkpoint records always belong to the same completed step. Handlers are
installed only from the main thread and restored on exit.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Dict, Iterator, Optional

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupts:
    """Context manager (module doc)."""

    def __init__(self) -> None:
        self._held = False
        self._pending: Optional[int] = None
        self._previous: Dict[int, Any] = {}

    def __enter__(self) -> "Interrupts":
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    @contextlib.contextmanager
    def update(self) -> Iterator[None]:
        """Hold signals for the duration of one public update; raise a held one after it."""
        self._held = True
        try:
            yield
        finally:
            self._held = False
        if self._pending is not None:
            self._pending = None
            raise KeyboardInterrupt

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._held:
            self._pending = signum
            return
        raise KeyboardInterrupt
