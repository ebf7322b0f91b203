from __future__ import annotations

import pytest

from sdcallbacks.config import ConfigError, PromptDefaults, PromptEntry, RunConfig, ScheduleConfig
from sdcallbacks.prompts import (
    expand_jobs,
    load_prompts,
    parse_kohya_line,
    read_kohya_file,
    resolve_prompts,
    sanitize_name,
    unique_names,
)
from sdcallbacks.prompts.library import SEED_STRIDE


def test_kohya_line_grammar():
    entry = parse_kohya_line(
        "masterpiece, 1girl, red hair --n lowres, bad hands --w 512 --h 768 --d 42 --s 28 --l 7.5"
        " --ss euler_a",
        "p.txt:1",
    )
    assert entry == {
        "prompt": "masterpiece, 1girl, red hair",
        "negative_prompt": "lowres, bad hands",
        "width": 512,
        "height": 768,
        "seeds": [42],
        "steps": 28,
        "guidance_scale": 7.5,
    }
    assert parse_kohya_line("   # a comment", "p.txt:2") is None
    assert parse_kohya_line("", "p.txt:3") is None


def test_every_current_sd_scripts_option_and_what_cannot_be_honoured_warns_with_file_and_line(
    tmp_path, caplog
):
    """The options sd-scripts' ``line_to_prompt_dict`` reads today (case-insensitive): honoured ones map to
    the entry; ``--ss --cn --i --ctr --rcfg --fs --am`` and unknown ones are warnings naming file and line."""
    path = tmp_path / "sample_prompts.txt"
    path.write_text(
        "# kohya prompts\n"
        "1girl, flux --W 1024 --H 768 --D 7 --S 2000 --G 3.5 --L 1.0 --ss euler_a --cn c.png --i i.png"
        " --ctr 0.25 --rcfg 1.0 --fs 3.1 --am 0.5,1 --zz 1\n",
        encoding="utf-8",
    )
    with caplog.at_level("WARNING", logger="sdcallbacks"):
        [entry] = read_kohya_file(path)
    assert entry == {
        "prompt": "1girl, flux",
        "width": 1024,
        "height": 768,
        "seeds": [7],
        "steps": 1000,  # clamped as sd-scripts clamps --s
        "guidance_scale": 3.5,  # --g (Flux's guidance) wins over --l
    }
    warned = [r.getMessage() for r in caplog.records]
    assert all(f"{path}:2" in m for m in warned)
    for what in (
        "sample_sampler",
        "controlnet_image",
        ": image (",
        "cfg_trunc_ratio",
        "renorm_cfg",
        "flow_shift",
        "additional_network_multiplier",
        "--zz",
        "scale/--l next to guidance_scale/--g",
    ):
        assert sum(what in m for m in warned) == 1, what


def test_kohya_json_and_toml_prompt_files_as_sd_scripts_reads_them(tmp_path, caplog):
    import json

    js = tmp_path / "prompts.json"
    js.write_text(
        json.dumps(
            [
                "a red square --n blurry --d 5",
                {
                    "prompt": "a blue square",
                    "sample_steps": 12,
                    "scale": 6.5,
                    "seed": 9,
                    "width": 64,
                    "height": 32,
                    "sample_sampler": "k_euler",
                },
            ]
        ),
        encoding="utf-8",
    )
    toml = tmp_path / "prompts.toml"
    toml.write_text(
        '[prompt]\nnegative_prompt = "lowres"\nsample_steps = 8\nwidth = 64\nheight = 64\nscale = 5.0\n\n'
        '[[prompt.subset]]\nprompt = "green circle"\nseed = 1\n\n'
        '[[prompt.subset]]\nprompt = "yellow circle"\nseed = 2\nwidth = 32\n',
        encoding="utf-8",
    )
    config = RunConfig(
        prompt_files=[js, toml], defaults=PromptDefaults(width=48, height=48, steps=4, guidance_scale=2.0)
    )
    with caplog.at_level("WARNING", logger="sdcallbacks"):
        specs = load_prompts(config)
    got = [
        (s.prompt, s.negative_prompt, s.seeds, s.width, s.height, s.steps, s.guidance_scale) for s in specs
    ]
    assert got == [
        ("a red square", "blurry", (5,), 48, 48, 4, 2.0),
        ("a blue square", "", (9,), 64, 32, 12, 6.5),
        ("green circle", "lowres", (1,), 64, 64, 8, 5.0),
        ("yellow circle", "lowres", (2,), 32, 64, 8, 5.0),
    ]
    assert [m for m in caplog.messages if "sample_sampler" in m] == [
        f"sdcallbacks: {js}: [1]: sample_sampler (the sampler is the config's sampling.scheduler, one for "
        "every prompt); ignored"
    ]


