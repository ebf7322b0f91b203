"""Gates, overfitting events and the Pareto front on scripted metric sequences with known answers (NaN and
missing keys included), resumed mid-way; located config errors; and a callback run that logs them."""

from __future__ import annotations

import math

import pytest

from sdcallbacks import ValidationCallback
from sdcallbacks.config import validate_config
from sdcallbacks.config.rules import ThresholdRule
from sdcallbacks.outputs import read_metrics
from sdcallbacks.selection.selection import Selection
from sdcallbacks.validation.result import ValidationResult, VariantResult
from tests.helpers import Scripted

NAN = math.nan


@pytest.mark.parametrize(
    ("text", "value", "baseline", "holds", "bound"),
    [
        ("identity/mean >= 0.5", 0.5, None, True, 0.5),
        ("identity/mean >= 0.5", 0.49, None, False, 0.5),
        ("val/identity/copy/mean <= 0.9", 0.95, None, False, 0.9),
        ("identity/mean > 0.5", 0.5, None, False, 0.5),
        ("diversity/mean >= 0.8 × baseline", 0.41, 0.5, True, 0.4),
        ("diversity/mean >= baseline * 0.8", 0.39, 0.5, False, 0.4),
        ("aesthetic_laion/mean >= baseline − 0.2", 5.0, 5.1, True, 4.9),
        ("aesthetic_laion/mean >= baseline - 0.2", 4.8, 5.1, False, 4.9),
        ("val_loss < baseline", 0.1, 0.2, True, 0.2),
        ("x/mean >= 1e-3", 0.002, None, True, 0.001),
        ("identity/mean >= 0.5", NAN, None, None, 0.5),  # a NaN cannot be told
        ("identity/mean >= 0.5", None, None, None, 0.5),  # nor a key not logged
        ("diversity/mean >= 0.8 * baseline", 0.9, None, None, None),  # nor a relative rule without baseline
        ("diversity/mean >= 0.8 * baseline", 0.9, NAN, None, None),
    ],
)
def test_threshold_rules_absolute_and_relative_to_the_baseline(text, value, baseline, holds, bound):
    rule = ThresholdRule.parse(text)
    assert rule.key.startswith("val/")
    assert rule.holds(value, baseline) is holds
    got = rule.bound(baseline)
    assert got == pytest.approx(bound) if bound is not None else got is None


@pytest.mark.parametrize(
    "text",
    ["identity/mean => 0.5", "identity/mean >= 0.5 * base", "identity/mean", ">= 0.5", "x >= baseline -"],
)
def test_a_malformed_rule_quotes_itself_and_the_grammar(text):
    with pytest.raises(ValueError, match=r"expected 'KEY OP BOUND'|is not a number, 'F \* baseline'") as err:
        ThresholdRule.parse(text)
    assert repr(text) in str(err.value)


def _config(tmp_path, **overrides):
    data = {
        "output_dir": str(tmp_path / "out"),
        "prompts": [
            {"name": "face", "prompt": "photo of sks person"},
            {"name": "cat", "prompt": "a cat on a sofa"},
            {"name": "city", "prompt": "a city at night"},
        ],
        "monitor": "val/identity/mean",
        "checkpoint": {"save_top_k": 1},
    }
    data.update(overrides)
    return validate_config(data)


def _result(step, values, baseline=False):
    return ValidationResult(
        step, baseline, [VariantResult("model", "base" if baseline else "model", [], [], [], {}, values)]
    )


def _run(selection, rows, start=0):
    """Feed (step, values) rows; each row's Decision."""
    return [selection.decide(_result(step, values), f"weights at {step}") for step, values in rows[start:]]


BASE = {"val/identity/mean": 0.2, "val/diversity/mean": 0.5, "val/identity/copy/mean": 0.3}
ROWS = [
    (100, {"val/identity/mean": 0.5, "val/diversity/mean": 0.48, "val/identity/copy/mean": 0.5}),
    (200, {"val/identity/mean": 0.7, "val/diversity/mean": 0.45, "val/identity/copy/mean": 0.7}),
    (300, {"val/identity/mean": 0.9, "val/diversity/mean": 0.30, "val/identity/copy/mean": 0.95}),  # copies
    (400, {"val/identity/mean": NAN, "val/diversity/mean": 0.45, "val/identity/copy/mean": 0.6}),
    (500, {"val/diversity/mean": 0.45, "val/identity/copy/mean": 0.6, "val/identity/mean": 0.6}),
    (600, {"val/identity/mean": 0.95, "val/identity/copy/mean": 0.5}),  # diversity not logged
]
GATES = ["identity/copy/mean <= 0.9", "diversity/mean >= 0.8 * baseline"]


