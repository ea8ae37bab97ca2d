"""The clients of the virtual-time model (:mod:`.virtual`): the policy and the baselines.

* :class:`PolicyClient` runs the real :class:`~nuke_comfy_cluster.core.scheduler.Scheduler`
  on the virtual clock, told what a dispatcher would know of the servers' cache;
* :class:`SequentialClient`: one server, the next frame sent when the previous one is
  known finished (how single-server integrations submit);
* :class:`BurstClient`: every frame sent at once, by round robin or least queue length.
"""

from __future__ import annotations

import random
import time
from typing import Optional, Sequence

from nuke_comfy_cluster.core.cache_view import IDLE_FREE_S
from nuke_comfy_cluster.core.scheduler import Scheduler, ServerLoad

from .virtual import CACHE_INFO, Client, VirtualJob, World, _View

__all__ = ["PolicyClient", "SequentialClient", "BurstClient"]


class PolicyClient(Client):
    """Runs the real :class:`Scheduler` on the virtual clock.

    ``cache_info`` (one of :data:`CACHE_INFO`) is what it tells the scheduler of
    the servers' model cache, as a dispatcher would: "none" is the policy as it was
    before it knew of setups. ``plans``, ``cpu_s`` (process time spent deciding)
    and ``max_ours`` (most of our prompts one server held, as far as we know) are
    counted for the benchmarks (``cpu_s`` with ``measure_cpu``).
    """

    def __init__(
        self,
        world: World,
        name: str,
        works: Sequence[float],
        *,
        start: float = 0.0,
        ttl: Optional[float] = None,
        push_lead: float = 0.5,
        model: Optional[str] = None,
        setup: float = 0.0,
        cache_info: str = "full",
        measure_cpu: bool = False,
        **scheduler_kw: object,
    ) -> None:
        super().__init__(world, name, works, start=start, ttl=ttl, model=model, setup=setup)
        if cache_info not in CACHE_INFO:
            raise ValueError("cache_info must be one of %s" % ", ".join(CACHE_INFO))
        scheduler_kw.setdefault("rng", random.Random(world.rng.random()))
        self.scheduler = Scheduler(world.clock, lead_time=push_lead if ttl is None else ttl, **scheduler_kw)
        self.cache_info = cache_info if model is not None else "none"
        self._wake_at = float("inf")
        self.plans = 0
        self.cpu_s = 0.0  # with measure_cpu (process_time is a system call: not free)
        self._measure = measure_cpu
        self.max_ours = 0

    def submit(self, server: str) -> None:
        super().submit(server)
        v = self.views[server]
        self.max_ours = max(self.max_ours, len(v.queued) + (1 if v.running is not None else 0))

    def started(self, job: VirtualJob, at: float) -> None:
        if self.cache_info == "none":
            self.scheduler.job_started(job.server, at)
        else:
            self.scheduler.job_started(job.server, at, cold=job.cold)

    def setup_done(self, job: VirtualJob) -> None:
        if self.cache_info == "full":
            self.scheduler.setup_finished(job.server, job.setup_time)

    def finished(self, job: VirtualJob, started_at: float, finished_at: float) -> None:
        if self.cache_info == "none":
            self.scheduler.job_finished(job.server, started_at, finished_at)
        elif self.cache_info == "cold":
            self.scheduler.job_finished(job.server, started_at, finished_at, cold=job.cold)
        else:
            self.scheduler.job_finished(
                job.server, started_at, finished_at, setup_s=job.setup_time if job.cold else 0.0, cold=job.cold
            )

    def _warm(self, v: _View) -> Optional[bool]:
        """Whether a prompt sent now would find our model loaded, from what the client has seen."""
        if self.cache_info == "none":
            return None
        # One of ours sent after the server was in the state last seen is behind it all.
        if any(j.arrived is None or j.arrived > v.tail_at for j in v.queued):
            return True
        return v.tail == self.model

    def _owner(self, v: _View, warm: Optional[bool]) -> Optional[str]:
        """Whose models are there, as the dispatcher tells it (core.cache_view): nobody's once
        the server has been idle for IDLE_FREE_S."""
        if warm is None:
            return None
        if warm:
            return self.model
        if v.empty_since is not None and self.world.now - v.empty_since >= IDLE_FREE_S:
            return None
        return v.tail

    @staticmethod
    def _taken(v: _View) -> Optional[VirtualJob]:
        if v.running is not None:
            return v.running
        return v.queued[-1] if v.queued else None

    def _wake(self) -> None:
        if self.world.now >= self._wake_at:
            self._wake_at = float("inf")
        self.react()

    def _watching(self) -> bool:
        """Frames run that the scheduler may want back, though none waits."""
        return self.scheduler.withdraws and self.scheduler.watching

    def react(self) -> None:
        if self.world.now < self.start or not (self.pending or self._watching()):
            return
        t0 = time.process_time() if self._measure else 0.0
        loads = [
            ServerLoad(
                name=v.spec.name,
                priority=v.spec.priority,
                queue_remaining=v.q,
                observed_at=v.observed_at,
                ours_queued=len(v.queued),
                ours_running_since=v.running_since if v.running is not None else None,
                busy_since=v.busy_since,
                warm=warm,
                cache_owner=self._owner(v, warm),
            )
            for v, warm in ((v, self._warm(v)) for v in self.views.values())
        ]
        self.plans += 1
        chosen = self.scheduler.plan(loads, self.pending)
        if self._measure:
            self.cpu_s += time.process_time() - t0
        for name in chosen:
            self.submit(name)
        # a running first frame, or one still queued behind another workflow's work
        taken = [self._taken(self.views[name]) for name in self.scheduler.withdrawals]
        for job in taken:
            if job is not None:
                self.withdraw(job)
                self.scheduler.job_withdrawn(job.server)
        if any(taken):
            self.react()  # the frames taken back go elsewhere now
            return
        wake = self.scheduler.next_wakeup
        if wake is not None and self.world.now < wake < self._wake_at and (self.pending or self._watching()):
            self._wake_at = wake
            self.world.at(wake, self._wake)


