"""User text shown where Markdown is rendered (titles, labels, transcripts)."""

from __future__ import annotations

import re

_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:=])")


def escape_markdown(text: str) -> str:
    """User text safe to show where Markdown is rendered: every markup character escaped,
    on one line."""
    return _MARKDOWN.sub(r"\\\1", " ".join(text.split()))
