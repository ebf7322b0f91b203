from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    "prompt",
    [
        "yellow square, white background",
        "masterpiece, best quality, 1girl, (red hair:1.2), skadi \\(arknights\\), ^_^",
        "A photo of a sks dog sitting on a bench in Paris, golden hour",
    ],
)
def test_clip_tokenizer_matches_open_clip(clip_tokenizer, prompt):
    import open_clip

    ours = clip_tokenizer(prompt).input_ids
    reference = [t for t in open_clip.get_tokenizer("ViT-L-14")([prompt])[0].tolist() if t != 0]
    assert ours == reference
    assert len(clip_tokenizer) == 49408


def test_long_prompts_truncate_to_77_keeping_eos(clip_tokenizer):
    ids = clip_tokenizer(", ".join(["red hair"] * 60), truncation=True, max_length=77).input_ids
    assert len(ids) == 77 and ids[-1] == 49407 and ids[0] == 49406


def test_tokenizer_folder_loads_with_from_pretrained(tmp_path):
    from transformers import CLIPTokenizer

    from sdcallbacks.testing.tokenizer import write_clip_tokenizer_files

    write_clip_tokenizer_files(tmp_path)
    tokenizer = CLIPTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert tokenizer.model_max_length == 77
    assert tokenizer("red square").input_ids == [49406, 736, 3999, 49407]
