"""No test may pass (or skip) because datakit's own code is missing.

A test that skips when our module is gone goes green exactly when it should go red. Read from the
test sources with `ast`: `pytest.importorskip` of a datakit module or of one of our test helper
modules, `find_spec` of a datakit module, `try: import datakit... except ImportError`, and skip
reasons such as "does not exist yet". Skips for what is not ours (a GPU, an optional third-party
package, GNU make) stay allowed.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
OWN_PREFIXES = ("datakit",)
FORBIDDEN_PHRASES = ("does not exist yet", "not available yet", "not implemented yet")

# (test file, line text fragment): known cases in files other engineers are changing, and who removes them.
ALLOWED: dict[tuple[str, str], str] = {
}


def _own_module(name: str) -> bool:
    helpers = {p.stem for p in TESTS.glob("*.py")}
    return name.split(".")[0] in OWN_PREFIXES or name.split(".")[0] in helpers


def _first_string(call: ast.Call) -> str | None:
    """The call's first argument as text: a string, or an f-string's leading literal part."""
    if not call.args:
        return None
    arg = call.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
        return str(arg.values[0].value)
    return None


def _call_name(call: ast.Call) -> str:
    f = call.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""


def _imports_ours(nodes: list[ast.stmt]) -> bool:
    for node in nodes:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Import) and any(a.name.split(".")[0] in OWN_PREFIXES for a in sub.names):
                return True
            if isinstance(sub, ast.ImportFrom) and (sub.module or "").split(".")[0] in OWN_PREFIXES:
                return True
    return False


def hidden_skips(path: Path) -> list[tuple[int, str]]:
    """(line, what) for every way this test file hides missing datakit code."""
    source = path.read_text(encoding="utf-8")
    found = []
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Call):
            name, first = _call_name(node), _first_string(node)
            if name == "importorskip" and first is not None and _own_module(first):
                found.append((node.lineno, f"importorskip({first!r})"))
            elif name == "find_spec" and first is not None and first.split(".")[0] in OWN_PREFIXES:
                found.append((node.lineno, f"find_spec({first!r})"))
        elif isinstance(node, ast.Try) and _imports_ours(node.body):
            caught = {ast.unparse(h.type) for h in node.handlers if h.type is not None}
            if caught & {"ImportError", "ModuleNotFoundError"}:
                found.append((node.lineno, "try: import datakit... except ImportError"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            for phrase in FORBIDDEN_PHRASES:
                if phrase in node.value and path != Path(__file__):
                    found.append((node.lineno, f"skip reason {phrase!r}"))
    return found


def _allowed(path: Path, line: int) -> bool:
    text = path.read_text(encoding="utf-8").splitlines()[line - 1]
    return any(f == path.name and fragment in text for f, fragment in ALLOWED)


def test_no_test_hides_missing_datakit_code():
    bad = [f"tests/{p.name}:{line}: {what}" for p in sorted(TESTS.glob("test_*.py")) if p != Path(__file__)
           for line, what in hidden_skips(p) if not _allowed(p, line)]
    assert not bad, "tests that skip when our own code is missing (they must fail instead):\n" + "\n".join(bad)


def test_allow_list_holds_only_live_cases():
    stale = []
    for (name, fragment), _who in ALLOWED.items():
        path = TESTS / name
        lines = [ln for ln, _ in hidden_skips(path)] if path.is_file() else []
        texts = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
        if not any(fragment in texts[ln - 1] for ln in lines):
            stale.append(f"{name}: {fragment}")
    assert not stale, "allow-list entries that no longer match anything: remove them\n" + "\n".join(stale)


def test_the_checker_sees_each_pattern(tmp_path):
    sample = tmp_path / "test_sample.py"
    own = "datakit.stages.emit"  # held apart so that this file itself holds no skip of our own module
    sample.write_text(
        "import importlib.util, pytest\n"
        f"def test_a():\n    pytest.importorskip({own!r})\n"
        "def test_b():\n    if importlib.util.find_spec(f'datakit.cli.{x}') is None:\n        pytest.skip('x does not exist yet')\n"
        "try:\n    from datakit.tags import stats\nexcept ImportError:\n    stats = None\n"
        "def test_ok():\n    pytest.importorskip('onnx')\n"
    )
    kinds = sorted(what.split("(")[0].split(":")[0] for _, what in hidden_skips(sample))
    assert kinds == ["find_spec", "importorskip", "skip reason 'does not exist yet'", "try"]
