"""Every size limit PoolChat enforces, declared once and imported where it applies."""

from __future__ import annotations

TITLE_MAX_CHARS = 200        # a conversation's title, as stored and as typed
AUTO_TITLE_CHARS = 60        # a title taken from the first message
MODEL_NAME_MAX_CHARS = 200   # a model's name
PROMPT_MAX_CHARS = 20_000    # a system prompt
HISTORY_WINDOW = 400         # newest stored messages read per turn, before token trimming
SHOWN_MESSAGES = 200         # messages the chat page shows (exports have them all)
FEEDBACK_COMMENT_CHARS = 2_000  # a comment on a reply
