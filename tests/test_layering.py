"""The package's layers: data flows one way, config -> prompts -> sampling (-> saved checkpoints) -> metrics
-> aggregation -> the validation core -> selection -> outputs/trackers -> execution -> the callback,
evaluate and the commands.

Every import of every module (function-level ones included) is read from the source; a module that
imports from a layer above its own, or from another package of its own layer, fails the test.
"""

from __future__ import annotations

import ast
from pathlib import Path

import sdcallbacks

LAYERS = [
    {"runtime", "weights"},
    {"config"},
    {"prompts"},
    {"sampling"},
    {"checkpoints"},  # saved weights swapped into a base model: a source for the sampler
    {"metrics"},
    {"aggregation"},
    {"validation"},
    {"selection"},
    {"outputs", "trackers"},
    {"execution"},
    {"control"},
    {"callback", "score_command", "tagger_comparison", "evaluation"},
    {"calibration"},  # reads the files the layers below write
    {"report"},  # reads the files the layers below write, nothing else
    {"cli", "demo", "testing", "__init__", "__main__"},  # applications: anything below
]
APPLICATIONS = LAYERS[-1]
ROOT = Path(sdcallbacks.__file__).parent


def layer_of(package: str) -> int:
    for index, layer in enumerate(LAYERS):
        if package in layer:
            return index
    raise AssertionError(f"sdcallbacks.{package} is in no layer: add it to LAYERS")


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level sdcallbacks package) of every import in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "sdcallbacks":
                found.append((node.lineno, parts[1] if len(parts) > 1 else "__init__"))
    return found


def violations(root: Path = ROOT) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        source = path.relative_to(root).parts[0].removesuffix(".py")
        for line, target in imports(path):
            if target == source:
                continue
            upward = layer_of(target) > layer_of(source)
            sideways = layer_of(target) == layer_of(source) and source not in APPLICATIONS
            if upward or sideways:
                found.append(f"{path.relative_to(root.parent).as_posix()}:{line}: {source} imports {target}")
    return found


def test_no_module_imports_from_a_layer_above_its_own():
    assert violations() == []


def test_the_check_catches_an_upward_import(tmp_path):
    """The walk itself works: a metrics module importing the callback is reported with its line."""
    fake_root = tmp_path / "sdcallbacks"
    (fake_root / "metrics").mkdir(parents=True)
    (fake_root / "metrics" / "bad.py").write_text(
        "import math\n\ndef f():\n    from sdcallbacks.callback import ValidationCallback\n", encoding="utf-8"
    )
    (fake_root / "outputs.py").write_text(
        "from sdcallbacks.trackers import TrackerLogger\n", encoding="utf-8"
    )
    assert violations(fake_root) == [
        "sdcallbacks/metrics/bad.py:4: metrics imports callback",
        "sdcallbacks/outputs.py:1: outputs imports trackers",
    ]


def test_the_public_names_are_importable_from_the_package():
    for name in sdcallbacks.__all__:
        assert getattr(sdcallbacks, name) is not None, name
