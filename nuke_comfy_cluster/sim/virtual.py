"""A discrete-event model of ComfyUI servers and their clients, in virtual time.

Used by ``benchmarks/scheduler.py`` and the scheduler tests to measure the batch
policy (:class:`nuke_comfy_cluster.core.scheduler.Scheduler`, the real class,
driven by a virtual clock) against baselines, OPT and the fluid lower bound.
Deterministic: one heap of events, one seeded RNG per world.

The model, kept deliberately small:

* A server runs one prompt at a time from one FIFO queue shared by every
  client; a frame of work ``w`` (seconds at speed 1) takes ``w / speed``. A
  change of its queue length (a prompt accepted, a prompt finished) is
  broadcast as a ``status`` with ``queue_remaining``, as ComfyUI does.
* Models (ComfyUI's classic cache): a client's frames may name a model and a
  setup of ``s`` seconds of work at speed 1. A server keeps the model of the last
  prompt it ran; a prompt of another model runs cold and takes ``(s + w) /
  speed``, its setup ``s / speed``. Frames without a model never touch it.
  With each status the client also learns which model the last prompt queued
  there (or the one loaded, when idle) has: what a dispatcher reads from
  ``/queue`` when the queue changes.
* A prompt reaches the server a short, random network latency after the client
  sends it. The client counts it as queued there from the moment it sends it.
* ``ttl=None`` (websocket push): every message (our start, our finish, every
  status) reaches the client after a small random delay, in order per server.
  A number (polling only, the push lost): the client learns queue lengths and
  its own prompts' fate only when it polls, every ``ttl`` seconds at its own
  phase; finished prompts come with their exact start/finish times (as
  ``/history`` gives them), running ones only with "started since the last
  look"; the client's lead time is set to the TTL.
* Clients react to each message, poll and timer: the policy client asks its
  ``Scheduler`` and sends what it says; baseline clients follow their rule
  (:mod:`.virtual_clients`).
  ``inbox_every`` models a client too busy to keep up: it reads its messages in
  batches, so it may hear of a frame's start together with its end.

Times are in seconds from the start of the world.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Deque, Dict, List, Optional, Sequence, Tuple

#: what a policy client tells its scheduler of the servers' cache: "none" (nothing,
#: as before cache-aware scheduling), "cold" (warm before sending, cold after the
#: run, no setup timing) or "full" (also how long the setup took)
CACHE_INFO = ("none", "cold", "full")

__all__ = [
    "CACHE_INFO",
    "ServerSpec",
    "VirtualJob",
    "ClientResult",
    "World",
    "Client",
    "frame_works",
    "opt_makespan",
    "lower_bound",
]


@dataclass(frozen=True)
class ServerSpec:
    name: str
    speed: float  # work per second; a frame of work w takes w / speed
    priority: int = 0


class VirtualJob:
    __slots__ = (
        "id",
        "client",
        "frame",
        "work",
        "server",
        "sent",
        "arrived",
        "started",
        "finished",
        "model",
        "setup",
        "cold",
        "setup_time",
        "prev_loaded",
        "interrupted",
    )

    def __init__(self, id: int, client: Client, frame: int, work: float, server: str, sent: float) -> None:
        self.id = id
        self.client = client
        self.frame = frame
        self.work = work
        self.server = server
        self.sent = sent
        self.arrived: Optional[float] = None
        self.started: Optional[float] = None
        self.finished: Optional[float] = None
        self.model: Optional[str] = client.model
        self.setup = client.setup  # work to load the model, at speed 1
        self.cold = False  # it found another model loaded and paid the setup
        self.setup_time = 0.0  # seconds of its run that were setup
        self.prev_loaded: Optional[str] = None
        self.interrupted = False

    @property
    def wait(self) -> float:
        """Time spent accepted by the server but not running."""
        return self.started - self.arrived

    @property
    def duration(self) -> float:
        return self.finished - self.started


class _Server:
    __slots__ = ("spec", "queue", "running", "loaded", "loads")

    def __init__(self, spec: ServerSpec, loaded: Optional[str] = None) -> None:
        self.spec = spec
        self.queue: Deque[VirtualJob] = deque()
        self.running: Optional[VirtualJob] = None
        self.loaded = loaded  # model in the cache
        self.loads = 0  # setups paid

    @property
    def queue_remaining(self) -> int:
        return len(self.queue) + (1 if self.running is not None else 0)

    @property
    def tail_model(self) -> Optional[str]:
        """The model a prompt queued now would find loaded when it starts."""
        last = self.queue[-1] if self.queue else self.running
        if last is not None and last.model is not None:
            return last.model
        return self.loaded


@dataclass
class ClientResult:
    name: str
    start: float
    jobs: List[VirtualJob] = field(default_factory=list)

    @property
    def end(self) -> float:
        return max(j.finished for j in self.jobs)

    @property
    def makespan(self) -> float:
        return self.end - self.start

    @property
    def work(self) -> float:
        return sum(j.work for j in self.jobs)


class World:
    """The servers, the clients and the event heap."""

    def __init__(
        self,
        servers: Sequence[ServerSpec],
        seed: int = 0,
        *,
        push_delay: Tuple[float, float] = (0.005, 0.05),
        latency: Tuple[float, float] = (0.005, 0.02),
        loaded: Optional[Dict[str, str]] = None,
        inbox_every: float = 0.0,
    ) -> None:
        self.now = 0.0
        # > 0: clients read their messages only at multiples of this (a client too
        # busy to keep up: a frame's start and its end can arrive in one batch).
        self.inbox_every = inbox_every
        self.rng = random.Random(seed)
        self.specs = list(servers)
        loaded = loaded or {}
        self.servers: Dict[str, _Server] = {s.name: _Server(s, loaded.get(s.name)) for s in servers}
        self.clients: List[Client] = []
        self._heap: List[tuple] = []
        self._seq = itertools.count()
        self._ids = itertools.count()
        self._push_delay = push_delay
        self._latency = latency
        self._channel: Dict[Tuple[int, str], float] = {}
        self.events = 0

    # -- event machinery
    def at(self, t: float, fn: Callable[..., None], *args: object) -> None:
        heapq.heappush(self._heap, (t, next(self._seq), fn, args))

    def clock(self) -> float:
        return self.now

    def run(self, until: float = 1e9) -> None:
        heap = self._heap
        while heap:
            t, _, fn, args = heapq.heappop(heap)
            if t > until:
                break
            self.now = t
            self.events += 1
            fn(*args)

    def add(self, client: Client) -> Client:
        client.index = len(self.clients)
        self.clients.append(client)
        self.at(client.start, client.begin)
        return client

    # -- server side
    def send(self, client: Client, frame: int, work: float, server: str) -> VirtualJob:
        job = VirtualJob(next(self._ids), client, frame, work, server, self.now)
        self.at(self.now + self.rng.uniform(*self._latency), self._arrive, job)
        return job

    def _arrive(self, job: VirtualJob) -> None:
        if job.interrupted:
            return  # taken back on its way (as a delete right after the POST's answer)
        srv = self.servers[job.server]
        job.arrived = self.now
        srv.queue.append(job)
        self._broadcast(srv)
        if srv.running is None:
            self._start_next(srv)

    def _start_next(self, srv: _Server) -> None:
        job = srv.queue.popleft()
        srv.running = job
        job.started = self.now
        run = job.work / srv.spec.speed
        if job.model is not None and job.model != srv.loaded:
            job.cold = True
            job.setup_time = job.setup / srv.spec.speed
            run += job.setup_time
            job.prev_loaded = srv.loaded
            srv.loaded = job.model
            srv.loads += 1
            # The client times its loader nodes from the executing messages.
            self.at(self.now + job.setup_time, self._setup_done, srv, job)
        self._push(job.client, srv.spec.name, job.client.on_started, job)
        self.at(self.now + run, self._finish, srv, job)

    def _setup_done(self, srv: _Server, job: VirtualJob) -> None:
        if not job.interrupted:
            self._push(job.client, srv.spec.name, job.client.on_setup_done, job)

    def interrupt(self, job: VirtualJob) -> None:
        """Take one of a client's prompts back: out of the queue, or stopped where it runs.

        Immediate (ComfyUI stops at the next node boundary, a moment later). A model
        whose load was cut short is not in the cache.
        """
        srv = self.servers[job.server]
        if job.arrived is None:
            job.interrupted = True
        elif job in srv.queue:
            srv.queue.remove(job)
            job.interrupted = True
            self._broadcast(srv)
        elif srv.running is job:
            job.interrupted = True
            if job.cold and self.now < job.started + job.setup_time:
                srv.loaded = job.prev_loaded
            srv.running = None
            self._broadcast(srv, len(srv.queue))
            if srv.queue:
                self._start_next(srv)

    def _finish(self, srv: _Server, job: VirtualJob) -> None:
        # ComfyUI's order: execution_success, the status broadcast, then the
        # next prompt's execution_start.
        if job.interrupted:
            return
        job.finished = self.now
        srv.running = None
        self._push(job.client, srv.spec.name, job.client.on_finished, job)
        self._broadcast(srv, len(srv.queue))
        if srv.queue:
            self._start_next(srv)

    def _broadcast(self, srv: _Server, q: Optional[int] = None) -> None:
        q = srv.queue_remaining if q is None else q
        tail = srv.tail_model
        for c in self.clients:
            self._push(c, srv.spec.name, c.on_status, srv.spec.name, q, tail, self.now)

    def _push(self, client: Client, server: str, fn: Callable[..., None], *args: object) -> None:
        if client.ttl is not None:
            return  # push lost: this client only learns by polling
        # One websocket per (client, server): messages keep their order.
        key = (client.index, server)
        last = self._channel.get(key, 0.0)
        t = self.now + self.rng.uniform(*self._push_delay)
        if self.inbox_every > 0.0:
            # Read in a batch, one message after another (0.1 ms each).
            t = max(math.ceil(t / self.inbox_every) * self.inbox_every, last + 1e-4)
        t = max(t, last)
        self._channel[key] = t
        self.at(t, fn, *args)


class _View:
    """A client's knowledge of one server."""

    __slots__ = (
        "spec",
        "q",
        "observed_at",
        "busy_since",
        "queued",
        "running",
        "running_since",
        "last_finish",
        "tail",
        "tail_at",
        "empty_since",
    )

    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec
        self.q = 0
        self.observed_at = 0.0
        self.tail: Optional[str] = None  # model of the last prompt queued there, as last seen
        self.tail_at = 0.0  # when the server was in that state
        self.empty_since: Optional[float] = 0.0  # first seen with nothing queued (None: busy)
        self.busy_since: Optional[float] = None
        self.queued: List[VirtualJob] = []  # ours, not known to have started
        self.running: Optional[VirtualJob] = None  # ours, known to run
        self.running_since: Optional[float] = None
        self.last_finish = 0.0  # latest known finish of one of ours there

    def seen_empty(self, empty: bool, at: float) -> None:
        if not empty:
            self.empty_since = None
        elif self.empty_since is None:
            self.empty_since = at


