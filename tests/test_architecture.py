"""The package's shape, as CONTRIBUTING describes it, checked from the source (issue 16).

Small files, imports in lecture order, no import circle, nothing private used across files,
and one training loop: each rule is read from the code with ``ast``, so a change that breaks
one fails here with the file and line, not in a review.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "workbook"
MAX_LINES = 600

# The topics in notebook order (the number is the notebook); every other module is plumbing.
TOPIC_ORDER = {"pretraining": 1, "data_scale": 1, "flops": 2, "scaling_laws": 3, "memory": 4,
               "zero": 5, "model_parallel": 6, "attention": 7, "precision": 8, "sft": 9,
               "evaluation": 10, "lora": 11, "qlora": 12}

# The modules that may run a backward pass *and* an optimizer step themselves: the one training
# loop, and the two steps that are the lecture's idea (the GradScaler step of 08, the DeepSpeed
# engine step of 05). Every other module trains through training.train/backward_step.
OWN_UPDATE = {"workbook.training", "workbook.precision.mixed_step", "workbook.zero.engine"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def topic_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in TOPIC_ORDER else None


def imported(name: str, node: ast.AST) -> list[str]:
    """The workbook modules an import statement of module ``name`` brings in."""
    if isinstance(node, ast.Import):
        found = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        if node.level:  # relative: resolved against the importing module's package
            package = name if MODULES[name].name == "__init__.py" else name.rsplit(".", 1)[0]
            base = package.split(".")[:len(package.split(".")) - node.level + 1]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        # ``from pkg import sub`` depends on the submodule (the package is being set up
        # already when its own files import it); ``from pkg import name`` on the package
        subs = [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in MODULES]
        found = subs or [module]
    else:
        return []
    return [m for m in found if m in MODULES and m != name]


def top_level_graph() -> dict[str, set[str]]:
    return {name: {m for node in tree.body for m in imported(name, node)}
                   for name, tree in TREES.items()}


def test_no_module_is_over_600_lines():
    long = {name: n for name, path in MODULES.items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these into idea / experiments / views files: {long}"


def test_module_level_imports_have_no_circle():
    graph, state, path = top_level_graph(), {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                raise AssertionError(" → ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = "done"

    for start in sorted(graph):
        if start not in state:
            visit(start)


def test_imports_follow_the_lecture_order():
    """Plumbing imports no topic; a topic imports plumbing and earlier topics only (imports
    inside functions count too: a lazy import is still a dependency)."""
    wrong = []
    for name, tree in TREES.items():
        mine = topic_of(name)
        for node in ast.walk(tree):
            for other in map(topic_of, imported(name, node)):
                if other is None or other == mine:
                    continue
                if mine is None or TOPIC_ORDER[other] > TOPIC_ORDER[mine]:
                    wrong.append(f"{name}:{node.lineno} imports {other}")
    assert not wrong, wrong


def private_uses(source: str, where: str) -> list[str]:
    """``from workbook… import _x`` and ``alias._x`` where ``alias`` is a workbook module."""
    tree = ast.parse(source, where)
    aliases, found = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("workbook"):
            for a in node.names:
                if a.name.startswith("_"):
                    found.append(f"{where}:{node.lineno} imports {a.name}")
                if f"{node.module}.{a.name}" in MODULES:
                    aliases.add(a.asname or a.name)
        elif isinstance(node, ast.Import):
            aliases |= {a.asname or a.name.split(".")[0] for a in node.names
                        if a.name.startswith("workbook")}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "setattr" and len(node.args) >= 2
                and isinstance(node.args[0], ast.Name) and node.args[0].id in aliases
                and isinstance(node.args[1], ast.Constant)
                and str(node.args[1].value).startswith("_")):  # a test's monkeypatch
            found.append(f"{where}:{node.lineno} patches {node.args[0].id}.{node.args[1].value}")
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in aliases and node.attr.startswith("_")
                and not node.attr.startswith("__")):
            found.append(f"{where}:{node.lineno} uses {node.value.id}.{node.attr}")
    return found


def notebook_sources() -> list[tuple[str, str]]:
    out = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        lines = [line for c in cells if c["cell_type"] == "code"
                 for line in "".join(c["source"]).splitlines()]
        # IPython magics are not Python; no notebook cell needs one to use the package
        out.append((path.name, "\n".join(line for line in lines
                                           if not line.lstrip().startswith(("%", "!")))))
    return out


@pytest.mark.parametrize("where", ["workbook", "tests", "scripts", "notebooks"])
def test_nothing_private_is_used_outside_its_file(where):
    if where == "notebooks":
        sources = notebook_sources()
    else:
        sources = [(str(p.relative_to(ROOT)), p.read_text())
                   for p in sorted((ROOT / where).rglob("*.py"))]
    found = [use for name, text in sources for use in private_uses(text, name)]
    assert not found, "make it public (and list it in __all__), or keep it in its file: " \
        f"{found}"


def own_update(tree: ast.Module) -> bool:
    """A module that calls ``.backward(...)`` and an optimizer's ``.step(...)`` itself (a
    pipeline schedule's ``sched.step`` is not an optimizer)."""
    calls = [c.func for c in ast.walk(tree)
             if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute)]
    steps = [f for f in calls if f.attr == "step"
             and not (isinstance(f.value, ast.Name) and f.value.id.startswith("sched"))]
    return any(f.attr == "backward" for f in calls) and bool(steps)


def test_at_most_three_modules_take_their_own_optimizer_step():
    own = {name for name, tree in TREES.items() if own_update(tree)}
    assert own <= OWN_UPDATE, \
        f"train through workbook.training.train or backward_step instead: {own - OWN_UPDATE}"
    assert own == OWN_UPDATE, f"no longer takes its own step: drop from OWN_UPDATE: " \
        f"{OWN_UPDATE - own}"   # the list stays the truth, and it holds at most three


def test_the_rules_can_fail():
    """Each check above catches what it is for (on made-up sources, not on the package)."""
    assert private_uses("from workbook import hardware\nhardware._secret()", "x")
    assert private_uses("from workbook.registry import _secret", "x")
    assert private_uses("from workbook import hardware\nmonkeypatch.setattr(hardware, '_x', 1)",
                        "x")
    assert not private_uses("import torch\ntorch._C", "x")
    assert own_update(ast.parse("loss.backward()\nopt.step()"))
    assert not own_update(ast.parse("loss.backward()\nsched.step()"))
    assert topic_of("workbook.zero.engine") == "zero" and topic_of("workbook.registry") is None
