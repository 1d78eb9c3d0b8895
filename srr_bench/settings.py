"""Settings: the typed sections they live in, and the one reader of a setting's text.

Every setting of the suite has one schema (type, default or none, range): a pydantic v2
model in strict mode with unknown keys forbidden and non-finite numbers refused
(``Section``). Why pydantic and not OmegaConf structured configs: it states ranges and
choices next to the type (``Field(gt=0)``, ``Literal``), refuses ``inf``/``nan`` and
booleans-as-numbers in strict mode, reports every problem at once with its path, and does
not convert the composed config in place (Hydra keeps composing plain YAML; run ids are
hashed from what Hydra composed, so no existing id moves).

``validate_section`` turns pydantic's report into our one-line ``SettingError`` /
``ConfigError`` problems (path, what is wrong, the value, and for an unknown key the nearest
known one: the suite's one "did you mean"). ``read_setting`` is the one parser of a
setting written as text (``--set srr.eps=0.05``, ``--grid``, a specification's
``srr[eps=0.05]``): JSON scalars, ``none``/``null``, and bare strings.
"""
from __future__ import annotations

import difflib
import json
import math
from typing import Any, Iterable, Literal, Mapping, Optional, Type, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

S = TypeVar("S", bound=BaseModel)


class Section(BaseModel):
    """A typed settings section: strict types, unknown keys refused, finite numbers only, immutable."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)


Representation = Literal["mssa_in", "z_half", "ista_out"]  # models.base.REPRESENTATIONS (srr_bench.srr: what they mean)


class SRRSettings(Section):
    """The SRR conventions (``srr_bench.srr``'s docstring says what each means): one default, one range, one type each.

    The run's ``srr`` section (read by the regulariser and the layer recording), the
    ``srr`` measure's settings group and every ``srr[...]`` specification are read through
    this model, so a value out of range (``eps=inf``, ``eps=-1``) is refused wherever it is set.
    """

    representation: Representation = "ista_out"
    l0_representation: Optional[Representation] = None
    eps: float = Field(0.1, gt=0)  # ε enters squared: a negative one would run silently as |ε|
    lambda0: float = Field(1.0, ge=0)
    l0: Literal["fraction", "count"] = "fraction"
    l0_tol: float = Field(0.0, ge=0)
    normalize: Literal["token", "head", "none"] = "token"
    cls: bool = True
    split: Literal["train", "test"] = "train"
    n_images: Optional[int] = Field(256, gt=0)  # None: every image of the split
    source: Literal["qkv", "q", "k", "v"] = "qkv"
    u_norm: Literal["none", "orthonormal"] = "none"
    chunk: int = Field(32, gt=0)  # images per forward pass (memory only)



class SettingError(ValueError):
    """Settings that do not fit their schema; the message has one line per problem, joined by '; '."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


def near(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or ''."""
    found = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{found[0]}'?)" if found else ""


def _known(schema: Type[BaseModel], loc: tuple) -> list[str]:
    """The keys of the (nested) model at ``loc`` without its last part."""
    model: Any = schema
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(getattr(model, "model_fields", {}))


def problems_of(error: ValidationError, schema: Type[BaseModel], prefix: str = "") -> list[str]:
    """pydantic's errors as our lines: ``<path>: <what>, got <value>``."""
    out = []
    for e in error.errors():
        loc = tuple(p for p in e["loc"] if isinstance(p, str) and not p.startswith(("function-", "literal[")))
        loc = tuple(p for p in loc if "[" not in p)  # union branch tags: the field path only
        path = ".".join(filter(None, [prefix, *loc])) or prefix or "config"
        if e["type"] == "extra_forbidden":
            known = _known(schema, loc)
            out.append(f"{path}: unknown key{near(loc[-1], known)}; {'.'.join(filter(None, [prefix, *loc[:-1]])) or 'it'}"
                       f" has: {', '.join(known)}")
        elif e["type"] == "value_error":  # a validator's own sentence, which names its keys
            text = str((e.get("ctx") or {}).get("error", e["msg"]))
            out.append(text if text.startswith(prefix + ".") and prefix else f"{path}: {text}")
        elif e["type"] == "missing":
            out.append(f"{path}: missing (the shipped config tree sets every key: sweeps/conf)")
        else:
            msg = e["msg"][0].lower() + e["msg"][1:]
            got = e.get("input")
            out.append(f"{path}: {msg}, got {got!r}" if "input" in e and not isinstance(got, Mapping)
                       else f"{path}: {msg}")
    return list(dict.fromkeys(out))


def validate_section(schema: Type[S], values: Any, prefix: str = "") -> S:
    """``values`` as ``schema``, or ``SettingError`` listing every problem (one line each)."""
    try:
        return schema.model_validate(values)
    except ValidationError as e:
        raise SettingError(problems_of(e, schema, prefix)) from None


def read_setting(text: str, default: Any = None) -> Any:
    """A setting's value from text, as the type of its default.

    A string setting keeps the text (``normalize=none`` is the string "none"); otherwise
    ``none``/``null`` is None and numbers and booleans are read as JSON (``inf`` and ``nan``
    are read too, so that the schema can refuse them by name); any other text stays a string.
    """
    text = text.strip()
    if isinstance(default, str):
        return text
    if text.lower() in ("none", "null"):
        return None
    if text.lower() in ("inf", "+inf", "-inf", "nan", "infinity", "-infinity"):
        return float(text)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def coerce_setting(key: str, value: Any, default: Any) -> Any:
    """``value`` read as the type of ``default`` (bool from true/false/1/0/yes/no, int, float).

    None (as value or default) passes unchanged; a non-finite number for a numeric setting and
    anything unreadable is a ``SettingError`` naming the key.
    """
    if value is None or default is None:
        return value
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() in ("true", "1", "yes"):
                    return True
                if value.lower() in ("false", "0", "no"):
                    return False
                raise ValueError(value)
            if value not in (0, 1):
                raise ValueError(value)
            return bool(value)
        if isinstance(default, (int, float)):
            number = float(value)
            if not math.isfinite(number):
                raise SettingError([f"setting {key!r}: must be a finite number, got {value!r}"])
            if isinstance(default, int):
                if number != int(number):
                    raise ValueError(value)
                return int(number)
            return number
    except (TypeError, ValueError) as e:
        if isinstance(e, SettingError):
            raise
        raise SettingError([f"setting {key!r}: cannot read {value!r} as {type(default).__name__}"]) from None
    return value


def split_list(text: Optional[str]) -> list[str]:
    """Comma-separated names where commas inside brackets belong to the name:
    ``"srr[eps=0.05,representation=z_half],path_norm"`` -> two names. Empty items are dropped."""
    out, depth, item = [], 0, []
    for ch in text or "":
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth <= 0:
            out.append("".join(item))
            item = []
        else:
            item.append(ch)
    out.append("".join(item))
    return [s.strip() for s in out if s.strip()]
