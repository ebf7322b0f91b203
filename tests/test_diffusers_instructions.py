"""The README's lines for diffusers' ``train_dreambooth_lora.py``, in a loop shaped like that script's: epochs
around steps, ``global_step += 1`` under ``sync_gradients``, ``save_state`` every ``checkpointing_steps``,
the ``max_train_steps`` break. An early stop must end training (not only the epoch), and the checkpoint of
the stopping step must be saved, holding that step's validation."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from sdcallbacks import ValidationCallback
from sdcallbacks.config import validate_config
from sdcallbacks.testing.modules import perturb_lora
from tests.helpers import Worsening, start

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture
def accelerator():
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    yield Accelerator(cpu=True)
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def test_the_readme_lines_stop_a_nested_epoch_loop_and_keep_the_stopping_checkpoint(
    tmp_path, tiny_modules, accelerator
):
    args = SimpleNamespace(
        num_train_epochs=10, max_train_steps=30, checkpointing_steps=2, output_dir=tmp_path
    )
    config = validate_config(
        {
            "output_dir": str(tmp_path / "validation"),
            "prompts": [{"name": "a", "prompt": "red square", "seeds": [1]}],
            "defaults": {"width": 32, "height": 32, "steps": 2, "guidance_scale": 1.0},
            "sampling": {"baseline": False},
            "schedule": {"every_n_steps": 2},
            "metrics": {},
            "monitor": "val/worsening/mean",
            "early_stopping": {"patience": 1},
        }
    )
    cb = ValidationCallback(config, accelerator=accelerator, metrics=[Worsening()])
    m = tiny_modules
    start(cb, m)
    train_dataloader, first_epoch, global_step, steps_run = range(3), 0, 0, 0

    # ---- shaped like diffusers' examples/dreambooth/train_dreambooth_lora.py, with the README's lines ----
    stop_training = False
    for epoch in range(first_epoch, args.num_train_epochs):  # noqa: B007 (the script's shape)
        for step, batch in enumerate(train_dataloader):  # noqa: B007
            perturb_lora(m, global_step + 1)  # the optimizer step
            steps_run += 1
            if accelerator.sync_gradients:
                global_step += 1
                stop_training = cb.on_step_end(global_step).should_stop
                if accelerator.is_main_process:  # noqa: SIM102
                    if global_step % args.checkpointing_steps == 0:
                        accelerator.save_state(str(args.output_dir / f"checkpoint-{global_step}"))
            if global_step >= args.max_train_steps or stop_training:
                break
        if stop_training:
            break
    cb.on_train_end(global_step)
    # -------------------------------------------------------------------------------------------------

    assert (global_step, steps_run, epoch) == (4, 4, 1)  # stopped at the second validation, in epoch 1
    assert cb.stopping_reason == "patience_exhausted"
    saved = args.output_dir / "checkpoint-4"
    assert saved.is_dir()
    (state_file,) = saved.glob("custom_checkpoint_*.pkl")
    state = torch.load(state_file, weights_only=True)  # plain Python values: the safe loader reads them
    assert state["schedule"]["last_step"] == 4  # the save came after this step's validation

    readme = README.read_text(encoding="utf-8")
    for line in (
        "stop_training = False",
        "stop_training = cb.on_step_end(global_step).should_stop",
        "if global_step >= args.max_train_steps or stop_training:",
        "if stop_training:",
    ):
        assert re.search(rf"^\s*{re.escape(line)}$", readme, re.MULTILINE), line


def readme_block(starting_with: str) -> str:
    """The README's python block whose first line starts with ``starting_with``."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    (block,) = [b for b in blocks if b.startswith(starting_with)]
    return block


