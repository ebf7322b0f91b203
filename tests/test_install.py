"""What a new user meets first: the README's commands, the install's completeness, the command line.

The README's demo command installs only the base dependencies, so anything the demo imports (the tiny
world's builder included) must be one of them. ``.ci/run`` runs both README commands exactly as written
in a fresh venv with an empty cache; the tests here keep that true and fail fast where it would break.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import time
from functools import lru_cache
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from sdcallbacks.cli import build_parser, main

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


@lru_cache(maxsize=1)
def _installed() -> dict[str, list[str]]:
    return packages_distributions()  # reads every installed distribution's file list: once, not per module


def _distributions(module: str) -> set[str]:
    """The installed distributions providing ``module`` (or its own name for one not installed here, such
    as ``tomli`` under a version marker)."""
    return {_name(d) for d in _installed().get(module, [])} or {_name(module)}


def third_party_imports() -> dict[str, set[str]]:
    """Top-level third-party modules imported anywhere in the package -> the files importing them."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / "sdcallbacks").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "sdcallbacks":
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


# Imported only where the matching extra is installed (torch-fidelity for FID/IS, matplotlib for the
# report, mlflow for its tracker): never by the demo.
EXTRA_ONLY = {
    "torch_fidelity": "fid",
    "matplotlib": "report",
    "mlflow": "mlflow",
    "wandb_workspaces": "wandb-report",
}


def test_every_import_of_the_package_is_a_base_dependency():
    base = {_name(r) for r in PROJECT["dependencies"]}
    missing = {
        module: sorted(files)
        for module, files in third_party_imports().items()
        if module not in EXTRA_ONLY and not _distributions(module) & base
    }
    assert not missing, f"imported but not in [project].dependencies: {missing}"
    for module, extra in EXTRA_ONLY.items():
        assert _distributions(module) & {_name(r) for r in PROJECT["optional-dependencies"][extra]}


def dev_only_modules() -> list[str]:
    """Top-level modules that only the [dev] extra brings (pytest, scikit-image, ...). The extras' own
    modules (torch-fidelity) stay: torchmetrics decides from package metadata whether they are installed,
    which blocking the import cannot hide, and a real base install simply lacks both."""
    base = {_name(r) for r in PROJECT["dependencies"]}
    dev = {_name(r) for r in PROJECT["optional-dependencies"]["dev"]} - base
    return sorted(
        m for m, dists in _installed().items() if {_name(d) for d in dists} & dev and m not in EXTRA_ONLY
    )


@pytest.mark.slow  # builds a (two-step) tiny world in a subprocess
def test_the_tiny_world_builds_with_the_base_install_alone(tmp_path):
    """The demo's first step on a new machine, with every dev-only module made unimportable (onnx was
    one, so the README's demo command failed on any machine without a cached world). A stale folder of a
    killed build (two days old) is removed when the build starts; a young one may be a live build."""
    stale, young = tmp_path / ".building-stale", tmp_path / ".building-young"
    for folder in (stale, young):
        folder.mkdir()
        (folder / "part").write_bytes(b"x")
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(stale, (two_days_ago, two_days_ago))
    script = (
        "import sys\n"
        f"for name in {dev_only_modules()!r}:\n"
        "    sys.modules[name] = None  # import fails, as where [dev] is not installed\n"
        "from sdcallbacks.testing.world import WorldRecipe, build_tiny_world\n"
        f"world = build_tiny_world({str(tmp_path)!r}, WorldRecipe(vae_steps=2, unet_steps=2, batch_size=2))\n"
        "print(world.root)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    root = Path(done.stdout.strip().splitlines()[-1])
    assert (root / "READY.json").is_file() and (root / "tagger" / "model.onnx").is_file()
    assert not stale.exists() and young.is_dir()
    assert f"removed {stale}" in done.stderr
    assert "step 2/2" in done.stderr  # progress lines while it builds


def readme_commands() -> list[str]:
    """The two setup-and-run lines the README opens with (demo first, then tests)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    return [line.strip() for line in block.splitlines() if line.strip().startswith("python3 -m venv")]


def test_ci_runs_both_readme_commands_exactly_as_written():
    demo, tests = readme_commands()
    assert "sdcallbacks demo" in demo and "pytest" in tests
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    lines = [line.strip() for line in ci.splitlines()]
    assert demo in lines and tests in lines
    assert lines.index(demo) < lines.index(tests)  # the base install first: [dev] would hide a gap
    # ...with an empty cache, so the demo builds the tiny world from nothing
    before_demo = "\n".join(lines[: lines.index(demo)])
    assert re.search(r"export SDCALLBACKS_CACHE=.*mktemp -d", before_demo)


def test_help_texts_are_plain_text():
    parser = build_parser()
    texts = [parser.format_help()]
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    texts += [sub.format_help() for sub in subparsers.choices.values()]
    for text in texts:
        assert "``" not in text and ":class:" not in text, text


def test_the_command_line_prints_its_own_lines_not_open_clips_chatter(tmp_path, backbones):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(images / "a.png")
    (images / "a.txt").write_text("red square", encoding="utf-8")
    config = tmp_path / "metrics.yaml"
    config.write_text(
        f'metrics:\n  clip_score: {{clip: {{model: "{backbones.clip}", pretrained: null}}}}\n',
        encoding="utf-8",
    )
    command = [sys.executable, "-m", "sdcallbacks", "score", str(images), "--config", str(config)]
    done = subprocess.run(
        [*command, "--out", str(tmp_path / "s.jsonl")], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "scored 1 images" in done.stdout
    # what open_clip logs at INFO on the root logger while it loads a model (12 lines before)
    chatter = ("Instantiating model architecture", "creation process complete", "Parsing tokenizer")
    assert not any(line in done.stderr for line in chatter), done.stderr


def test_ctrl_c_in_the_demo_says_where_the_partial_outputs_are(tmp_path, monkeypatch, capsys):
    import sdcallbacks.demo

    out = tmp_path / "demo"

    def interrupted_after_one_validation(output_dir, **kwargs):
        Path(output_dir).mkdir(parents=True)
        (Path(output_dir) / "metrics.jsonl").write_text("{}\n", encoding="utf-8")
        (Path(output_dir) / "samples").mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(sdcallbacks.demo, "run_demo", interrupted_after_one_validation)
    assert main(["demo", "--output-dir", str(out)]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and str(out.resolve() / "metrics.jsonl") in err and "Traceback" not in err

    def interrupted_while_building(output_dir, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sdcallbacks.demo, "run_demo", interrupted_while_building)
    assert main(["demo", "--output-dir", str(tmp_path / "never")]) == 130
    assert "nothing was written" in capsys.readouterr().err


def test_the_missing_weights_advice_names_a_command_that_exists(tmp_path, monkeypatch):
    from sdcallbacks.metrics.backbones.wd14 import WD14Tagger
    from sdcallbacks.weights import WeightsNotFoundError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    with pytest.raises(WeightsNotFoundError) as info:
        WD14Tagger("SmilingWolf/wd-v1-4-moat-tagger-v2").load()
    command = re.search(r"`(\S+) download ", str(info.value)).group(1)
    assert command == "hf" and (Path(sys.executable).parent / command).is_file()


def test_configs_name_the_flags_that_exist():
    text = (ROOT / "configs" / "tiny.yaml").read_text(encoding="utf-8")
    flags = set(re.findall(r"(--[a-z][a-z_-]+)", text))
    example = (ROOT / "examples" / "train_dreambooth_lora.py").read_text(encoding="utf-8")
    assert flags and all(f'"{flag}"' in example for flag in flags), flags
