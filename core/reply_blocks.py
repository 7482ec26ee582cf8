"""Cutting a growing Markdown reply into finished blocks and a growing tail.

A page streaming a reply writes each finished block (a paragraph, list or heading ended by
a blank line, or a whole fenced code block) once, as its own element, and re-sends only
the tail: bytes on the wire grow with the reply, not with its square. A blank line inside
a code fence, or followed by an indented line (a list item's next paragraph), ends nothing.
"""

from __future__ import annotations

import re

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


class BlockSplitter:
    """Feed text as it streams; take the blocks that will not change any more."""

    def __init__(self) -> None:
        self._lines: list[str] = []   # complete lines of the block being written
        self._partial = ""            # the last, unfinished line
        self._fence: str | None = None
        self._blank_pending = False   # a blank line seen; the block ends unless indented

    def feed(self, text: str) -> list[str]:
        """Add streamed text; returns the blocks it finished, in order."""
        finished: list[str] = []
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            self._take(line, finished)
        if self._blank_pending and self._partial[:1].strip():  # the next block began
            self._close(finished)
        return finished

    @property
    def tail(self) -> str:
        """What is not finished yet: the open block and the unfinished line."""
        block = "\n".join(self._lines)
        if not self._partial:
            return block
        if not block:
            return self._partial
        return block + ("\n\n" if self._blank_pending else "\n") + self._partial

    def _take(self, line: str, finished: list[str]) -> None:
        fence = _FENCE.match(line)
        if self._fence is not None:  # inside a code block: only its closing fence ends it
            self._lines.append(line)
            if fence and fence.group(1)[0] == self._fence[0] and (
                    len(fence.group(1)) >= len(self._fence)) and not line.strip(" `~"):
                self._fence = None
                self._close(finished)
            return
        if not line.strip():
            self._blank_pending = bool(self._lines)
            return
        if self._blank_pending and not line[:1].isspace():
            self._close(finished)
        elif self._blank_pending:
            self._lines.append("")
        self._blank_pending = False
        if fence:
            self._close(finished)  # a fence opens a block of its own
            self._fence = fence.group(1)
        self._lines.append(line)

    def _close(self, finished: list[str]) -> None:
        if self._lines:
            finished.append("\n".join(self._lines))
        self._lines = []
        self._blank_pending = False
