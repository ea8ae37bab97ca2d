"""Mutation testing of the core: plant one small bug at a time, see whether a test notices.

    bash scripts/mutation [--quick] [--list] [--jobs N] [--mutant ID] [--out DIR] [MODULE...]

Each MODULE (``paths``, ``scheduler``, ``dispatch``, ``results``, ``recovery``,
``config``; default: all, or ``paths scheduler`` with ``--quick``) is parsed, and
every site where a classic small bug fits becomes one mutant: a comparison flipped
(``<`` / ``<=``, ``==`` / ``!=``, ``in`` / ``not in``, ``is`` / ``is not``),
``and`` / ``or`` swapped, a ``not`` dropped, a bare condition negated, an
arithmetic operator swapped, a number changed by one, ``True`` / ``False``
swapped, ``min`` / ``max`` and ``any`` / ``all`` swapped, a statement dropped,
a returned value replaced by ``None``. Strings and logging calls are left alone
(messages are checked by the documentation tests; log lines are no promise).

Every mutant runs in a scratch copy of the repository (never this work tree),
with only that module's tests (``MODULES`` below, fastest first, ``pytest -x``)
and a timeout. A mutant is *killed* when a test fails (or the tests hang past the
timeout), *survived* when they all pass. Survivors known to be equivalent (the
program behaves the same) are listed in ``EQUIVALENT`` with the reason and left
out of the kill rate.

``--quick`` runs only the unit tests (no simulator processes) on a fixed sample of
at most 40 mutants per module: a few minutes, suitable for CI. Results go to
``--out`` (default: a temporary folder) as ``MODULE.json`` plus a summary table.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORE = "nuke_comfy_cluster/core/"
#: what a scratch copy needs to run the tests (docs and examples for the tests that read them)
COPY = (
    "nuke_comfy_cluster",
    "tests",
    "benchmarks",
    "examples",
    "docs",
    "scripts",
    "resources",
    "pyproject.toml",
    "README.md",
    "init.py",
    "menu.py",
)


@dataclass(frozen=True)
class Module:
    #: the files mutated (those missing in the tree under test are skipped)
    paths: Tuple[str, ...]
    #: the tests that may run the module's code; each mutant runs those that executed its line
    tests: Tuple[str, ...]
    #: the unit tests only (no simulator processes), for --quick
    quick: Tuple[str, ...]
    #: tests that run the module in a subprocess (invisible to the line map): run for every mutant,
    #: after the others
    always: Tuple[str, ...] = ()
    #: at most this many seconds (of the traced run) of covering tests per mutant, fastest first;
    #: 0 = all. Integration-heavy modules need it: a line every test runs would cost minutes.
    budget: float = 0.0


_INTEGRATION_DISPATCH = (
    "tests/test_promises.py",
    "tests/test_dispatch_integration.py",
    "tests/test_faults.py::test_a_garbled_submit_answer_leaves_no_second_copy_queued",
    "tests/test_faults.py::test_a_missed_execution_success_on_a_live_socket_is_found_through_history",
    "tests/test_faults.py::test_a_refused_submit_does_not_use_up_the_frames_attempts",
    "tests/test_faults.py::test_a_frame_that_failed_on_the_preferred_server_goes_to_another",
    "tests/test_faults.py::test_a_flood_of_loop_steps_loses_none",
    # no GET /queue in the dispatch loop, nothing left behind, one submit per frame
    "tests/test_load.py::test_many_frames_many_clients_nothing_lost_nothing_left_behind",
)

_SCHEDULER_UNITS = (
    "tests/test_scheduler_units.py",
    "tests/test_scheduler_plan.py",
    "tests/test_scheduler_learning.py",
    "tests/test_scheduler_affinity.py",
)

#: delivery and results, unit by unit (no simulator): they kill most mutants of ``results`` in seconds
_RESULTS_UNITS = ("tests/test_delivery_units.py", "tests/test_results_units.py")
#: the health check's rules, on a dispatcher whose loop is not started (no simulator)
_RECOVERY_UNITS = tuple(
    "tests/test_recovery_promises.py::" + name
    for name in (
        "test_a_silent_job_is_looked_up_after_twice_its_expected_time",
        "test_without_the_websocket_push_a_job_is_looked_up_after_the_status_ttl",
        "test_a_server_that_stopped_answering_is_looked_up_at_once",
        "test_only_jobs_queued_or_running_there_are_checked",
        "test_a_job_on_a_server_removed_from_the_configuration_goes_back_to_pending",
        "test_orphans_are_looked_for_only_on_servers_that_answer",
        "test_orphans_of_a_server_removed_from_the_configuration_are_forgotten",
    )
)

MODULES: Dict[str, Module] = {
    "paths": Module(
        (CORE + "paths.py",),
        ("tests/test_paths.py", "tests/test_file_safety.py", "tests/test_fuzz.py"),
        ("tests/test_paths.py", "tests/test_file_safety.py"),
    ),
    "scheduler": Module(
        (CORE + "scheduler.py", CORE + "scheduler_costs.py", CORE + "scheduler_affinity.py"),
        ("tests/test_scheduler.py",) + _SCHEDULER_UNITS,
        ("tests/test_scheduler.py",) + _SCHEDULER_UNITS,
        always=("tests/test_benchmark_claims.py::test_scheduler_benchmark_rows",),
    ),
    "results": Module(
        (CORE + "results.py", CORE + "delivery.py"),
        _RESULTS_UNITS
        + ("tests/test_file_safety.py", "tests/test_fuzz.py::test_history_parsers")
        + _INTEGRATION_DISPATCH,
        _RESULTS_UNITS + ("tests/test_file_safety.py", "tests/test_fuzz.py::test_history_parsers"),
        budget=180.0,
    ),
    "recovery": Module(
        (CORE + "recovery.py",),
        ("tests/test_recovery_promises.py",)
        + _INTEGRATION_DISPATCH
        + (
            "tests/test_faults.py::test_every_frame_is_delivered_once",
            "tests/test_file_safety.py::test_a_batch_from_a_hostile_server_fails_clearly_and_writes_only_inside",
        ),
        _RECOVERY_UNITS + ("tests/test_faults.py::test_a_flood_of_loop_steps_loses_none",),
        budget=240.0,
    ),
    "dispatch": Module(
        (
            CORE + "dispatch.py",
            CORE + "planning.py",
            CORE + "submitting.py",
            CORE + "admission.py",
            CORE + "delivering.py",
            CORE + "setup_aware.py",
        ),
        ("tests/test_dispatch_units.py", "tests/test_dispatch_promises.py", "tests/test_setup_aware.py")
        + _INTEGRATION_DISPATCH
        + (
            "tests/test_faults.py::test_every_frame_is_delivered_once",
            "tests/test_file_safety.py::test_a_batch_from_a_hostile_server_fails_clearly_and_writes_only_inside",
        ),
        ("tests/test_faults.py::test_a_flood_of_loop_steps_loses_none",),
        budget=240.0,
    ),
    "config": Module(
        (CORE + "config.py", CORE + "config_fields.py", CORE + "config_parse.py", CORE + "config_model.py"),
        ("tests/test_config.py", "tests/test_env.py", "tests/test_config_store.py", "tests/test_fuzz.py"),
        ("tests/test_config.py", "tests/test_env.py"),
    ),
}
QUICK_MODULES = ("paths", "scheduler")
QUICK_SAMPLE = 40

_VIEW_SET_BEFORE_READ = "_views (or _list_schedule, for base) sets it on every view that reads it before it is read"

#: (module, the mutated line as written, mutation) -> why the program behaves the same. Keyed
#: by text, not line number, so the list survives edits elsewhere in the file; where two lines
#: read the same, the key is "previous line / line".
EQUIVALENT: Dict[Tuple[str, str, str], str] = {
    ("paths", "path, folder = os.path.normcase(path), os.path.normcase(folder)", "statement dropped"): (
        "os.path.normcase is the identity on POSIX, where the suite runs (it matters on Windows)"
    ),
    ("paths", "return False", "return x -> return None"): "the caller only tests the result for truth",
    ("paths", "except ValueError:  # different drives on Windows / return False", "False -> True"): (
        "commonpath raises ValueError only for paths on different Windows drives: not reachable on POSIX"
    ),
    ("recovery", "if not snap.live and quiet > self.pool.status_ttl:", "> -> >="): (
        "two clock readings are never exactly equal: > and >= differ only on a set of measure zero"
    ),
    ("scheduler", "self.setup = 0.0  # what a cold start costs us there", "statement dropped"): (
        "_views sets setup on every view with a frame time before it is read; views without one never read it"
    ),
    ("scheduler", "self.setup = 0.0  # what a cold start costs us there", "0.0 -> 1.0"): (
        "_views sets setup on every view with a frame time before it is read; views without one never read it"
    ),
    ("scheduler", "self.dev = 0.0  # its mean absolute deviation", "statement dropped"): (
        "_views sets dev on every view with a frame time before it is read; views without one never read it"
    ),
    ("scheduler", "self.dev = 0.0  # its mean absolute deviation", "0.0 -> 1.0"): (
        "_views sets dev on every view with a frame time before it is read; views without one never read it"
    ),
    ("scheduler", "self._uses += 1", "1 -> 2"): (
        "use counters are only compared with each other (least recently used first): steps of 2 keep the order"
    ),
    ("scheduler", "self.dev = 0.0", "statement dropped"): (
        "_Mean.dev is set by the first sample (or by seed) and read only when there are samples"
    ),
    ("scheduler", "self.dev = 0.0", "0.0 -> 1.0"): (
        "_Mean.dev is set by the first sample (or by seed) and read only when there are samples"
    ),
    ("scheduler", "if worst is None or ft > worst:", "> -> >="): (
        "on a tie the slowest frame time is replaced by the same value"
    ),
    ("scheduler", "end = math.inf", "statement dropped"): (
        "_fluid_end is only called with at least one server: the loop sets end before it is read"
    ),
    ("scheduler", "if finished and finished[-1] > load.observed_at:", "> -> >="): (
        "a finish heard at the very clock reading of the queue observation: two readings are never equal"
    ),
    ("scheduler", "heard = sum(1 for t in finished if t > load.observed_at)", "> -> >="): (
        "a finish heard at the very clock reading of the queue observation: two readings are never equal"
    ),
    ("scheduler", "v.others = others if others > 0 else 0", "> -> >="): "others == 0 gives 0 either way",
    ("scheduler", "head = last if head is None or last > head else head", "> -> >="): (
        "on a tie head is replaced by the same value"
    ),
    ("scheduler", "cold.discard(name)", "statement dropped"): (
        "marking the same server's cold send again sets the same flag (the set only saves a lookup)"
    ),
    ("scheduler", "if not foreign_views: / return wake", "return x -> return None"): (
        "wake is only set where a view is also made foreign, so with no foreign view it is None here"
    ),
    ("scheduler", "if abs(x - n) <= _TIE and v.key >= me.key:", ">= -> >"): (
        "keys end with the server name, so two different views never have equal keys"
    ),
    ("scheduler", "return total, 0.0  # as a client that cannot tell would learn it", "0.0 -> 1.0"): (
        "with no setup share the setup part is read only when the cold run exceeds its frame part, which it equals"
    ),
    ("scheduler", "setup_samples: int = 0", "0 -> 1"): (
        "seed counts a seeded setup as at least one sample; costs() and cost_store always pass it"
    ),
    ("scheduler", "v.cap = 1", "statement dropped"): "a view's cap starts at 1",
    ("scheduler", "if rank >= limit:", ">= -> >"): (
        "an early exit: counting on can only raise the rank, and callers only compare it with the limit"
    ),
    ("scheduler", "if not servers or (pending <= 0 and not self._withdraw):", "<= -> <"): (
        "with nothing waiting every later step of plan is gated by pending > 0 (or by withdraw_probes)"
    ),
    ("scheduler", "if v.warm or v.setup <= 0.0 or now >= grace:", "<= -> <"): (
        "a view without a setup keeps warm = True (it is only set where there is a setup): the first clause holds"
    ),
    ("scheduler", "if abs(x - n) <= _TIE and v.key >= me.key:", "<= -> <"): (
        "differs only when x is exactly _TIE away from an integer: a set of measure zero"
    ),
    (
        "scheduler",
        "self.probation = True  # one frame at a time until a job of ours succeeds there",
        "True -> False",
    ): (
        "read only once a frame time is known, and everything that makes one known sets it first "
        "(learn_from reads another batch's initial value only for a server neither batch has timed)"
    ),
    (
        "scheduler",
        "self.avail = 0.0  # clock time the server should have worked off everything it holds",
        "statement dropped",
    ): _VIEW_SET_BEFORE_READ,
    (
        "scheduler",
        "self.avail = 0.0  # clock time the server should have worked off everything it holds",
        "0.0 -> 1.0",
    ): _VIEW_SET_BEFORE_READ,
    ("scheduler", "self.others = 0", "statement dropped"): _VIEW_SET_BEFORE_READ,
    ("scheduler", "self.others = 0", "0 -> 1"): _VIEW_SET_BEFORE_READ,
    ("scheduler", "self.cap = 1", "statement dropped"): _VIEW_SET_BEFORE_READ,
    ("scheduler", "self.cap = 1", "1 -> 2"): _VIEW_SET_BEFORE_READ,
    (
        "scheduler",
        "self.thr = 0.0  # send a frame once its planned start is closer than this",
        "statement dropped",
    ): _VIEW_SET_BEFORE_READ,
    (
        "scheduler",
        "self.thr = 0.0  # send a frame once its planned start is closer than this",
        "0.0 -> 1.0",
    ): _VIEW_SET_BEFORE_READ,
    (
        "scheduler",
        "self.key: Tuple[int, int, str] = (load.priority, 0, name)",
        "statement dropped",
    ): _VIEW_SET_BEFORE_READ,
    ("scheduler", "self.key: Tuple[int, int, str] = (load.priority, 0, name)", "0 -> 1"): _VIEW_SET_BEFORE_READ,
    (
        "scheduler",
        "self.base = 0.0  # avail + first, set by the list schedule",
        "statement dropped",
    ): _VIEW_SET_BEFORE_READ,
    ("scheduler", "self.base = 0.0  # avail + first, set by the list schedule", "0.0 -> 1.0"): _VIEW_SET_BEFORE_READ,
    ("scheduler", "self.anchored = True", "statement dropped"): _VIEW_SET_BEFORE_READ,
    ("scheduler", "self.anchored = True", "True -> False"): _VIEW_SET_BEFORE_READ,
    (
        "scheduler",
        "self.takeover_at = 0.0  # when we may take it over if we have nothing running",
        "statement dropped",
    ): ("read only for a blocked view, and _apply_affinity sets takeover_at wherever it sets blocked"),
    ("scheduler", "self.takeover_at = 0.0  # when we may take it over if we have nothing running", "0.0 -> 1.0"): (
        "read only for a blocked view, and _apply_affinity sets takeover_at wherever it sets blocked"
    ),
    # results (delivery.py): the program behaves the same
    ("results", "return [_normal(v) for v in value] / return value", "return x -> return None"): (
        "prompts are JSON: dict, list, str, number, bool and null all return earlier; nothing else reaches it"
    ),
    ("results", "while pos + 8 <= len(data):", "<= -> <"): (
        "only a chunk header ending exactly at the end of the file differs: its body is empty, it holds no prompt"
    ),
    ("results", "while pos + 8 <= len(data):", "8 -> 9"): (
        "only a chunk header ending exactly at the end of the file differs: its body is empty, it holds no prompt"
    ),
    ("results", "except (ValueError, zlib.error, IndexError): / continue", "statement dropped"): (
        "the continue ends the loop body anyway"
    ),
    ("results", "return age > SequenceLock.STALE_S", "> -> >="): (
        "two clock readings are never exactly equal: > and >= differ only on a set of measure zero"
    ),
    ("results", "except ProcessLookupError: / return False", "return x -> return None"): (
        "the only caller negates the result: None and False alike mean the owner is gone"
    ),
    ("results", "except OSError: / return False", "return x -> return None"): (
        "os.kill(pid, 0) with an int pid raises only ProcessLookupError or PermissionError (caught before)"
    ),
    ("results", "except OSError: / return False", "False -> True"): (
        "os.kill(pid, 0) with an int pid raises only ProcessLookupError or PermissionError (caught before)"
    ),
    ("results", "fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)", "420 -> 421"): (
        "only the others-execute bit of the lock file changes; the lock is read and written, never executed"
    ),
    (
        "results",
        "return sorted(ids, key=lambda k: (0, int(k), k) if k.isdigit() else (1, 0, k))",
        "1 -> 2",
    ): "numeric ids still sort before the others (0 < 2), in the same order",
    (
        "results",
        "return sorted(ids, key=lambda k: (0, int(k), k) if k.isdigit() else (1, 0, k))",
        "0 -> 1",
    ): "(the 0 of non-numeric keys) all non-numeric keys share it: they still sort by name after the numbers",
    (
        "results",
        'return os.path.join(output_dir, STAGING, batch_id[:12], f"{job_id[:12]}-{token[:8]}")',
        "12 -> 13",
    ): "(the job id's share) one more character of a random id: still one private folder per attempt, removed "
    "with its batch's folder",
    (
        "results",
        'return os.path.join(output_dir, STAGING, batch_id[:12], f"{job_id[:12]}-{token[:8]}")',
        "8 -> 9",
    ): "one more character of a random token: still one private folder per attempt, removed with its batch's folder",
    (
        "results",
        'time.strftime("%H:%M", time.localtime(float(other.get("since", 0) or 0))),',
        "0 -> 1",
    ): "a lock without its start time shows the epoch's minute either way (0 s and 1 s after it)",
    # recovery: the program behaves the same
    ("recovery", "stale_servers.add(job.server) / continue", "statement dropped"): (
        "the rest of the loop body can only add the same server to the same set again"
    ),
    ("recovery", "elif quiet > limit:", "> -> >="): (
        "two clock readings are never exactly equal: > and >= differ only on a set of measure zero"
    ),
    (
        "recovery",
        "reason = user_message(failure) if isinstance(failure, ClusterError) else str(failure)",
        "if x -> if not x",
    ): "every error a look-up raises names its server in its message or names no server: user_message == str",
}


# --------------------------------------------------------------------------- mutants


@dataclass
class Mutant:
    module: str
    index: int  # position in the module's list: the ID is MODULE:INDEX
    path: str
    line: int
    what: str
    source_line: str
    previous_line: str = ""  # the line before, to tell apart two mutants of the same text
    outcome: str = ""  # killed | timeout | survived | equivalent | error
    seconds: float = 0.0
    detail: str = ""
    reason: str = ""

    @property
    def id(self) -> str:
        return f"{self.module}:{self.index}"


_COMPARE_SWAP = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}
_BINOP_SWAP = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Mult,
    ast.Mod: ast.FloorDiv,
    ast.Pow: ast.Mult,
}
_CALL_SWAP = {"min": "max", "max": "min", "any": "all", "all": "any"}
_SYMBOL = {
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.In: "in",
    ast.NotIn: "not in",
    ast.Is: "is",
    ast.IsNot: "is not",
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
    ast.And: "and",
    ast.Or: "or",
}
_LOGGERS = {"log", "logger", "logging", "_log"}


def _is_log_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    while isinstance(func, ast.Attribute):
        func = func.value
        if isinstance(func, ast.Name) and func.id in _LOGGERS:
            return True
    return False


def _skipped_subtrees(tree: ast.AST) -> set:
    """ids of nodes never mutated: annotations, docstrings, logging calls and everything inside."""
    roots: List[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if node.returns is not None:
                roots.append(node.returns)
            for arg in node.args.args + node.args.kwonlyargs + node.args.posonlyargs:
                if arg.annotation is not None:
                    roots.append(arg.annotation)
            for arg in (node.args.vararg, node.args.kwarg):
                if arg is not None and arg.annotation is not None:
                    roots.append(arg.annotation)
        elif isinstance(node, ast.AnnAssign):
            roots.append(node.annotation)
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            roots.append(node)
        elif _is_log_call(node):
            roots.append(node)
    skip = set()
    for root in roots:
        skip.update(id(n) for n in ast.walk(root))
    return skip


def _sites(tree: ast.AST) -> Iterator[Tuple[int, str, int, str]]:
    """(node position in ast.walk order, operation, line, description) for every mutation site."""
    skip = _skipped_subtrees(tree)
    for pos, node in enumerate(ast.walk(tree)):
        if id(node) in skip:
            continue
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Compare):
            for k, op in enumerate(node.ops):
                new = _COMPARE_SWAP.get(type(op))
                if new is not None:
                    yield pos, f"compare:{k}", line, f"{_SYMBOL[type(op)]} -> {_SYMBOL[new]}"
        elif isinstance(node, ast.BoolOp):
            other = ast.Or if isinstance(node.op, ast.And) else ast.And
            yield pos, "boolop", line, f"{_SYMBOL[type(node.op)]} -> {_SYMBOL[other]}"
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            yield pos, "drop-not", line, "not x -> x"
        elif isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in _BINOP_SWAP:
            new = _BINOP_SWAP[type(node.op)]
            yield pos, "binop", line, f"{_SYMBOL[type(node.op)]} -> {_SYMBOL[new]}"
        elif isinstance(node, ast.Constant) and type(node.value) in (int, float, bool):
            if isinstance(node.value, bool):
                yield pos, "const", line, f"{node.value} -> {not node.value}"
            else:
                yield pos, "const", line, f"{node.value!r} -> {node.value + 1!r}"
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _CALL_SWAP:
            yield pos, "call", line, f"{node.func.id}() -> {_CALL_SWAP[node.func.id]}()"
        if isinstance(node, (ast.If, ast.While, ast.IfExp)) and not isinstance(
            node.test, (ast.Compare, ast.BoolOp, ast.UnaryOp)
        ):
            yield pos, "negate", line, "if x -> if not x"
        if (
            isinstance(node, ast.Return)
            and node.value is not None
            and not (isinstance(node.value, ast.Constant) and node.value.value is None)
        ):
            yield pos, "return-none", line, "return x -> return None"
        for name in ("body", "orelse", "finalbody"):
            body = getattr(node, name, None)
            if not isinstance(body, list):
                continue
            for k, stmt in enumerate(body):
                if id(stmt) in skip or not isinstance(
                    stmt, (ast.Expr, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Raise, ast.Continue, ast.Break)
                ):
                    continue
                if isinstance(stmt, ast.AnnAssign) and stmt.value is None:
                    continue
                if isinstance(node, ast.ClassDef) or isinstance(node, ast.Module):
                    continue  # class fields and module constants: dropping one breaks the import, not a promise
                yield pos, f"drop:{name}:{k}", stmt.lineno, "statement dropped"


def _apply(node: ast.AST, op: str) -> None:
    if op.startswith("compare:"):
        k = int(op.split(":")[1])
        node.ops[k] = _COMPARE_SWAP[type(node.ops[k])]()
    elif op == "boolop":
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    elif op == "binop":
        node.op = _BINOP_SWAP[type(node.op)]()
    elif op == "const":
        node.value = (not node.value) if isinstance(node.value, bool) else node.value + 1
    elif op == "call":
        node.func.id = _CALL_SWAP[node.func.id]
    elif op == "negate":
        node.test = ast.UnaryOp(op=ast.Not(), operand=node.test)
    elif op == "return-none":
        node.value = ast.Constant(value=None)
    elif op.startswith("drop:"):
        _, name, k = op.split(":")
        body = getattr(node, name)
        body[int(k)] = ast.Pass()
    else:
        raise ValueError(op)


class _DropNot(ast.NodeTransformer):
    def __init__(self, target: ast.AST) -> None:
        self.target = target

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        self.generic_visit(node)
        return node.operand if node is self.target else node


def mutants_of(name: str, path: str, source: str, first: int = 0) -> List[Tuple[Mutant, str]]:
    """Every mutant of one module: (record, mutated source). Mutants that change nothing are left out."""
    tree = ast.parse(source)
    lines = source.splitlines()
    baseline = ast.unparse(tree)
    out: List[Tuple[Mutant, str]] = []
    seen = set()
    for pos, op, line, what in _sites(tree):
        copy = ast.parse(source)
        node = list(ast.walk(copy))[pos]
        if op == "drop-not":
            copy = _DropNot(node).visit(copy)
        else:
            _apply(node, op)
        ast.fix_missing_locations(copy)
        try:
            text = ast.unparse(copy)
            compile(text, name, "exec")
        except (SyntaxError, ValueError):
            continue
        if text == baseline or text in seen:
            continue
        seen.add(text)
        source_line = lines[line - 1].strip() if 0 < line <= len(lines) else ""
        previous = next((ln.strip() for ln in reversed(lines[: max(0, line - 1)]) if ln.strip()), "")
        out.append((Mutant(name, first + len(out), path, line, what, source_line, previous), text))
    return out


# --------------------------------------------------------------------------- running


def make_copy(root: str, ref: str = "", tree: str = "") -> str:
    """A scratch copy of the work tree (or of ``tree``), or of commit ``ref`` (committed files only)."""
    dest = tempfile.mkdtemp(prefix="ncc-mutation-", dir=root)
    if ref:
        archive = subprocess.run(["git", "-C", REPO, "archive", ref], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", dest], input=archive, check=True)
        return dest
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", ".pytest_cache")
    for item in COPY:
        src = os.path.join(tree or REPO, item)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(dest, item), ignore=ignore)
        elif os.path.isfile(src):
            shutil.copy2(src, os.path.join(dest, item))
    return dest


def _env(copy: str) -> Dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=copy,
        PYTHONDONTWRITEBYTECODE="1",  # a stale .pyc of another mutant must never be imported
        QT_QPA_PLATFORM="offscreen",
        COMFYUI_PROTOCOL_DIR=env.get("COMFYUI_PROTOCOL_DIR")
        or os.path.join(os.path.dirname(REPO), "shared", "comfyui-protocol"),
    )
    return env


_RUNNING: set = set()  # test runs under way (their process groups are killed when we are stopped)


def _stop(*_: object) -> None:
    for proc in list(_RUNNING):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
    sys.exit(143)


def run_tests(copy: str, tests: Sequence[str], timeout: float) -> Tuple[str, float, str]:
    """("passed" | "failed" | "timeout", seconds, tail of the output)."""
    argv = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header", "-rN", *tests]
    started = time.monotonic()
    proc = subprocess.Popen(
        argv,
        cwd=copy,
        env=_env(copy),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    _RUNNING.add(proc)
    try:
        out, _ = proc.communicate(timeout=timeout)
        state = "passed" if proc.returncode == 0 else "failed"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        state = "timeout"
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)  # stopped (Ctrl-C, SIGTERM): leave no test run behind
        raise
    finally:
        _RUNNING.discard(proc)
    text = out.decode("utf-8", "replace")
    if state == "failed" and proc.returncode not in (1,):
        state = "error"  # collection error, usage error: the mutant broke an import (or the selection is wrong)
    return state, time.monotonic() - started, text[-1500:]


_LINEMAP_PLUGIN = """
import json, os, sys, threading, time
import pytest

