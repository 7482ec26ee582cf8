"""Branches of a conversation: editing a message forks the conversation there.

Every message names its parent (the message it follows). A conversation that was never
edited is one line. Once edited, the session remembers the message the user last chose
(``branch_id``); the branch shown is that message's ancestors, then below it, at each
fork, the newest reply or edit. Pure functions over ``(id, parent_id)`` links.
"""

from __future__ import annotations

from collections.abc import Iterable

Link = tuple[int, int | None]  # (message id, parent id)


def shown_path(links: Iterable[Link], branch_id: int) -> list[int]:
    """Ids of the branch through ``branch_id``, oldest first."""
    parent = dict(links)
    newest_child: dict[int | None, int] = {}
    for child, up in parent.items():
        if child > newest_child.get(up, -1):
            newest_child[up] = child
    if branch_id not in parent:  # the chosen message is gone: the newest branch
        branch_id = newest_child.get(None, -1)
        if branch_id < 0:
            return []
    path = [branch_id]
    seen = {branch_id}
    while (up := parent.get(path[-1])) is not None and up not in seen:
        path.append(up)
        seen.add(up)
    path.reverse()
    while (down := newest_child.get(path[-1])) is not None and down not in seen:
        path.append(down)
        seen.add(down)
    return path


def siblings(links: Iterable[Link], ids: Iterable[int]) -> dict[int, list[int]]:
    """For each of ``ids`` that has versions (same parent), all of them, oldest first."""
    links = list(links)
    parent = dict(links)
    children: dict[int | None, list[int]] = {}
    for child, up in sorted(links):
        children.setdefault(up, []).append(child)
    found: dict[int, list[int]] = {}
    for message_id in ids:
        versions = children.get(parent.get(message_id), [])
        if len(versions) > 1:
            found[message_id] = versions
    return found


def descendants(links: Iterable[Link], root: int) -> set[int]:
    """Every message below ``root``."""
    children: dict[int | None, list[int]] = {}
    for child, up in links:
        children.setdefault(up, []).append(child)
    below, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in below:
                below.add(child)
                todo.append(child)
    return below
