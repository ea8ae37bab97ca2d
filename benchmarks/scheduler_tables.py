"""The tables ``python -m benchmarks.scheduler`` prints (the JSON has every figure)."""

from __future__ import annotations

from typing import List

from benchmarks.scheduler import BASELINES, PRESENT, Scenario, has_plan

_BASELINE_METRIC = {
    "ratio_opt": ("mean_ratio_opt", "xOPT"),
    "ratio_lb": ("mean_ratio_lb", "xLB"),
    "worst_fair": ("worst_client_fair_share", "xfair"),
    "queue_wait": ("mean_queue_wait_frames", "wait"),
}


def classic_table(rows: List[dict], scs: List[Scenario]) -> str:
    fmt = "%-25s %-28s %-11s %-4s | %-11s | %-11s | %-11s | %-4s | %-21s | %s"
    head = fmt % (
        "scenario",
        "server speeds",
        "frames",
        "ttl",
        "xOPT mn/p95",
        "xLB mn/p95",
        "fair mn/p95",
        "wait",
        "baselines seq/rr/lq",
        "target",
    )
    lines = [head, "-" * len(head)]
    for r, sc in zip(rows, scs):
        b = r["baselines"]
        key, unit = _BASELINE_METRIC[
            sc.targets[0][0] if sc.targets else ("ratio_opt" if len(sc.frames) == 1 else "ratio_lb")
        ]
        frames = _frames_text(r)
        fair = "-"
        if r["clients"] > 1:
            fair = "%.3f %.3f" % (r["worst_client_fair_share"], r["p95_worst_client_fair_share"])
        lines.append(
            fmt
            % (
                r["name"],
                r["servers"].split(" ", 2)[-1],
                frames,
                "push" if r["ttl_s"] is None else "%gs" % r["ttl_s"],
                "%.3f %.3f" % (r["mean_ratio_opt"], r["p95_ratio_opt"]),
                "%.3f %.3f" % (r["mean_ratio_lb"], r["p95_ratio_lb"]),
                fair,
                "%.2f" % r["mean_queue_wait_frames"],
                "/".join("%.2f" % b[n][key] for n in BASELINES) + " " + unit,
                ("" if not sc.targets else "PASS " if r["pass"] else "FAIL ") + r["target"],
            )
        )
    lines.append("")
    lines.append("xOPT, xLB: makespan over OPT / LB; fair: worst judged client's makespan over its fair share;")
    lines.append("wait: mean queue wait in frame times; baselines on the target's first metric.")
    return "\n".join(lines)


def _frames_text(r: dict) -> str:
    return str(r["frames"]) if isinstance(r["frames"], int) else "+".join(str(f) for f in r["frames"])


def model_table(rows: List[dict], scs: List[Scenario]) -> str:
    """Scenarios with model loads: ours and the present policy on the same figure."""
    fmt = "%-44s %-28s %-11s %-5s | %-19s | %-5s | %-19s | %-5s | %-19s | %s"
    head = fmt % (
        "scenario (costs known = seeded, as from the store)",
        "server speeds",
        "frames",
        "setup",
        "ours",
        "loads",
        "present policy",
        "loads",
        "seq/rr/lq",
        "target",
    )
    lines = [head, "-" * len(head)]
    for r, sc in zip(rows, scs):
        b = r["baselines"]
        if has_plan(sc):
            ours = "%.3f %.3f xplan" % (r["mean_ratio_plan_max"], r["mean_ratio_plan_mean"])
            present = "%.3f %.3f xplan" % (b[PRESENT]["mean_ratio_plan_max"], b[PRESENT]["mean_ratio_plan_mean"])
            rest = "/".join("%.2f" % b[n]["mean_ratio_plan_max"] for n in BASELINES)
        elif len(sc.frames) == 1 or sc.second_batch:
            ours = "%.3f %.3f xOPT" % (r["mean_ratio_opt"], r["p95_ratio_opt"])
            present = "%.3f xOPT" % b[PRESENT]["mean_ratio_opt"]
            rest = "/".join("%.2f" % b[n]["mean_ratio_opt"] for n in BASELINES)
        elif sc.models == "same":
            ours = "%.3f xOPT %.3f fair" % (r["mean_ratio_opt"], r["worst_client_fair_share"])
            present = "%.3f xOPT %.3f fair" % (b[PRESENT]["mean_ratio_opt"], b[PRESENT]["worst_client_fair_share"])
            rest = "/".join("%.2f" % b[n]["mean_ratio_opt"] for n in BASELINES)
        else:
            ours = "%.3f xLB %.3f fair" % (r["mean_ratio_lb"], r["worst_client_fair_share"])
            present = "%.3f xLB %.3f fair" % (b[PRESENT]["mean_ratio_lb"], b[PRESENT]["worst_client_fair_share"])
            rest = "/".join("%.2f" % b[n]["mean_ratio_lb"] for n in BASELINES)
        lines.append(
            fmt
            % (
                r["name"],
                r["servers"].split(" ", 2)[-1],
                _frames_text(r),
                "%gx" % sc.setup,
                ours,
                "%.1f" % r["mean_loads"],
                present,
                "%.1f" % b[PRESENT]["mean_loads"],
                rest,
                ("" if not sc.targets else "PASS " if r["pass"] else "FAIL ") + r["target"],
            )
        )
    lines.append("")
    lines.append("setup: model load in frame times; xOPT: one client's makespan over OPT with setups (p95 beside);")
    lines.append("xplan: max and mean client makespan over the best static plan's; loads: setups paid in all;")
    lines.append(
        "present policy: the same scheduler told nothing of the cache; change between batches: the second batch."
    )
    return "\n".join(lines)
