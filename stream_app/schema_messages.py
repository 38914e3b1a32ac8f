"""The topics' JSON Schemas (schemas/, the single source of truth), loaded once, and the validator's messages said
plainly for the people who read dead letters and rejected lines."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, Callable

import fastjsonschema
import orjson

SCHEMA_VERSION = 1


def schema_dir() -> Path:
    """`schemas/` of a source checkout, or the copy packed into an installed wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "schemas", here / "_schemas"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"no schemas folder beside {here}")


@functools.cache
def load_schema(name: str, version: int = SCHEMA_VERSION) -> dict[str, Any]:
    return orjson.loads((schema_dir() / f"v{version}" / f"{name}.schema.json").read_bytes())


@functools.cache
def validator(name: str, version: int = SCHEMA_VERSION) -> Callable[[Any], Any]:
    return fastjsonschema.compile(load_schema(name, version))


@functools.cache
def _shape_validator(name: str) -> Callable[[Any], Any]:
    """The schema without its `dependencies` (fastjsonschema checks them first): what else a record breaks."""
    return fastjsonschema.compile({k: v for k, v in load_schema(name).items() if k != "dependencies"})


def plain_message(schema: str, data: Any, message: str) -> str:
    """The validator's message, said plainly where it names no field (a conditional rule of the schema) or names what
    is wrong but not what is right (fields the schema lacks)."""
    if (schema == "input-event" and isinstance(data, dict) and "stage" in data and data.get("type") != "purchase"
            and message.startswith("data.type must be same as const definition")):
        try:  # any other fault first, as the record's fields are checked before the rule between two of them
            _shape_validator(schema)(data)
        except fastjsonschema.JsonSchemaValueException as exc:
            return plain_message(schema, data, exc.message)
        return f"'stage' is only on purchase events, not on a {data.get('type')!r} event"
    if message.startswith("data.schema_version must be same as const definition") and isinstance(data, dict):
        remedy = ("leave schema_version out (`items load` gives the version it reads), or load it with the release "
                  "that reads it" if schema == "item" else
                  "send it as schemas/ describes, or run workers of the release that writes it")
        return (f"schema_version {data.get('schema_version')!r} is not one this release reads "
                f"({message.rsplit(' ', 1)[-1]}): {remedy}")
    if (empty := EMPTY_TEXT.fullmatch(message)) is not None:  # "must be longer than or equal to 1 characters"
        return f"{empty.group(1)} is empty: give it at least one character"
    if UNKNOWN_FIELDS.fullmatch(message) and schema in OTHER_FIELDS_GO and isinstance(data, dict):
        return _unknown_fields_said(schema, data) or message
    return message


def _unknown_fields_said(schema: str, data: dict[str, Any]) -> str | None:
    """The fields of `data` its schema lacks, in order (the validator names them as a set, in no fixed order), the
    fields it has, and where the others go."""
    known = load_schema(schema)["properties"]
    unknown = sorted(str(name) for name in data if name not in known)
    if not unknown:
        return None
    what, where = OTHER_FIELDS_GO[schema]
    return (f"{', '.join(map(repr, unknown))} {'is not a field' if len(unknown) == 1 else 'are not fields'} of {what} "
            f"(its fields: {', '.join(known)}): give {'it' if len(unknown) == 1 else 'them'} in {where}, as "
            f"{{{orjson.dumps(unknown[0]).decode()}: value}}")


#: The validator's message for a text field under its schema's minLength 1.
EMPTY_TEXT = re.compile(r"(data(?:\.\w+|\[\d+\])+) must be longer than or equal to 1 characters")
#: The validator's message for fields its schema does not have (`additionalProperties: false`).
UNKNOWN_FIELDS = re.compile(r"data must not contain \{.*\} properties", re.S)
#: Where a record's own fields fit in the contract, per schema a producer writes by hand.
OTHER_FIELDS_GO = {"item": ("an item record", "attributes"), "input-event": ("an input event", "context")}
