"""Reading SageMaker hyperparameters into a declared pydantic model.

SageMaker hands hyperparameters over as strings in several encodings ("True", "true",
"\"True\"", "5", "\"5\""): one before-validator peels the JSON quoting and pydantic coerces the
rest. A schema subclasses SageMakerHyperparameters and only declares its fields (with `hp()`:
default, meaning, bounds, aliases) and the combinations no single field can check
(COMBINATION_RULES). `parse()` turns the first problem, in the order the keys were given, into a
HyperparameterError that names the key, its range or choices, and the closest valid name for a typo.
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, NamedTuple, Self

import annotated_types
from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from .errors import HyperparameterError

# The words every true/false setting accepts, in any case: hyperparameters and environment variables.
TRUE_WORDS = frozenset({"true", "1", "yes", "y", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "n", "off"})

# Keys SageMaker and its SDKs add that are not ours to interpret (besides every sagemaker_* key).
IGNORED_KEYS = frozenset({"_tuning_objective_metric", "accept_eula"})


def parse_flag(value: Any) -> bool:
    """A bool, 0/1 or one of TRUE_WORDS/FALSE_WORDS (JSON quoting peeled) as True/False; ValueError otherwise."""
    value = _unwrap(value)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise ValueError(f"{value!r} is not true or false")


def _unwrap(value: Any) -> Any:
    """Peel JSON string quoting: '"\\"5\\""' -> '5'. Non-JSON strings come back unchanged."""
    for _ in range(3):
        if not isinstance(value, str):
            return value
        text = value.strip()
        if len(text) >= 2 and text[0] == text[-1] == '"':
            try:
                value = json.loads(text)
                continue
            except json.JSONDecodeError:
                return text
        return text
    return value


def _flag(value: Any) -> bool:
    try:
        return parse_flag(value)
    except ValueError:
        raise PydanticCustomError("flag", "not true or false") from None


def _not_a_flag(value: Any) -> Any:
    if isinstance(value, bool):  # JSON true is no number, though Python counts it as 1
        raise PydanticCustomError("number_type", "a boolean is not a number")
    return value


def _none_words(value: Any) -> Any:
    return None if value is None or str(value).strip().lower() in ("none", "null", "") else value


def _whole_number(value: Any) -> Any:
    """'4' or '4.0' -> 4, so that an int Literal matches a string encoding."""
    try:
        number = float(value)
        return int(number) if number.is_integer() and not isinstance(value, bool) else value
    except (TypeError, ValueError):
        return value


def _tri_state(value: Any) -> Any:
    """auto stays auto; a boolean in any encoding becomes "true"/"false"."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        return "true" if parse_flag(value) else "false"
    except ValueError:
        return value  # the Literal reports it, with the choices


def _as_text(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value) if isinstance(value, (int, float)) else value


def _module_list(value: Any) -> Any:
    """A comma list; a JSON list ('["q_proj", "v_proj"]') is accepted too."""
    if isinstance(value, str) and value.startswith("["):
        try:
            return ",".join(json.loads(value.replace("'", '"')))
        except (json.JSONDecodeError, TypeError):
            pass
    return _as_text(value)


Flag = Annotated[bool, BeforeValidator(_flag)]
Int = Annotated[int, BeforeValidator(_not_a_flag)]
Float = Annotated[float, BeforeValidator(_not_a_flag)]  # finite: the base model sets allow_inf_nan=False
OptionalInt = Annotated[int | None, BeforeValidator(_none_words), BeforeValidator(_not_a_flag)]
Text = Annotated[str, BeforeValidator(_as_text)]
ModuleList = Annotated[str, BeforeValidator(_module_list)]
TriState = Annotated[Literal["auto", "true", "false"], BeforeValidator(_tri_state)]
Bits = Annotated[Literal[4, 8, 16], BeforeValidator(_whole_number)]


def hp(default, doc: str, *, aliases: dict[str, tuple | None] | None = None, **bounds):
    """A field: default, meaning, bounds (ge/gt/le) and aliases, each alias with the (lo, hi)
    range it imposes on top of the field's own, or None."""
    return Field(default, description=doc, validation_alias=AliasChoices(*aliases) if aliases else None,
                 json_schema_extra={"alias_ranges": aliases} if aliases else None, **bounds)


