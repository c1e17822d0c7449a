"""Study specifications: the TOML schema, its validation and the resolution into runs.

A study file answers one question. Its top level holds

- ``name``, ``title``, ``question``, ``claim`` (strings), ``analysis`` (one of
  :data:`ncsim.study.analyses.ANALYSES`), ``metrics`` (the run-table columns the analysis
  reads, named in the report; a list of strings), ``notes``;
- ``[simulated]`` and ``[trained]``: default parameters of the simulated and trained parts;
- ``[[parts]]``: each with ``name``, ``model`` ("simulated" or "trained"), fixed parameters
  and a ``[parts.grid]`` table whose values are non-empty lists or ranges ("1e-4..1e-1:8",
  "1,2,3"); a part's runs are the Cartesian product of its grid; a parameter of a part is
  fixed or a grid axis, not both (defaults of ``[simulated]``/``[trained]`` may be grid axes);
- ``[quick]``: the quick variant, merged over the full one: ``[quick.simulated]``,
  ``[quick.trained]`` and ``[quick.parts.NAME]`` (fixed values, ``grid`` axes, or
  ``skip = true``; not a part's ``name`` or ``model``).

Unknown keys are refused everywhere, and both variants are checked whichever one is loaded.

Every run is a :class:`RunDesc` (part, model, parameters) whose ``run_id`` is a stable hash of
those; simulated runs become :class:`ncsim.spec.RunSpec`, trained runs
:class:`ncsim.validate.train.TrainConfig`.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ncsim.errors import InputError
from ncsim.params import grid as cartesian
from ncsim.params import grid_size

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10 with the tomli backport
    import tomli as tomllib
from ncsim.params import parse_ints, parse_values

MODELS = ("simulated", "trained")
METRICS = ("onset_time", "fn_at_onset", "status", "final_fn", "final_nc1_trace", "lead_time",
           "onset_shift", "fn_star_ratio", "cv")
TOP_KEYS = {"name": str, "title": str, "question": str, "claim": str, "analysis": str,
            "metrics": list, "simulated": dict,
            "trained": dict, "parts": list, "quick": dict, "notes": str}
REQUIRED = ("name", "title", "question", "claim", "analysis", "parts")
# keys that were accepted once and never acted on: refused with what to do instead
DROPPED_KEYS = {
    "figures": "not read: each study's analysis draws the figures its claim needs (they go "
               "to figures/ and into the report); remove the key",
    "outputs": "not read: a study run always writes runs.parquet, trajectories.parquet, the "
               "figures and the report; remove the key",
}
QUICK_KEYS = ("simulated", "trained", "parts", "note")

# parameter name -> (type, allowed values or None)
_ACTS = ("linear", "relu", "leaky_relu", "tanh", "gelu", "silu")
SIM_PARAMS: dict[str, tuple[type, tuple | None]] = {
    "loss": (str, ("ce", "mse")), "bias": (str, ("none", "free", "reg")),
    "classes": (int, None), "per_class": (int, None), "dim": (int, None),
    "depth": (int, None), "width": (int, None), "activation": (str, _ACTS),
    "lambda_w": (float, None), "lambda_h": (float, None), "lambda_b": (float, None),
    "lambda": (float, None), "init": (str, ("gaussian", "spectral", "etf")),
    "init_scale": (float, None), "seed": (int, None), "eta_h": (float, None),
    "eta_w": (float, None), "eta_b": (float, None),
    "solver": (str, ("gd", "rk4", "dopri5", "tsit5")), "dt": (float, None),
    "rtol": (float, None), "atol": (float, None), "t_end": (float, None),
    "records": (int, None), "t_first": (float, None), "max_steps": (int, None),
    "onset_metric": (str, ("nc1_trace", "nc1", "nc2_etf", "nc2_angle", "nc3", "nc3_paper",
                           "cdnv")),
    "onset_threshold": (float, None), "onset_stay": (int, None),
    "dtype": (str, ("float64", "float32")), "chunk": (int, None),
    "reduction": (str, ("auto", "none", "gram", "classes")),
    "intervene_time": (float, None), "intervene_alpha": (float, None),
    "leaky_slope": (float, None), "gtol": (float, None), "vanish_tol": (float, None),
    "onset_interpolate": (bool, None),
}
TRAIN_PARAMS: dict[str, tuple[type, tuple | None]] = {
    "dataset": (str, ("gaussian", "digits", "mnist1d", "fashion_mnist", "mnist", "cifar10")),
    "data_root": (str, None), "per_class": (int, None), "test_per_class": (int, None),
    "data_dim": (int, None), "data_classes": (int, None), "separation": (float, None),
    "preset": (str, ("mlp", "resnet20")), "arch": (str, ("mlp", "cnn", "resnet20")),
    "depth": (int, None), "width": (int, None), "activation": (str, _ACTS),
    "epochs": (list, None), "lr": (float, None), "weight_decay": (float, None),
    "batch_size": (int, None), "seed": (int, None), "nc_every": (int, None),
    "onset_threshold": (float, None), "intervention_epoch": (int, None),
    "intervention_alpha": (float, None), "device": (str, None), "chunk": (int, None),
    "reference_train_size": (int, None), "nc_dense": (int, None),
}
PART_KEYS = ("name", "model", "grid", "skip")
# A part name goes into figure file names (trajectories_<part>.png): at most this long.
PART_NAME_MAX = 100
# The most runs of a study variant (all parts): more would take days; split such a study.
STUDY_MAX_RUNS = 100_000


EXECUTION_ONLY = ("chunk", "data_root")  # how and where a run is computed, not what
TRAINED_ONSET_THRESHOLD = 0.01  # a trained run's onset: first phase-2 NC1 below this


@dataclass(frozen=True)
class RunDesc:
    """One run of a study: its part, its model kind and its resolved parameters."""

    part: str
    model: str
    params: dict[str, Any] = field(hash=False)

    @functools.cached_property
    def run_id(self) -> str:
        """Stable 12-hex hash of what the run computes: (part, model, parameters).

        A simulated run's parameters enter as its RunSpec's identifier
        (:func:`ncsim.flow.simulate.run_id`: every field, code defaults included) and its
        intervention; a trained run's as its resolved training configuration, data and onset
        threshold (:func:`_trained_identity`, code defaults and presets included). So a default
        written out, or ``lambda`` written as ``lambda_w`` and ``lambda_h``, is the same run,
        and a changed default or preset is another. Parameters that say how or where a run is
        computed (``chunk``, ``data_root``) are left out. Invalid parameters hash as written
        (checking a study reports them, naming the key)."""
        params = {k: v for k, v in self.params.items() if k not in EXECUTION_ONLY}
        identity = _simulated_identity if self.model == "simulated" else _trained_identity
        with contextlib.suppress(InputError):
            params = identity(params)
        text = json.dumps({"part": self.part, "model": self.model, "params": params},
                          sort_keys=True, default=str)
        return hashlib.sha1(text.encode()).hexdigest()[:12]


def _trained_identity(params: dict[str, Any]) -> dict[str, Any]:
    """What a trained run computes: its validated training configuration (presets and code
    defaults resolved; not its run id, labels or checkpoint folder; the device as written and
    not checked against this machine, so the id is the same on every machine), the data it is
    given and the onset threshold it is read with. Settings that the network or the data do not use
    (ResNet-20's depth and width, the Gaussian mixture's shape for another dataset) are left
    out, and so are a ``reference_train_size`` of None (epochs as given) and an ``nc_dense`` of
    0, which keep the ids of runs without them what they were before the settings existed."""
    from ncsim.validate.data import GAUSSIAN_PER_CLASS

    config = asdict(train_config({**params, "device": "cpu"}))
    config["device"] = params.get("device", "cpu")
    for key in ("run_id", "labels", "checkpoint_dir", "data_args"):
        config.pop(key, None)
    if config["reference_train_size"] is None:  # epochs as given: the ids of before the option
        config.pop("reference_train_size")
    if config["nc_dense"] == 0:  # no dense records: the ids of before the option
        config.pop("nc_dense")
    if config["arch"] == "resnet20":
        config.pop("depth")
        config.pop("width")
    data = dataset_args(params)
    if data["name"] == "gaussian":
        data["per_class"] = data["per_class"] or GAUSSIAN_PER_CLASS
    else:
        for key in ("classes", "dim", "separation"):
            data.pop(key)
    return {"config": config, "data": data,
            "onset_threshold": float(params.get("onset_threshold", TRAINED_ONSET_THRESHOLD))}


def dataset_args(params: dict[str, Any]) -> dict[str, Any]:
    """Arguments of :func:`ncsim.validate.data.load_dataset` for a trained run, code defaults
    included (the data folder, ``data_root``, is left to the caller)."""
    return {"name": params.get("dataset", "gaussian"), "per_class": params.get("per_class"),
            "test_per_class": params.get("test_per_class"), "seed": params.get("seed", 0),
            "classes": params.get("data_classes", 10), "dim": params.get("data_dim", 32),
            "separation": params.get("separation", 3.0)}


def _simulated_identity(params: dict[str, Any]) -> dict[str, Any]:
    """What a simulated run computes: its spec's identifier and its intervention, if any."""
    from ncsim.flow.simulate import run_id

    identity: dict[str, Any] = {"spec": run_id(run_spec(params))}
    if params.get("intervene_time") is not None:
        identity["intervene"] = [float(params["intervene_time"]),
                                 float(params.get("intervene_alpha", 1.0))]
    return identity


