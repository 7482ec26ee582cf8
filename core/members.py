"""The shared pool's members: built once from the settings, changed live.

``[[members]]`` in the settings gives named members (each its endpoint, key, model, limit
and weight); otherwise the pool has ``AGENT_POOL_SIZE`` identical agents. A member's
model, prompt or temperature can be replaced while the app runs: replies in progress keep
the agent they borrowed, new ones get the new agent and the member's next version.
"""

from __future__ import annotations

import dataclasses
import logging
import threading

from core.agents import AgentFactory, AgentSpec, agent_factory_for
from core.config import MemberConfig, Settings, account_quota
from core.offline_model import OFFLINE_MODEL_NAME
from core.pool import AgentPool, Member

log = logging.getLogger("poolchat")

OWN_ENDPOINT = "own settings"  # the queue of chats with settings of their own


class PoolMembers:
    """Owns the pool: builds its members, says what each answers with, replaces them."""

    def __init__(self, settings: Settings, default_spec: AgentSpec,
                 agent_factory: AgentFactory | None = None) -> None:
        self.settings = settings
        self.default_spec = default_spec
        self._given_factory = agent_factory  # tests: every member answers from it
        self._lock = threading.Lock()
        self._specs: dict[str, AgentSpec] = {}
        self.pool = AgentPool(self._build(), acquire_timeout=settings.AGENT_QUEUE_TIMEOUT,
                              max_per_owner=settings.MAX_RUNS_PER_USER)
        self.own_endpoint = self._own_endpoint()
        # every queue a request may wait in: the pool, then the own-settings one if any
        self.queues = (self.pool, *([self.own_endpoint] if self.own_endpoint else []))

    def _own_endpoint(self) -> AgentPool | None:
        """Where chats with settings of their own queue beside configured members: their
        agents talk to ``OPENAI_BASE_URL``, which may be none of the members' endpoints, so
        it gets a queue of its own, with the same fair share, per-browser cap and 429
        cooldown (shared with a member on the same endpoint and key). None without
        members (those chats take a pool slot) or without a key (none are offered)."""
        settings = self.settings
        if not settings.MEMBERS or not settings.has_key:
            return None
        assert settings.OPENAI_API_KEY is not None
        quota = account_quota(settings.OPENAI_BASE_URL,
                              settings.OPENAI_API_KEY.get_secret_value())
        return AgentPool([Member(OWN_ENDPOINT, None, settings.AGENT_MAX_CONCURRENCY,
                                 model="each chat's model", quota=quota)],
                         acquire_timeout=settings.AGENT_QUEUE_TIMEOUT,
                         max_per_owner=settings.MAX_RUNS_PER_USER)

    def _build(self) -> list[Member]:
        settings = self.settings
        if settings.MEMBERS:
            return [Member(m.name, self.factory(m.name)(self._configured(m)),
                           m.max_concurrency, m.weight, m.model, m.quota())
                    for m in settings.MEMBERS]
        build = self.factory(None)
        return [Member(f"pool:{i}", build(self.default_spec), settings.AGENT_MAX_CONCURRENCY,
                       model=self.default_spec.model, quota="pool")
                for i in range(settings.AGENT_POOL_SIZE)]

    def _configured(self, member: MemberConfig) -> AgentSpec:
        return AgentSpec(member.model, self.settings.SYSTEM_PROMPT, self.settings.TEMPERATURE)

    def factory(self, name: str | None) -> AgentFactory:
        """Builds a member's agent (no client retries: the pool's router retries)."""
        if self._given_factory is not None:
            return self._given_factory
        config = next((m for m in self.settings.MEMBERS if m.name == name), None)
        return agent_factory_for(self.settings, routed=True, member=config)

    def spec_of(self, name: str) -> AgentSpec:
        """The model, prompt and temperature a member answers with now."""
        self.pool.member(name)  # KeyError for an unknown member
        with self._lock:
            spec = self._specs.get(name)
        if spec is not None:
            return spec
        config = next((m for m in self.settings.MEMBERS if m.name == name), None)
        return self._configured(config) if config else self.default_spec

    def reconfigure(self, name: str, spec: AgentSpec) -> int:
        """Give a member a new model, prompt or temperature, without a restart.

        Returns the member's new version (recorded with each reply); the spec it has
        already changes nothing (same version, same health). A spec whose agent cannot be
        built fails here and changes nothing. Offline, the offline model is the only one:
        a model name given is not recorded as if it answered.
        """
        member = self.pool.member(name)
        if self._given_factory is None and self.settings.offline:
            spec = dataclasses.replace(spec, model=OFFLINE_MODEL_NAME)
        if spec == self.spec_of(name):
            return member.version
        agent = self.factory(name)(spec)
        with self._lock:
            self._specs[name] = spec
        version = self.pool.replace_agent(name, agent, spec.model)
        log.info("pool member %s reconfigured (version %d, model %s)", name, version,
                 spec.model)
        return version

    def models(self) -> str:
        """The models the pool answers with now, for a badge."""
        return ", ".join(dict.fromkeys(m.model for m in self.pool.members))