def test_ai_toolkit_job_config_sample_block(tmp_path, caplog):
    config_file = tmp_path / "my_lora.yaml"
    config_file.write_text(
        "job: extension\nconfig:\n  name: my_lora\n  process:\n    - type: sd_trainer\n"
        "      trigger_word: p3r5on\n      sample:\n        sampler: flowmatch\n        width: 64\n"
        '        prompts:\n          - "[trigger] holding a sign"\n          - "a forest"\n'
        '        neg: "blurry"\n        seed: 42\n        walk_seed: true\n        guidance_scale: 4\n'
        "        sample_steps: 6\n",
        encoding="utf-8",
    )
    with caplog.at_level("WARNING", logger="sdcallbacks"):
        specs = load_prompts(RunConfig(prompt_files=[config_file]))
    got = [
        (s.prompt, s.negative_prompt, s.seeds, s.width, s.height, s.steps, s.guidance_scale) for s in specs
    ]
    assert got == [
        ("p3r5on holding a sign", "blurry", (42,), 64, 512, 6, 4.0),
        ("a forest", "blurry", (43,), 64, 512, 6, 4.0),  # walk_seed: seed + prompt index
    ]
    assert any("config.process.0.sample.sampler" in m and str(config_file) in m for m in caplog.messages)


def test_onetrainer_sample_definitions(tmp_path, caplog):
    import json

    path = tmp_path / "samples.json"
    sample = {
        "enabled": True,
        "prompt": "a photo of sks dog",
        "negative_prompt": "blurry",
        "height": 64,
        "width": 32,
        "frames": 1,
        "length": 10.0,
        "seed": 42,
        "random_seed": False,
        "diffusion_steps": 9,
        "cfg_scale": 5.5,
        "noise_scheduler": "DDIM",
        "text_encoder_1_layer_skip": 0,
        "sample_inpainting": False,
    }
    samples = [
        sample,
        {**sample, "enabled": False, "prompt": "left out"},
        {**sample, "prompt": "random", "random_seed": True, "text_encoder_1_layer_skip": 2},
    ]
    path.write_text(json.dumps(samples), encoding="utf-8")
    with caplog.at_level("WARNING", logger="sdcallbacks"):
        specs = load_prompts(RunConfig(prompt_files=[path], seed=100))
    got = [
        (s.prompt, s.negative_prompt, s.seeds, s.width, s.height, s.steps, s.guidance_scale) for s in specs
    ]
    assert got == [
        ("a photo of sks dog", "blurry", (42,), 32, 64, 9, 5.5),  # its seed: one image, as OneTrainer draws
        ("random", "blurry", tuple(100 + SEED_STRIDE + k for k in range(4)), 32, 64, 9, 5.5),  # derived
    ]
    messages = caplog.messages
    assert sum("noise_scheduler DDIM" in m for m in messages) == 1
    assert any("[2]: random_seed" in m for m in messages)
    assert any("[2]: text_encoder_1_layer_skip = 2" in m for m in messages)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("a cat --w wide", "--w expects an integer"),
        ("a cat --l high", "--l expects a number"),
        ("--w 512", "expected the prompt text first"),
    ],
)
def test_kohya_bad_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "prompts.txt"
    path.write_text(f"# header\nfine prompt\n{line}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        read_kohya_file(path)
    assert f"{path}:3" in str(info.value)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "raw",
    [
        "../../etc/passwd",
        "/abs/path",
        "..",
        ".hidden",
        "a/b\\c",
        "C:\\x",
        "\x00nul",
        "名前",
        "a" * 300,
        "   ",
    ],
)
def test_sanitized_names_cannot_leave_the_folder(tmp_path, raw):
    name = sanitize_name(raw, fallback="prompt_000")
    assert name and len(name) <= 64
    assert "/" not in name and "\\" not in name and ".." not in name and not name.startswith(".")
    assert (tmp_path / name).resolve().parent == tmp_path.resolve()


