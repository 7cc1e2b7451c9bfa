"""The import graph: no cycle inside ``explainer/``, ``app.py`` uses only public names, any module imports first.

The graph is read from the source with ``ast`` (every ``import`` statement, also those inside functions: a lazy
import that only dodges a cycle is still a cycle). Importing a submodule also runs its package's ``__init__``; that
implicit edge is not counted, as Python resolves it before the submodule's own imports.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "explainer"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _targets(name: str, path: Path) -> set[str]:
    """The ``explainer`` modules that ``name`` (the module in ``path``) imports anywhere in its code."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            # "from package import submodule" imports the submodule; "from module import name" the module.
            subs = {f"{module}.{alias.name}" for alias in node.names} & MODULES.keys()
            found.update(subs or {module})
    return {target for target in found if target in MODULES and target != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each a list of module names."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_inside_explainer():
    graph = {name: _targets(name, path) for name, path in MODULES.items()}
    assert _cycles(graph) == []


def test_the_cycle_check_sees_a_lazy_import(tmp_path):
    """The check is not vacuous: a cycle through an import inside a function is found."""
    graph = {"a": {"b"}, "b": set(), "c": {"a"}}
    assert _cycles(graph) == []
    graph["b"].add("c")
    assert _cycles(graph) == [["a", "b", "c"]]
    lazy = tmp_path / "lazy.py"
    lazy.write_text("def f():\n    from .session import SessionState\n")
    assert _targets("explainer.chat.lazy", lazy) == {"explainer.chat.session"}


def test_the_chat_answers_never_import_the_conversation():
    """State below answers below the registry below the conversation: each imports only the ones below it."""
    layers = ["session", "intents", "answers", "answers_next", "questions", "bot"]
    for lower, name in enumerate(layers):
        imported = _targets(f"explainer.chat.{name}", MODULES[f"explainer.chat.{name}"])
        above = {f"explainer.chat.{upper}" for upper in layers[lower + 1:]}
        assert not imported & above, (name, imported & above)


def _public_names(module: str) -> set[str] | None:
    """A module's ``__all__`` (read from its source), or None when it has none."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) \
            else []
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            return set(ast.literal_eval(node.value))
    return None


def test_app_imports_only_public_names():
    """app.py reaches the chat only through ``explainer.chat`` and never into the demo package or private names."""
    problems = []
    for node in ast.walk(ast.parse((ROOT / "app.py").read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            pairs = [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            pairs = [(node.module or "", alias.name) for alias in node.names]
        else:
            continue
        for module, name in pairs:
            if not module.startswith("explainer"):
                continue
            private = any(part.startswith("_") for part in module.split(".")) or (name or "").startswith("_")
            inside_chat = module.startswith("explainer.chat.")
            demo = module == "explainer.demo" or module.startswith("explainer.demo.")
            listed = _public_names(module) if module in MODULES else None
            if private or inside_chat or demo or (name and listed is not None and name not in listed):
                problems.append(f"{module}.{name}" if name else module)
    assert problems == []


def test_chat_exports_what_it_lists():
    import explainer.chat

    assert all(hasattr(explainer.chat, name) for name in explainer.chat.__all__)


def test_every_module_imports_first():
    """Each module imported as the first ``explainer`` module of a fresh import (TensorFlow stays loaded, so this is
    one process): what ``python -c "import explainer.x"`` does, for every x. Every other module is forgotten before
    each import, so the order of the list does not matter."""
    names = sorted(MODULES)
    script = f"""
import importlib, sys
names = {names!r}
import tensorflow  # loaded once; only explainer's own modules are imported afresh
failed = []
for name in names:
    for loaded in [m for m in sys.modules if m == "explainer" or m.startswith("explainer.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as err:
        failed.append(f"{{name}}: {{type(err).__name__}}: {{err}}")
print("\\n".join(failed))
"""
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "", run.stdout


#: The layers of the package, lowest first: a module imports only modules of its own layer or lower ones.
#: The engine (the flat core, the CAM methods, segmentation, inputs, models and the Keras adapter) knows nothing
#: of evaluation, the chat or the server; the server is above the chat, the chat above evaluation.
LAYERS = {
    "engine": ("explainer", "explainer.cams", "explainer.segment", "explainer.inputs", "explainer.models",
               "explainer.compat", "explainer.demo", "explainer.demo.generate", "explainer.demo.audit_data"),
    "evaluation": ("explainer.evaluation",),
    "chat": ("explainer.chat",),
    "server": ("explainer.server",),
    "tools": ("explainer.cli", "explainer.__main__", "explainer.demo.train", "explainer.demo.report",
              "explainer.demo.calibrate"),
}


def _layer(module: str) -> int:
    """The index in :data:`LAYERS` of ``module``: the layer naming the longest prefix of it."""
    best, found = -1, None
    for index, prefixes in enumerate(LAYERS.values()):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, found = len(prefix), index
    assert found is not None, module
    return found


def _upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{name} -> {target}" for name, targets in graph.items() for target in targets
                  if _layer(target) > _layer(name))


def test_every_module_imports_only_its_layer_or_lower_ones():
    graph = {name: _targets(name, path) for name, path in MODULES.items()}
    assert _upward_imports(graph) == []


def test_the_layer_check_sees_an_engine_module_importing_the_chat():
    assert _layer("explainer.engine") == 0 and _layer("explainer.server.ui") == 3 and _layer("explainer.cli.main") == 4
    assert _upward_imports({"explainer.region": {"explainer.chat.session"}}) == [
        "explainer.region -> explainer.chat.session"]
    assert _upward_imports({"explainer.chat.bot": {"explainer.region", "explainer.evaluation.metrics"}}) == []


def test_no_module_shadows_a_well_known_package():
    known = {"transformers", "statistics", "evaluate", "io", "json", "logging", "typing", "types", "random", "keras",
             "tensorflow", "gradio", "numpy", "cv2", "jinja2", "ray", "datasets", "tokenizers", "torch", "pydicom"}
    stems = {name.rsplit(".", 1)[-1] for name in MODULES}
    assert stems & known == set()


def test_the_flat_core_stays_small():
    core = list(PACKAGE.glob("*.py"))
    assert len(core) <= 15, sorted(p.name for p in core)


def _imports_gradio(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        if any(name == "gradio" or name.startswith("gradio.") for name in names):
            return True
    return False


def test_the_gradio_files_hold_wiring_only():
    """Gradio is imported by the page module and the Spaces entry only, 600 lines in all: the logic lives below."""
    files = [path for path in [ROOT / "app.py", *sorted(PACKAGE.rglob("*.py"))] if _imports_gradio(path)]
    assert [path.relative_to(ROOT).as_posix() for path in files] == ["explainer/server/ui.py"]
    assert sum(len(path.read_text(encoding="utf-8").splitlines()) for path in [ROOT / "app.py", *files]) <= 600