def test_gates_keep_an_ineligible_validation_from_best_and_say_which_gate_failed(tmp_path, fake_save):
    selection = Selection(_config(tmp_path, gates=GATES))
    assert selection.decide(_result(0, BASE, baseline=True), "base").scalars == {}
    decisions = _run(selection, ROWS)
    assert [d.scalars["val/gates/eligible"] for d in decisions] == [1, 1, 0, 1, 1, 0]
    assert decisions[2].ineligible == (
        "val/identity/copy/mean = 0.95, needs <= 0.9",
        "val/diversity/mean = 0.3, needs >= 0.4",
    )
    assert decisions[5].ineligible == ("val/diversity/mean not logged, needs >= 0.4",)
    # 0.9 (step 300) and 0.95 (step 600) are ineligible, NaN (400) is never best: 0.7 at step 200 is.
    assert selection.best_step == 200 and selection.best_model_score == 0.7
    assert [d.new_best for d in decisions] == [True, True, False, False, False, False]
    assert sorted(p.name for p in (tmp_path / "out" / "checkpoints").iterdir()) == ["step_0000200"]


def test_a_relative_gate_before_any_baseline_fails(tmp_path, fake_save):
    selection = Selection(_config(tmp_path, gates=GATES))
    (decision,) = _run(selection, ROWS[:1])
    assert decision.ineligible == ("val/diversity/mean = 0.48, needs >= 0.8 * baseline (no baseline)",)
    assert selection.best_step is None


@pytest.mark.parametrize(("check_ineligible", "stops"), [(True, [300]), (False, [])])
def test_ineligible_validations_count_for_early_stopping_or_not(tmp_path, fake_save, check_ineligible, stops):
    """patience 2; 200 fails the gate with a worse score: checked, it counts against patience and 300
    (no better than 100 either) stops the run; skipped, 300 is only the first validation without progress."""
    es = {"patience": 2, "check_ineligible": check_ineligible}
    selection = Selection(_config(tmp_path, gates=["identity/copy/mean <= 0.9"], early_stopping=es))
    rows = [
        (100, {"val/identity/mean": 0.5, "val/identity/copy/mean": 0.5}),
        (200, {"val/identity/mean": 0.3, "val/identity/copy/mean": 0.95}),
        (300, {"val/identity/mean": 0.4, "val/identity/copy/mean": 0.6}),
    ]
    decisions = _run(selection, rows)
    assert [step for (step, _), d in zip(rows, decisions) if d.stop] == stops
    assert selection.early_stopping.wait_count == (2 if check_ineligible else 1)
    assert selection.best_step == 100


EVENTS = {
    "memorisation": {"when": "identity/copy/mean > 0.9"},
    "collapse": {"when": "diversity/mean < 0.8 * baseline"},
    "frying": {"when": "clip_score/mean < baseline - 0.02", "prompts_without": "sks"},
    "loss_upturn": {"upturn": "val_loss", "window": 2, "min_delta": 0.01},
}


def _event_row(copy, diversity, loss, face, cat, city):
    return {
        "val/identity/copy/mean": copy,
        "val/diversity/mean": diversity,
        "val/val_loss": loss,
        "val/clip_score/prompt/face": face,
        "val/clip_score/prompt/cat": cat,
        "val/clip_score/prompt/city": city,
    }


EVENT_ROWS = [
    (100, _event_row(0.5, 0.5, 0.30, 0.30, 0.30, 0.30)),
    (200, _event_row(0.6, 0.45, 0.20, 0.20, 0.30, 0.29)),
    (300, _event_row(0.95, NAN, 0.22, 0.35, 0.29, 0.28)),
    (400, _event_row(0.8, 0.35, 0.26, 0.35, 0.25, 0.26)),
]
EVENT_BASE = {"val/diversity/mean": 0.5, "val/clip_score/prompt/face": 0.2, "val/clip_score/prompt/cat": 0.3,
              "val/clip_score/prompt/city": 0.3}  # fmt: skip