def test_unique_names_suffix_duplicates():
    assert unique_names(["a", "a", "b", "a", "a_2"]) == ["a", "a_3", "b", "a_4", "a_2"]


def test_seeds_are_derived_per_prompt_and_image_or_pinned():
    defaults = PromptDefaults(num_images=3)
    specs = resolve_prompts(
        [
            PromptEntry(prompt="x"),
            PromptEntry(prompt="y", seeds=[7, 9]),
            PromptEntry(prompt="z", seeds=[5], num_images=3),
        ],
        defaults,
        base_seed=100,
    )
    assert specs[0].seeds == (100, 101, 102)
    assert specs[1].seeds == (7, 9)
    assert specs[2].seeds == (5, 6, 7)
    jobs = expand_jobs(specs)
    assert [j.key for j in jobs][:4] == [(0, 0), (0, 1), (0, 2), (1, 0)]
    assert len({(j.prompt.index, j.seed) for j in jobs}) == len(jobs)


def test_derived_seeds_never_collide_up_to_the_per_prompt_limit():
    """Derived seeds are base + SEED_STRIDE * prompt + image: the most images a prompt may ask for still
    gives every image of every prompt its own seed; one more is a located config error."""
    most = PromptDefaults(num_images=SEED_STRIDE - 1)
    specs = resolve_prompts([PromptEntry(prompt="x"), PromptEntry(prompt="y")], most, base_seed=3)
    seeds = [seed for spec in specs for seed in spec.seeds]
    assert len(seeds) == 2 * (SEED_STRIDE - 1) and len(set(seeds)) == len(seeds)
    with pytest.raises(ConfigError, match=r"prompts\.1\.num_images: at most 9999 images per prompt"):
        resolve_prompts(
            [PromptEntry(prompt="x"), PromptEntry(prompt="y", num_images=SEED_STRIDE)], most, base_seed=3
        )


def test_prompt_files_yaml_and_txt_merge_after_inline_prompts(tmp_path):
    (tmp_path / "a.yaml").write_text(
        "- prompt: from yaml\n  name: y\n  steps: 5\n- just a string\n", encoding="utf-8"
    )
    (tmp_path / "b.txt").write_text("from txt --d 3\n", encoding="utf-8")
    config = RunConfig(
        prompts=[PromptEntry(prompt="inline")],
        prompt_files=[tmp_path / "a.yaml", tmp_path / "b.txt"],
        schedule=ScheduleConfig(every_n_steps=1),
    )
    specs = load_prompts(config)
    assert [s.prompt for s in specs] == ["inline", "from yaml", "just a string", "from txt"]
    assert specs[1].name == "y" and specs[1].steps == 5
    assert specs[3].seeds[0] == 3


def test_bad_entry_in_prompt_file_is_located(tmp_path):
    (tmp_path / "a.yaml").write_text("- prompt: ok\n- prompt: bad\n  steps: -1\n", encoding="utf-8")
    config = RunConfig(prompt_files=[tmp_path / "a.yaml"], schedule=ScheduleConfig(every_n_steps=1))
    with pytest.raises(ConfigError, match=r"prompts\.1\.steps"):
        load_prompts(config)


def test_empty_prompt_file_is_an_error(tmp_path):
    (tmp_path / "e.txt").write_text("# only comments\n", encoding="utf-8")
    config = RunConfig(prompt_files=[tmp_path / "e.txt"], schedule=ScheduleConfig(every_n_steps=1))
    with pytest.raises(ConfigError, match="holds no prompts"):
        load_prompts(config)
