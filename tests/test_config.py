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


# What check-config must catch before a run is wasted: each is a located error, from the loader and from
# the CLI (exit code 2).
@pytest.mark.parametrize(
    ("text", "located"),
    [
        (GOOD + "defaults: {width: 500}\n", "defaults.width: Input should be a multiple of 8 (got 500)"),
        (
            GOOD.replace("prompt: red", "height: 36\n    prompt: red"),
            "prompts.0.height: Input should be a multiple of 8",
        ),
        (GOOD + f"seed: {2**63}\n", "seed: Input should be less than or equal to 9223372036854775807"),
        (GOOD.replace("prompt: red", f"seeds: [{2**64}]\n    prompt: red"), "prompts.0.seeds.0"),
        (GOOD + "defaults: {guidance_scale: .inf}\n", "defaults.guidance_scale: Input should be a finite"),
        (GOOD + "defaults: {guidance_scale: .nan}\n", "defaults.guidance_scale: Input should be a finite"),
        (
            GOOD + "monitor: val/x\nearly_stopping: {min_delta: .inf}\n",
            "early_stopping.min_delta: Input should be a finite number",
        ),
        (
            GOOD + "monitor: val/x\nearly_stopping: {stopping_threshold: .nan}\n",
            "early_stopping.stopping_threshold: Input should be a finite number",
        ),
        (
            GOOD.replace("every_n_steps: 10", "every_n_steps: yes"),
            "schedule.every_n_steps: Value error, expected a number, got a boolean",
        ),
        (GOOD + "score: {tag_accuracy: on}\n", "score: Value error, expected a number, got a boolean"),
        (
            GOOD + "output_dir: other\n",
            "duplicate key 'output_dir': first on line 2, again on line 8",
        ),
    ],
)
def test_configs_that_would_waste_a_run_are_located_errors(tmp_path, capsys, text, located):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and located in str(info.value)
    assert main(["check-config", str(path)]) == 2
    assert located in capsys.readouterr().err


def test_numbers_as_strings_and_int64_seeds_stay_accepted(tmp_path):
    config = load_config(write(tmp_path, GOOD + f"seed: {2**63 - 1 - 20000}\ndefaults: {{width: '64'}}\n"))
    assert config.seed == 2**63 - 1 - 20000 and config.defaults.width == 64


def test_derived_seeds_past_int64_are_located(tmp_path):
    # seed + 10000 * prompt_index + image_index: the second prompt's seeds overflow
    text = GOOD.replace("schedule:", "  - prompt: blue square\nschedule:") + f"seed: {2**63 - 1 - 5000}\n"
    path = write(tmp_path, text)
    assert main(["check-config", str(path)]) == 2
    from sdcallbacks.prompts import load_prompts

    with pytest.raises(ConfigError, match=r"prompts\.1: seeds .* leave the range torch generators accept"):
        load_prompts(load_config(path))


def test_duplicate_keys_in_json_and_prompt_files_are_errors(tmp_path):
    path = write(tmp_path, '{"prompts": [{"prompt": "x"}], "seed": 1, "seed": 2}', "c.json")
    with pytest.raises(ConfigError, match="duplicate key 'seed'"):
        load_config(path)
    (tmp_path / "p.yaml").write_text("- prompt: a\n  steps: 5\n  steps: 6\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="duplicate key 'steps': first on line 2, again on line 3"):
        from sdcallbacks.prompts import load_prompts

        load_prompts(load_config(write(tmp_path, GOOD + "prompt_files: [p.yaml]\n")))


def test_yaml_merge_keys_may_be_overridden(tmp_path):
    data = "defaults:\n  <<: {width: 64, height: 64}\n  width: 128\n"
    config = load_config(write(tmp_path, GOOD + data))
    assert (config.defaults.width, config.defaults.height) == (128, 64)


@pytest.mark.parametrize("name", ["run.yaml", "prompts.txt"])
def test_latin1_files_are_located_errors_naming_the_byte(tmp_path, capsys, name):
    latin1 = "prompts:\n  - prompt: café crème\nschedule: {every_n_steps: 1}\n".encode("latin-1")
    if name == "prompts.txt":
        (tmp_path / name).write_bytes("1girl, café --d 3\n".encode("latin-1"))
        latin1 = b"prompt_files: [prompts.txt]\nschedule: {every_n_steps: 1}\n"
        path = tmp_path / "run.yaml"
        path.write_bytes(latin1)
    else:
        path = tmp_path / name
        path.write_bytes(latin1)
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / name) in err
    line = 1 if name == "prompts.txt" else 2
    assert "not UTF-8 text: byte 0xe9 at offset" in err and f"(line {line})" in err
    assert "Traceback" not in err


