"""The contract check of a page of records, on arrow columns (docs/decisions/0016).

Checking each record with pydantic (and building a ``Decimal`` for each amount) was 45% of the
extraction's time. A page is now *screened* on arrow instead: its values become one column per
field, and vectorised checks find the records that may break the contract. Only those go through
pydantic, and pydantic decides: a record it refuses is quarantined with its own error, exactly as
before; one it accepts (a value the screen leaves to it, such as ``"10.500"`` or ``12.0``) lands
as pydantic read it, in its place in the page.

The screen is derived from each model's pydantic core schema (:func:`screen_for`): the models of
:mod:`models.core_banking` stay the one statement of the contract. It is conservative: it passes
only values of the JSON type a field expects whose meaning pydantic and arrow agree on (integers
within the bounds, canonical ISO dates of real days, plain decimal strings within the declared
digits, allowed literals, lengths), and a contract with anything it does not know (a new kind of
constraint, a validator without a counterpart in :data:`VALIDATORS`, an alias, a config option)
is refused as :class:`Unscreenable`: its pages are checked by pydantic alone.
``tests/unit/test_contract_screen.py`` checks on generated records that a screened page gives
what pydantic alone gives, and that every entity's contract is screened.
"""

from __future__ import annotations

import datetime as dt
import functools
import operator
import typing
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, TypeAdapter, ValidationError

from models.core_banking import DOCUMENT_DIGITS, Customer

Columns = dict[str, pa.Array]
Check = Callable[[Columns], pa.Array]  # per record, True where it passes (null: it does not)


def arrow_schema(model: type[BaseModel]) -> pa.Schema:
    """The parquet schema of a contract."""
    fields = []
    for name, info in model.model_fields.items():
        ann = info.annotation
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        base = args[0] if args and typing.get_origin(ann) is not typing.Literal else ann
        base = typing.get_args(base)[0] if typing.get_origin(base) is typing.Annotated else base
        if typing.get_origin(base) is typing.Literal:
            arrow_type = pa.string()
        else:
            arrow_type = {
                int: pa.int64(),
                str: pa.string(),
                bool: pa.bool_(),
                dt.date: pa.date32(),
                Decimal: pa.decimal128(16, 2),
            }[base]
        fields.append(pa.field(name, arrow_type, nullable=not info.is_required()))
    return pa.schema(fields)


def wire_schema(schema: pa.Schema) -> pa.Schema:
    """The schema of records as the API sends them: dates and decimals as strings."""
    return pa.schema(
        [
            pa.field(f.name, pa.string() if pa.types.is_date(f.type) or pa.types.is_decimal(f.type) else f.type)
            for f in schema
        ]
    )


class Unscreenable(ValueError):
    """A contract the screen cannot check without pydantic."""


# ---- vectorised counterparts of the models' validators ---------------------------------------


def _document_number(columns: Columns) -> pa.Array:
    """``Customer._document`` on arrow: as many ASCII digits as ``DOCUMENT_DIGITS`` asks of the
    record's document type (the validator also takes other Unicode digits: pydantic decides those)."""
    passes = None
    for kind, digits in DOCUMENT_DIGITS.items():
        this = pc.and_(
            pc.equal(columns["document_type"], kind),
            pc.match_substring_regex(columns["document_number"], f"^[0-9]{{{digits}}}$"),
        )
        passes = this if passes is None else pc.or_(passes, this)
    return passes


VALIDATORS: dict[Callable, Check] = {Customer._document.__func__: _document_number}
"""Each field validator of the contracts (its function) with what checks it on arrow columns. A
model with a validator missing here is unscreenable."""


# ---- the screen, derived from pydantic's core schema ------------------------------------------


@dataclass(frozen=True)
class _Field:
    name: str
    json_type: type  # a conforming value's type after JSON decoding: int, str or bool
    wire: pa.DataType  # its arrow type as received: int64, string or bool
    nullable: bool  # a null (None, or no value) certainly honours the contract
    checks: tuple[Check, ...]


