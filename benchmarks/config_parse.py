"""Parsing a server list stays linear in its size.

``python -m benchmarks.config_parse [--json] [--mb 1,2,4,8]``

For server lists of growing size, the time :func:`parse_servers` takes, per MB,
beside ``json.loads`` of the same text (the floor) and the entry-line search
as it was before (recounting newlines from the start for every entry), which is
quadratic: an 11 MB file took over ten minutes through ``validate FILE``.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from typing import Any, Dict, List

from nuke_comfy_cluster.core.config import MAX_CONFIG_BYTES, parse_servers
from nuke_comfy_cluster.core.config_parse import _entry_lines


def server_list(megabytes: float) -> str:
    entry = {"name": "gpu00000", "ip": "10.0.0.1", "port": 8188, "priority": 0, "enabled": True}
    one = len(json.dumps(entry, indent=2)) + 4
    n = int(megabytes * 1e6 / one)
    return json.dumps(
        [dict(entry, name=f"gpu{i:05d}", ip=f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}") for i in range(n)],
        indent=2,
    )


def recounting_entry_lines(text: str) -> int:
    """The old search: for each entry, count the newlines from the start of the text."""
    starts = [m.start() for m in re.finditer(r"\n  \{", text)]
    return sum(text.count("\n", 0, i) + 1 for i in starts)


def timed(fn: Any, *args: Any) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def measure(sizes: List[float], baseline_up_to: float) -> List[Dict[str, Any]]:
    rows = []
    for mb in sizes:
        text = server_list(mb)
        real_mb = len(text.encode()) / 1e6
        row: Dict[str, Any] = {
            "mb": round(real_mb, 2),
            "parse_s": timed(parse_servers, text, "bench"),
            "entry_lines_s": timed(_entry_lines, text),
            "json_loads_s": timed(json.loads, text),
            "old_entry_lines_s": timed(recounting_entry_lines, text) if mb <= baseline_up_to else None,
        }
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", default="0.5,1,2,4,8", help="sizes in MB (default 0.5,1,2,4,8)")
    parser.add_argument("--baseline-up-to", type=float, default=2.0, help="run the quadratic baseline up to this MB")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sizes = [float(x) for x in args.mb.split(",")]
    rows = measure(sizes, args.baseline_up_to)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"size limit: {MAX_CONFIG_BYTES / 1e6:.1f} MB")
    print("   MB  parse_servers  (per MB)  entry lines  json.loads  old entry lines (recount)")
    for r in rows:
        old = "-" if r["old_entry_lines_s"] is None else f"{r['old_entry_lines_s']:.2f} s"
        print(
            f"{r['mb']:5.2f}  {r['parse_s']:10.2f} s  {r['parse_s'] / r['mb']:6.2f} s  {r['entry_lines_s']:9.3f} s"
            f"  {r['json_loads_s']:8.3f} s  {old}"
        )


if __name__ == "__main__":
    main()