@pytest.mark.parametrize("train_text_encoder", [False, True])
def test_the_readme_lines_for_the_flux_script_outlive_its_del_of_the_text_encoders(
    train_text_encoder, tmp_path, clip_tokenizer, t5_tokenizer, accelerator
):
    """``train_dreambooth_lora_flux.py`` encodes its instance prompt once and ``del``s the text encoders and
    tokenizers before ``accelerator.prepare``: the README's lines, taken right after ``add_adapter``, run as
    written against the script's variable names; without ``--train_text_encoder`` the callback loads the
    encoders from the base model the transformer came from (a pipeline folder here)."""
    from diffusers import FluxTransformer2DModel

    from sdcallbacks.testing.modules import tiny_flux_modules
    from tests.helpers import pipeline_of

    m = tiny_flux_modules(clip_tokenizer, t5_tokenizer, lora=False)
    pipeline_of(m).save_pretrained(tmp_path / "base")  # --pretrained_model_name_or_path
    transformer = FluxTransformer2DModel.from_pretrained(tmp_path / "base", subfolder="transformer")
    transformer.add_adapter(
        tiny_flux_modules(clip_tokenizer, t5_tokenizer).transformer.peft_config["default"]
    )
    script = {  # the script's names for its modules
        "args": SimpleNamespace(train_text_encoder=train_text_encoder),
        "transformer": transformer,
        "vae": m.vae,
        "text_encoder_one": m.text_encoder,
        "tokenizer_one": m.tokenizer,
        "text_encoder_two": m.text_encoder_2,
        "tokenizer_two": m.tokenizer_2,
        "noise_scheduler": m.noise_scheduler,
    }
    del m
    exec(readme_block("validation_modules = dict("), script)
    if not train_text_encoder:
        for name in ("text_encoder_one", "text_encoder_two", "tokenizer_one", "tokenizer_two"):
            del script[
                name
            ]  # the script's `del text_encoder_one, text_encoder_two, tokenizer_one, tokenizer_two`
    config = validate_config(
        {
            "output_dir": str(tmp_path / "validation"),
            "prompts": [{"name": "a", "prompt": "red square", "seeds": [1]}],
            "defaults": {"width": 32, "height": 32, "steps": 2, "guidance_scale": 3.5},
            "schedule": {"every_n_steps": 2},
            "metrics": {},
            "monitor": "val/worsening/mean",
            "early_stopping": {"patience": 1},
        }
    )
    script["cb"] = ValidationCallback(config, accelerator=accelerator, metrics=[Worsening()])
    script["global_step"] = 0
    exec(readme_block("cb.on_train_start(**validation_modules"), script)
    cb, global_step = script["cb"], 0
    stop_training = False
    for _epoch in range(10):
        for _step in range(3):
            with torch.no_grad():
                for name, param in script["transformer"].named_parameters():
                    if "lora_B" in name:
                        param.add_(0.01)
            if accelerator.sync_gradients:
                global_step += 1
                stop_training = cb.on_step_end(global_step).should_stop
            if global_step >= 30 or stop_training:
                break
        if stop_training:
            break
    cb.on_train_end(global_step)
    assert global_step == 4 and cb.stopping_reason == "patience_exhausted"
    loaded = () if train_text_encoder else ("text_encoder", "text_encoder_2")
    assert cb.validation.sampler.modules.loaded_encoders == loaded
    samples = sorted({p.parent.name for p in (tmp_path / "validation" / "samples").glob("*/*.png")})
    assert samples == ["step_0000000_base", "step_0000002", "step_0000004"]


def test_an_unset_output_dir_goes_under_the_accelerators_project_dir(tmp_path, tiny_modules, monkeypatch):
    """diffusers' scripts give the accelerator ``project_dir=args.output_dir``: validation outputs land in
    ``<output_dir>/validation`` whatever folder the run is started (or resumed) from; a set one wins."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    monkeypatch.chdir(tmp_path)  # a default relative to the working folder would land here
    data = {
        "prompts": [{"name": "a", "prompt": "red square", "seeds": [1]}],
        "defaults": {"width": 32, "height": 32, "steps": 1, "guidance_scale": 1.0},
        "schedule": {"every_n_steps": 2},
        "metrics": {},
    }
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    accelerator = Accelerator(cpu=True, project_dir=str(tmp_path / "run"))
    cb = ValidationCallback(validate_config(data), accelerator=accelerator, metrics=[Worsening()])
    start(cb, tiny_modules)
    assert (tmp_path / "run" / "validation" / "metrics.jsonl").is_file()
    assert not (tmp_path / "sdcallbacks_outputs").exists()
    chosen = validate_config({**data, "output_dir": str(tmp_path / "mine")})
    assert (
        ValidationCallback(chosen, accelerator=accelerator, register=False).config.output_dir
        == tmp_path / "mine"
    )
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
