"""Which messages a branched conversation shows."""

from core.branches import descendants, shown_path, siblings

#      1 (human)
#      └ 2 (ai)
#        ├ 3 (human) ─ 4 (ai)
#        └ 5 (human, an edit of 3) ─ 6 (ai) ─ 7 (human) ─ 8 (ai)
LINKS = [(1, None), (2, 1), (3, 2), (4, 3), (5, 2), (6, 5), (7, 6), (8, 7)]


def test_the_chosen_message_shows_its_ancestors_then_the_newest_below_it():
    assert shown_path(LINKS, 3) == [1, 2, 3, 4]
    assert shown_path(LINKS, 5) == [1, 2, 5, 6, 7, 8]


def test_a_chosen_message_that_is_gone_falls_back_to_the_newest_branch():
    assert shown_path(LINKS, 99) == [1, 2, 5, 6, 7, 8]
    assert shown_path([], 1) == []


def test_versions_of_a_message_are_its_siblings():
    assert siblings(LINKS, [1, 2, 3, 4]) == {3: [3, 5]}
    assert siblings(LINKS, [5, 6]) == {5: [3, 5]}


def test_descendants_are_everything_below():
    assert descendants(LINKS, 5) == {6, 7, 8}
    assert descendants(LINKS, 2) == {3, 4, 5, 6, 7, 8}