@dataclass
class Study:
    """A validated study specification (full or quick variant)."""

    name: str
    title: str
    question: str
    claim: str
    analysis: str
    metrics: list[str]
    parts: list[dict[str, Any]]
    source: str
    quick: bool = False
    notes: str = ""
    quick_note: str = ""  # the [quick] note of a quick variant (what its runs can decide)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def runs(self) -> list[RunDesc]:
        """Every run of the study, in grid order (duplicates removed)."""
        out: dict[str, RunDesc] = {}
        for part in self.parts:
            for desc in _part_runs(part):
                out.setdefault(desc.run_id, desc)
        return list(out.values())

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "question": self.question,
                "claim": self.claim, "analysis": self.analysis, "metrics": self.metrics,
                "parts": self.parts,
                "source": self.source, "quick": self.quick, "notes": self.notes,
                "quick_note": self.quick_note}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Study:
        keys = ("name", "title", "question", "claim", "analysis", "metrics", "parts",
                "source", "quick", "notes", "quick_note")  # others (older records) ignored
        return cls(**{k: data[k] for k in keys if k in data})


# ----------------------------------------------------------------------------- errors
def variant_name(quick: bool) -> str:
    """The word for a study's variant: "quick" or "full"."""
    return "quick" if quick else "full"


def _fail(source: str, key: str, message: str) -> None:
    raise InputError(f"{source}: key '{key}': {message}")


