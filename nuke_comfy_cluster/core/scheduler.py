"""Batch scheduling policy: which of a batch's waiting frames go to which server, now.

The dispatcher keeps a batch's frames in the client and asks :meth:`Scheduler.plan`
on every event (one of our jobs started / finished / failed, a server's queue length
changed, a timer tick, a server went away) and again at :attr:`Scheduler.next_wakeup`.
The answer is a short list of server names, one per frame to send at once;
everything else stays in the client, so it can still go anywhere.

How the answer is found:

* Each server's cost for this batch's workflow is learned from this client's own
  jobs in two parts: the **frame time** (``execution_start`` -> ``execution_success``
  of a frame that found the workflow's models loaded, or a cold one minus its
  setup) and the **setup time** (what only a cold server pays: model loads). Both
  are running means that become exponentially weighted after a few samples. A
  server without a sample gets one probe frame at a time (with nothing known at
  all, every idle server gets one). A frame that runs longer than the estimate
  raises the estimate while it runs, so a hung or slowed server stops attracting
  frames. Learned costs can be seeded (:meth:`Scheduler.seed`, e.g. from
  :mod:`.cost_store`), so a repeat batch starts without probes.
* Each server's backlog is projected from what the caller knows: our running
  frame's remaining time (with its setup when it started cold), our queued
  frames, and the other clients' jobs (``queue_remaining`` minus ours, assumed as
  long as ours, drained since seen).
* Waiting frames are list-scheduled by earliest estimated finish (EFT) onto the
  servers' future slots, a cold server's first slot carrying its setup. A frame is
  sent only when its slot is due: planned to start within the lead time (how late
  we may learn that a server went idle), and never more than a small window per
  server (one queued behind the running one; more only when the lead time spans
  several frames; never more than ``max_window``). The plan is made again on every
  call, which is the end-of-job guard: a frame the plan gives to a faster server
  later is held back rather than put on a slow GPU now. Only the slots that can
  matter are looked at (``window`` per server), so a call costs the same for 100
  waiting frames as for 100,000.
* Several clients running this policy share servers without talking to each
  other: top-ups are staggered at random (no herd on the server that just went
  idle), the client served least recently opens its window first (fair turns),
  and under polling a send due shortly after the next status poll waits for it.
* Model affinity: a server busy with another workflow (it would be cold for us
  and someone else's work is there) is left to it, so two artists with different
  models don't make every frame reload. A client with nothing running anywhere
  may take such a server over once its other workflow has had it for
  ``hold`` setups; an idle server is anyone's.
* Priority is a prior and a tie-break (then least recently used = round robin),
  never the plan.

Nothing here does I/O or reads a clock other than the one it is given, so the
same class runs under ``time.monotonic`` and under a virtual clock
(:mod:`nuke_comfy_cluster.sim.virtual`). Not thread-safe: one dispatch thread
owns a scheduler.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

__all__ = ["ServerLoad", "ServerCosts", "Scheduler"]

# Tolerance (in frames) under which two planned finishes count as a tie.
_TIE = 1e-9
# A lead time this long (seconds) means the status comes by polling, not pushed.
_POLLING_LEAD = 1.0
# With polling, a second frame goes behind each blind probe when the batch has at
# least this many frames per server.
_SPECULATE_SHARE = 6
# A probe of unknown length that has run t seconds is planned to end at this times t.
_PROBE_GROWTH = 2.0
# Early top-ups when sharing the servers: at most this fraction of a frame time.
_MAX_ADVANCE = 0.5
# Seconds after the next expected status poll a send may be put off to.
_NEWS_SLACK = 0.25
# How many of our latest finishes per server are remembered against stale queue lengths.
_HEARD_KEPT = 8
# Frame times below this are treated as this (guards divisions; a frame is never free).
_MIN_FRAME = 1e-3
# Cold runs remembered per server until a warm frame tells how much of them was setup.
_COLD_KEPT = 4
# A cold claim of a shared server is staggered over this many seconds (at most its setup).
_CLAIM_SPREAD = 2.0
# A server another workflow has kept t seconds is expected to stay its for this times t.
_HELD_AGAIN = 1.0
# Setups another workflow may keep a server it holds beyond its fair share.
_REBALANCE_HOLD = 2.0


@dataclass(frozen=True)
class ServerLoad:
    """What the dispatcher knows of one available server, at one instant of its clock."""

    name: str
    priority: int  # lower = preferred; a prior and tie-break, not the plan
    queue_remaining: int  # last observed running + pending on the server (all clients), maybe stale
    observed_at: float  # clock time of that observation
    ours_queued: int  # our prompts accepted by that server that have not started
    ours_running_since: Optional[float]  # clock time our prompt started running there (None if none runs)
    max_in_flight: int = 0  # cap on ours there (0 = the policy decides)
    #: clock time the job running there now (anyone's) started, when known: with the
    #: websocket push, the time ``queue_remaining`` last went down. Sharpens the
    #: projection of other clients' work; None is fine.
    busy_since: Optional[float] = None
    #: Would a prompt of this batch sent now find the workflow's setup (its models)
    #: loaded when it starts? True when the last prompt queued there (or, with none
    #: queued, the last one run) is ours of this workflow or has the same loader
    #: inputs; False when it is another workflow's. None = unknown: the scheduler
    #: then takes it as warm when the last thing it knows there is ours.
    warm: Optional[bool] = None
    #: Any stable id of the workflow whose setup a prompt sent now would find there
    #: (e.g. a hash of the tail prompt's loader inputs); None = unknown. Lets the
    #: scheduler see one other workflow take a server over from another.
    cache_owner: Optional[str] = None

    @property
    def ours_in_flight(self) -> int:
        return self.ours_queued + (1 if self.ours_running_since is not None else 0)


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
    __slots__ = ("frame", "setup", "cold_runs", "failures", "probation")

    def __init__(self) -> None:
        self.frame = _Mean()
        self.setup = _Mean()
        self.cold_runs: List[float] = []  # cold durations not yet split into setup + frame
        self.failures = 0
        self.probation = True  # one frame at a time until a job of ours succeeds there


class _View:
    """One server as the planner sees it for one call."""

    __slots__ = (
        "name",
        "load",
        "ft",
        "dev",
        "avail",
        "first",
        "setup",
        "warm",
        "in_flight",
        "others",
        "cap",
        "thr",
        "key",
        "foreign",
        "blocked",
        "anchored",
        "takeover_at",
    )

    def __init__(self, name: str, load: ServerLoad) -> None:
        self.name = name
        self.load = load
        self.ft: Optional[float] = None  # estimated frame time, None when nothing is known
        self.dev = 0.0  # its mean absolute deviation
        self.avail = 0.0  # clock time the server should have worked off everything it holds
        self.first = 0.0  # setup our next new frame there pays (0 when it will be warm)
        self.setup = 0.0  # what a cold start costs us there
        self.warm = True
        self.in_flight = load.ours_in_flight
        self.others = 0
        self.cap = 1
        self.thr = 0.0  # send a frame once its planned start is closer than this
        self.key: Tuple[int, int, str] = (load.priority, 0, name)
        self.foreign = False  # busy with another workflow's work
        self.blocked = False  # left to that workflow for now
        self.takeover_at = 0.0  # when we may take it over if we have nothing running
        # False: its backlog is our frames not yet heard to start, taken to start now;
        # its slots move with the clock, so only an event (not a timer) can make one due.
        self.anchored = True

    def finish(self, k: int) -> float:
        """Planned finish of our k-th new frame there (0-based)."""
        return self.avail + self.first + (k + 1) * self.ft


class Scheduler:
    """Earliest-estimated-finish pull scheduling of a batch over several servers.

    ``lead_time`` is how late the caller may learn that a server went idle: a
    fraction of a second with the websocket push, the status TTL when polling.
    ``default_frame_time`` is a prior used before a server has a sample.
    ``alpha`` weighs new samples in the running estimates; ``deviation_margin``
    multiplies the learned deviation added to the lead time; ``spread`` (seconds,
    0 = off) randomly staggers early top-ups so that clients reacting to the same
    status push don't all queue on the same server at once (``rng`` seeds it).
    ``max_window`` caps our prompts on one server whatever the plan says.
    ``hold`` is how many of its setups another workflow may keep a server before a
    client of ours with nothing running anywhere may take it over.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        lead_time: float = 0.5,
        default_frame_time: Optional[float] = None,
        alpha: float = 0.25,
        deviation_margin: float = 0.0,
        overrun_margin: float = 0.1,
        spread: float = 0.5,
        aging: float = 0.5,
        max_window: int = 8,
        hold: float = 4.0,
        rng: Optional[random.Random] = None,
    ) -> None:
        if lead_time < 0:
            raise ValueError("lead_time must be >= 0")
        if default_frame_time is not None and default_frame_time <= 0:
            raise ValueError("default_frame_time must be > 0")
        if not 0.0 < alpha <= 1.0:
            raise ValueError("alpha must be in (0, 1]")
        if max_window < 1:
            raise ValueError("max_window must be >= 1")
        if hold < 0:
            raise ValueError("hold must be >= 0")
        self._clock = clock
        self._lead = float(lead_time)
        self._default = default_frame_time
        self._alpha = alpha
        self._dev_margin = deviation_margin
        self._overrun = overrun_margin
        self._spread = max(0.0, spread)
        self._aging = max(0.0, aging)
        self._max_window = int(max_window)
        self._hold = float(hold)
        self._rng = rng if rng is not None else random.Random()
        self._est: Dict[str, _Estimate] = {}
        self._running: Dict[str, float] = {}
        self._running_cold: Dict[str, bool] = {}  # our running frame there started cold
        self._sent_cold: Dict[str, bool] = {}  # a cold frame of ours was sent there, not started yet
        self._ran_here: Dict[str, bool] = {}  # the last thing we know ran there is ours
        self._foreign_since: Dict[str, float] = {}  # busy with another workflow since
        self._foreign_clear: Dict[str, float] = {}  # first seen without its work (it may come back)
        self._foreign_owner: Dict[str, Optional[str]] = {}  # whose, when the caller says
        self._takeover_jitter: Dict[str, Tuple[float, float]] = {}  # server -> (foreign since, jitter)
        self._released: Dict[Optional[str], float] = {}  # workflow -> when it last let a server go
        self._finished_heard: Dict[str, List[float]] = {}
        self._last_used: Dict[str, int] = {}
        self._uses = 0
        self._stagger: Dict[str, Tuple[float, float]] = {}  # server -> (planned start, send at)
        self._last_sent: Optional[float] = None
        self._others_seen: Optional[float] = None
        #: clock time at which the last :meth:`plan` expects to send a frame without
        #: any new event (a top-up coming due); None = only an event can change it.
        self.next_wakeup: Optional[float] = None

    # ------------------------------------------------------------------ learning
    @property
    def lead_time(self) -> float:
        return self._lead

    @property
    def max_window(self) -> int:
        return self._max_window

    def set_lead_time(self, seconds: float) -> None:
        """How late we may learn of a change, e.g. the status TTL while the push is lost."""
        if seconds < 0:
            raise ValueError("lead_time must be >= 0")
        self._lead = float(seconds)

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
                est.setup.add(setup_s, self._alpha)
            return  # its start was missed: it succeeded, but says nothing of the speed
        run = max(_MIN_FRAME, finished_at - started_at)
        if not cold:
            est.frame.add(run, self._alpha)
            if cold is False and est.cold_runs:
                # Now that a warm frame is known, the earlier cold runs tell the setup.
                for total in est.cold_runs:
                    est.setup.add(max(0.0, total - est.frame.mean), self._alpha)
                est.cold_runs = []
            return
        if setup_s is not None:
            est.setup.add(max(0.0, setup_s), self._alpha)
            if run - setup_s > _MIN_FRAME:
                est.frame.add(run - setup_s, self._alpha)
        elif est.frame.samples:
            est.setup.add(max(0.0, run - est.frame.mean), self._alpha)
        else:
            est.cold_runs.append(run)
            del est.cold_runs[:-_COLD_KEPT]

    def job_failed(self, server: str) -> None:
        """One of our jobs failed there: back to one frame at a time until one succeeds."""
        self._running.pop(server, None)
        self._running_cold.pop(server, None)
        self._sent_cold.pop(server, None)
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
            ft = max(ft, self._clock() - since - (self._setup_of(server, ft) if self._running_cold.get(server) else 0.0))
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
            if c.setup_s is not None and c.setup_s >= 0 and math.isfinite(c.setup_s):
                est.setup.mean, est.setup.dev = c.setup_s, 0.1 * c.setup_s
                est.setup.samples = max(1, min(c.setup_samples, weight))
            est.probation = False
            self._est[name] = est

    def learn_from(self, other: Scheduler, weight: int = 2) -> None:
        """Start from ``other``'s costs, e.g. the previous batch of the same workflow (see :meth:`seed`)."""
        before = {n for n, e in self._est.items() if e.frame.samples or e.cold_runs}
        self.seed(other.costs(), weight)
        for name, theirs in other._est.items():
            if name in self._est and name not in before and theirs.probation:
                self._est[name].probation = True  # it failed there last and never recovered

    def failures(self, server: str) -> int:
        est = self._est.get(server)
        return est.failures if est is not None else 0

    # ------------------------------------------------------------------ planning
    def plan(self, servers: Sequence[ServerLoad], pending: int) -> List[str]:
        """Names of the servers that should receive the next frames now, one entry per frame.

        May be empty (hold the frames back: a top-up is not due, or the remaining
        frames are planned on servers that are busy now). Never longer than ``pending``.
        Check :attr:`next_wakeup` for when to ask again without an event.
        """
        now = self._clock()
        self.next_wakeup = None
        if pending <= 0 or not servers:
            return []
        views = self._views(servers, now)
        planned = [v for v in views if v.ft is not None]
        if not planned:
            chosen = self._blind_probes(views, pending)
        else:
            wake = self._apply_affinity(planned, now)
            chosen = self._list_schedule(planned, pending, now)
            if wake is not None and (self.next_wakeup is None or wake < self.next_wakeup):
                self.next_wakeup = wake
        cold = {v.name for v in views if v.first > 0.0 or (v.ft is None and not v.warm)}
        for name in chosen:
            self._mark_used(name)
            if name in cold:
                # The first of them starts cold: remembered until it starts (see job_started).
                self._sent_cold[name] = True
                cold.discard(name)
        if chosen:
            self._last_sent = now
        return chosen

    def pick(self, servers: Sequence[ServerLoad]) -> Optional[str]:
        """The server where one prompt should finish first; None when none is given."""
        if not servers:
            return None
        now = self._clock()
        views = self._views(servers, now)
        known = [v for v in views if v.ft is not None]
        if known:
            best = min(known, key=lambda v: (v.finish(0), v.key))
        else:
            best = min(views, key=lambda v: (v.load.queue_remaining + v.load.ours_queued, v.key))
        self._mark_used(best.name)
        return best.name

    # ------------------------------------------------------------------ internals
    def _mark_used(self, name: str) -> None:
        self._uses += 1
        self._last_used[name] = self._uses
        self._stagger.pop(name, None)

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
        shares = sorted(
            e.setup.mean / e.frame.mean for e in self._est.values() if e.setup.samples and e.frame.samples
        )
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
        known = [self.expected_frame_time(s.name) for s in servers if s.name in self._est]
        known = [ft for ft in known if ft is not None]
        return max(known) if known else None

    def _views(self, servers: Sequence[ServerLoad], now: float) -> List[_View]:
        prior = self._prior(servers)
        views = []
        for load in servers:
            v = _View(load.name, load)
            v.key = (load.priority, self._last_used.get(load.name, 0), load.name)
            heard = [t for t in self._finished_heard.get(load.name, ()) if t > load.observed_at]
            v.others = max(0, load.queue_remaining - v.in_flight - len(heard))
            # The job running there now started no earlier than our last end we
            # heard of after the queue was observed.
            head = load.busy_since
            if heard:
                head = max(heard) if head is None else max(head, max(heard))
            est = self._est.get(load.name)
            known = est is not None and bool(est.frame.samples or est.cold_runs)
            ft = self.expected_frame_time(load.name) if known else prior
            probing = not known or est.probation or not est.frame.samples
            since = load.ours_running_since
            if load.warm is not None:
                v.warm = load.warm
            else:
                # The last thing known there is ours, and nobody else's work is about.
                v.warm = v.others == 0 and self._ran_here.get(load.name, False)
            if ft is None:
                views.append(v)  # nothing known anywhere yet: blind probing decides
                continue
            ft = max(ft, _MIN_FRAME)
            setup = self._setup_of(load.name, ft)
            v.setup = setup
            dev = est.frame.dev if known and est.frame.samples else 0.1 * ft
            run_setup = setup if since is not None and self._running_cold.get(load.name) else 0.0
            queued_setup = setup if since is None and load.ours_queued and self._sent_cold.get(load.name) else 0.0
            ours_end = now + queued_setup + load.ours_queued * ft
            if since is not None:
                # It is known to run as of the last observation, or of the lead time
                # ago (a finish would have been heard of by now): only that much
                # running counts as evidence of a slow frame, not a stale view.
                seen = min(now, max(load.observed_at, now - self._lead))
                elapsed = max(0.0, seen - since)
                run = ft + run_setup
                if not known:
                    # A probe: the prior is only a guess, and one that has run for a
                    # while can be expected to run about as long again.
                    run = max(run, _PROBE_GROWTH * elapsed)
                    ft = max(ft, elapsed - run_setup)
                elif elapsed >= run:
                    # Over-running: at least this slow; expect a little more.
                    run = elapsed * (1.0 + self._overrun)
                    ft = elapsed - run_setup
                ours_end = max(now, since + run + load.ours_queued * ft)
            backlog = ours_end - now
            if v.others:
                others = v.others * ft
                if since is None:
                    # The head of the queue is someone else's job, running since
                    # busy_since if known, else half done when last observed.
                    if head is not None:
                        done = now - head
                    else:
                        done = 0.5 * ft + (now - load.observed_at)
                    others -= min(max(0.0, done), ft)
                backlog += max(0.0, others)
            v.ft = ft
            v.dev = dev
            v.avail = now + backlog
            v.anchored = since is not None or not load.ours_queued or v.others > 0
            v.first = 0.0 if v.warm else setup
            v.thr = self._lead + self._dev_margin * dev
            if probing:
                v.cap = 1
            else:
                # One queued behind the running one; more when the lead time spans
                # several frames (polling), so the server never runs dry between looks.
                v.cap = 1 + max(1, int(math.ceil(v.thr / ft)))
            if load.max_in_flight > 0:
                v.cap = min(v.cap, load.max_in_flight)
            v.cap = min(v.cap, self._max_window)
            views.append(v)
        return views

    def _apply_affinity(self, views: List[_View], now: float) -> Optional[float]:
        """Leave servers busy with another workflow to it (see the module docstring).

        Returns when a server still counted as the other workflow's stops being so.
        """
        wake: Optional[float] = None
        for v in views:
            foreign = v.setup > 0.0 and not v.warm and v.others > 0
            if foreign:
                owner = v.load.cache_owner
                if owner is not None and self._foreign_owner.get(v.name, owner) != owner:
                    self._foreign_since.pop(v.name, None)  # taken over: the new workflow's hold starts
                self._foreign_owner[v.name] = owner
                self._foreign_since.setdefault(v.name, now)
                self._foreign_clear.pop(v.name, None)
            elif v.name in self._foreign_since:
                # Between two of its frames a server looks idle for a moment: it stays
                # the other workflow's for a lead time and a stagger after it was seen so.
                clear = self._foreign_clear.setdefault(v.name, min(now, v.load.observed_at))
                grace = clear + v.thr + self._spread
                if v.warm or v.setup <= 0.0 or now >= grace:
                    del self._foreign_since[v.name]
                    del self._foreign_clear[v.name]
                    owner = self._foreign_owner.pop(v.name, None)
                    if not v.warm:
                        self._released[owner] = now
                else:
                    foreign = True
                    wake = grace if wake is None else min(wake, grace)
            v.foreign = foreign
        foreign_views = [v for v in views if v.foreign]
        if not foreign_views:
            return wake
        # Capacity (frames per second) each workflow holds, ours = every server not
        # another's; the fair share is an equal part for each workflow seen.
        held: Dict[Optional[str], float] = {}
        for v in foreign_views:
            owner = self._foreign_owner.get(v.name)
            held[owner] = held.get(owner, 0.0) + 1.0 / v.ft
        ours = sum(1.0 / v.ft for v in views if not v.foreign)
        fair = (ours + sum(held.values())) / (1 + len(held))
        idle_anywhere = all(v.in_flight == 0 for v in views)
        for v in foreign_views:
            since = self._foreign_since[v.name]
            # Clients left without a server at the same moment would all take the same
            # one over at once (each getting a frame and losing it to the next): a
            # random delay, drawn once per hold, lets the first one be seen.
            drawn = self._takeover_jitter.get(v.name)
            if drawn is None or drawn[0] != since:
                drawn = (since, self._rng.random() * self._spread)
                self._takeover_jitter[v.name] = drawn
            owner = self._foreign_owner.get(v.name)
            if ours < fair and held[owner] - 1.0 / v.ft >= fair:
                # Under our share while that workflow keeps its own without this server
                # (it was there first, not chosen for fairness): rebalance, after the
                # setup it paid there has had time to pay off.
                hold = _REBALANCE_HOLD
            elif idle_anywhere:
                hold = self._hold  # nothing of ours runs anywhere: turns come round
            else:
                hold = math.inf
            v.takeover_at = since + hold * v.setup + drawn[1]
            v.blocked = now < v.takeover_at
            released = self._released.get(owner)
            if v.blocked and (released is None or now - released > 2.0 * v.ft):
                # Only ranked (see _list_schedule): a workflow that has kept a server
                # for t seconds is expected to keep it about as long again, unless it
                # just let another go (its batch is ending).
                v.avail = max(v.avail, now + _HELD_AGAIN * (now - since))
        return wake

    def _blind_probes(self, views: List[_View], pending: int) -> List[str]:
        # Nothing known anywhere: a probe on every server that runs nothing or only
        # one job of someone else's (the probe starts after at most one frame). If
        # there is none and nothing of ours is out, queue one on the shortest queue
        # anyway so that the batch always makes progress. Servers known to be busy
        # with another workflow are left to it while an idle one exists.
        idle = sorted((v for v in views if v.in_flight == 0 and v.others <= 1), key=lambda v: (v.others, v.key))
        if any(v.others == 0 for v in idle):
            idle = [v for v in idle if v.others == 0 or v.load.warm is not False]
        chosen = [v.name for v in idle]
        if self._lead >= _POLLING_LEAD and pending >= _SPECULATE_SHARE * len(views):
            # Polling: a probe's end would be seen up to a lead time late, leaving
            # the server idle. With a batch this long even a GPU at a third of the
            # average speed earns two frames, so queue one behind each probe.
            chosen += [v.name for v in idle if v.load.max_in_flight != 1 and self._max_window > 1]
        if not chosen and all(v.in_flight == 0 for v in views):
            chosen = [min(views, key=lambda v: (v.load.queue_remaining, v.key)).name]
        return chosen[:pending]

    def _list_schedule(self, views: List[_View], pending: int, now: float) -> List[str]:
        picks: List[Tuple[float, Tuple[int, int, str], str]] = []
        wake: Optional[float] = None
        # Other clients' jobs come and go (a server idles between them): count the
        # servers as shared for a while after any was last seen.
        if any(v.others for v in views):
            self._others_seen = now
        horizon = 2.0 * max(v.ft for v in views)
        shared = self._others_seen is not None and now - self._others_seen <= horizon
        open_views = [v for v in views if not v.blocked]
        for v in views:
            if v.blocked and v.takeover_at < math.inf:
                # Free for us once the other workflow has had it for its hold.
                wake = v.takeover_at if wake is None else min(wake, v.takeover_at)
        considered = set()
        for v in open_views:
            k = 0
            while True:
                start = v.avail + (v.first if k else 0.0) + k * v.ft
                # Servers left to another workflow still count as places the frames
                # may go (after the work seen there): no cold start on a slow GPU now
                # for a frame that another server is likely to free up for sooner.
                if self._rank(views, v, v.finish(k), k, pending) >= pending:
                    break  # the plan gives every remaining frame an earlier finish elsewhere
                if v.in_flight + k >= v.cap:
                    break  # window full: the next event (a start or finish) reopens it
                if v.foreign:
                    due = now  # taking it over: queue behind its work now, no race
                else:
                    due = self._due(v, start, shared and not (v.setup > 0.0 and v.warm and v.others == 0))
                considered.add(v.name)
                if due > now:
                    if v.anchored:
                        wake = due if wake is None else min(wake, due)
                    break
                picks.append((start, v.key, v.name))
                k += 1
                if v.foreign:
                    break  # one frame takes it over; from then on it is ours like any other
        self.next_wakeup = wake
        # A draw is only good while its slot stays in the plan: one made long ago
        # for a slot that drops out and comes back would fire at once, for every
        # client at the same instant.
        for name in [n for n in self._stagger if n not in considered]:
            del self._stagger[name]
        picks.sort()
        return [name for _, _, name in picks[:pending]]

    def _due(self, v: _View, start: float, shared: bool) -> float:
        """Clock time to send the frame planned to start at ``start`` on ``v``."""
        due = self._staggered(v, start, shared)
        if self._lead >= _POLLING_LEAD:
            # Polling: the next status poll, if it comes before we must act, is
            # worth waiting for; a send then sees what the other clients sent since.
            news = v.load.observed_at + self._lead + _NEWS_SLACK
            if due < news <= start - max(_NEWS_SLACK, v.dev):
                due = news
        return due

    def _staggered(self, v: _View, start: float, shared: bool) -> float:
        due = start - v.thr
        if not shared or self._spread <= 0.0:
            return due
        # Clients that see the same status push would all top up the same server
        # at the same instant (herding: N frames land where one was planned, the
        # last on a slow GPU). When other clients' jobs are about, each top-up is
        # sent at a random point of [start - thr, start + spread] (of [now, now +
        # spread] if that is past); whoever goes first is seen by the others
        # before their turn comes. The draw is kept (as a clock time) while the
        # planned start stays put.
        #
        # Each client projects ``start`` with its own estimates, so one that
        # projects later than the others would lose every race; and a client
        # with many frames would win as often as one with few. So the window
        # opens earlier the longer this client has gone without sending a frame
        # (up to half a frame time): the one served least recently goes first,
        # turns come round without any coordination.
        drawn = self._stagger.get(v.name)
        if drawn is None or abs(drawn[0] - start) > v.thr:
            now = self._clock()
            waited = now - self._last_sent if self._last_sent is not None else 0.0
            advance = min(self._aging * waited, _MAX_ADVANCE * v.ft)
            lo = max(now, due - advance)
            # A cold claim (another workflow's models are there) pays a setup anyway:
            # a wider window makes two clients claiming at once (each keeping one
            # frame) rare, for a small part of that setup.
            spread = max(self._spread, min(_CLAIM_SPREAD, v.first))
            hi = max(lo, start - advance) + spread
            drawn = (start, lo + self._rng.random() * (hi - lo))
            self._stagger[v.name] = drawn
        return drawn[1]

    @staticmethod
    def _rank(views: List[_View], me: _View, finish: float, k: int, limit: int) -> int:
        """How many slots of the EFT list schedule finish before ``finish`` (me's k-th new frame)."""
        rank = k
        for v in views:
            if v is me:
                continue
            x = (finish - v.avail - v.first) / v.ft
            if x < 1.0 - _TIE:
                continue
            n = int(math.floor(x + _TIE))
            if abs(x - n) <= _TIE and v.key >= me.key:
                n -= 1  # its n-th slot ties with ours and loses the tie-break
            rank += n
            if rank >= limit:
                return rank
        return rank