class Client:
    """A client with a batch of frames; subclasses decide where they go."""

    def __init__(
        self,
        world: World,
        name: str,
        works: Sequence[float],
        *,
        start: float = 0.0,
        ttl: Optional[float] = None,
        model: Optional[str] = None,
        setup: float = 0.0,
    ) -> None:
        self.world = world
        self.name = name
        self.works = list(works)
        self.start = start
        self.ttl = ttl
        self.model = model
        self.setup = setup
        self.index = -1
        self.next_frame = 0
        self.returned: List[int] = []  # frames taken back, waiting again
        self.withdrawn: List[VirtualJob] = []
        self.result = ClientResult(name, start)
        self.views: Dict[str, _View] = {s.name: _View(s) for s in world.specs}
        self._last_poll = start

    @property
    def pending(self) -> int:
        return len(self.works) - self.next_frame + len(self.returned)

    @property
    def done(self) -> bool:
        return len(self.result.jobs) == len(self.works) and all(j.finished is not None for j in self.result.jobs)

    def begin(self) -> None:
        # Connecting (or the first poll) gives the current state of every server.
        self._observe_all()
        if self.ttl is not None:
            self.world.at(self.start + self.world.rng.uniform(0.0, self.ttl), self._poll)
        self.react()

    def submit(self, server: str) -> None:
        if self.returned:
            i = self.returned.pop(0)
        else:
            i = self.next_frame
            self.next_frame += 1
        job = self.world.send(self, i, self.works[i], server)
        self.result.jobs.append(job)
        self.views[server].queued.append(job)

    # -- what the client learns
    def _observe_all(self) -> None:
        now = self.world.now
        for name, v in self.views.items():
            srv = self.world.servers[name]
            v.q = srv.queue_remaining
            v.observed_at = now
            v.busy_since = None
            v.tail = srv.tail_model
            v.tail_at = now
            v.seen_empty(v.q == 0, now)

    def on_status(self, server: str, q: int, tail: Optional[str] = None, at: Optional[float] = None) -> None:
        v = self.views[server]
        now = self.world.now
        v.tail = tail
        v.tail_at = now if at is None else at
        v.seen_empty(q == 0, v.tail_at)
        if q == 0:
            v.busy_since = None
        elif q < v.q or v.q == 0:
            v.busy_since = now  # one finished and the next started, or an idle server took one
        v.q = q
        v.observed_at = now
        self.react()

    def on_started(self, job: VirtualJob) -> None:
        if job.interrupted:
            return  # taken back meanwhile
        v = self.views[job.server]
        if job in v.queued:
            v.queued.remove(job)
        v.running = job
        v.running_since = self.world.now
        v.busy_since = self.world.now
        self.started(job, self.world.now)
        self.react()

    def on_finished(self, job: VirtualJob) -> None:
        v = self.views[job.server]
        started_at = v.running_since if v.running is job else None
        if v.running is job:
            v.running = None
            v.running_since = None
        elif job in v.queued:
            v.queued.remove(job)
        v.last_finish = self.world.now
        self.finished(job, started_at if started_at is not None else self.world.now, self.world.now)
        self.react()

    def _poll(self) -> None:
        now = self.world.now
        prev = self._last_poll
        self._last_poll = now
        self._observe_all()
        for v in self.views.values():
            # History gives exact times for what finished; the queue says what runs.
            ours = ([v.running] if v.running is not None else []) + list(v.queued)
            done = sorted((j for j in ours if j.finished is not None and j.finished <= now), key=lambda j: j.finished)
            for j in done:
                if j is v.running:
                    v.running = None
                    v.running_since = None
                else:
                    v.queued.remove(j)
                v.last_finish = max(v.last_finish, j.finished)
                self.finished(j, j.started, j.finished)
            if v.running is None:
                for j in list(v.queued):
                    if j.started is not None and j.started <= now:
                        v.queued.remove(j)
                        v.running = j
                        # Started some time since the last look, no earlier than ours before it ended.
                        v.running_since = max(prev, v.last_finish)
                        self.started(j, v.running_since)
                        break
        self.react()
        if self.pending or any(v.queued or v.running is not None for v in self.views.values()):
            self.world.at(now + self.ttl, self._poll)

    def withdraw(self, job: VirtualJob) -> None:
        """Take our prompt back from its server; its frame waits again."""
        self.world.interrupt(job)
        v = self.views[job.server]
        if v.running is job:
            v.running = None
            v.running_since = None
        elif job in v.queued:
            v.queued.remove(job)
        self.result.jobs.remove(job)
        self.withdrawn.append(job)
        self.returned.append(job.frame)
        # We cut it short ourselves: a load that did not finish left nothing in the cache.
        v.tail = self.world.servers[job.server].tail_model
        v.tail_at = self.world.now

    def on_setup_done(self, job: VirtualJob) -> None:
        if self.views[job.server].running is job:
            self.setup_done(job)
            self.react()

    # -- hooks
    def started(self, job: VirtualJob, at: float) -> None:
        pass

    def setup_done(self, job: VirtualJob) -> None:
        pass

    def finished(self, job: VirtualJob, started_at: float, finished_at: float) -> None:
        pass

    def react(self) -> None:
        raise NotImplementedError


def frame_works(count: int, rng: random.Random, base: float = 10.0, noise: float = 0.2) -> List[float]:
    """Work of each frame (seconds at speed 1): ``base`` +- ``noise`` uniformly."""
    return [base * rng.uniform(1.0 - noise, 1.0 + noise) for _ in range(count)]


def opt_makespan(works: Sequence[float], speeds: Sequence[float]) -> float:
    """Clairvoyant largest-job-first to the server where it finishes earliest."""
    free = [0.0] * len(speeds)
    for w in sorted(works, reverse=True):
        best = min(range(len(speeds)), key=lambda i: free[i] + w / speeds[i])
        free[best] += w / speeds[best]
    return max(free)


def lower_bound(works: Sequence[float], speeds: Sequence[float]) -> float:
    """Fluid bound: total work over total speed."""
    return sum(works) / sum(speeds)