class Rule(NamedTuple):
    """A combination no field can check alone; message may name fields ("{resolution} is ...")."""

    broken: Callable[[Any], Any]
    message: str
    where: str
    fix: str


def zero_refused(name: str, minus_one: str) -> Rule:
    """A field whose -1 means "automatic" and whose 0 would mean nothing at all."""
    return Rule(lambda c: getattr(c, name) == 0, "0 is out of range", f"hyperparameter {name}",
                f"use -1 ({minus_one}) or a value >= 1")


@dataclass(frozen=True)
class FieldSpec:
    """One hyperparameter as the docs and error messages show it."""

    name: str
    type: str  # "bool", "int", "float", "str", "int | None"
    default: Any
    doc: str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    choices: tuple | None = None

    @property
    def span(self) -> str:
        """'>= 0.0 and <= 1.0', or the choices."""
        if self.choices:
            return ", ".join(map(str, self.choices))
        low = "" if self.lo is None else f"{'>' if self.lo_open else '>='} {self.lo}"
        high = "" if self.hi is None else f"<= {self.hi}"
        return " and ".join(p for p in (low, high) if p)


def _field_spec(name: str, info) -> FieldSpec:
    annotation = info.annotation
    choices = typing.get_args(annotation) if typing.get_origin(annotation) is Literal else None
    if choices:
        kind = type(choices[0]).__name__
    elif typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kind = " | ".join("None" if a is type(None) else a.__name__ for a in typing.get_args(annotation))
    else:
        kind = annotation.__name__
    bounds: dict[str, Any] = {}
    for item in info.metadata:
        if isinstance(item, (annotated_types.Ge, annotated_types.Gt)):
            bounds.update(lo=getattr(item, "ge", getattr(item, "gt", None)),
                          lo_open=isinstance(item, annotated_types.Gt))
        elif isinstance(item, annotated_types.Le):
            bounds["hi"] = item.le
    return FieldSpec(name, kind, info.default, info.description or "", choices=choices, **bounds)


@functools.cache
def _field_specs(schema: type[BaseModel]) -> dict[str, FieldSpec]:
    return {name: _field_spec(name, info) for name, info in schema.model_fields.items()}


@functools.cache
def _alias_specs(schema: type[BaseModel]) -> dict[str, tuple[str, tuple | None]]:
    return {alias: (name, span)
            for name, info in schema.model_fields.items()
            for alias, span in ((info.json_schema_extra or {}).get("alias_ranges") or {}).items()}


EXPECTED = {"bool": "true or false", "int": "an integer", "float": "a finite number", "str": "a string",
            "int | None": "an integer or None", "float | None": "a finite number or None", "str | None": "a string"}
RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


