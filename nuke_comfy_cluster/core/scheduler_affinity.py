"""Model affinity, probes and their withdrawal: the batch scheduler's rules for what it does not know yet.

Mixed into :class:`~.scheduler.Scheduler` (its state is made there).

* A server busy with another workflow (it would be cold for us and someone else's
  work is there) is left to it, so artists with different models don't make every
  frame reload. A server that goes idle stays its owner's for a lead time and a
  stagger (the gap between two of its frames), then it is anyone's.
* Such a server may be taken over (one frame queued behind its work, no race):
  by a client under its fair share of the cluster from a workflow that keeps its
  own share without it, after ``_REBALANCE_HOLD`` of its setups; by a client with
  nothing running anywhere after ``hold`` setups (turns come round). A random
  delay per hold keeps two clients from taking the same server at once.
* While it is another's, a server still counts in the plan as a place frames may
  go later: after the work seen there, or, once it has been held t seconds, after
  about t more (unless its workflow just let another server go: its batch is
  ending). So a client does not start a cold frame on a slow GPU for a frame a
  faster server is likely to free up for.
* With ``withdraw_probes``, a cold probe frame on a server not measured yet is
  taken back when it will end after the rest of the batch (and this frame) could
  be done on the measured servers: a lower bound while it loads (its setup is at
  least what it has run, its frame that over the setup-to-frame ratio seen
  elsewhere), an estimate once :meth:`setup_finished` says its loads are done.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Dict, List, Optional

from .scheduler_costs import _Estimate

#: ``ServerLoad.cache_owner`` of a server whose queue changed and whose new tail is not seen yet
SOMEONE = "?"

if TYPE_CHECKING:
    from .scheduler import _View

__all__ = ["AffinityMixin", "SOMEONE"]

# A server another workflow has kept t seconds is expected to stay its for this times t.
_HELD_AGAIN = 1.0
# A lead time this long (seconds) means the status comes by polling, not pushed.
_POLLING_LEAD = 1.0
# With polling, a second frame goes behind each blind probe when the batch has at
# least this many frames per server.
_SPECULATE_SHARE = 6
# Staggered blind probes after the first come at least this fraction of the spread later.
_PROBE_GAP = 0.3
# Probes are taken back only when the setup is at least this share of a frame time.
_MIN_WITHDRAW_SHARE = 0.25
# Setups another workflow may keep a server it holds beyond its fair share.
_REBALANCE_HOLD = 2.0


class AffinityMixin:
    """The model-load half of :class:`~.scheduler.Scheduler` (its state is made there)."""

    def setup_finished(self, server: str, setup_s: float) -> None:
        """Our job running there has run its setup (loaders), which took ``setup_s`` seconds.

        Before its first frame ends, this tells how fast an unmeasured server is
        (with the setup-to-frame ratio seen elsewhere): what ``withdraw_probes`` needs.
        """
        if server in self._running:
            self._setup_done[server] = max(0.0, setup_s)

    def job_withdrawn(self, server: str) -> None:
        """Our running job there was taken back (see :attr:`withdrawals`); its frame waits again.

        The server keeps what it showed: a frame there takes at least this long.
        """
        now = self._clock()
        since = self._running.pop(server, None)
        self._running_cold.pop(server, None)
        self._sent_cold.pop(server, None)
        setup = self._setup_done.pop(server, None)
        est = self._est.setdefault(server, _Estimate())
        share = self._setup_share()
        if setup is not None:
            self._learn_setup(est, setup)
        if since is not None:
            elapsed = max(0.0, now - since)
            if setup is not None:
                lower = max(elapsed - setup, setup / share if share else 0.0)
            else:
                lower = elapsed / (1.0 + share) if share else elapsed
            est.min_frame = max(est.min_frame, lower)

    def _apply_affinity(self, views: List[_View], now: float, every: Optional[List[_View]] = None) -> Optional[float]:
        """Leave servers busy with another workflow to it (see the module docstring).

        ``views``: the servers with a frame time; ``every``: all of them (a probe of ours
        on a server not measured yet is something of ours running). Returns when a
        server still counted as the other workflow's stops being so.
        """
        wake: Optional[float] = None
        for v in views:
            # Another workflow's work is there, or its models are (it may be between two
            # of its frames: the caller says whose until the server has been idle a while).
            theirs = v.others > 0 or (v.load.warm is False and v.load.cache_owner is not None)
            foreign = v.setup > 0.0 and not v.warm and theirs
            if foreign:
                owner = v.load.cache_owner if v.load.cache_owner != SOMEONE else self._foreign_owner.get(v.name)
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
        idle_anywhere = all(v.in_flight == 0 for v in (views if every is None else every))
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

    def _probes_to_withdraw(self, views: List[_View], pending: int, now: float) -> List[str]:
        """Servers whose cold first frame of ours ends after the whole batch could be done elsewhere.

        A first frame: the server has not been measured in this batch (costs seeded
        from an earlier one are a hint, not a measurement).
        """
        share = self._setup_share()
        if share is None or share < _MIN_WITHDRAW_SHARE:
            # No setup worth the name (an unchanging cheap node is "setup" too): a first
            # frame is just a frame, and a lower bound grown by 1 / share from a few
            # milliseconds of it would take back frames that are nearly done.
            return []
        out = self._queued_probes_to_withdraw(views)
        probes = [
            v
            for v in views
            if v.load.ours_running_since is not None
            and self._running_cold.get(v.name)
            and not self._measured_here(v.name)
            and self._withdraw_asked.get(v.name) != v.load.ours_running_since
        ]
        if not probes:
            return out
        elsewhere = [v for v in views if not v.blocked and v not in probes and self._measured(v.name)]
        if not elsewhere:
            return out
        frames = pending + 1  # the remaining frames and this one, on the other servers
        grow = 1.0 + 1.0 / share
        for v in probes:
            since = v.load.ours_running_since
            setup = self._setup_done.get(v.name)
            if setup is None:
                end = since + max(0.0, now - since) * grow  # still loading: at least this
            else:
                end = since + setup * grow  # loaded: its speed is known
            if _slots_by(elsewhere, end) >= frames:
                self._withdraw_asked[v.name] = since
                out.append(v.name)
            elif setup is None:
                # Its end grows with the clock: look again when it may cross the time
                # the others would be done (the fluid bound is no later than that; a
                # step of at least half a frame, so the looks don't close in forever).
                cross = since + (_fluid_end(elsewhere, frames) - since) / grow
                self._wake_at(max(cross, now + 0.5 * min(u.ft for u in elsewhere)))
        return out

    def _blind_probes(self, views: List[_View], pending: int, now: float) -> List[str]:
        # Nothing known anywhere: a probe on every server that runs nothing or only
        # one job of someone else's (the probe starts after at most one frame). If
        # there is none and nothing of ours is out, queue one on the shortest queue
        # anyway so that the batch always makes progress. Servers known to be busy
        # with another workflow are left to it while an idle one exists, or while a
        # probe of ours is out elsewhere.
        out = any(v.in_flight for v in views)
        idle = sorted((v for v in views if v.in_flight == 0 and v.others <= 1), key=lambda v: (v.others, v.key))
        if any(v.others == 0 for v in idle):
            idle = [v for v in idle if v.others == 0 or v.load.warm is not False]
        if out:
            # Another workflow's models are there (its work may be between two frames):
            # ours would load over them while our probe elsewhere will tell us enough.
            idle = [v for v in idle if v.load.warm is not False or (v.others == 0 and v.load.cache_owner is None)]
        if idle and any(v.load.warm is not None for v in views):
            idle = self._staggered_probes(idle, now, out)
        chosen = [v.name for v in idle]
        if self._lead >= _POLLING_LEAD and pending >= _SPECULATE_SHARE * len(views):
            # Polling: a probe's end would be seen up to a lead time late, leaving
            # the server idle. With a batch this long even a GPU at a third of the
            # average speed earns two frames, so queue one behind each probe.
            chosen += [v.name for v in idle if v.load.max_in_flight != 1 and self._max_window > 1]
        if not chosen and not out:
            chosen = [min(views, key=lambda v: (v.load.queue_remaining, v.key)).name]
        return chosen[:pending]

    def _staggered_probes(self, idle: List[_View], now: float, out: bool) -> List[_View]:
        """The first probe now, each other one at its own random moment within the spread.

        Only when the caller tells the servers' cache state (the workflow loads models):
        two artists starting at the same instant would otherwise both probe every
        server, each server loading both models and both artists' frames alternating
        on it for a while. Staggered, whoever claims a server first is seen by the
        other (a prompt of another workflow there), who leaves it while it has a probe
        out elsewhere. One artist alone pays at most the spread on its later probes.
        """
        if self._spread <= 0.0:
            return idle
        for k in [k for k in self._probe_at if all(v.name != k for v in idle)]:
            del self._probe_at[k]  # it got a frame, or is left to another workflow
        fresh = [v for v in idle if v.name not in self._probe_at]
        # later probes come at least a third of the spread after: time for another
        # client's prompt to be seen
        draws = [now + self._spread * (_PROBE_GAP + (1.0 - _PROBE_GAP) * self._rng.random()) for _ in fresh]
        if draws and not out and not self._probe_at:
            # the first probe goes now, to a server drawn at random (another artist starting
            # at this instant most likely draws another one)
            draws[self._rng.randrange(len(draws))] = now
        for v, at in zip(fresh, draws):
            self._probe_at[v.name] = at
        due = [v for v in idle if self._probe_at[v.name] <= now]
        for v in idle:
            if v in due:
                del self._probe_at[v.name]
            else:
                self._wake_at(self._probe_at[v.name])
        return due

    def _queued_probes_to_withdraw(self, views: List[_View]) -> List[str]:
        """Servers where a cold first frame of ours waits behind another workflow's work.

        It would load our models over theirs (costing them a reload too) on a server
        we know nothing of, while a measured one is ours to use: taken back before it
        starts (nothing lost but the wait), the server stays theirs.
        """
        if not any(not v.blocked and not v.foreign and self._measured_here(v.name) for v in views):
            return []
        out = [
            v.name
            for v in views
            if v.load.ours_running_since is None
            and v.load.ours_queued > 0
            and v.others > 0
            and self._sent_cold.get(v.name)
            and not self._measured_here(v.name)
        ]
        for name in out:
            self._sent_cold.pop(name, None)  # asked once; if it starts after all, it runs
        return out

    @property
    def watching(self) -> bool:
        """A first cold frame of ours runs or waits that :attr:`withdrawals` may name: call
        :meth:`plan` on events even while no frame waits."""
        return self._withdraw and any(
            cold and not self._measured_here(name)
            for name, cold in list(self._running_cold.items()) + list(self._sent_cold.items())
        )

    def _measured(self, name: str) -> bool:
        est = self._est.get(name)
        return est is not None and est.frame.samples > 0

    def _measured_here(self, name: str) -> bool:
        """A frame time learned from this batch's own frames (not only seeded)."""
        est = self._est.get(name)
        return est is not None and est.frame.samples > est.seeded

    def _wake_at(self, wake: Optional[float]) -> None:
        if wake is not None and (self.next_wakeup is None or wake < self.next_wakeup):
            self.next_wakeup = wake


def _slots_by(views: List[_View], t: float) -> int:
    """How many new frames these servers finish by ``t`` (a cold server's first pays its setup)."""
    slots = 0
    for v in views:
        x = (t - v.avail - v.first) / v.ft
        if x >= 1.0:
            slots += int(x)
    return slots


def _fluid_end(views: List[_View], frames: int) -> float:
    """When ``frames`` frames would be done on these servers if frames were divisible: a lower
    bound of the real end, found in one pass over the servers by when each can start."""
    starts = sorted((v.avail + v.first, 1.0 / v.ft) for v in views)
    rate = weighted = 0.0
    end = math.inf
    for i, (start, r) in enumerate(starts):
        rate += r
        weighted += start * r
        end = (frames + weighted) / rate
        if i + 1 == len(starts) or end <= starts[i + 1][0]:
            break
    return end