TARGETS = dict(t.split("=", 1) for t in os.environ["NCC_LINEMAP_TARGETS"].split(os.pathsep))
_current = ["<import>"]
_lines = {}
_seconds = {}


def _local(frame, event, arg):
    if event == "line":
        _lines.setdefault(_current[0], set()).add(TARGETS[frame.f_code.co_filename] + ":" + str(frame.f_lineno))
    return _local


def _global(frame, event, arg):
    name = TARGETS.get(frame.f_code.co_filename)
    if name is None:
        return None
    _lines.setdefault(_current[0], set()).add(name + ":" + str(frame.f_lineno))
    return _local


sys.settrace(_global)
threading.settrace(_global)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _current[0] = item.nodeid
    started = time.monotonic()
    yield
    _seconds[item.nodeid] = time.monotonic() - started


def pytest_sessionfinish(session, exitstatus):
    with open(os.environ["NCC_LINEMAP_OUT"], "w") as f:
        json.dump({"lines": {k: sorted(v) for k, v in _lines.items()}, "seconds": _seconds}, f)
"""


def _check_copy(copy: str, path: str) -> None:
    dotted = path[:-3].replace("/", ".")
    done = subprocess.run(
        [sys.executable, "-c", f"import {dotted} as m; print(m.__file__)"],
        cwd=copy,
        env=_env(copy),
        capture_output=True,
        text=True,
        timeout=60,
    )
    where = done.stdout.strip()
    if not where.startswith(copy):
        raise SystemExit(f"the scratch copy does not import its own {dotted} (got {where or done.stderr})")


@dataclass
class LineMap:
    """Which test runs which line of the module, and how long each test takes (one traced run)."""

    lines: Dict[str, List[str]]  # test -> ["path:line", ...]
    seconds: Dict[str, float]

    def tests_for(self, path: str, line: int) -> Optional[List[str]]:
        """The tests that run ``line``, fastest first; None when only the import runs it (then: all)."""
        key = f"{path}:{line}"
        hit = [t for t, ls in self.lines.items() if t != "<import>" and key in ls]
        if not hit:
            return None if key in self.lines.get("<import>", []) else []
        return sorted(hit, key=lambda t: self.seconds.get(t, 0.0))


def line_map(copy: str, paths: Sequence[str], tests: Sequence[str]) -> LineMap:
    plugin = os.path.join(copy, "_ncc_linemap.py")
    with open(plugin, "w", encoding="utf-8") as f:
        f.write(_LINEMAP_PLUGIN)
    out = os.path.join(copy, "_ncc_linemap.json")
    env = _env(copy)
    targets = os.pathsep.join(f"{os.path.join(copy, p)}={p}" for p in paths)
    env.update(NCC_LINEMAP_TARGETS=targets, NCC_LINEMAP_OUT=out)
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "_ncc_linemap", *tests]
    done = subprocess.run(argv, cwd=copy, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0 or not os.path.isfile(out):
        raise SystemExit(
            f"{', '.join(paths)}: the tests fail without any mutant; fix that first:\n{done.stdout[-3000:]}"
        )
    with open(out, encoding="utf-8") as f:
        data = json.load(f)
    os.unlink(out)
    os.unlink(plugin)
    return LineMap(data["lines"], data["seconds"])


def run_module(name: str, args: argparse.Namespace, root: str) -> List[Mutant]:
    module = MODULES[name]
    jobs = max(1, args.jobs)
    copies = [make_copy(root, args.ref, args.tree) for _ in range(jobs)]
    paths = [p for p in module.paths if os.path.isfile(os.path.join(copies[0], p))]
    if not paths:
        raise SystemExit(f"{name}: none of {', '.join(module.paths)} exists (moved? update MODULES in {__file__})")
    sources: Dict[str, str] = {}
    todo: List[Tuple[Mutant, str]] = []
    for path in paths:
        with open(os.path.join(copies[0], path), encoding="utf-8") as f:
            sources[path] = f.read()
        todo += mutants_of(name, path, sources[path], first=len(todo))
    tests = module.quick if args.quick else module.tests
    tests = tuple(t for t in tests if os.path.exists(os.path.join(copies[0], t.split("::")[0])))
    always = (
        ()
        if args.quick
        else tuple(t for t in module.always if os.path.exists(os.path.join(copies[0], t.split("::")[0])))
    )
    sample = args.sample or (QUICK_SAMPLE if args.quick else 0)
    if sample and len(todo) > sample:
        step = len(todo) / sample  # evenly spread, the same mutants every time
        todo = [todo[int(i * step)] for i in range(sample)]
    if args.mutant:
        wanted = {int(m.split(":")[1]) for m in args.mutant if m.split(":")[0] == name}
        todo = [(m, text) for m, text in todo if m.index in wanted]
    if args.list:
        for m, _ in todo:
            print(f"{m.id:16} {os.path.basename(m.path)}:{m.line:<4}  {m.what:28} {m.source_line[:80]}")
        return []
    for path in paths:
        _check_copy(copies[0], path)
    started = time.monotonic()
    linemap = line_map(copies[0], paths, tests)
    print(
        f"{name}: {len(todo)} mutants of {', '.join(paths)}; tests {' '.join(tests + always)}; "
        f"traced run {time.monotonic() - started:.0f} s",
        flush=True,
    )
    free = list(copies)

    def one(item: Tuple[Mutant, str]) -> Mutant:
        m, text = item
        selected = linemap.tests_for(m.path, m.line)
        if selected is None:
            selected = sorted(linemap.seconds, key=lambda t: linemap.seconds[t])
        if module.budget and not args.no_budget:
            kept: List[str] = []
            for test in selected:
                if kept and sum(linemap.seconds.get(t, 0.0) for t in kept + [test]) > module.budget:
                    break
                kept.append(test)
            selected = kept
        selected = selected + list(always)
        if not selected:
            m.outcome, m.detail = "survived", "no test runs this line"
        else:
            budget = sum(linemap.seconds.get(t, 60.0) for t in selected)
            timeout = args.timeout or max(30.0, 2.5 * budget + 20.0)
            copy = free.pop()
            target = os.path.join(copy, m.path)
            try:
                with open(target, "w", encoding="utf-8") as f:
                    f.write(text)
                state, m.seconds, tail = run_tests(copy, selected, timeout)
            finally:
                with open(target, "w", encoding="utf-8") as f:
                    f.write(sources[m.path])
                free.append(copy)
            m.outcome = {"failed": "killed", "passed": "survived"}.get(state, state)
            if m.outcome == "killed":
                m.detail = next((ln for ln in tail.splitlines() if ln.startswith("FAILED ")), "")[:200]
            elif m.outcome in ("error", "timeout"):
                m.detail = tail[-300:]
            elif m.outcome == "survived":
                m.detail = f"{len(selected)} tests run this line"
        reason = EQUIVALENT.get((name, m.source_line, m.what)) or EQUIVALENT.get(
            (name, m.previous_line + " / " + m.source_line, m.what)
        )
        if m.outcome == "survived" and reason:
            m.outcome, m.reason = "equivalent", reason
        print(
            f"  {m.id:14} {m.outcome:10} {m.seconds:5.0f} s  {os.path.basename(m.path)}:{m.line:<4} {m.what:26} "
            f"{m.source_line[:60]}",
            flush=True,
        )
        return m

    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        done = list(pool.map(one, todo))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # stopped: run no further mutant
    for copy in copies:
        shutil.rmtree(copy, ignore_errors=True)
    return done


def summary(name: str, done: List[Mutant]) -> Dict[str, object]:
    count = {
        k: sum(1 for m in done if m.outcome == k) for k in ("killed", "timeout", "error", "survived", "equivalent")
    }
    caught = count["killed"] + count["timeout"] + count["error"]
    considered = caught + count["survived"]
    rate = caught / considered if considered else 1.0
    return {"module": name, "mutants": len(done), **count, "kill_rate": round(rate, 3)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="bash scripts/mutation", description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", metavar="MODULE", help="one of: " + ", ".join(MODULES))
    parser.add_argument(
        "--quick", action="store_true", help=f"unit tests only, at most {QUICK_SAMPLE} mutants a module"
    )
    parser.add_argument("--list", action="store_true", help="list the mutants, run nothing")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run at once (default 1)")
    parser.add_argument(
        "--mutant", action="append", default=[], metavar="ID", help="run only MODULE:INDEX (repeatable)"
    )
    parser.add_argument(
        "--timeout", type=float, default=0.0, help="seconds per mutant (default: from the unmutated run)"
    )
    parser.add_argument("--sample", type=int, default=0, help="at most N mutants a module, evenly spread")
    parser.add_argument("--no-budget", action="store_true", help="run every covering test (slow for dispatch)")
    parser.add_argument("--ref", default="", help="mutate and test commit REF instead of the work tree")
    parser.add_argument("--tree", default="", help="mutate and test a copy of this folder instead of the work tree")
    parser.add_argument("--out", default="", help="folder for MODULE.json and summary.md (default: a temp folder)")
    args = parser.parse_args(argv)
    names = args.modules or ([m.split(":")[0] for m in args.mutant] or list(QUICK_MODULES if args.quick else MODULES))
    unknown = [n for n in names if n not in MODULES]
    if unknown:
        parser.error("unknown module {} (known: {})".format(", ".join(unknown), ", ".join(MODULES)))
    signal.signal(signal.SIGTERM, _stop)  # clean up the copies and test runs when stopped
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `--list | head` ends quietly
    out = args.out or ("" if args.list else tempfile.mkdtemp(prefix="ncc-mutation-results-"))
    if out:
        os.makedirs(out, exist_ok=True)
    root = tempfile.mkdtemp(prefix="ncc-mutation-copies-")
    rows = []
    try:
        for name in dict.fromkeys(names):
            done = run_module(name, args, root)
            if args.list:
                continue
            row = summary(name, done)
            rows.append(row)
            with open(os.path.join(out, f"{name}.json"), "w", encoding="utf-8") as f:
                json.dump({"summary": row, "mutants": [asdict(m) for m in done]}, f, indent=1)
            print(
                f"{name}: killed {row['killed'] + row['timeout'] + row['error']} of "
                f"{row['killed'] + row['timeout'] + row['error'] + row['survived']} "
                f"({100 * row['kill_rate']:.0f} %), equivalent {row['equivalent']}",
                flush=True,
            )
            for m in done:
                if m.outcome == "survived":
                    print(
                        f"  survived {m.id:14} {os.path.basename(m.path)}:{m.line:<4} {m.what:26} {m.source_line[:60]}"
                    )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if rows:
        table = [
            "| module | mutants | killed | timeout | error | survived | equivalent | kill rate |",
            "|---" * 8 + "|",
        ]
        for r in rows:
            table.append(
                "| {module} | {mutants} | {killed} | {timeout} | {error} | {survived} | {equivalent} | "
                "{pct:.0f} % |".format(pct=100 * r["kill_rate"], **r)
            )
        text = "\n".join(table)
        with open(os.path.join(out, "summary.md"), "w", encoding="utf-8") as f:
            f.write(text + "\n")
        print("\n" + text + f"\n\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