def _type_name(kind: type) -> str:
    return {str: "a string", int: "an integer", float: "a number", list: "a list",
            dict: "a table", bool: "true/false"}[kind]


def _check_type(source: str, key: str, value: Any, kind: type, allowed: tuple | None) -> Any:
    """Coerce ``value`` to ``kind`` or raise an error naming the file, the key and the type."""
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if kind is float and ok and not math.isfinite(value):
        ok = False
    if not ok:
        extra = f" (one of: {', '.join(allowed)})" if allowed else ""
        _fail(source, key, f"expected {_type_name(kind)}{extra}, got {value!r}")
    if allowed is not None and value not in allowed:
        _fail(source, key, f"unknown value {value!r}; allowed: {', '.join(allowed)}")
    if kind is list and re.sub(r"\[\d+\]$", "", key).endswith("epochs") and not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value):
        _fail(source, key, f"expected a list of integers >= 1, got {value!r}")
    return value


def _schema(model: str) -> dict[str, tuple[type, tuple | None]]:
    return SIM_PARAMS if model == "simulated" else TRAIN_PARAMS


def _check_params(source: str, where: str, table: dict[str, Any], model: str) -> dict[str, Any]:
    schema = _schema(model)
    out = {}
    for key, value in table.items():
        if key not in schema:
            _fail(source, f"{where}.{key}", f"unknown key for a {model} model; allowed: "
                  f"{', '.join(sorted(schema))}")
        kind, allowed = schema[key]
        out[key] = _check_type(source, f"{where}.{key}", value, kind, allowed)
    return out