class SequentialClient(Client):
    """Baseline: one server, the next frame sent when the previous one is known finished."""

    def __init__(
        self,
        world: World,
        name: str,
        works: Sequence[float],
        server: str,
        *,
        start: float = 0.0,
        ttl: Optional[float] = None,
        model: Optional[str] = None,
        setup: float = 0.0,
    ) -> None:
        super().__init__(world, name, works, start=start, ttl=ttl, model=model, setup=setup)
        self.server = server

    def react(self) -> None:
        v = self.views[self.server]
        if self.pending and not v.queued and v.running is None:
            self.submit(self.server)


class BurstClient(Client):
    """Baseline: every frame sent at once, by round robin or least (observed) queue length."""

    def __init__(
        self,
        world: World,
        name: str,
        works: Sequence[float],
        strategy: str,
        *,
        start: float = 0.0,
        ttl: Optional[float] = None,
        model: Optional[str] = None,
        setup: float = 0.0,
    ) -> None:
        super().__init__(world, name, works, start=start, ttl=ttl, model=model, setup=setup)
        if strategy not in ("round_robin", "least_queue"):
            raise ValueError(strategy)
        self.strategy = strategy

    def react(self) -> None:
        if not self.pending:
            return
        names = sorted(self.views, key=lambda n: (self.views[n].spec.priority, n))
        sent = {n: 0 for n in names}
        i = 0
        while self.pending:
            if self.strategy == "round_robin":
                name = names[i % len(names)]
                i += 1
            else:
                # Least loaded = observed queue + what we sent since that observation.
                name = min(names, key=lambda n: (self.views[n].q + sent[n], self.views[n].spec.priority, n))
            sent[name] += 1
            self.submit(name)