@dataclass(frozen=True)
class Screen:
    """A contract's vectorised checks (see the module's docstring)."""

    model: type[BaseModel]
    landed: pa.Schema
    wire: pa.Schema
    fields: tuple[_Field, ...]

    def passes(self, columns: Columns, rows: int) -> np.ndarray:
        """Per record: True when it certainly honours the contract (False: pydantic decides)."""
        ok = np.ones(rows, dtype=bool)
        for f in self.fields:
            passed = np.ones(rows, dtype=bool)
            for check in f.checks:
                passed &= pc.fill_null(check(columns), False).to_numpy(zero_copy_only=False)
            column = columns[f.name]
            if column.null_count:
                valid = column.is_valid().to_numpy(zero_copy_only=False)
                passed = passed | ~valid if f.nullable else passed & valid  # None: no value to check
            ok &= passed
        return ok


_KEYS = {
    "int": {"gt", "ge", "lt", "le"},
    "str": {"min_length", "max_length"},
    "bool": set(),
    "date": set(),
    "decimal": {"max_digits", "decimal_places"},
    "literal": {"expected"},
    "nullable": {"schema"},
    "default": {"schema", "default"},
    "function-after": {"schema", "function"},
}
_JSON = {"int": (int, pa.int64()), "bool": (bool, pa.bool_())}  # every other kind arrives as a string
_BOUNDS = {
    "gt": (pc.greater, operator.gt),
    "ge": (pc.greater_equal, operator.ge),
    "lt": (pc.less, operator.lt),
    "le": (pc.less_equal, operator.le),
}
_INT64 = (-(2**63), 2**63 - 1)


def _known(node: dict, where: str) -> str:
    kind = node.get("type")
    unknown = set(node) - _KEYS.get(kind, set()) - {"type", "metadata"}
    if kind not in _KEYS or unknown:
        raise Unscreenable(f"{where}: {kind!r} {sorted(unknown)}")
    return kind


def _value_checks(name: str, node: dict, landed: pa.DataType, where: str) -> list[Check]:
    """The checks of one field's value (``node``: its core schema, None and default removed)."""
    kind, checks = _known(node, where), []
    if kind == "int":
        for key, (vectorised, scalar) in _BOUNDS.items():
            bound = node.get(key)
            if bound is None or all(scalar(v, bound) for v in _INT64):
                continue  # every 64-bit integer is within it (the screen passes no other)
            if type(bound) is not int or not _INT64[0] <= bound <= _INT64[1]:
                raise Unscreenable(f"{where}: {key} {bound!r}")
            checks.append(lambda c, op=vectorised, bound=bound: op(c[name], bound))
    elif kind == "str":
        if "min_length" in node:  # in characters, as pydantic counts
            checks.append(lambda c: pc.greater_equal(pc.utf8_length(c[name]), node["min_length"]))
        if "max_length" in node:
            checks.append(lambda c: pc.less_equal(pc.utf8_length(c[name]), node["max_length"]))
    elif kind == "literal":
        if not all(type(v) is str for v in node["expected"]):
            raise Unscreenable(f"{where}: a literal that is not a string")
        allowed = pa.array(node["expected"], pa.string())
        checks.append(lambda c: pc.is_in(c[name], value_set=allowed))
    elif kind == "date":
        checks.append(lambda c: _iso_date(c[name]))
    elif kind == "decimal":
        if not pa.types.is_decimal(landed):
            raise Unscreenable(f"{where}: a decimal landed as {landed}")
        # plain digits within pydantic's bounds and the landed type's; what else pydantic takes
        # ("1e2", "10.500", " 1.5", "+1") it reads itself
        places = min(node.get("decimal_places", landed.scale), landed.scale)
        whole = min(node.get("max_digits", landed.precision) - places, landed.precision - landed.scale)
        if whole < 1:
            raise Unscreenable(f"{where}: no whole digits")
        pattern = f"^-?[0-9]{{1,{whole}}}" + (f"(\\.[0-9]{{1,{places}}})?$" if places else "$")
        checks.append(lambda c: pc.match_substring_regex(c[name], pattern))
    elif kind == "function-after":
        function = node["function"]["function"]
        function = getattr(function, "__func__", function)
        if function not in VALIDATORS:
            raise Unscreenable(f"{where}: validator {function.__qualname__} has no vectorised counterpart")
        checks += _value_checks(name, node["schema"], landed, where)
        checks.append(VALIDATORS[function])
    elif kind != "bool":
        raise Unscreenable(f"{where}: {kind} inside a value")
    return checks


