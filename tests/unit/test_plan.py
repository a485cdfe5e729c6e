"""metrics.json is the report, not control state: the recipes decide from llm/plan.py's RunPlan
and Outcome and only write `results`; metrics.py (and the gate) read it to print and report."""

import ast
from pathlib import Path

import pytest

from tuneforge.llm.plan import Outcome, RunPlan

PACKAGE = Path(__file__).resolve().parents[2] / "container" / "tuneforge"
DECIDING = ("llm/recipe.py", "llm/preference.py", "llm/identity.py", "job/resume.py")
WRITES = {"update", "setdefault"}  # setdefault's value may only be written into (x.setdefault(k, {})[k2] = v)
# the report's readers: metrics.json itself, the tracker finals, the model metadata, the phase log
READERS = {"tracker_finals", "metric_summary", "print_final_lines", "Phases", "write_metrics"}


def _is_results(node) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "results") or \
        (isinstance(node, ast.Name) and node.id == "results")


def _parents(tree) -> dict:
    return {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}


def _written_into(node, parents) -> bool:
    """`node` (a setdefault call) is only the container of a subscript assignment or of another setdefault."""
    parent = parents.get(node)
    if isinstance(parent, ast.Subscript) and parent.value is node:
        return isinstance(parent.ctx, ast.Store)
    if isinstance(parent, ast.Attribute) and parent.attr == "setdefault":
        return _written_into(parents[parent], parents)
    return isinstance(parent, ast.Call) and _call_name(parent) in READERS


def _call_name(call: ast.Call) -> str:
    return getattr(call.func, "attr", getattr(call.func, "id", ""))


def _use_is_a_write(node, parents) -> bool:
    parent = parents.get(node)
    if isinstance(parent, ast.Subscript) and parent.value is node:
        return isinstance(parent.ctx, (ast.Store, ast.Del))
    if isinstance(parent, ast.Attribute) and parent.attr in WRITES:
        call = parents.get(parent)
        return parent.attr == "update" or _written_into(call, parents)
    if isinstance(parent, ast.Call) and node in parent.args:
        return _call_name(parent) in READERS
    targets = parent.targets if isinstance(parent, ast.Assign) else [getattr(parent, "target", None)]
    if isinstance(parent, (ast.AnnAssign, ast.Assign)) and node in targets:
        return True  # the initialisation self.results = {}
    if isinstance(parent, ast.Return):
        return True  # run() hands the finished report to its caller
    return False


def results_reads(source: str) -> list[int]:
    """The lines where `results` is read (subscript, get, in, aliasing, ...) instead of written."""
    tree = ast.parse(source)
    parents = _parents(tree)
    return [node.lineno for node in ast.walk(tree) if _is_results(node) and not _use_is_a_write(node, parents)]


@pytest.mark.parametrize("module", DECIDING)
def test_recipes_only_write_the_results(module):
    reads = results_reads((PACKAGE / module).read_text())
    assert not reads, f"{module} reads metrics.json's dict back at lines {reads}: decide from the RunPlan/Outcome"


@pytest.mark.parametrize("code", [
    "x = self.results['steps']", "self.results.get('steps')", "'eval_loss' in self.results",
    "results = self.results", "f(self.results)", "self.results.pop('a')",
    "s = self.results.setdefault('e', {})",
])
def test_a_read_is_found(code):
    assert results_reads(code) == [1]


@pytest.mark.parametrize("code", [
    "self.results['steps'] = 1", "self.results.update(a=1)", "self.results.setdefault('e', {})['b'] = 1",
    "self.results.setdefault('e', {}).setdefault('t', {})['s'] = 1", "del self.results['a']",
    "write_metrics(self.results)", "self.results: dict = {}",
])
def test_a_write_is_not_a_read(code):
    assert results_reads(code) == []


def test_plan_decisions():
    plan = RunPlan(parallelism="deepspeed zero-3", sharded_state=True, liger={"enabled": False},
                   checkpoint_writer_why_not="", batching={"strategy": "group_by_length"}, loss={"kind": "chunked"})
    assert plan.engine == "deepspeed zero-3" and plan.length_grouping and plan.chunked_loss and not plan.packed
    plain = RunPlan(parallelism="ddp", sharded_state=False, liger={}, checkpoint_writer_why_not="several hosts")
    assert plain.engine == "plain" and not plain.length_grouping and not plain.chunked_loss
    with pytest.raises(AttributeError):
        plain.parallelism = "none"  # frozen
    assert Outcome().steps is None