def _event_selection(tmp_path, **overrides):
    settings = {"monitor": None, "checkpoint": {"enabled": False}, "events": EVENTS, **overrides}
    selection = Selection(_config(tmp_path, **settings))
    selection.decide(_result(0, EVENT_BASE, baseline=True), "base")
    return selection


def test_events_fire_once_at_their_known_steps(tmp_path):
    """memorisation at 300 (0.95 > 0.9); collapse at 400 (0.35 < 0.4; NaN at 300 cannot be told); frying
    at 400: the face prompt has the trigger word and is left out, cat and city (baseline 0.3, bound 0.28)
    average 0.285 at 300 and 0.255 at 400; the val_loss moving means over 2 (0.25, 0.21, 0.24) are
    0.03 above their lowest at 400."""
    selection = _event_selection(tmp_path)
    decisions = _run(selection, EVENT_ROWS)
    fired = {e.name: e.step for d in decisions for e in d.fired}
    assert fired == {"memorisation": 300, "collapse": 400, "frying": 400, "loss_upturn": 400}
    assert [d.scalars["val/events/memorisation"] for d in decisions] == [0, 0, 1, 0]
    assert [d.scalars["val/events/frying"] for d in decisions] == [0, 0, 0, 1]
    assert selection.summary()["events/memorisation/step"] == 300
    (frying,) = [e for d in decisions for e in d.fired if e.name == "frying"]
    assert frying.description == "val/clip_score/mean = 0.255, needs < 0.28"


def test_an_event_in_on_events_stops_training(tmp_path):
    es = {"patience": 100, "on_events": ["memorisation"]}
    selection = _event_selection(tmp_path, monitor="val/val_loss", mode="min", early_stopping=es)
    decisions = _run(selection, EVENT_ROWS)
    assert [d.stop for d in decisions] == [False, False, True, False]  # the loop stops at the first
    assert decisions[2].stopping_reason == "event"
    assert "event 'memorisation' fired: val/identity/copy/mean = 0.95, needs > 0.9" in (
        selection.early_stopping.stopping_message
    )


PARETO_ROWS = [
    (1, {"val/a": 0.1, "val/b": 0.9}),
    (2, {"val/a": 0.5, "val/b": 0.5}),
    (3, {"val/a": 0.4, "val/b": 0.4}),  # dominated by 2
    (4, {"val/a": 0.6, "val/b": 0.6}),  # dominates 2
    (5, {"val/a": NAN, "val/b": 1.0}),  # never joins
    (6, {"val/b": 1.0}),  # a missing key: never joins
    (7, {"val/a": 0.6, "val/b": 0.6}),  # a tie with 4: both stay
    (8, {"val/a": 0.05, "val/b": 0.95}),  # dominates 1 on b, not a: joins, 1 stays
]


def test_the_pareto_front_over_two_keys_keeps_its_members_weights(tmp_path, fake_save):
    config = _config(tmp_path, monitor=None, pareto={"keys": {"a": "max", "b": "max"}})
    selection = Selection(config)
    decisions = _run(selection, PARETO_ROWS)
    assert sorted(selection.pareto.members) == [1, 4, 7, 8]
    assert [d.scalars["val/pareto/on_front"] for d in decisions] == [1, 1, 0, 1, 0, 0, 1, 1]
    assert [d.scalars["val/pareto/size"] for d in decisions] == [1, 2, 2, 2, 2, 2, 3, 4]
    kept = sorted(p.name for p in (tmp_path / "out" / "checkpoints" / "pareto").iterdir())
    assert kept == ["step_0000001", "step_0000004", "step_0000007", "step_0000008"]
    assert selection.summary()["pareto/front"] == [1, 4, 7, 8]