def _axis_values(source: str, key: str, value: Any, model: str) -> list[Any]:
    """Values of one grid axis: a non-empty list, or a range / comma string for numbers."""
    schema = _schema(model)
    name = key.rsplit(".", 1)[-1]
    if name not in schema:
        _fail(source, key, f"unknown grid axis for a {model} model; allowed: "
              f"{', '.join(sorted(schema))}")
    kind, allowed = schema[name]
    if isinstance(value, str) and kind in (int, float):
        try:  # integers: a comma list of whole numbers, or a range rounded to integers
            values: list[Any] = (parse_ints(value, key, unique=False) if kind is int
                                 else parse_values(value, key))
        except InputError as err:  # its message starts with the key, named once here
            _fail(source, key, str(err).removeprefix(f"{key}: "))
    elif isinstance(value, list):
        values = value
    else:
        _fail(source, key, f"a grid axis must be a non-empty list or a range string like "
              f"'1e-4..1e-1:8', got {value!r}")
    if not values:
        _fail(source, key, "empty grid axis; give at least one value")
    checked = [_check_type(source, f"{key}[{i}]", v, kind, allowed)
               for i, v in enumerate(values)]
    _check_distinct(source, key, value, checked)
    return checked


def _check_distinct(source: str, key: str, written: Any, values: list[Any]) -> None:
    """Refuse a grid axis that repeats a value (``seed = [0, 0, 1]``, an integer range that
    rounds two points to one, or a range with equal ends): the repeat would be the same run,
    computed once."""
    hashed: set[Any] = set()
    unhashable: list[Any] = []  # e.g. class-count lists
    for value in values:
        try:
            repeated = value in hashed  # a set: an axis of 1e6 values is checked in linear time
        except TypeError:
            repeated = value in unhashable
        if repeated:
            if not (isinstance(written, str) and ".." in written):
                how = f"{value!r} appears more than once; give each value once"
            elif isinstance(value, int):
                how = (f"the range {written!r} rounds two points to {value!r}; give fewer "
                       "points or a list")
            else:  # a float range repeats a value only when its ends (nearly) meet
                how = (f"the range {written!r} gives {value!r} more than once; give "
                       "different ends, one point or a list")
            _fail(source, key, f"repeated grid value: {how} (a repeated value is the same "
                  "run, computed once)")
        try:
            hashed.add(value)
        except TypeError:
            unhashable.append(value)


# ----------------------------------------------------------------------------- loading
def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _check_quick_part(source: str, name: str, over: Any, part: dict[str, Any]) -> None:
    """Check one ``[quick.parts.NAME]`` table: a table of known parameters (of the part's
    model), ``grid`` axes and a true/false ``skip``; the part's ``name`` and ``model`` stay."""
    where = f"quick.parts.{name}"
    _check_type(source, where, over, dict, None)
    _check_type(source, f"{where}.skip", over.get("skip", False), bool, None)
    for key in ("name", "model"):
        if key in over:
            _fail(source, f"{where}.{key}", f"a quick override cannot change a part's {key} "
                  f"(the quick variant would no longer be a smaller run of part {name!r}); "
                  f"drop it, or write another part and skip this one in the quick variant")
    model = part["model"]  # checked with the part itself (_check_part) before
    fixed = {k: v for k, v in over.items() if k not in PART_KEYS}
    _check_params(source, where, fixed, model)
    grid = over.get("grid", {})
    _check_type(source, f"{where}.grid", grid, dict, None)
    for key, value in grid.items():
        _axis_values(source, f"{where}.grid.{key}", value, model)
    axes = {**(part.get("grid") if isinstance(part.get("grid"), dict) else {}), **grid}
    for key in fixed:
        if key in axes:
            _fail(source, f"{where}.{key}", f"'{key}' is a grid axis of part {name!r}, so a "
                  f"fixed value would be ignored; set it in [{where}.grid] as {key} = [...]")


_DECAYS = ("lambda_w", "lambda_h")


