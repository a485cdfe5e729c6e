"""The types request fields are declared with, and the 422 message a value outside them gets.

The models in bodies.py declare each field with `Int`, `Number`, `Flag` or `Stop`; a pydantic
ValidationError is turned into one message (`refusal`) read from the declaration itself: the field
(with its prefix, e.g. `parameters.temperature`), what is allowed and what was sent (cut short).
A declared type may word its own refusal (`Worded`); limits known only to the running server are
checked here by hand.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Optional

import annotated_types
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, Strict, ValidationError
from pydantic_core import PydanticCustomError

from .errors import PayloadError, invalid

STOP_TYPE = "must be a non-empty string or a list of non-empty strings"


def _integral(value):
    """JSON 5.0 is the integer 5 (JSON true stays a boolean, which an integer field refuses)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def Int(low: int, high: int | None = None):  # noqa: N802 - a type, named like one
    """An optional integer in [low, high] (no upper bound when high is None)."""
    return Optional[Annotated[int, BeforeValidator(_integral), Strict(), Field(ge=low, le=high)]]


def Number(low: float, high: float, *, open_low: bool):  # noqa: N802
    """An optional finite number in [low, high], or (low, high] when open_low."""
    bound = Field(gt=low, le=high, allow_inf_nan=False) if open_low else Field(ge=low, le=high, allow_inf_nan=False)
    return Optional[Annotated[float, Strict(), bound]]


Flag = Optional[Annotated[bool, Strict()]]
Text = Optional[Annotated[str, Strict()]]
Stop = Optional[Annotated[str, Strict(), Field(min_length=1)]
                | list[Annotated[str, Strict(), Field(min_length=1)]]]


class Loose(BaseModel):
    """An object inside a request (a message, a tool): keys it does not declare are taken and mean
    nothing here, as the APIs' clients send more than the server reads."""

    model_config = ConfigDict(extra="allow", frozen=True)


class Worded:
    """A field's own 422 wording: `words(where, loc, error)` gets the field's path, where the
    error is inside its value, and pydantic's error."""

    def __init__(self, words):
        self.words = words


def Refused(annotation, words: str, *, taken: tuple = ()):  # noqa: N802
    """A field clients send that this server does not implement: a value of its declared type that
    asks for nothing (unset, 0, false, empty, or one of `taken`) is accepted; any other is a 422,
    "`<field>` <words>"."""
    def refuse(value):
        if value and value not in taken:
            raise PydanticCustomError("refused", words)
        return value

    return Annotated[annotation, AfterValidator(refuse)]


def unset_when_empty(value):
    """`"parameters": {}` / `[]` / `null` all mean "none given", as before these were declared."""
    return value or None


# ---------------------------------------------------------------------- declared -> message
def declared(annotation) -> tuple[type | None, list]:
    """(base type, constraint metadata) of a field's annotation, Optional and Annotated unwrapped."""
    metadata = []
    while True:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
            annotation = args[0]
        elif typing.get_origin(annotation) is Annotated:
            annotation, *extras = typing.get_args(annotation)
            metadata += [m for e in extras for m in (getattr(e, "metadata", None) or [e])]
        else:
            return (annotation if isinstance(annotation, type) else None), metadata


