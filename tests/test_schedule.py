from __future__ import annotations

import pytest

from sdcallbacks.config import ScheduleConfig
from sdcallbacks.sampling import ValidationSchedule


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def due_steps(schedule, steps):
    out = []
    for step in steps:
        if schedule.is_due(step):
            schedule.mark_done(step)
            out.append(step)
    return out


def test_every_n_steps_from_zero():
    schedule = ValidationSchedule(ScheduleConfig(every_n_steps=10))
    schedule.start(0)
    assert due_steps(schedule, range(1, 35)) == [10, 20, 30]


def test_start_step_and_resume_step_are_not_validated_twice():
    schedule = ValidationSchedule(ScheduleConfig(every_n_steps=10, start_step=25))
    schedule.start(0)
    assert due_steps(schedule, range(1, 45)) == [30, 40]
    resumed = ValidationSchedule(ScheduleConfig(every_n_steps=10))
    resumed.start(40)  # resuming at an already validated step
    assert due_steps(resumed, range(40, 61)) == [50, 60]


def test_state_dict_round_trip_keeps_last_validated_step():
    schedule = ValidationSchedule(ScheduleConfig(every_n_steps=10))
    schedule.start(0)
    due_steps(schedule, range(1, 21))
    restored = ValidationSchedule(ScheduleConfig(every_n_steps=10))
    restored.load_state_dict(schedule.state_dict())
    restored.start(18)  # resuming from an earlier checkpoint never forgets a later validation
    assert restored.last_step == 20
    assert not restored.is_due(20)
    assert due_steps(restored, range(19, 31)) == [30]


def test_irregular_calls_still_fire_once_per_interval():
    schedule = ValidationSchedule(ScheduleConfig(every_n_steps=10))
    schedule.start(0)
    assert due_steps(schedule, [3, 9, 12, 13, 27, 29, 31]) == [12, 27, 31]


def test_fractional_epochs():
    schedule = ValidationSchedule(ScheduleConfig(every_n_epochs=0.5))
    schedule.start(0, steps_per_epoch=7)
    assert due_steps(schedule, range(1, 15)) == [4, 7, 11, 14]
    with pytest.raises(ValueError, match="steps_per_epoch"):
        ValidationSchedule(ScheduleConfig(every_n_epochs=1)).start(0)


def test_every_n_minutes_uses_the_clock():
    clock = FakeClock()
    schedule = ValidationSchedule(ScheduleConfig(every_n_minutes=1.0), clock=clock)
    schedule.start(0)
    assert not schedule.is_due(1)
    clock.now = 61.0
    assert schedule.is_due(2)
    schedule.mark_done(2)
    clock.now = 100.0
    assert not schedule.is_due(3)


def test_final_step_validated_once():
    schedule = ValidationSchedule(ScheduleConfig(every_n_steps=10))
    schedule.start(0)
    due_steps(schedule, range(1, 21))
    assert not schedule.is_due_at_end(20)  # already validated at the final step
    assert schedule.is_due_at_end(25)
    off = ValidationSchedule(ScheduleConfig(every_n_steps=10, validate_at_end=False))
    off.start(0)
    assert not off.is_due_at_end(25)
