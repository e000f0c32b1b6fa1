"""The one exception type that the CLI turns into a one-line message and exit code 2, the one
warning type, and the one place where pydantic's validation errors become such a message."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError


class TypicalnetsError(ValueError):
    """Bad input: the message names the problem and the fix, in one line."""


class TypicalnetsWarning(UserWarning):
    """A state that typicalnets works around (e.g. a bad kernel cache: the torch engine is used), in one line that
    names the problem and the fix."""


Model = TypeVar("Model", bound=BaseModel)
BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}  # pydantic's names of a numeric field's limits


def build_model(model: type[Model], values: dict[str, Any], strict: bool = False) -> Model:
    """``model`` validated from ``values``, its first problem turned into a one-line TypicalnetsError
    that names the setting. With ``strict`` every value must have its field's exact type (a TOML
    ``count = true`` or ``bias = "yes"`` is refused, not read as 1 and True)."""
    try:
        return model.model_validate(values, strict=strict)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "config"
        if error["type"] == "literal_error":
            raise TypicalnetsError(f"unknown {where} {error['input']!r}; use {error['ctx']['expected']}") from None
        limit = next(((op, error["ctx"][key]) for key, op in BOUNDS.items() if key in error.get("ctx", {})), None)
        if limit is not None:
            raise TypicalnetsError(
                f"{where} must be {limit[0]} {limit[1]}, got {error['input']!r}; change it"
            ) from None
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown setting; remove it (--help lists the names)"
        elif ";" not in message:
            message += "; change it"
        raise TypicalnetsError(f"bad setting {where}: {message}") from None