def refusal(model: type[BaseModel], exc: ValidationError, limits: dict[str, int]) -> PayloadError:
    """The 422 for the first error pydantic found, worded from the field's declaration (and the
    server's `limits` on top-level integers, named in the message as their upper bound)."""
    error = exc.errors()[0]
    path, annotation = _field_of(model, error["loc"])
    if error["type"] == "refused":
        return invalid(f"`{path}` {error['msg']}")
    base, metadata = declared(annotation)
    value = error["input"]
    worded = next((m for m in metadata if isinstance(m, Worded)), None)
    if worded is not None:
        return invalid(worded.words(path, tuple(error["loc"][len(path.split(".")):]), error))
    if error["type"] in ("model_type", "dict_type") or (isinstance(base, type) and issubclass(base, BaseModel)):
        return invalid(f"`{path}` must be an object")
    if base is bool:
        return invalid(f"`{path}` must be true or false, got {show(value)}")
    if base is str:
        return invalid(f"`{path}` must be a string, got {show(value)}")
    if base is int:
        high = limits.get(path, _bound(metadata, "le"))
        return not_an_integer_in(path, _bound(metadata, "ge"), high, _integral(value))
    if base is float:
        span = f"{'(' if _bound(metadata, 'gt') is not None else '['}" \
               f"{_low(metadata):g}, {_bound(metadata, 'le'):g}]"
        if error["type"] == "finite_number":  # json reads NaN, Infinity, -Infinity
            return invalid(f"`{path}` must be a finite number in {span}, got {value!r}")
        return invalid(f"`{path}` must be a number in {span}, got {show(value)}")
    if annotation == Stop:
        return invalid(f"`{path}` {STOP_TYPE}")
    return invalid(f"`{path}`: {error['msg']}")


def _field_of(model: type[BaseModel], loc: tuple) -> tuple[str, object]:
    """The dotted path of the declared field an error location falls in, and its annotation."""
    names, annotation = [], None
    for part in loc:
        fields = model.model_fields if model is not None else {}
        if part not in fields:
            break
        names.append(str(part))
        annotation = fields[part].annotation
        base, _ = declared(annotation)
        model = base if isinstance(base, type) and issubclass(base, BaseModel) else None
    return ".".join(names) or ".".join(map(str, loc)), annotation


def _bound(metadata: list, name: str):
    kinds = {"ge": annotated_types.Ge, "gt": annotated_types.Gt, "le": annotated_types.Le}
    return next((getattr(m, name) for m in metadata if isinstance(m, kinds[name])), None)


def _low(metadata: list):
    low = _bound(metadata, "gt")
    return low if low is not None else _bound(metadata, "ge")


# ---------------------------------------------------------------------- by hand
def not_an_integer_in(where: str, low: int, high: int | None, value) -> PayloadError:
    span = f"between {low} and {high}" if high is not None else f"at least {low}"
    return invalid(f"`{where}` must be an integer {span}, got {show(value)}")


def within_limits(model: BaseModel, limits: dict[str, int]) -> None:
    """Upper bounds of declared integers that only the running server knows (its settings)."""
    for name, high in limits.items():
        value = getattr(model, name, None)
        if value is not None and value > high:
            _, metadata = declared(type(model).model_fields[name].annotation)
            raise not_an_integer_in(name, _bound(metadata, "ge"), high, value)


def read_bool(params: dict, name: str, default: bool, prefix: str) -> bool:
    """A true/false field of a body no model declares (the tokenize route's)."""
    value = params.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(f"`{prefix}{name}` must be true or false, got {show(value)}")
    return value


def stop_sequences(value, prefix: str, most: int, longest: int) -> tuple[str, ...]:
    """A declared `Stop` value within the server's limits; an empty list means no stop sequence."""
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if len(items) > most:
        raise invalid(f"`{prefix}stop` holds {len(items)} sequences; at most {most} are allowed "
                      "(TUNEFORGE_MAX_STOP_SEQUENCES)")
    for i, item in enumerate(items):
        if len(item) > longest:
            where = f"{prefix}stop" if isinstance(value, str) else f"{prefix}stop[{i}]"
            raise invalid(f"`{where}` is {len(item)} characters long; a stop sequence may have at most "
                          f"{longest} (TUNEFORGE_MAX_STOP_SEQUENCE_CHARS)")
    return tuple(items)


def show(value, most: int = 60) -> str:
    """repr for an error message, cut short: a 6 MB value must not come back in the answer."""
    try:
        text = repr(value)
    except RecursionError:  # a deeply nested list or object
        return f"a deeply nested {type(value).__name__}"
    return text if len(text) <= most else text[:most] + f"... ({len(text)} characters)"
