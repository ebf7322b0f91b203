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


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("a cat --w wide", "--w expects an integer"),
        ("a cat --l high", "--l expects a number"),
        ("a cat --zz 3", "unknown option --zz"),
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