def test_utf8_with_bom_is_read(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_bytes(("\ufeff" + GOOD).encode("utf-8"))
    assert load_config(path).schedule.every_n_steps == 10


def test_kohya_line_with_a_bad_size_names_the_line(tmp_path, capsys):
    (tmp_path / "p.txt").write_text("# header\nred square --w 500 --h 512\n", encoding="utf-8")
    path = write(tmp_path, GOOD + "prompt_files: [p.txt]\n")
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "p.txt" in err and "line 2: width: Input should be a multiple of 8 (got 500)" in err


def test_every_path_of_the_metrics_is_checked_before_training(tmp_path, tagger_dir, capsys):
    from sdcallbacks import ValidationCallback

    (tmp_path / "empty").mkdir()
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "a.png").write_bytes(b"not a png")
    (tmp_path / "no_onnx").mkdir()
    metrics = """
metrics:
  clip_i: {references: missing_folder}
  kid: {references: empty}
  style_loss: {references: corrupt, weights: /nonexistent/vgg19.pth}
  tag_accuracy: {model: no_onnx}
  diversity_clip: {clip: {model: "local-dir:/nonexistent/clip", pretrained: null}}
  val_loss: {data: missing_folder}
"""
    path = write(tmp_path, GOOD + metrics)
    expected = [
        f"metrics.clip_i.references: reference images: {tmp_path / 'missing_folder'} is not a folder",
        f"metrics.kid.references: reference images: {tmp_path / 'empty'} holds no images",
        f"metrics.style_loss.references: reference images: none of the 1 images in {tmp_path / 'corrupt'}",
        "metrics.style_loss.weights: /nonexistent/vgg19.pth is not a file",
        f"metrics.tag_accuracy.model: the folder {tmp_path / 'no_onnx'} has no model.onnx",  # config-relative
        "metrics.diversity_clip.clip: /nonexistent/clip has no open_clip_config.json",
        f"metrics.val_loss.data: held-out images: {tmp_path / 'missing_folder'} is not a folder",
    ]
    with pytest.raises(ConfigError) as info:  # the callback checks at from_config, before training
        ValidationCallback.from_config(path)
    for line in expected:
        assert line in str(info.value)
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    for line in expected:
        assert line in err


def test_a_usable_reference_folder_and_local_models_pass(tmp_path, tagger_dir, astronaut, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # offline, hub files must be cached (test_preference)
    monkeypatch.delenv("SDCALLBACKS_OFFLINE", raising=False)
    (tmp_path / "refs" / "nested").mkdir(parents=True)
    (tmp_path / "refs" / "broken.png").write_bytes(b"not a png")  # one readable image is enough
    astronaut.save(tmp_path / "refs" / "nested" / "face.jpg")
    metrics = f"""
metrics:
  clip_i: {{references: refs}}
  tag_accuracy: {{model: {tagger_dir}}}
  aesthetic_laion: {{}}
"""
    path = write(tmp_path, GOOD + metrics)
    assert main(["check-config", str(path)]) == 0  # online, the hub ids (aesthetic_laion) are not looked up


def test_identity_references_need_a_face_and_the_check_leaves_training_randoms_alone(tmp_path, astronaut):
    import torch
    from PIL import Image

    (tmp_path / "walls").mkdir()
    for i in range(6):
        Image.new("RGB", (96, 96), (40 * i, 90, 160)).save(tmp_path / "walls" / f"{i}.png")
    (tmp_path / "faces").mkdir()
    astronaut.save(tmp_path / "faces" / "astronaut.png")
    no_face = write(tmp_path, GOOD + "metrics:\n  identity: {references: walls}\n", "walls.yaml")
    with pytest.raises(
        ConfigError, match=r"metrics\.identity\.references: .*MTCNN found no face in the first 4"
    ):
        from sdcallbacks.selection.checks import check_config

        check_config(load_config(no_face), [])
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    check_config(load_config(write(tmp_path, GOOD + "metrics:\n  identity: {references: faces}\n")), [])
    assert torch.equal(torch.rand(3), expected)  # building MTCNN drew its init from isolated streams
