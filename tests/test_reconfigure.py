"""A pool member gets a new model, prompt or temperature while the app runs: replies in
flight finish on the old agent, new ones use the new, each records the version."""

from __future__ import annotations

import dataclasses
import time

import pytest
from langchain.agents import create_agent
from sqlalchemy import select

from core import AgentSpec
from core.runs import CHECKPOINT_EVERY
from core.schema import COMPLETE, messages, usage
from tests.fakes import ScriptedModel


def by_spec_factory(models: dict[str, ScriptedModel]):
    """Agents whose model answers with the spec it was built from."""

    def build(spec: AgentSpec):
        model = models.setdefault(spec.model, ScriptedModel(
            answer=lambda _m, s=spec: f"{s.model} at {s.temperature}"))
        return create_agent(model, tools=[], system_prompt=spec.system_prompt or None)

    return build


def test_a_reconfigured_member_serves_new_runs_while_old_ones_finish(make_manager):
    models: dict[str, ScriptedModel] = {}
    manager = make_manager(agent_factory=by_spec_factory(models), RATE_LIMIT_PER_MINUTE=0)
    old = manager.default_spec.model
    models[old].enqueue("slow old reply", pause_after=1, pause=1.0)
    first = manager.create_session(owner="a").start("one")
    while not first.answered:  # the first run has its agent and is writing
        first.wait(0.01)
    version = manager.members.reconfigure("pool:0", AgentSpec("new-model", "Be terse.", 0.3))
    assert version == 2
    second = manager.create_session(owner="b").start("two")
    assert second.wait(10) and first.wait(10)
    assert (first.status, second.status) == (COMPLETE, COMPLETE)
    assert first.reply == "slow old reply"  # finished on the agent it borrowed
    assert second.reply == "new-model at 0.3"
    with manager.store.engine.connect() as conn:
        rows = {r.run_id: r for r in conn.execute(select(usage))}
        replies = dict(conn.execute(select(messages.c.run_id, messages.c.model)
                                    .where(messages.c.role == "ai")).fetchall())
    assert (rows[first.id].agent_version, rows[second.id].agent_version) == (1, 2)
    assert (replies[first.id], replies[second.id]) == (old, "new-model")
    shown = [r for s in (first, second) for r in manager.store.load_stored(s.session_id)
             if r.message.type == "ai"]
    assert [(r.model, r.version) for r in shown] == [(old, 1), ("new-model", 2)]
    assert manager.members.spec_of("pool:0").system_prompt == "Be terse."
    assert manager.get_stats()["pool"][0]["version"] == 2


def test_a_reply_being_written_is_stored_with_the_model_writing_it(make_manager):
    """The reply row starts with a guess (the pool's model at start-up); the first
    checkpoint with text stores the model that answers: a crash then leaves the reply
    marked with the right one (footer, export, stats by model)."""
    models: dict[str, ScriptedModel] = {}
    manager = make_manager(agent_factory=by_spec_factory(models), RATE_LIMIT_PER_MINUTE=0)
    manager.members.reconfigure("pool:0", AgentSpec("new-model", "", 0.3))
    models["new-model"].enqueue("a long reply cut off", pause_after=2, pause=60)
    session = manager.create_session(owner="a")
    run = session.start("one")

    def stored() -> tuple[str, str]:
        with manager.store.engine.connect() as conn:
            return conn.execute(select(messages.c.model, messages.c.status).where(
                messages.c.run_id == run.id)).one()

    deadline = time.monotonic() + 20 * CHECKPOINT_EVERY
    while stored() != ("new-model", "running"):
        assert time.monotonic() < deadline, stored()
        run.wait(0.05)
    session.stop()


def test_a_bad_spec_changes_nothing(make_manager):
    manager = make_manager()
    with pytest.raises(ValueError, match="temperature"):
        manager.members.reconfigure("pool:0", AgentSpec("m", "", 5))
    with pytest.raises(KeyError):
        manager.members.reconfigure("nobody", AgentSpec("m", "", 0.5))
    assert manager.get_stats()["pool"][0]["version"] == 1


def test_offline_a_member_keeps_the_offline_models_name_whatever_is_asked(make_manager):
    manager = make_manager(RATE_LIMIT_PER_MINUTE=0)  # no key: the offline model answers
    manager.members.reconfigure("pool:0", AgentSpec("gpt-4o", "Be terse.", 0.3))
    assert manager.members.spec_of("pool:0").model == "offline-demo"
    session = manager.create_session()
    assert session.send("what is 2+3") == "2+3 = 5"
    with manager.store.engine.connect() as conn:
        models = {m for (m,) in conn.execute(select(messages.c.model)
                                             .where(messages.c.role == "ai"))}
        used = {m for (m,) in conn.execute(select(usage.c.model))}
    assert models == used == {"offline-demo"}  # never labelled as a model that did not answer
    assert manager.get_stats()["pool"][0]["model"] == "offline-demo"


def test_applying_the_spec_a_member_has_changes_nothing(make_manager):
    manager = make_manager(RATE_LIMIT_PER_MINUTE=0)
    same = manager.members.spec_of("pool:0")
    agent = manager.pool.member("pool:0").agent
    assert manager.members.reconfigure("pool:0", same) == 1
    assert manager.pool.member("pool:0").agent is agent  # not rebuilt
    changed = dataclasses.replace(same, system_prompt="Be terse.")
    assert manager.members.reconfigure("pool:0", changed) == 2
    assert manager.members.reconfigure("pool:0", changed) == 2
    assert manager.get_stats()["pool"][0]["version"] == 2
