"""What the batch scheduler learns of each server: a frame time and a setup time.

Cost = per-frame part + setup part, learned separately from this client's own
jobs (:class:`LearningMixin`, mixed into :class:`~.scheduler.Scheduler`):

* a frame that found the workflow's models loaded (warm) is a frame-time sample;
* a cold one (some loader ran) is split into its setup, when the caller timed the
  setup nodes, and the rest, a frame-time sample; a cold one without that timing
  teaches the setup as what it took beyond a frame (once a frame time is known);
* a caller that cannot tell warm from cold gets what it always got: the whole run
  is a frame-time sample.

Both are running means that become exponentially weighted after a few samples,
so they follow a server whose speed changes. :class:`ServerCosts` is what is kept
between batches (:mod:`.cost_store`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Sequence, Tuple

if TYPE_CHECKING:
    from .scheduler import Scheduler, ServerLoad

__all__ = ["ServerCosts", "LearningMixin"]

# How many of our latest finishes per server are remembered against stale queue lengths.
_HEARD_KEPT = 8
# Frame times below this are treated as this (guards divisions; a frame is never free).
_MIN_FRAME = 1e-3
# Cold runs remembered per server until a warm frame tells how much of them was setup.
_COLD_KEPT = 4


@dataclass(frozen=True)
class ServerCosts:
    """What has been learned of one server for one workflow (what :mod:`.cost_store` keeps)."""

    frame_s: float  # seconds per frame with the setup loaded
    frame_dev: float = 0.0  # mean absolute deviation of that
    samples: int = 1
    setup_s: Optional[float] = None  # seconds a cold start adds; None = never measured
    setup_samples: int = 0


class _Mean:
    """A plain mean over the first samples, then a moving average that follows changes."""

    __slots__ = ("mean", "dev", "samples")

    def __init__(self) -> None:
        self.mean = 0.0
        self.dev = 0.0
        self.samples = 0

    def add(self, sample: float, alpha: float) -> None:
        self.samples += 1
        if self.samples == 1:
            self.mean = sample
            self.dev = 0.1 * sample  # until a second sample says otherwise
            return
        w = max(alpha, 1.0 / self.samples)
        self.dev += w * (abs(sample - self.mean) - self.dev)
        self.mean += w * (sample - self.mean)


class _Estimate:
    __slots__ = ("frame", "setup", "cold_runs", "failures", "probation", "min_frame", "seeded")

    def __init__(self) -> None:
        self.frame = _Mean()
        self.setup = _Mean()
        self.cold_runs: List[float] = []  # cold durations not yet split into setup + frame
        self.failures = 0
        self.probation = True  # one frame at a time until a job of ours succeeds there
        self.min_frame = 0.0  # a frame there takes at least this (a probe taken back showed it)
        self.seeded = 0  # frame samples that came from seed(), not from this batch


class LearningMixin:
    """The learning half of :class:`~.scheduler.Scheduler` (its state is made there)."""

    _est: Dict[str, _Estimate]
    _setups_seen: bool  # some setup was ever learned or seeded (see _setup_share)

    def job_started(self, server: str, at: Optional[float] = None, cold: Optional[bool] = None) -> None:
        """One of our jobs started there at ``at`` (clock time; default now).

        ``cold``: whether it runs its setup (its loaders are not in ``execution_cached``);
        None = as planned (the first frame sent to a server that was cold for us).
        """
        self._running[server] = self._clock() if at is None else at
        planned = self._sent_cold.pop(server, False)
        self._running_cold[server] = planned if cold is None else bool(cold)
        self._ran_here[server] = True

    def job_finished(
        self,
        server: str,
        started_at: float,
        finished_at: float,
        setup_s: Optional[float] = None,
        cold: Optional[bool] = None,
    ) -> None:
        """Learn from one of our jobs that ran from ``started_at`` to ``finished_at``.

        Both on this scheduler's clock. ``cold``: it ran the workflow's setup (some
        loader was not in ``execution_cached``); ``setup_s``: how long the setup
        nodes took, when timed (``executing`` events). With neither, the whole run
        is taken as a frame time (what a client that cannot tell does). A job
        whose start was missed (``finished_at <= started_at``) clears the server's
        probation but teaches no time.
        """
        self._running.pop(server, None)
        self._running_cold.pop(server, None)
        self._sent_cold.pop(server, None)
        self._setup_done.pop(server, None)
        self._ran_here[server] = True
        # A queue length observed before now may still count this job: remember
        # when we heard of its end, so it is not taken for someone else's.
        heard = self._finished_heard.setdefault(server, [])
        heard.append(self._clock())
        del heard[:-_HEARD_KEPT]
        est = self._est.setdefault(server, _Estimate())
        est.probation = False
        if cold is None and setup_s is not None:
            cold = setup_s > 0.0
        if finished_at <= started_at:
            if setup_s is not None and setup_s > 0.0:
                self._learn_setup(est, setup_s)
            return  # its start was missed: it succeeded, but says nothing of the speed
        run = max(_MIN_FRAME, finished_at - started_at)
        if not cold:
            est.frame.add(run, self._alpha)
            if cold is False and est.cold_runs:
                # Now that a warm frame is known, the earlier cold runs tell the setup.
                for total in est.cold_runs:
                    self._learn_setup(est, max(0.0, total - est.frame.mean))
                est.cold_runs = []
            return
        if setup_s is not None:
            self._learn_setup(est, max(0.0, setup_s))
            if run - setup_s > _MIN_FRAME:
                est.frame.add(run - setup_s, self._alpha)
        elif est.frame.samples:
            self._learn_setup(est, max(0.0, run - est.frame.mean))
        else:
            est.cold_runs.append(run)
            del est.cold_runs[:-_COLD_KEPT]

    def job_failed(self, server: str) -> None:
        """One of our jobs failed there: back to one frame at a time until one succeeds."""
        self._running.pop(server, None)
        self._running_cold.pop(server, None)
        self._sent_cold.pop(server, None)
        self._setup_done.pop(server, None)
        est = self._est.setdefault(server, _Estimate())
        est.failures += 1
        est.probation = True

    def expected_frame_time(self, server: str) -> Optional[float]:
        """What a frame there should take (learned, else the prior), not raised by a frame
        still running: the yardstick for "we have heard nothing for too long"."""
        est = self._est.get(server)
        if est is not None and est.frame.samples:
            return est.frame.mean
        if est is not None and est.cold_runs:
            return self._split_cold(est)[0]
        return self._default

    def expected_setup_time(self, server: str) -> Optional[float]:
        """What a cold start adds there (learned); None when never measured."""
        est = self._est.get(server)
        if est is not None and est.setup.samples:
            return est.setup.mean
        if est is not None and est.cold_runs and est.cold_runs[-1] > self._split_cold(est)[0]:
            return self._split_cold(est)[1]
        return None

    def frame_time(self, server: str) -> Optional[float]:
        """Current estimate for one frame there; None before any sample and without a prior."""
        ft = self.expected_frame_time(server)
        since = self._running.get(server)
        if ft is not None and since is not None:
            # A frame running longer than the estimate is a sample we are still taking.
            ft = max(
                ft, self._clock() - since - (self._setup_of(server, ft) if self._running_cold.get(server) else 0.0)
            )
        return ft

    def costs(self) -> Dict[str, ServerCosts]:
        """What this batch has learned per server (for :mod:`.cost_store` or the next batch)."""
        out = {}
        for name, est in self._est.items():
            ft = self.expected_frame_time(name)
            if ft is None:
                continue
            setup = self.expected_setup_time(name)
            out[name] = ServerCosts(
                frame_s=ft,
                frame_dev=est.frame.dev if est.frame.samples else 0.1 * ft,
                samples=max(1, est.frame.samples),
                setup_s=setup,
                setup_samples=est.setup.samples if est.setup.samples else (1 if setup is not None else 0),
            )
        return out

    def seed(self, costs: Mapping[str, ServerCosts], weight: int = 2) -> None:
        """Start from costs learned earlier (the previous batch, or the cost store).

        Servers seeded need no probe frame. Seeds count as at most ``weight``
        samples, so this batch's own frames soon take over (another model, a
        changed server). Servers already learned here are kept.
        """
        for name, c in costs.items():
            if c.frame_s <= 0 or not math.isfinite(c.frame_s):
                continue
            est = self._est.get(name)
            if est is not None and (est.frame.samples or est.cold_runs):
                continue
            est = _Estimate()
            est.frame.mean, est.frame.dev = c.frame_s, max(0.0, c.frame_dev)
            est.frame.samples = max(1, min(c.samples, weight))
            est.seeded = est.frame.samples
            if c.setup_s is not None and c.setup_s >= 0 and math.isfinite(c.setup_s):
                est.setup.mean, est.setup.dev = c.setup_s, 0.1 * c.setup_s
                est.setup.samples = max(1, min(c.setup_samples, weight))
                self._setups_seen = True
            est.probation = False
            self._est[name] = est

    def learn_from(self, other: Scheduler, weight: int = 2) -> None:
        """Start from ``other``'s costs, e.g. the previous batch of the same workflow (see :meth:`seed`)."""
        before = {n for n, e in self._est.items() if e.frame.samples or e.cold_runs}
        self.seed(other.costs(), weight)
        for name, theirs in other._est.items():
            if name in self._est and name not in before and theirs.probation:
                self._est[name].probation = True  # it failed there last and never recovered
        for name, est in self._est.items():
            if name not in before and other._measured_here(name):
                # measured by this session's previous batch moments ago: not a hint from an
                # earlier session, so its first frame here is no probe to take back
                est.seeded = 0

    def failures(self, server: str) -> int:
        est = self._est.get(server)
        return est.failures if est is not None else 0

    def _learn_setup(self, est: _Estimate, seconds: float) -> None:
        est.setup.add(seconds, self._alpha)
        self._setups_seen = True

    def _split_cold(self, est: _Estimate) -> Tuple[float, float]:
        """(frame, setup) guessed from cold runs alone, by the setup share seen elsewhere."""
        total = est.cold_runs[-1]
        share = self._setup_share()
        if share is None:
            return total, 0.0  # as a client that cannot tell would learn it
        frame = max(_MIN_FRAME, total / (1.0 + share))
        return frame, total - frame

    def _setup_share(self) -> Optional[float]:
        """Median setup / frame time over the servers where both are known."""
        if not self._setups_seen:
            return None  # the common case without setups: no pass over the servers
        shares = sorted(e.setup.mean / e.frame.mean for e in self._est.values() if e.setup.samples and e.frame.samples)
        return shares[len(shares) // 2] if shares else None

    def _setup_of(self, name: str, ft: float) -> float:
        setup = self.expected_setup_time(name)
        if setup is not None:
            return setup
        # Unmeasured there: as long, relative to a frame, as where it was measured.
        share = self._setup_share()
        return share * ft if share is not None else 0.0

    def _prior(self, servers: Sequence[ServerLoad]) -> Optional[float]:
        if self._default is not None:
            return self._default
        # Pessimistic: an unknown server is planned as if it were the slowest known
        # one, so it gets its probe but no share of the tail before it has shown more.
        worst: Optional[float] = None
        for s in servers:
            est = self._est.get(s.name)
            if est is None:
                continue
            if est.frame.samples:
                ft = est.frame.mean
            elif est.cold_runs:
                ft = self._split_cold(est)[0]
            else:
                continue
            if worst is None or ft > worst:
                worst = ft
        return worst
