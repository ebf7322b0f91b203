"""The base every config model shares, and the value types that need more than pydantic's defaults.

Three rules hold for every field of every section:

* unknown keys are errors (``extra="forbid"``), so a typo is located instead of silently ignored;
* ``inf`` and ``nan`` are errors: no setting here means anything when infinite (an infinite guidance scale
  draws black images that would then be scored);
* a boolean where a number is expected is an error. YAML 1.1 reads ``yes``/``no``/``on``/``off`` as booleans
  and pydantic's lax mode would take them as 1 and 0 (``every_n_steps: yes`` would validate every step).
  Strings of numbers stay accepted: PyYAML reads ``1e-4`` as the string ``'1e-4'``.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

# torch.Generator.manual_seed takes a signed 64-bit integer; a larger seed fails at every validation.
SEED_MIN = -(2**63)
SEED_MAX = 2**63 - 1
Seed = Annotated[
    int, Field(ge=SEED_MIN, le=SEED_MAX, description="A torch generator seed (a signed 64-bit integer).")
]
# Diffusers' Stable Diffusion pipelines refuse sizes that are not a multiple of the VAE's factor (8).
LATENT_FACTOR = 8
ImageSide = Annotated[int, Field(gt=0, multiple_of=LATENT_FACTOR, description="Pixels, a multiple of 8.")]

_BOOL_MESSAGE = (
    "expected a number, got a boolean ({value!r}; YAML reads yes/no/on/off/true/false as booleans)"
)


def _leaves(annotation: Any) -> list[Any]:
    """The alternatives of an annotation, through ``Annotated``, ``Optional`` and unions."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _leaves(typing.get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return [leaf for arg in typing.get_args(annotation) for leaf in _leaves(arg)]
    return [annotation]


def _is_number_type(leaf: Any) -> bool:
    return isinstance(leaf, type) and issubclass(leaf, (int, float)) and not issubclass(leaf, bool)


def _bool_where_number(annotation: Any, value: Any) -> bool:
    """Whether ``value`` holds a boolean at a place ``annotation`` expects a number (not a boolean)."""
    leaves = _leaves(annotation)
    if isinstance(value, bool):
        return any(map(_is_number_type, leaves)) and bool not in leaves
    containers = [(typing.get_origin(leaf), typing.get_args(leaf)) for leaf in leaves]
    if isinstance(value, (list, tuple)):
        for origin, args in containers:
            if origin in (list, tuple) and args:
                per_item = args if origin is tuple and Ellipsis not in args else (args[0],) * len(value)
                return any(_bool_where_number(a, v) for a, v in zip(per_item, value))
    if isinstance(value, dict):
        for origin, args in containers:
            if origin is dict and len(args) == 2:
                return any(_bool_where_number(args[1], v) for v in value.values())
    return False


class StrictModel(BaseModel):
    """Base of every config section: unknown keys, non-finite numbers and booleans for numbers are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if field is not None and _bool_where_number(field.annotation, value):
            raise ValueError(_BOOL_MESSAGE.format(value=value))
        return value