def _yield_decays(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` (a [simulated] table or a part, fixed keys and ``grid``) with its decays made
    way for those a quick override sets: an override's ``lambda`` removes the base's
    ``lambda_w`` and ``lambda_h``; an override's ``lambda_w`` (or ``lambda_h``) turns the base's
    ``lambda`` into the other decay alone, so that the two never meet in one table."""
    given = set(over) | set(over.get("grid", {}) if isinstance(over.get("grid"), dict) else ())
    if not given & {"lambda", *_DECAYS}:
        return base
    out = dict(base)
    grid = dict(out["grid"]) if isinstance(out.get("grid"), dict) else None
    for place in (out, grid):
        if place is None:
            continue
        if "lambda" in given:
            for key in _DECAYS:
                place.pop(key, None)
        elif "lambda" in place:
            value = place.pop("lambda")
            for key in _DECAYS:
                if key not in given and key not in place:
                    place[key] = value
    if grid is not None:
        out["grid"] = grid
    return out


def _apply_quick(source: str, raw: dict[str, Any]) -> dict[str, Any]:
    quick = raw.get("quick", {})
    for key in quick:
        if key not in QUICK_KEYS:
            _fail(source, f"quick.{key}", f"unknown key; allowed: {', '.join(QUICK_KEYS)}")
    if "note" in quick:
        _check_type(source, "quick.note", quick["note"], str, None)
    out = {k: v for k, v in raw.items() if k != "quick"}
    for key in ("simulated", "trained"):
        if key in quick:
            _check_type(source, f"quick.{key}", quick[key], dict, None)
            _check_params(source, f"quick.{key}", quick[key], key)
            out[key] = _merge(_yield_decays(out.get(key, {}), quick[key]), quick[key])
    overrides = quick.get("parts", {})
    _check_type(source, "quick.parts", overrides, dict, None)
    names = [p.get("name") for p in out["parts"]]
    parts = []
    for name in overrides:
        if name not in names:
            _fail(source, f"quick.parts.{name}", f"no part of that name; parts: "
                  f"{', '.join(map(str, names))}")
        _check_quick_part(source, name, overrides[name], out["parts"][names.index(name)])
    for part in out["parts"]:
        merged = part
        if part.get("name") in overrides:
            over = dict(overrides[part["name"]])
            merged = _yield_decays(part, over)
            if "grid" in over:  # the quick grid replaces the axes it names
                merged = _merge(merged, {"grid": over.pop("grid")})
            merged = _merge(merged, over)
        if not merged.get("skip", False):
            parts.append(merged)
    out["parts"] = parts
    return out


def _check_top(source: str, raw: dict[str, Any]) -> None:
    for key, value in raw.items():
        if key in DROPPED_KEYS:
            _fail(source, key, DROPPED_KEYS[key])
        if key not in TOP_KEYS:
            _fail(source, key, f"unknown key; allowed: {', '.join(TOP_KEYS)}")
        _check_type(source, key, value, TOP_KEYS[key], None)
    for key in REQUIRED:
        if key not in raw:
            _fail(source, key, "missing; a study needs: " + ", ".join(REQUIRED))
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", raw["name"]):
        _fail(source, "name", f"{raw['name']!r} is not a folder name: the default output folder "
              "is ncsim-out/<name>; use letters, digits, '_', '-' and '.', starting with a "
              "letter or digit")
    from ncsim.study.analyses import ANALYSES

    _check_type(source, "analysis", raw["analysis"], str, tuple(ANALYSES))
    for i, v in enumerate(raw.get("metrics", [])):
        _check_type(source, f"metrics[{i}]", v, str, METRICS)
    if not raw["parts"]:
        _fail(source, "parts", "empty; give at least one [[parts]] table")


def _check_own_keys(source: str, name: Any, part: dict[str, Any]) -> None:
    """A ``[[parts]]`` table of the file: no ``skip`` (only a quick variant skips a part) and
    no parameter that is both fixed and a grid axis (the fixed value would be ignored)."""
    where = f"parts.{name}"
    if "skip" in part:
        _fail(source, f"{where}.skip", f"only the quick variant skips a part: write "
              f"[quick.parts.{name}] skip = true, or remove the part")
    grid = part.get("grid", {})
    for key in part:
        if key not in PART_KEYS and isinstance(grid, dict) and key in grid:
            _fail(source, f"{where}.{key}", f"'{key}' is also a grid axis of the part, so the "
                  f"fixed value would be ignored; give it in one place")


def _decays_inherited(source: str, model: Any, defaults: dict[str, Any], own: set[str],
                      where: str) -> dict[str, Any]:
    """The study-level defaults a part inherits, ``lambda`` (both decays) and ``lambda_w`` /
    ``lambda_h`` resolved by where they are set (:func:`_yield_decays`): the part's own
    ``lambda`` replaces inherited ``lambda_w`` and ``lambda_h``; its own ``lambda_w`` (or
    ``lambda_h``) leaves an inherited ``lambda`` to the other decay alone, written as that
    decay (the run table would otherwise show a ``lambda`` the run does not have).
    One level (the part, fixed or grid, or the [simulated] table) setting ``lambda`` beside
    ``lambda_w`` or ``lambda_h`` is refused: ``lambda`` would be overridden there, in part or
    whole, while the run table still showed it."""
    if model != "simulated":
        return dict(defaults)
    both = {"lambda_w", "lambda_h"}
    for keys, at in ((own, where), (set(defaults), "simulated")):
        if "lambda" in keys and keys & both:
            given = " and ".join(sorted(keys & both))
            _fail(source, at, f"sets lambda and {given}, so lambda would be overridden by "
                  f"{given}; give lambda (both decays) or lambda_w and lambda_h")
    return _yield_decays(defaults, dict.fromkeys(own))


def _check_part(source: str, index: int, part: Any, defaults: dict[str, dict]) -> dict[str, Any]:
    where = f"parts[{index}]"
    _check_type(source, where, part, dict, None)
    name = part.get("name", f"part{index}")
    _check_type(source, f"{where}.name", name, str, None)
    if (len(name) > PART_NAME_MAX or not name.isprintable() or name in (".", "..")
            or any(c in name for c in "/\\")):
        _fail(source, f"{where}.name", f"{name[:60]!r} cannot name the part's figure files: "
              f"use at most {PART_NAME_MAX} printable characters, without '/' or '\\' and "
              "other than '.' or '..'")
    where = f"parts.{name}"
    model = part.get("model")
    if model is None:
        _fail(source, f"{where}.model", f"missing; allowed: {', '.join(MODELS)}")
    _check_type(source, f"{where}.model", model, str, MODELS)
    fixed = {k: v for k, v in part.items() if k not in PART_KEYS}
    raw_grid = part.get("grid", {})
    _check_type(source, f"{where}.grid", raw_grid, dict, None)
    inherited = _decays_inherited(source, model, defaults.get(model, {}), {*fixed, *raw_grid},
                                  where)
    fixed = _check_params(source, where, {**inherited, **fixed}, model)
    axes = {k: _axis_values(source, f"{where}.grid.{k}", v, model) for k, v in raw_grid.items()}
    for key in axes:
        fixed.pop(key, None)
    return {"name": name, "model": model, "fixed": fixed, "grid": axes}


def parse_study(raw: dict[str, Any], source: str, quick: bool = False) -> Study:
    """Validate a parsed TOML document; raise :class:`InputError` naming file and key."""
    _check_top(source, raw)
    for key in ("simulated", "trained"):
        _check_params(source, key, raw.get(key, {}), key)
    for i, part in enumerate(raw["parts"]):
        _check_type(source, f"parts[{i}]", part, dict, None)
        _check_own_keys(source, part.get("name", f"part{i}"), part)
    # both variants are checked whichever one is loaded, their runs built: a malformed file
    # is refused as a whole (a quick variant must not hide a full one that cannot run)
    defaults = {k: raw.get(k, {}) for k in ("simulated", "trained")}
    parts = [_check_part(source, i, p, defaults) for i, p in enumerate(raw["parts"])]
    resolved_raw = _apply_quick(source, raw)
    if "quick" in raw:
        quick_defaults = {k: resolved_raw.get(k, {}) for k in ("simulated", "trained")}
        quick_parts = [_check_part(source, i, p, quick_defaults)
                       for i, p in enumerate(resolved_raw["parts"])]
    elif quick:
        _fail(source, "quick", "missing; every study needs a [quick] variant")
    names = [p["name"] for p in parts]
    if len(set(names)) != len(names):
        _fail(source, "parts", f"part names must be unique, got {', '.join(names)}")

    def variant(chosen: list[dict[str, Any]], is_quick: bool) -> Study:
        return Study(name=raw["name"], title=raw["title"], question=raw["question"],
                     claim=raw["claim"], analysis=raw["analysis"],
                     metrics=list(raw.get("metrics", [])), parts=chosen, source=source,
                     quick=is_quick, notes=raw.get("notes", ""),
                     quick_note=raw.get("quick", {}).get("note", "") if is_quick else "",
                     raw=raw)

    variants = [variant(parts, False)] + ([variant(quick_parts, True)] if "quick" in raw else [])
    for each in variants:
        _check_runs(source, each)
    return variants[-1] if quick else variants[0]


def _check_runs(source: str, study: Study) -> None:
    """Refuse a variant whose grid repeats a run, that resolves to no run, or one of whose
    runs does not build a valid spec or config (all before anything starts)."""
    where = "quick." if study.quick else ""
    total = sum(grid_size(part["grid"]) for part in study.parts)
    if total > STUDY_MAX_RUNS:
        _fail(source, f"{where}parts", f"the grids give {total} runs; a study takes at most "
              f"{STUDY_MAX_RUNS}: give fewer grid values or split the study")
    for part in study.parts:
        _check_distinct_runs(source, part)
    runs = study.runs()
    if not runs:
        _fail(source, f"{where}parts", "the study resolves to no run")
    for desc in runs:
        try:
            build(desc)
        except InputError as err:
            _fail(source, f"{where}parts.{desc.part}", f"run {desc.params}: {err}")


def load_study(path: str | Path, quick: bool = False) -> Study:
    """Read and validate a study file (a path or the name of a shipped study)."""
    path = resolve_path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise InputError(f"{path}: not valid TOML: {err}") from None
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not a text file in UTF-8 ({err.reason} at byte "
                         f"{err.start}); give a TOML study file") from None
    return parse_study(raw, str(path), quick)


def spec_dir() -> Path:
    """Folder of the study files shipped with the package."""
    return Path(__file__).with_name("specs")


def resolve_path(path: str | Path) -> Path:
    """A file path, or a study name (``depth`` or ``depth.toml``, no folder) found in
    ./studies/ or in the shipped specs. A path with a folder must be a file: a missing one
    is an error, never a shipped study of the same name."""
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    known = ", ".join(sorted(p.stem for p in spec_dir().glob("*.toml")))
    if candidate.name != str(path):
        raise InputError(f"study file {str(path)!r} not found (give an existing .toml file, "
                         f"or the name of a study without a folder: {known})")
    name = candidate.stem if candidate.suffix == ".toml" else str(path)
    for folder in (Path("studies"), spec_dir()):
        found = folder / f"{name}.toml"
        if found.is_file():
            return found
    raise InputError(f"study {str(path)!r} not found (a .toml file or one of: {known})")


def shipped_studies() -> list[Path]:
    """The study files shipped with the package, sorted by name."""
    return sorted(spec_dir().glob("*.toml"))


# ----------------------------------------------------------------------------- runs
def _part_runs(part: dict[str, Any]) -> list[RunDesc]:
    return [RunDesc(part["name"], part["model"], {**part["fixed"], **point})
            for point in cartesian(part["grid"])]


def _check_distinct_runs(source: str, part: dict[str, Any]) -> None:
    """Refuse two grid points of a part that are the same run (e.g. ``lambda`` as an axis
    while ``lambda_w`` and ``lambda_h`` are fixed): it would be computed once, silently."""
    seen: dict[str, dict[str, Any]] = {}
    for desc, point in zip(_part_runs(part), cartesian(part["grid"])):
        if desc.run_id in seen:
            _fail(source, f"parts.{part['name']}.grid", f"the grid points {seen[desc.run_id]} "
                  f"and {point} are the same run (it would be computed once); change the "
                  "axes so that every point differs")
        seen[desc.run_id] = point


def build(desc: RunDesc) -> Any:
    """The RunSpec (simulated) or TrainConfig (trained) of a run, validated."""
    if desc.model == "simulated":
        return run_spec(desc.params)
    return train_config(desc.params)


def _given(params: dict[str, Any], **fields: str) -> dict[str, Any]:
    """{spec field: params[key]} for each ``field=key`` whose key the study gives; a key it
    leaves out leaves the field at the spec's default."""
    return {name: params[key] for name, key in fields.items() if key in params}


def run_spec(params: dict[str, Any]):
    """A validated :class:`ncsim.spec.RunSpec` from flat simulated-run parameters.

    A key a study leaves out takes the default here. The solver's differ from the
    :class:`ncsim.spec.SolverSpec` defaults (and ``ncsim simulate``'s): rtol 1e-6, atol 1e-9
    and 100 records, against 1e-8, 1e-10 and 200; the others are ``ncsim simulate``'s
    (K = 10, n = 20, d = 32, CE, lambda_W = lambda_H = 5e-4, init scale 0.1, t_end 2e4).
    The shipped studies set their tolerances and records in [simulated]."""
    from ncsim.spec import (
        InitSpec,
        ModelSpec,
        OnsetSpec,
        Regularization,
        RunSpec,
        SolverSpec,
        TimeScale,
    )

    p = dict(params)
    depth = int(p.get("depth", 1))
    lam = p.get("lambda")
    model = ModelSpec(kind="ufm" if depth == 1 else "deep", loss=p.get("loss", "ce"),
                      bias=p.get("bias", "none"), classes=p.get("classes", 10),
                      per_class=p.get("per_class", 20), dim=p.get("dim", 32), depth=depth,
                      width=p.get("width"), activation=p.get("activation", "linear"),
                      **_given(p, leaky_slope="leaky_slope"))
    reg = Regularization(lambda_w=p.get("lambda_w", lam if lam is not None else 5e-4),
                         lambda_h=p.get("lambda_h", lam if lam is not None else 5e-4),
                         lambda_b=p.get("lambda_b", 0.0))
    init = InitSpec(kind=p.get("init", "gaussian"), scale=p.get("init_scale", 0.1),
                    seed=p.get("seed", 0))
    ts = TimeScale(eta_h=p.get("eta_h", 1.0), eta_w=p.get("eta_w", 1.0), eta_b=p.get("eta_b", 1.0))
    solver = SolverSpec(method=p.get("solver", "dopri5"), dt=p.get("dt"),
                        rtol=p.get("rtol", 1e-6), atol=p.get("atol", 1e-9),
                        t_end=p.get("t_end", 2e4), records=p.get("records", 100),
                        t_first=p.get("t_first"), max_steps=p.get("max_steps", 1_000_000),
                        dtype=p.get("dtype", "float64"),
                        **_given(p, reduction="reduction", gtol="gtol", vanish_tol="vanish_tol"))
    onset = OnsetSpec(metric=p.get("onset_metric", "nc1_trace"),
                      threshold=p.get("onset_threshold", 0.01), stay=p.get("onset_stay", 1),
                      **_given(p, interpolate="onset_interpolate"))
    spec = RunSpec(model=model, reg=reg, init=init, time_scale=ts, solver=solver, onset=onset)
    spec.validate()
    t1 = p.get("intervene_time")
    if t1 is not None and not 0 < t1 < solver.t_end:
        raise InputError(f"intervene_time must lie in (0, t_end = {solver.t_end}), got {t1}")
    if t1 is not None and solver.t_first is not None and solver.t_first >= t1:
        raise InputError(f"intervene_time {t1:g} is not after t_first = {solver.t_first:g} "
                         "(the first record time, from which the segment before the "
                         "intervention is recorded); give a t_first below intervene_time, "
                         "or none")
    if t1 is not None and solver.records < 3:
        raise InputError(f"an intervention run needs records >= 3 (two segments of at least "
                         f"2 records, sharing one), got {solver.records}")
    if p.get("intervene_alpha", 1.0) <= 0:
        raise InputError("intervene_alpha must be > 0")
    if "intervene_alpha" in p and t1 is None:
        raise InputError("intervene_alpha needs intervene_time (the time at which H is "
                         "rescaled); give both or neither")
    chunk = p.get("chunk", 1)
    if not (isinstance(chunk, int) and not isinstance(chunk, bool) and chunk >= 1):
        raise InputError(f"chunk (runs integrated in one batch) must be an integer >= 1, "
                         f"got {chunk!r}")
    return spec


def train_config(params: dict[str, Any]):
    """A validated :class:`ncsim.validate.train.TrainConfig` from flat trained-run parameters."""
    import dataclasses

    from ncsim.validate.train import preset

    p = dict(params)
    epochs = tuple(p["epochs"]) if "epochs" in p else None
    overrides = {k: p[k] for k in ("arch", "depth", "width", "activation", "seed", "nc_every",
                                   "nc_dense", "intervention_epoch", "intervention_alpha",
                                   "device", "reference_train_size")
                 if k in p}
    config = preset(p.get("preset", "mlp"), epochs=epochs, **overrides)
    phase_over = {k: p[k] for k in ("lr", "weight_decay", "batch_size") if k in p}
    if phase_over:
        config = dataclasses.replace(config, phases=tuple(
            dataclasses.replace(ph, **phase_over) for ph in config.phases))
    return config.validate()
