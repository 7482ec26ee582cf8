"""Finished blocks of a streaming reply are cut where Markdown cannot change them."""

from hypothesis import given
from hypothesis import strategies as st

from core.reply_blocks import BlockSplitter


def split(text: str, step: int = 3) -> tuple[list[str], str]:
    splitter, blocks = BlockSplitter(), []
    for i in range(0, len(text), step):
        blocks += splitter.feed(text[i:i + step])
    return blocks, splitter.tail


def test_paragraphs_are_finished_at_a_blank_line():
    assert split("One.\n\nTwo.\n\nThr") == (["One.", "Two."], "Thr")


def test_a_code_block_with_blank_lines_is_one_block_once_closed():
    text = "Code:\n\n```python\na = 1\n\nb = 2\n```\nAfter"
    assert split(text) == (["Code:", "```python\na = 1\n\nb = 2\n```"], "After")


def test_an_open_code_block_stays_in_the_tail():
    blocks, tail = split("Intro\n\n```\nx = 1\n\ny")
    assert blocks == ["Intro"] and tail == "```\nx = 1\n\ny"


def test_an_indented_line_after_a_blank_continues_the_list_item():
    blocks, tail = split("1. First\n\n   more of it\n\n2. Second")
    assert blocks == ["1. First\n\n   more of it"] and tail == "2. Second"


@given(st.text(alphabet="ab `~\n-1. ", max_size=200), st.integers(1, 7))
def test_blocks_and_tail_keep_every_non_blank_character(text, step):
    blocks, tail = split(text, step)
    kept = "".join("".join(blocks) + tail).replace("\n", "").replace(" ", "")
    assert kept == text.replace("\n", "").replace(" ", "")