def _iso_date(text: pa.Array) -> pa.Array:
    """A canonical ``YYYY-MM-DD`` of a real day from year 1 on: what pydantic and arrow read alike.
    Arrow's cast takes exactly that and year 0, but fails the whole column on one other value:
    then each value is parsed (leniently: ``2026-02-30`` becomes 2 March) and must print back as
    it came."""
    try:
        text.cast(pa.date32())
    except pa.ArrowInvalid:
        pass
    else:
        return pc.greater_equal(text, "0001")
    parsed = pc.strptime(text, format="%Y-%m-%d", unit="s", error_is_null=True).cast(pa.date32())
    canonical = pc.and_(pc.match_substring_regex(text, "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"), pc.greater_equal(text, "0001"))
    return pc.and_(canonical, pc.equal(parsed.cast(pa.string()), text))


def _base_kind(node: dict) -> str:
    while node["type"] in ("function-after", "nullable", "default"):
        node = node["schema"]
    return node["type"]


@functools.cache
def screen_for(model: type[BaseModel]) -> Screen:
    """The screen of ``model``'s contract; raises :class:`Unscreenable` naming what it cannot check
    without pydantic."""
    core, name = model.__pydantic_core_schema__, model.__name__
    if core.get("type") != "model" or core.get("custom_init") or core.get("root_model") or core.get("post_init"):
        raise Unscreenable(f"{name}: not a plain model")
    config = core.get("config", {})
    if config.get("strict") or config.get("extra_fields_behavior", "ignore") != "ignore":
        raise Unscreenable(f"{name}: strict, or extra fields not ignored")
    if set(config) - {"title", "strict", "extra_fields_behavior"}:
        raise Unscreenable(f"{name}: config {sorted(set(config) - {'title', 'strict', 'extra_fields_behavior'})}")
    inner = core["schema"]
    if inner.get("type") != "model-fields" or set(inner) - {"type", "fields", "model_name", "computed_fields"}:
        raise Unscreenable(f"{name}: {inner.get('type')} {sorted(inner)}")
    landed = arrow_schema(model)
    fields = []
    for field_name, spec in inner["fields"].items():
        where = f"{name}.{field_name}"
        if set(spec) - {"type", "schema", "metadata"}:  # an alias, for one
            raise Unscreenable(f"{where}: {sorted(set(spec) - {'type', 'schema', 'metadata'})}")
        node, default = spec["schema"], False
        if node["type"] == "default":
            _known(node, where)
            if node["default"] is not None:
                raise Unscreenable(f"{where}: a default other than None")
            node, default = node["schema"], True
        if node["type"] == "nullable":
            _known(node, where)
            node = node["schema"]
        elif default:
            raise Unscreenable(f"{where}: a default of None for a value that may not be None")
        # arrow reads a missing value and a None alike: both pass only when a missing one is None
        nullable = default
        json_type, wire = _JSON.get(_base_kind(node), (str, pa.string()))
        checks = _value_checks(field_name, node, landed.field(field_name).type, where)
        fields.append(_Field(field_name, json_type, wire, nullable, tuple(checks)))
    wire = pa.schema([(f.name, f.wire) for f in fields])
    if wire != wire_schema(landed).remove_metadata() or [f.name for f in fields] != landed.names:
        raise Unscreenable(f"{name}: received as {wire}, expected {wire_schema(landed)}")
    return Screen(model, landed, wire, tuple(fields))


# ---- one page ---------------------------------------------------------------------------------


@dataclass
class CheckedPage:
    landed: pa.Table  # the records that honour the contract, in page order, as landed
    broken: list[tuple[object, ValidationError]]  # each record that does not, as received, with its error


