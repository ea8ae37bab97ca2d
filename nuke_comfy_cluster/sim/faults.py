"""Fault switches of the simulator (``POST /sim/fault`` and the matching CLI flags)."""

from __future__ import annotations

from typing import Any, Dict

#: name -> (type, description). ``drop_websockets`` is an action, not a state.
FAULTS = {
    "fail_next": (int, "the next N requests (other than /sim/*) answer 500 text/plain"),
    "hang": (float, "requests (other than /sim/*) sleep this many seconds before answering; 0 = off"),
    "latency": (float, "seconds added to every response (other than /sim/*)"),
    "exit_mid_prompt": (bool, "os._exit(1) as soon as the next prompt starts executing"),
    "malformed_json": (int, "the next N JSON responses have a truncated body"),
    "malformed_ws": (int, "the next N websocket text messages are truncated garbage"),
    "drop_websockets": (bool, "close every websocket now (abortively, like a crash), once"),
}


class FaultState:
    """Current fault switches; counters count down as faults are served."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.fail_next = 0
        self.hang = 0.0
        self.latency = 0.0
        self.exit_mid_prompt = False
        self.malformed_json = 0
        self.malformed_ws = 0

    def as_dict(self) -> Dict[str, Any]:
        return {
            "fail_next": self.fail_next,
            "hang": self.hang,
            "latency": self.latency,
            "exit_mid_prompt": self.exit_mid_prompt,
            "malformed_json": self.malformed_json,
            "malformed_ws": self.malformed_ws,
            "drop_websockets": False,
        }

    def update(self, changes: Any) -> bool:
        """Apply ``changes`` (a JSON object); returns whether websockets must be dropped now.

        Raises ValueError naming the field for unknown names or bad values, and
        applies nothing in that case.
        """
        if not isinstance(changes, dict):
            raise ValueError("expected a JSON object of fault switches")
        parsed: Dict[str, Any] = {}
        for name, value in changes.items():
            if name not in FAULTS:
                raise ValueError("unknown fault {!r} (known: {})".format(name, ", ".join(sorted(FAULTS))))
            kind = FAULTS[name][0]
            if kind is bool:
                if not isinstance(value, (bool, int)) or isinstance(value, float):
                    raise ValueError(f"{name}: expected true/false")
                parsed[name] = bool(value)
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name}: expected a number >= 0")
            if kind is int and int(value) != value:
                raise ValueError(f"{name}: expected a whole number")
            parsed[name] = kind(value)
        drop = bool(parsed.pop("drop_websockets", False))
        for name, value in parsed.items():
            setattr(self, name, value)
        return drop

    def take(self, name: str) -> bool:
        """Consume one unit of a counting fault; True when it applies to this event."""
        remaining = getattr(self, name)
        if remaining > 0:
            setattr(self, name, remaining - 1)
            return True
        return False

    def take_exit(self) -> bool:
        if self.exit_mid_prompt:
            self.exit_mid_prompt = False
            return True
        return False