def test_a_min_key_and_a_gate_on_the_front(tmp_path, fake_save):
    config = _config(tmp_path, monitor=None, gates=["b < 0.9"], pareto={"keys": {"a": "max", "b": "min"}})
    selection = Selection(config)
    _run(selection, PARETO_ROWS)
    # 1 and 8 fail the gate; among the rest, a up / b down: 2 (0.5, 0.5) and 3 (0.4, 0.4) trade off,
    # 4 and 7 (0.6, 0.6) trade off with both.
    assert sorted(selection.pareto.members) == [2, 3, 4, 7]


def test_resume_keeps_the_baseline_gates_events_and_the_front(tmp_path, fake_save):
    overrides = {
        "monitor": "val/identity/mean",
        "gates": GATES,
        "events": {"memorisation": EVENTS["memorisation"], "collapse": EVENTS["collapse"],
                   "upturn": {"upturn": "identity/copy/mean", "window": 2, "mode": "max"}},
        "pareto": {"keys": {"identity/mean": "max", "diversity/mean": "max"}},
        "early_stopping": {"patience": 3, "check_finite": False},
    }  # fmt: skip
    whole = Selection(_config(tmp_path / "whole", **overrides))
    whole.decide(_result(0, BASE, baseline=True), "base")
    expected = _run(whole, ROWS)

    first = Selection(_config(tmp_path / "resumed", **overrides))
    first.decide(_result(0, BASE, baseline=True), "base")
    head = _run(first, ROWS[:3])
    state = first.state_dict()
    resumed = Selection(_config(tmp_path / "resumed", **overrides))  # a new process: no baseline seen
    resumed.load_state_dict(state)
    tail = _run(resumed, ROWS, start=3)
    assert [(d.ineligible, d.fired, d.scalars, d.stop) for d in head + tail] == [
        (d.ineligible, d.fired, d.scalars, d.stop) for d in expected
    ]
    assert resumed.summary() == {k: v.replace("/whole/", "/resumed/") if isinstance(v, str) else v
                                 for k, v in whole.summary().items()}  # fmt: skip


def test_a_callback_run_logs_gates_events_and_the_front_to_its_files(tmp_path, tiny_modules):
    """The scripted score 0.5, 0.9 at steps 2, 4 (0.3 for the baseline) with the gate 'scripted/mean <=
    0.8': step 4 is ineligible, so step 2 stays best; the event 'high' fires at step 4 and stops the run."""
    from tests.helpers import start

    config = {
        "output_dir": str(tmp_path / "out"),
        "prompts": [{"name": "red", "prompt": "red square", "seeds": [1]}],
        "defaults": {"width": 32, "height": 32, "steps": 2, "guidance_scale": 2.0},
        "schedule": {"every_n_steps": 2},
        "monitor": "val/scripted/mean",
        "gates": ["scripted/mean <= 0.8"],
        "events": {"high": {"when": "scripted/mean > 0.8"}},
        "early_stopping": {"patience": 5, "on_events": ["high"]},
    }
    cb = ValidationCallback.from_config(config, metrics=[Scripted([0.3, 0.5, 0.9, 0.6])])
    start(cb, tiny_modules)
    for step in range(1, 9):
        if cb.on_step_end(step).should_stop:
            break
    assert step == 4
    records = read_metrics(tmp_path / "out" / "metrics.jsonl")
    decisions = {r["step"]: r["values"] for r in records if r["type"] == "decision"}
    assert decisions == {
        2: {"val/gates/eligible": 1.0, "val/events/high": 0.0},
        4: {"val/gates/eligible": 0.0, "val/events/high": 1.0},
    }
    events = [r for r in records if r["type"] == "event"]
    assert [(e["step"], e["event"]) for e in events if e["event"] != "selection"] == [
        (4, "ineligible"),
        (4, "overfitting"),
    ]
    assert events[-1]["best/step"] == 2 and events[-1]["events/high/step"] == 4
    assert events[-1]["early_stop/reason"] == "event"

    from sdcallbacks.report import write_report

    page = write_report(tmp_path / "out").html.read_text(encoding="utf-8")
    assert "event <b>high</b> at step 4: val/scripted/mean = 0.9, needs &gt; 0.8" in page
    assert "step 4 not eligible for best: val/scripted/mean = 0.9, needs &lt;= 0.8" in page
    assert "best step: <b>2</b> (val/scripted/mean = 0.5)" in page
