"""Configuration errors a user can act on: the key, where it came from, and the key they meant.

    unknown key websocket.prot; did you mean port?
    websocket.port: Input should be a valid integer (from CLARION_WEBSOCKET__PORT)
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Mapping, Sequence
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

Loc = tuple[str | int, ...]


def model_at(root: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The model class that holds the keys at ``loc`` (list indexes skipped), if any."""
    model: type[BaseModel] | None = root
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        model = _model_in(field.annotation) if field is not None else None
    return model


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (list, Union, types.UnionType):
        for arg in get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def suggestion(word: str, choices: Sequence[str], cutoff: float = 0.6) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=cutoff)
    return f"; did you mean {close[0]}?" if close else ""


def describe(root: type[BaseModel], exc: ValidationError, origins: Mapping[Loc, str]) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            holder = model_at(root, loc[:-1])
            known = list(holder.model_fields) if holder is not None else []
            line = f"unknown key {key}{suggestion(str(loc[-1]), known)}"
        else:
            line = f"{key}: {err['msg'].removeprefix('Value error, ')}"
        origin = _origin(loc, origins)
        lines.append(line + (f" (from {origin})" if origin else ""))
    return "invalid configuration:\n  " + "\n  ".join(lines)


def _origin(loc: Loc, origins: Mapping[Loc, str]) -> str | None:
    """The environment variable that set ``loc`` or a key above it."""
    for n in range(len(loc), 0, -1):
        if loc[:n] in origins:
            return origins[loc[:n]]
    return None
