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
* Model affinity (:mod:`.scheduler_affinity`): a server busy with another
  workflow (it would be cold for us and someone else's work is there) is left to
  it, so two artists with different models don't make every frame reload; it is
  taken over only by a client under its fair share of the cluster (from a
  workflow that keeps its share without it) or with nothing running anywhere,
  each after a hold of a few of that workflow's setups. An idle server is
  anyone's. With ``withdraw_probes``, a cold first frame that will end after the
  rest of the batch could be done elsewhere is asked back (:attr:`withdrawals`).
* Priority is a prior and a tie-break (then least recently used = round robin),
  never the plan.

What is learned lives in :mod:`.scheduler_costs` (:class:`ServerCosts` is what
:mod:`.cost_store` keeps between sessions).

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
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .scheduler_affinity import _POLLING_LEAD, SOMEONE, AffinityMixin
from .scheduler_costs import _MIN_FRAME, LearningMixin, ServerCosts, _Estimate

__all__ = ["ServerLoad", "ServerCosts", "Scheduler", "SOMEONE"]

# Tolerance (in frames) under which two planned finishes count as a tie.
_TIE = 1e-9
# A probe of unknown length that has run t seconds is planned to end at this times t.
_PROBE_GROWTH = 2.0
# Early top-ups when sharing the servers: at most this fraction of a frame time.
_MAX_ADVANCE = 0.5
# Seconds after the next expected status poll a send may be put off to.
_NEWS_SLACK = 0.25
# A cold claim of a shared server is staggered over this many seconds (at most its setup).
_CLAIM_SPREAD = 2.0


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
    #: (e.g. a hash of the tail prompt's loader inputs); None = nobody's (or unknown);
    #: :data:`SOMEONE` = the server's queue changed and whose it is now is not seen yet.
    #: Lets the scheduler see one other workflow take a server over from another, and
    #: leave a server to another workflow between two of its frames.
    cache_owner: Optional[str] = None

    @property
    def ours_in_flight(self) -> int:
        return self.ours_queued + (1 if self.ours_running_since is not None else 0)


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
        "base",
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
        self.base = 0.0  # avail + first, set by the list schedule
        # False: its backlog is our frames not yet heard to start, taken to start now;
        # its slots move with the clock (a timer finds the same picture again).
        self.anchored = True

    def finish(self, k: int) -> float:
        """Planned finish of our k-th new frame there (0-based)."""
        return self.avail + self.first + (k + 1) * self.ft


class Scheduler(LearningMixin, AffinityMixin):
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
    ``withdraw_probes``: the caller reports :meth:`setup_finished` and acts on
    :attr:`withdrawals` (takes back a probe frame that would end after the rest of
    the batch could be done elsewhere: a cold first frame on a slow GPU).
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
        withdraw_probes: bool = False,
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
        self._withdraw = withdraw_probes
        self._setup_done: Dict[str, float] = {}  # our running frame there finished its setup after
        self._withdraw_asked: Dict[str, float] = {}  # server -> start of the run we asked back
        #: after :meth:`plan` (with ``withdraw_probes``): servers whose running frame of
        #: ours should be taken back now (interrupted, its frame waiting again), each
        #: named once per run; call :meth:`job_withdrawn` when done.
        self.withdrawals: List[str] = []
        self._rng = rng if rng is not None else random.Random()
        self._est: Dict[str, _Estimate] = {}
        self._setups_seen = False
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
        self._probe_at: Dict[str, float] = {}  # server -> when its blind probe is due (staggered)
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

    @property
    def withdraws(self) -> bool:
        """Whether it may ask for probes back (``withdraw_probes``)."""
        return self._withdraw

    def set_lead_time(self, seconds: float) -> None:
        """How late we may learn of a change, e.g. the status TTL while the push is lost."""
        if seconds < 0:
            raise ValueError("lead_time must be >= 0")
        self._lead = float(seconds)

    # ------------------------------------------------------------------ planning
    def plan(self, servers: Sequence[ServerLoad], pending: int) -> List[str]:
        """Names of the servers that should receive the next frames now, one entry per frame.

        May be empty (hold the frames back: a top-up is not due, or the remaining
        frames are planned on servers that are busy now). Never longer than ``pending``.
        Check :attr:`next_wakeup` for when to ask again without an event. With
        ``withdraw_probes``, call it also while nothing waits but :attr:`watching`
        is true: it then only fills :attr:`withdrawals`.
        """
        now = self._clock()
        self.next_wakeup = None
        if self.withdrawals:
            self.withdrawals = []
        if not servers or (pending <= 0 and not self._withdraw):
            return []
        views = self._views(servers, now)
        planned = [v for v in views if v.ft is not None]
        chosen: List[str] = []
        if pending > 0 and not planned:
            chosen = self._blind_probes(views, pending, now)
        elif pending > 0:
            # Without any setup known there is no cold cost, so no affinity to keep.
            wake = self._apply_affinity(planned, now, views) if self._setups_seen else None
            chosen = self._list_schedule(planned, pending, now)
            self._wake_at(wake)
        if self._withdraw and planned:
            self.withdrawals = self._probes_to_withdraw(planned, max(0, pending), now)
        if chosen:
            cold = {v.name for v in views if v.first > 0.0 or (v.ft is None and not v.warm)}
            for name in chosen:
                self._mark_used(name)
                if name in cold:
                    # The first of them starts cold: remembered until it starts (see job_started).
                    self._sent_cold[name] = True
                    cold.discard(name)
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

    def _views(self, servers: Sequence[ServerLoad], now: float) -> List[_View]:
        prior = self._prior(servers)
        share = self._setup_share()
        views = []
        for load in servers:
            v = _View(load.name, load)
            v.key = (load.priority, self._last_used.get(load.name, 0), load.name)
            finished = self._finished_heard.get(load.name)
            heard = 0  # our finishes heard of since the queue was observed (kept in time order)
            if finished and finished[-1] > load.observed_at:
                heard = sum(1 for t in finished if t > load.observed_at)
            others = load.queue_remaining - v.in_flight - heard
            v.others = others if others > 0 else 0
            # The job running there now started no earlier than our last end we
            # heard of after the queue was observed.
            head = load.busy_since
            if heard:
                last = finished[-1]
                head = last if head is None or last > head else head
            est = self._est.get(load.name)
            known = est is not None and bool(est.frame.samples or est.cold_runs)
            if not known:
                ft = prior
            elif est.frame.samples:
                ft = est.frame.mean
            else:
                ft = self._split_cold(est)[0]
            if not known and est is not None and est.min_frame > 0.0:
                ft = max(ft or 0.0, est.min_frame)  # a probe taken back there showed this much
            probing = not known or est.probation or not est.frame.samples
            since = load.ours_running_since
            if ft is None:
                v.warm = self._warm(load, v)
                views.append(v)  # nothing known anywhere yet: blind probing decides
                continue
            ft = max(ft, _MIN_FRAME)
            if est is not None and est.setup.samples:
                setup = est.setup.mean
            elif share is None:
                setup = 0.0  # no setup seen anywhere (or the caller cannot tell)
            else:
                setup = self._setup_of(load.name, ft)
            v.setup = setup
            dev = est.frame.dev if known and est.frame.samples else 0.1 * ft
            run_setup = queued_setup = 0.0
            if setup:
                if since is not None and self._running_cold.get(load.name):
                    run_setup = setup
                elif since is None and load.ours_queued and self._sent_cold.get(load.name):
                    queued_setup = setup
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
            if setup:
                v.warm = self._warm(load, v)
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

    def _warm(self, load: ServerLoad, v: _View) -> bool:
        if load.warm is not None:
            return load.warm
        # Unknown: warm when the last thing known there is ours and nobody else's work is about.
        return v.others == 0 and self._ran_here.get(load.name, False)

    def _list_schedule(self, views: List[_View], pending: int, now: float) -> List[str]:
        picks: List[Tuple[float, Tuple[int, int, str], str]] = []
        wake: Optional[float] = None
        # Other clients' jobs come and go (a server idles between them): count the
        # servers as shared for a while after any was last seen.
        if any(v.others for v in views):
            self._others_seen = now
        horizon = 2.0 * max(v.ft for v in views)
        shared = self._others_seen is not None and now - self._others_seen <= horizon
        open_views = views
        if self._setups_seen:
            open_views = [v for v in views if not v.blocked]
            for v in views:
                if v.blocked and v.takeover_at < math.inf:
                    # Free for us once the other workflow has had it for its hold.
                    wake = v.takeover_at if wake is None else min(wake, v.takeover_at)
        for v in views:
            v.base = v.avail + v.first  # slot k of new frames ends at base + (k + 1) * ft
        considered = set()
        takeovers: List[Tuple[float, Tuple[int, int, str], str]] = []
        for v in open_views:
            k = 0
            ft = v.ft
            while True:
                start = v.avail if k == 0 else v.base + k * ft
                finish = start + ft if k else v.base + ft
                # Servers left to another workflow still count as places the frames
                # may go (after the work seen there): no cold start on a slow GPU now
                # for a frame that another server is likely to free up for sooner.
                if self._rank(views, v, finish, k, pending) >= pending:
                    break  # the plan gives every remaining frame an earlier finish elsewhere
                if v.in_flight + k >= v.cap:
                    break  # window full: the next event (a start or finish) reopens it
                if v.foreign:
                    due = now  # taking it over: queue behind its work now, no race
                else:
                    due = self._due(v, start, shared and not (v.setup > 0.0 and v.warm and v.others == 0))
                considered.add(v.name)
                if due > now:
                    # A slot that moves with the clock is not worth a timer: it would find
                    # the same picture; an event (its start heard) changes it. A staggered
                    # or poll-bound send time is a clock time: it is.
                    if v.anchored or due != start - v.thr:
                        wake = due if wake is None else min(wake, due)
                    break
                if v.foreign:
                    # One frame takes it over; from then on it is ours like any other. One
                    # server per call: the shares that allowed it change with it.
                    takeovers.append((finish, v.key, v.name))
                    break
                picks.append((start, v.key, v.name))
                k += 1
        if takeovers:
            picks.append((now, (-1, 0, ""), min(takeovers)[2]))
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
            x = (finish - v.base) / v.ft
            if x < 1.0 - _TIE:
                continue
            n = int(math.floor(x + _TIE))
            if abs(x - n) <= _TIE and v.key >= me.key:
                n -= 1  # its n-th slot ties with ours and loses the tie-break
            rank += n
            if rank >= limit:
                return rank
        return rank
