"""How ``start --wait`` and ``status`` show an action's progress: a bar redrawn in place on a
terminal, a line per change otherwise, nothing with --json.
"""

from __future__ import annotations

import shutil
import sys
from typing import Any, TextIO


def progress_bar(fraction: float | None, width: int = 24) -> str:
    """`[######..........]`: `fraction` of `width` filled; all dots when unknown."""
    if fraction is None:
        return "[" + "." * width + "]"
    filled = round(fraction * width)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def progress_text(progress: Any) -> str | None:
    """`42%  message  (activity)` of an ActionProgress, or None when nothing was reported."""
    latest = progress.latest
    if latest is None:
        return None
    text = f"{latest.fraction * 100:3.0f}%"
    if latest.message:
        text += f"  {latest.message}"
    if latest.activity_type:
        others = len(progress.reports) - 1
        more = f", +{others} more running" if others > 0 else ""
        text += f"  ({latest.activity_type}{more})"
    return text


class ProgressView:
    """Shows the progress of a running action while a command waits for it.

    Modes: 'bar' (stdout is a terminal: one line redrawn in place with \\r), 'lines' (a
    plain line whenever the progress changes) and 'off' (--json).
    """

    def __init__(self, stream: TextIO, mode: str) -> None:
        self.stream = stream
        self.mode = mode
        self._drawn = False
        self._last: tuple[Any, ...] | None = None

    @classmethod
    def for_stdout(cls, json_output: bool) -> ProgressView:
        if json_output:
            return cls(sys.stdout, "off")
        try:
            tty = sys.stdout.isatty()
        except (AttributeError, ValueError):
            tty = False
        return cls(sys.stdout, "bar" if tty else "lines")

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def show(self, progress: Any, elapsed: float) -> None:
        text = progress_text(progress)
        if self.mode == "lines":
            latest = progress.latest
            key = None if latest is None else (latest.fraction, latest.message)
            if text is not None and key != self._last:
                self._last = key
                self.stream.write(f"progress: {text}\n")
                self.stream.flush()
        elif self.mode == "bar":
            fraction = None if progress.latest is None else progress.latest.fraction
            line = f"{progress_bar(fraction)} {text or f'running {elapsed:.0f} s'}"
            width = shutil.get_terminal_size((80, 24)).columns
            line = line[: max(width - 1, 10)]
            self.stream.write(f"\r{line}\x1b[K")
            self.stream.flush()
            self._drawn = True

    def close(self) -> None:
        """End the bar's line, so what follows starts on a new one."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