class SageMakerHyperparameters(BaseModel):
    """Base of every hyperparameter schema: subclasses declare fields and COMBINATION_RULES."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, validate_by_name=True,
                              validate_by_alias=True)

    COMBINATION_RULES: ClassVar[tuple[Rule, ...]] = ()
    unknown_name: ClassVar[str] = "unknown hyperparameter"  # the message for a name no field or alias has
    names_doc: ClassVar[str] = "docs/hyperparameters.md"  # where the valid names are listed

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Self:
        """SageMaker's string map as a validated model; the first problem (in the order the keys
        were given) as a HyperparameterError."""
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            order = {key: index for index, key in enumerate(raw)}
            first = min(exc.errors(), key=lambda e: order.get(e["loc"][0], -1) if e["loc"] else -1)
            raise cls._hyperparameter_error(first) from None

    @classmethod
    def fields(cls) -> dict[str, FieldSpec]:
        """name -> FieldSpec, in declaration order."""
        return _field_specs(cls)

    @classmethod
    def aliases(cls) -> dict[str, tuple[str, tuple | None]]:
        """alias -> (canonical name, (lo, hi) range the alias imposes, or None)."""
        return _alias_specs(cls)

    @classmethod
    def markdown_rows(cls) -> list[str]:
        """The field table of the docs: header and one row per field."""
        lines = ["| name | type | default | range / choices | meaning |", "|---|---|---|---|---|"]
        for name, spec in cls.fields().items():
            cells = (f"`{name}`", spec.type, f"`{spec.default!r}`", spec.span, spec.doc)
            lines.append("| " + " | ".join(markdown_cell(cell) for cell in cells) + " |")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    @model_validator(mode="before")
    @classmethod
    def _from_sagemaker_strings(cls, raw: Any) -> Any:
        """Peel SageMaker's string quoting and drop the keys it adds; catch what pydantic's alias
        handling cannot: one setting given under two names, and an alias's narrower range."""
        if not isinstance(raw, dict):
            return raw
        aliases = cls.aliases()
        values: dict[str, Any] = {}
        given_as: dict[str, str] = {}  # field -> the key it came under
        for key, value in raw.items():
            if str(key).startswith("sagemaker_") or key in IGNORED_KEYS:
                continue
            value = _unwrap(value)
            name, span = aliases.get(key, (key, None))
            _check_alias_range(key, value, span)
            if name in given_as:
                _check_same_value(name, given_as[name], values[given_as[name]], key, value)
                continue
            given_as[name] = key
            values[key] = value
        return values

    @model_validator(mode="after")
    def _check_combinations(self) -> Self:
        for broken, message, where, fix in self.COMBINATION_RULES:
            if broken(self):
                raise _user_error(message.format_map(self.__dict__), where, fix)
        return self

    @classmethod
    def _hyperparameter_error(cls, error: dict) -> HyperparameterError:
        """One pydantic error as the message a user reads: what, which hyperparameter, how to fix it."""
        if error["type"] == "tuneforge":
            return HyperparameterError(**error["ctx"])
        key = str(error["loc"][0]) if error["loc"] else "?"
        where, value = f"hyperparameter {key}", error.get("input")
        fields, aliases = cls.fields(), cls.aliases()
        if error["type"] == "extra_forbidden":
            close = difflib.get_close_matches(key, list(fields) + list(aliases), n=1, cutoff=0.6)
            fix = f"did you mean {close[0]!r}?" if close else f"see {cls.names_doc} for the valid names"
            return HyperparameterError(cls.unknown_name, where=where, fix=fix)
        spec = fields[aliases.get(key, (key, None))[0]]
        if error["type"] == "literal_error":
            return HyperparameterError(f"{value!r} is not allowed", where=where, fix=f"use one of {spec.span}")
        if error["type"] in RANGE_ERRORS:
            return HyperparameterError(f"{_shown(value)} is out of range", where=where, fix=f"use a value {spec.span}")
        expected = EXPECTED.get(spec.type, f"a valid {spec.type}")
        return HyperparameterError(f"{value!r} is not {expected}", where=where, fix=f"set {key} to {expected}")


def _user_error(message: str, where: str, fix: str) -> PydanticCustomError:
    """A validation error that already reads as a HyperparameterError."""
    return PydanticCustomError("tuneforge", "{message}", {"message": message, "where": where, "fix": fix})


def _shown(value: Any) -> str:
    """A number as written ('1.5' -> 1.5), anything else quoted."""
    if isinstance(value, str):
        try:
            float(value)
            return value
        except ValueError:
            pass
    return repr(value)


def _check_alias_range(key: str, value: Any, span: tuple | None) -> None:
    if span is None:
        return
    try:
        number = float(value)
    except (TypeError, ValueError):
        return  # the field reports a value that is no number
    if math.isfinite(number) and not span[0] <= number <= span[1]:
        raise _user_error(f"{_shown(value)} is out of range", f"hyperparameter {key}",
                          f"use a value >= {span[0]} and <= {span[1]}")


def _same(a: Any, b: Any) -> bool:
    try:
        return float(a) == float(b)  # "1e-4" and "0.0001" name the same number
    except (TypeError, ValueError):
        return str(a).strip().lower() == str(b).strip().lower()


def _check_same_value(name: str, first_key: str, first: Any, key: str, value: Any) -> None:
    if not _same(first, value):
        raise _user_error(f"set twice, as {first_key}={first!r} and {key}={value!r}", f"hyperparameter {name}",
                          "keep one of the two names")


def markdown_cell(text: Any) -> str:
    """A markdown table cell: a bare `|` (as in `int | None`) would end the cell early."""
    return str(text).replace("|", "\\|")


def parse_thresholds(text: str) -> dict[str, float] | None:
    """"tickets=0.9,general=0.5" -> {"tickets": 0.9, "general": 0.5}; None when not in that form."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, equals, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            return None
        if not equals or not name.strip():
            return None
    return out
