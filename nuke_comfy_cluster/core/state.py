"""Explicit state enums and the immutable snapshots handed to readers on other threads."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple


class ServerStatus(str, enum.Enum):
    UNKNOWN = "unknown"  # not checked yet
    ONLINE = "online"  # reachable, queue empty
    BUSY = "busy"  # reachable, something queued or running
    OFFLINE = "offline"  # refused / timed out / unreachable
    ERROR = "error"  # answered, but wrongly (5xx, malformed body)
    DISABLED = "disabled"  # switched off by the user

    @property
    def reachable(self) -> bool:
        return self in (ServerStatus.ONLINE, ServerStatus.BUSY)


class JobState(str, enum.Enum):
    PENDING = "pending"  # in the client, not sent
    SUBMITTED = "submitted"  # accepted by a server, queued there
    RUNNING = "running"  # executing on a server
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class DeviceInfo:
    """The first device of ``/system_stats`` plus the server's versions."""

    name: str = ""
    type: str = ""
    vram_total: int = 0
    vram_free: int = 0
    comfyui_version: str = ""
    python_version: str = ""
    #: the server's --output-directory (from system_stats argv), "" when not given
    output_directory: str = ""


@dataclass(frozen=True)
class ServerCounters:
    dispatches: int = 0
    failures: int = 0
    completed: int = 0
    mean_latency_ms: Optional[float] = None


@dataclass(frozen=True)
class ServerSnapshot:
    """What a reader on another thread (the UI, the CLI) may know of one server."""

    name: str
    host: str
    port: int
    url: str
    priority: int
    enabled: bool
    status: ServerStatus
    queue_running: int = 0
    queue_pending: int = 0
    #: prompts this client sent that the server has not reported in its queue yet
    in_flight: int = 0
    latency_ms: Optional[float] = None
    last_status_check: Optional[float] = None  # time.time() of the last answer
    last_error: Optional[str] = None
    cooldown_until: Optional[float] = None  # time.time() until which it is skipped
    device: DeviceInfo = field(default_factory=DeviceInfo)
    counters: ServerCounters = field(default_factory=ServerCounters)
    dir_local: str = ""
    dir_remote: str = ""
    live: bool = False  # True while the websocket push is connected

    @property
    def queue_length(self) -> int:
        return self.queue_running + self.queue_pending

    @property
    def load(self) -> int:
        """Observed queue plus our submissions not yet seen there."""
        return self.queue_length + self.in_flight

    def cooling_down(self, now: float) -> bool:
        return self.cooldown_until is not None and now < self.cooldown_until

    def is_available(self, now: float) -> bool:
        return self.enabled and self.status.reachable and not self.cooling_down(now)

    def unavailable_reason(self, now: float) -> Optional[str]:
        """Why the balancer skips it, or None when it is available."""
        if not self.enabled:
            return "disabled"
        if self.cooling_down(now):
            return f"cooling down after failures ({self.cooldown_until - now:.0f} s left)"
        if not self.status.reachable:
            return self.last_error or self.status.value
        return None


@dataclass(frozen=True)
class PoolSnapshot:
    """Every server at one instant, plus the configuration source and its messages."""

    servers: Tuple[ServerSnapshot, ...]
    source: str = ""
    warnings: Tuple[str, ...] = ()
    errors: Tuple[str, ...] = ()
    next_server: Optional[str] = None  # the one least-loaded balancing would pick now
    taken_at: float = 0.0

    def by_name(self) -> Dict[str, ServerSnapshot]:
        return {s.name: s for s in self.servers}