def _column(values: list, field: _Field) -> tuple[pa.Array, np.ndarray | None]:
    """One field's values as arrow, and which records hold a value of another JSON type (None: no
    record does). Arrow infers the type from the values, so that a ``12.5`` in an integer field
    shows (converted to int64 directly it would become 12)."""
    try:
        array = pa.array(values)
        if array.type == field.wire or array.type == pa.null():
            return array.cast(field.wire), None
    except (pa.ArrowException, OverflowError, TypeError, ValueError):
        pass
    low, high = _INT64
    ok = [
        v is None or (type(v) is field.json_type and (field.json_type is not int or low <= v <= high)) for v in values
    ]
    return pa.array([v if k else None for v, k in zip(values, ok, strict=True)], type=field.wire), ~np.array(ok)


def check_page(screen: Screen, page: list) -> CheckedPage:
    """Screen ``page`` (records decoded from JSON); pydantic decides the records the screen does
    not pass."""
    rows = len(page)
    suspect = np.zeros(rows, dtype=bool)
    records = page
    if not all(type(r) is dict for r in page):
        suspect |= np.array([type(r) is not dict for r in page])
        records = [r if type(r) is dict else {} for r in page]
    columns: Columns = {}
    for f in screen.fields:
        columns[f.name], wrong = _column([r.get(f.name) for r in records], f)
        if wrong is not None:
            suspect |= wrong
    suspect |= ~screen.passes(columns, rows)
    table = pa.Table.from_arrays([columns[f.name] for f in screen.fields], schema=screen.wire)
    if not suspect.any():
        return CheckedPage(table.cast(screen.landed), [])
    good = table.filter(pa.array(~suspect)).cast(screen.landed)
    suspects = np.flatnonzero(suspect)
    kept, accepted, broken = _validate(screen.model, [page[i] for i in suspects.tolist()])
    if accepted:
        order = np.concatenate([np.flatnonzero(~suspect), suspects[kept]])
        good = pa.concat_tables([good, _as_arrow(accepted, screen.landed)]).take(pa.array(np.argsort(order)))
    return CheckedPage(good, broken)


# ---- pydantic: the records the screen leaves to it, a contract it cannot check, the tests' reference

_ADAPTERS: dict[type, TypeAdapter] = {}


def _validate(model: type[BaseModel], records: list) -> tuple[list[int], list[BaseModel], list]:
    """pydantic over ``records``: which it accepts (their indices, as it read them), and each one it
    refuses with its error. All in one call (pydantic-core's list validator is several times faster
    than a call per record); when one is refused, the rest again and each refused one alone."""
    adapter = _ADAPTERS.get(model)
    if adapter is None:
        adapter = _ADAPTERS[model] = TypeAdapter(list[model])
    try:
        return list(range(len(records))), adapter.validate_python(records), []
    except ValidationError as exc:
        failed = {err["loc"][0] for err in exc.errors() if err["loc"]}
    kept = [i for i in range(len(records)) if i not in failed]
    accepted = adapter.validate_python([records[i] for i in kept])
    broken = []
    for i in sorted(failed):
        try:
            model.model_validate(records[i])
        except ValidationError as err:
            broken.append((records[i], err))
    return kept, accepted, broken


def _as_arrow(records: list[BaseModel], landed: pa.Schema) -> pa.Table:
    columns = [pa.array([getattr(r, f.name) for r in records], type=f.type) for f in landed]
    return pa.Table.from_arrays(columns, schema=landed)


def check_page_with_pydantic(model: type[BaseModel], page: list) -> CheckedPage:
    """Every record of ``page`` through pydantic."""
    _, accepted, broken = _validate(model, page)
    return CheckedPage(_as_arrow(accepted, arrow_schema(model)), broken)


def checker(model: type[BaseModel]) -> Callable[[list], CheckedPage]:
    """How the pages of ``model`` are checked: screened, or by pydantic alone when its contract
    cannot be screened."""
    try:
        return functools.partial(check_page, screen_for(model))
    except Unscreenable:
        return functools.partial(check_page_with_pydantic, model)
