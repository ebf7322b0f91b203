from __future__ import annotations

import json

import pytest

from sdcallbacks.cli import main
from sdcallbacks.config import ConfigError, load_config

GOOD = """
output_dir: out
prompts:
  - name: a
    prompt: red square, white background
schedule:
  every_n_steps: 10
"""


def write(tmp_path, text, name="run.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_good_config_loads_and_resolves_prompt_files_relative_to_it(tmp_path):
    (tmp_path / "p.txt").write_text("blue square --d 5\n", encoding="utf-8")
    config = load_config(write(tmp_path, GOOD + "prompt_files: [p.txt]\n"))
    assert config.schedule.every_n_steps == 10
    assert config.prompt_files == [tmp_path / "p.txt"]


@pytest.mark.parametrize(
    ("text", "located"),
    [
        (GOOD + "bogus_key: 1\n", "bogus_key: Extra inputs are not permitted"),
        (GOOD.replace("every_n_steps: 10", "every_n_steps: ten"), "schedule.every_n_steps"),
        (GOOD + "sampling:\n  ema: sometimes\n", "sampling.ema"),
        (GOOD + "mode: up\n", "mode: Input should be 'min' or 'max'"),
        ("prompts: []\nschedule: {every_n_steps: 1}\n", "no validation prompts"),
        (GOOD + "metrics:\n  tag_accuracy:\n    threshhold: 0.3\n", "metrics.tag_accuracy.threshhold"),
        (GOOD.replace("every_n_steps: 10", "start_step: 3"), "set at least one of every_n_steps"),
        (GOOD + "early_stopping: {patience: 2}\n", "early_stopping needs monitor"),
    ],
)
def test_bad_config_is_a_located_error_and_exit_code_2(tmp_path, capsys, text, located):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert located in str(info.value)
    assert main(["check-config", str(path)]) == 2
    assert located in capsys.readouterr().err


def test_missing_prompt_file_names_the_file(tmp_path, capsys):
    path = write(tmp_path, GOOD + "prompt_files: [nope.txt]\n")
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "nope.txt" in err and "prompt file not found" in err


def test_yaml_1e_minus_4_string_is_coerced_for_float_fields_and_no_is_rejected_for_strings(tmp_path):
    config = load_config(write(tmp_path, GOOD + "monitor: val/x\nearly_stopping:\n  min_delta: 1e-4\n"))
    assert config.early_stopping.min_delta == pytest.approx(1e-4)
    with pytest.raises(ConfigError, match="monitor"):
        load_config(write(tmp_path, GOOD + "monitor: no\n"))


def test_json_and_toml_are_accepted_by_extension(tmp_path):
    data = {"prompts": [{"prompt": "x"}], "schedule": {"every_n_steps": 3}}
    assert load_config(write(tmp_path, json.dumps(data), "c.json")).schedule.every_n_steps == 3
    toml = '[[prompts]]\nprompt = "x"\n[schedule]\nevery_n_steps = 4\n'
    assert load_config(write(tmp_path, toml, "c.toml")).schedule.every_n_steps == 4
    with pytest.raises(ConfigError, match="unknown extension"):
        load_config(write(tmp_path, "a: 1", "c.ini"))


def test_unparseable_yaml_names_the_file(tmp_path):
    path = write(tmp_path, "prompts: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot parse") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_schema_command_prints_json_schema(capsys):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["additionalProperties"] is False
    assert "schedule" in schema["properties"]
