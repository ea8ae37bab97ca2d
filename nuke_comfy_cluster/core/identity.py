"""Is one ComfyUI server listed twice? (``127.0.0.1`` and ``localhost``, a name and its IP...)

Two entries for one server are worse than one: both websockets carry the same
clientId, so ComfyUI drops one whenever the other connects, and the balancer
counts the server's queue twice. Two signals say "the same server":

- the same port at the same address after resolution (:func:`find_duplicates`).
  Without DNS (:func:`literal_addresses`: safe on any thread, used at load) IP
  literals are compared canonically and every loopback form (``localhost``,
  ``127.x.x.x``, ``::1``, ``0.0.0.0``) is one address; with DNS
  (:func:`resolved_addresses`, blocking: a worker thread only) host names too.
- the same identity from the servers themselves (:func:`find_duplicates_by_identity`,
  network): identical ``/system_stats`` (argv, versions, devices, total memory)
  AND the same newest ``/history`` entry. Identical studio boxes started the same
  way share the first, never the second (prompt ids are random), so a pair whose
  histories are both empty is reported as possibly the same, not merged.

The first entry (in configuration order) is kept; the others are left unused, with
a warning.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple

from .errors import ClusterError

LOOPBACK = "loopback"
DEFAULT_PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Duplicate:
    """``name`` is the same server as ``same_as`` (kept); ``certain`` False: only possibly."""

    name: str
    same_as: str
    why: str
    certain: bool = True

    @property
    def message(self) -> str:
        if not self.certain:
            return (
                f"{self.name} may be the same server as {self.same_as} ({self.why}); "
                "if it is, remove one of the two entries"
            )
        return f"{self.name} is the same server as {self.same_as} ({self.why}): it is used once, as {self.same_as}"


def literal_addresses(host: str) -> FrozenSet[str]:
    """The addresses ``host`` names without asking DNS (a name stands for itself)."""
    h = host.strip().strip("[]").lower().rstrip(".")
    if h == "localhost" or h.endswith(".localhost"):
        return frozenset({LOOPBACK})
    try:
        ip = ipaddress.ip_address(h.split("%")[0])  # drop an IPv6 zone id
    except ValueError:
        return frozenset({"name:" + h})
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback or ip.is_unspecified:  # connecting to 0.0.0.0 reaches this machine
        return frozenset({LOOPBACK})
    return frozenset({str(ip)})


def resolved_addresses(host: str, port: int) -> FrozenSet[str]:
    """The addresses ``host`` resolves to (DNS: blocking, never on a UI thread)."""
    literal = literal_addresses(host)
    if not any(a.startswith("name:") for a in literal):
        return literal
    try:
        infos = socket.getaddrinfo(host.strip().strip("[]"), port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return literal  # unresolvable: compared by name only
    found = set(literal)
    for info in infos:
        found |= literal_addresses(str(info[4][0]))
    return frozenset(found)


def _entry(item: Any) -> Tuple[str, str, int]:
    config = getattr(item, "config", item)
    return str(config.name), str(config.ip), int(config.port)


def find_duplicates(
    entries: Iterable[Any], addresses: Callable[[str, int], FrozenSet[str]] = lambda h, p: literal_addresses(h)
) -> List[Duplicate]:
    """Entries (ServerConfig or ComfyUIServer) that name the same host:port as an earlier one."""
    kept: List[Tuple[str, str, int, FrozenSet[str]]] = []
    found: List[Duplicate] = []
    for item in entries:
        name, host, port = _entry(item)
        addrs = addresses(host, port)
        for first_name, first_host, first_port, first_addrs in kept:
            if port == first_port and addrs & first_addrs:
                if host.strip().lower() == first_host.strip().lower():
                    why = f"both are {host}:{port}"
                else:
                    why = f"{host}:{port} and {first_host}:{first_port} are the same address"
                found.append(Duplicate(name, first_name, why))
                break
        else:
            kept.append((name, host, port, addrs))
    return found


# -- identity from the servers themselves ----------------------------------------------------


def stats_fingerprint(stats: Any) -> Optional[str]:
    """What ``/system_stats`` says that does not change while a server runs (None: unreadable)."""
    if not isinstance(stats, dict) or not isinstance(stats.get("system"), dict):
        return None
    system = stats["system"]
    keys = ("os", "ram_total", "comfyui_version", "python_version", "pytorch_version", "embedded_python", "argv")
    devices = stats.get("devices") if isinstance(stats.get("devices"), list) else []
    dev_keys = ("name", "type", "index", "vram_total", "torch_vram_total")
    shape = {
        "system": {k: system.get(k) for k in keys},
        "devices": [{k: d.get(k) for k in dev_keys} for d in devices if isinstance(d, dict)],
    }
    return json.dumps(shape, sort_keys=True, default=str)


def history_tail(body: Any) -> Optional[str]:
    """The newest prompt id of ``GET /history?max_items=1`` (None when the history is empty)."""
    if isinstance(body, dict) and body:
        return str(list(body)[-1])
    return None


def _fingerprint(server: Any, timeout: float) -> Optional[str]:
    step = (min(2.0, timeout), timeout)
    try:
        return stats_fingerprint(server.connection.get_json("system_stats", timeout=step, total=timeout))
    except (ClusterError, ValueError):
        return None


def _tail(server: Any, timeout: float) -> Optional[str]:
    step = (min(2.0, timeout), timeout)
    try:
        return history_tail(server.connection.get_json("history", params={"max_items": 1}, timeout=step, total=timeout))
    except (ClusterError, ValueError):
        return None


def find_duplicates_by_identity(servers: Sequence[Any], *, timeout: float = DEFAULT_PROBE_TIMEOUT_S) -> List[Duplicate]:
    """Servers (ComfyUIServer) that are one ComfyUI by what they answer (network, parallel)."""
    if len(servers) < 2:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(servers)), thread_name_prefix="ncc-identity") as pool:
        futures = {s.name: pool.submit(_fingerprint, s, timeout) for s in servers}
        wait(list(futures.values()), timeout=timeout + 1.0)
        prints: Dict[str, Optional[str]] = {name: (f.result() if f.done() else None) for name, f in futures.items()}
        groups: Dict[str, List[Any]] = {}
        for server in servers:
            fp = prints.get(server.name)
            if fp is not None:
                groups.setdefault(fp, []).append(server)
        found: List[Duplicate] = []
        for members in groups.values():
            if len(members) < 2:
                continue
            first = members[0]
            for other in members[1:]:
                # twice: a prompt finishing between the two reads must not hide the match
                for _ in range(2):
                    a, b = pool.submit(_tail, first, timeout), pool.submit(_tail, other, timeout)
                    tail_a, tail_b = a.result(), b.result()
                    if tail_a is None or tail_a == tail_b:
                        break
                if tail_a is not None and tail_a == tail_b:
                    found.append(Duplicate(other.name, first.name, "the same /system_stats and /history"))
                elif tail_a is None and tail_b is None:
                    found.append(
                        Duplicate(
                            other.name, first.name, "identical /system_stats, both histories empty", certain=False
                        )
                    )
    return found


def check_duplicates(
    servers: Sequence[Any], *, resolve: bool = True, probe: bool = True, timeout: float = DEFAULT_PROBE_TIMEOUT_S
) -> List[Duplicate]:
    """Everything :mod:`identity` can tell about ``servers`` (for ``validate``; blocking, network).

    By address (with DNS when ``resolve``), then by what the servers answer (``probe``)
    among the entries not already found to be duplicates."""
    addresses: Callable[[str, int], FrozenSet[str]] = (
        resolved_addresses if resolve else (lambda h, p: literal_addresses(h))
    )
    found = find_duplicates(servers, addresses)
    if probe:
        gone = {d.name for d in found}
        rest = [s for s in servers if s.name not in gone]
        found += find_duplicates_by_identity(rest, timeout=timeout)
    return found
