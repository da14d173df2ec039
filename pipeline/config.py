"""Typed run configuration: TOML files under ``configs/`` plus ``--set section.key=value``.

One config object drives every stage. Each stage hashes only the sections it reads, so changing
``train.lr`` recomputes train and evaluate but never ingest.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from fame.config import (
    EvalConfig,
    Float,
    Int,
    ModelConfig,
    NonNegInt,
    PosFloat,
    PosInt,
    TrainConfig,
)
from pretrain.config import FacetSpec, PretrainConfig
from sources.synth_config import SynthConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "configs"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the file and field."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False, allow_inf_nan=False)


# DataConfig fields the synthetic format fixes: it writes its own files, columns named as given
FILE_FIELDS = ("dir", "interactions", "items", "item_text", "user_col", "item_col", "time_col")


class DataConfig(Strict):
    """Where the raw files are and how to turn them into sequences."""

    name: str = Field(description="dataset name; becomes part of artifact keys, never a raw path")
    format: Literal["s3rec", "recbole", "amazon", "amazon2023", "movielens", "table", "synthetic"]
    dir: str = Field("", description="folder under data_dir (or absolute) holding the files")
    interactions: str | None = Field(
        None, description="interaction file name inside `dir` (all formats but synthetic)"
    )
    items: str | None = Field(None, description="item metadata file name inside `dir` (optional)")
    item_text: str | None = Field(
        None,
        description="s3rec only: an item table (TSV/CSV/Parquet with an `item_id` column) joined "
        "on the S3-Rec item id; relative to `dir`, and never outside the data dir",
    )
    user_col: str = "user_id"
    item_col: str = "item_id"
    time_col: str = "timestamp"
    user_core: NonNegInt = Field(0, description="k-core: min interactions per user (0 = off)")
    item_core: NonNegInt = Field(0, description="k-core: min interactions per item (0 = off)")
    min_seq_len: Int = Field(3, ge=3, description="users with fewer interactions are dropped")
    dedup: Literal["none", "first", "last"] = Field(
        "none", description="repeated (user, item) pairs: keep all, the first or the last"
    )
    min_rating: Float | None = Field(None, description="drop interactions rated below this")
    cold_items: Float = Field(
        0.0,
        ge=0,
        lt=0.5,
        description="item cold-start protocol: this seeded share of the items is held out of "
        "training entirely (their valid/test interactions become cold targets, reported apart "
        "from warm ones); 0 = off",
    )
    cold_seed: Int = Field(0, description="seed of the held-out item choice (cold_items > 0)")
    synth: SynthConfig | None = Field(
        None, description="synthetic only: generator parameters (default: demo size)"
    )

    @model_validator(mode="after")
    def _format_fields(self) -> DataConfig:
        """Synthetic data names no files and has a ``synth`` table; file formats the reverse."""
        if self.format == "synthetic":
            fields = type(self).model_fields
            given = [f for f in FILE_FIELDS if getattr(self, f) != fields[f].default]
            if given:
                raise ValueError(
                    f"data.{given[0]}: not used by data.format = 'synthetic' (the generator "
                    "writes its own files); remove it"
                )
            self.synth = self.synth or SynthConfig()
        else:
            if self.synth is not None:
                raise ValueError(
                    f"data.synth: only allowed with data.format = 'synthetic' "
                    f"(data.format = {self.format!r})"
                )
            if not self.interactions:
                raise ValueError(f"data.interactions: required for data.format = {self.format!r}")
        return self

    @field_validator("item_text")
    @classmethod
    def _empty_is_none(cls, v: str | None) -> str | None:
        return v or None  # `--set data.item_text=''` switches a config's text table off

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(
                f"dataset name {v!r} must match {NAME_RE.pattern} (it is used in keys)"
            )
        return v


class EncodeConfig(Strict):
    model: str = Field(
        "default", description="'default' (offline all-MiniLM-L6-v2), a model name or local dir"
    )
    template: str = Field("{title}", description="item text template over item fields")
    batch_size: PosInt = 64
    max_length: PosInt | None = None
    device: str = "auto"


class InitConfig(Strict):
    method: Literal["random", "text", "facet_pretrain"] = "random"
    freeze: bool = Field(False, description="keep the initial item embeddings fixed")
    freeze_epochs: NonNegInt = Field(
        0, description="keep them fixed for the first N epochs only, then train them"
    )
    scale: Literal["table", "slice"] = Field(
        "table",
        description="text/facet_pretrain tables: one factor for the whole table (§6.7), or each "
        "head's d'-slice scaled to model.init_std on its own (PCA puts most variance in slice 0)",
    )
    gain: PosFloat = Field(
        1.0,
        description="the whole initial item table times this factor (text/facet_pretrain: "
        "the text rows and the random rows of items without text; random: the model's own "
        "N(0, init_std²) table, the control); 1 keeps §6.7's model.init_std, more keeps the "
        "initial geometry against the first updates for longer",
    )


class PathsConfig(Strict):
    data_dir: str | None = Field(
        None,
        description="folder holding the datasets; default: $FAME_DATA_DIR, else "
        "../shared/data, else ./data",
    )
    artifacts: str | None = Field(None, description="default: $FAME_HOME, else ./artifacts")


# fields that moved from [train] to [evaluate] (the one evaluation spec): old configs and the
# configs recorded by earlier runs still load, with a warning
MOVED_TO_EVALUATE = {"ks": "ks", "eval_batch_size": "batch_size"}


def _move_eval_fields(data: Any, warn: bool = True) -> Any:
    """``train.ks``/``train.eval_batch_size`` -> ``evaluate.ks``/``evaluate.batch_size``;
    ``train.exclude_history = false`` -> ``keep_history`` first in ``evaluate.protocols``."""
    if not isinstance(data, dict) or not isinstance(data.get("train"), dict):
        return data
    train = dict(data["train"])
    moved = [f for f in (*MOVED_TO_EVALUATE, "exclude_history") if f in train]
    if not moved:
        return data
    evaluate = dict(data.get("evaluate") or {})
    for old, new in MOVED_TO_EVALUATE.items():
        if old in train:
            evaluate.setdefault(new, train.pop(old))
    if "exclude_history" in train:
        primary = "exclude_history" if train.pop("exclude_history") else "keep_history"
        protocols = list(evaluate.get("protocols", ["exclude_history", "keep_history"]))
        evaluate["protocols"] = [primary, *(p for p in protocols if p != primary)]
    if warn:
        logging.getLogger("fame").warning(
            "config: %s moved to [evaluate] (ks, batch_size; the first of evaluate.protocols is the "
            "one early stopping uses); read as such",
            ", ".join(f"train.{f}" for f in moved),
        )
    return {**data, "train": train, "evaluate": evaluate}


class RunConfig(Strict):
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    encode: EncodeConfig = Field(default_factory=EncodeConfig)
    facets: list[FacetSpec] = Field(default_factory=list)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    init: InitConfig = Field(default_factory=InitConfig)
    evaluate: EvalConfig = Field(default_factory=EvalConfig)
    paths: PathsConfig = Field(default_factory=PathsConfig)

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, data: Any, info: ValidationInfo) -> Any:
        """Old field names; quiet for configs recorded by earlier runs (context quiet=True)."""
        return _move_eval_fields(data, warn=not (info.context or {}).get("quiet"))

    @field_validator("pretrain", "facets", mode="wrap")
    @classmethod
    def _plain_numbers(
        cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> Any:
        """What ``fame.config``'s number types refuse (a boolean for a number, NaN, ±inf), for
        the sections whose classes ``pretrain.config`` declares with plain ``int``/``float``."""
        loc = info.field_name
        annotation = cls.model_fields[loc].annotation
        many = get_origin(annotation) is list
        spec = get_args(annotation)[0] if many else annotation
        raws = list(enumerate(value)) if many and isinstance(value, list) else [(None, value)]
        for i, raw in raws:
            _refuse_bools(raw, spec, loc if i is None else f"{loc}.{i}")
        result = handler(value)
        for i, obj in enumerate(result) if many else [(None, result)]:
            for f in dataclasses.fields(obj):
                val = getattr(obj, f.name)
                if isinstance(val, float) and not math.isfinite(val):
                    where = loc if i is None else f"{loc}.{i}"
                    raise ValueError(f"{where}.{f.name}: expected a finite number, got {val}")
        return result

    @model_validator(mode="after")
    def _text_pathway(self) -> RunConfig:
        """The text pathway keeps the pretrain stage's projector: it needs one, and its table
        has no free rows to freeze."""
        if self.model.item_repr != "text":
            return self
        if self.init.method == "random":
            raise ValueError(
                "model.item_repr = 'text' needs init.method = 'text' or 'facet_pretrain' (the "
                "projector it keeps); init.method = 'random' has none"
            )
        if self.init.freeze or self.init.freeze_epochs or self.init.scale != "table":
            raise ValueError(
                "init.freeze, init.freeze_epochs and init.scale = 'slice' act on a free item "
                "table; with model.item_repr = 'text' use model.text_mode instead"
            )
        return self

    # -- resolved locations -------------------------------------------------------------------
    def data_dir(self) -> Path:
        if self.paths.data_dir:
            return Path(self.paths.data_dir).expanduser().resolve()
        return default_data_dir()

    def dataset_dir(self) -> Path:
        base = Path(self.data.dir).expanduser()
        return base if base.is_absolute() else self.data_dir() / base

    def data_file(self, name: str, what: str) -> Path:
        """A file named by ``data.<what>``, under the dataset folder; a relative name may climb
        out of that folder (``../amazon-text/x.tsv``) but never out of the data dir."""
        base = self.dataset_dir()
        path = (base / Path(name).expanduser()).resolve()
        if not Path(name).expanduser().is_absolute():
            roots = [base.resolve(), self.data_dir().resolve()]
            if not any(path.is_relative_to(r) for r in roots):
                raise ConfigError(
                    f"data.{what} = {name!r} resolves to {path}, outside the dataset folder "
                    f"{roots[0]} and the data dir {roots[1]}; give an absolute path to mean it"
                )
        return path

    def artifacts_dir(self) -> Path:
        if self.paths.artifacts:
            return Path(self.paths.artifacts).expanduser().resolve()
        return default_artifacts_dir()

    def section(self, name: str) -> Any:
        """A section as plain JSON-able data (what stage keys hash)."""
        return self.model_dump(mode="json")[name]


DATA_DIR_ORDER = (
    "--data-dir (paths.data_dir), else $FAME_DATA_DIR, else ../shared/data, else ./data"
)


def default_artifacts_dir() -> Path:
    """The artifact root when a config names none: $FAME_HOME, else ./artifacts."""
    return Path(os.environ.get("FAME_HOME", "artifacts")).expanduser().resolve()


def default_data_dir() -> Path:
    """The data dir when a config names none: $FAME_DATA_DIR, else ``../shared/data`` beside
    the working directory or the repository, else ``./data`` (where ``fame data fetch`` writes)."""
    if env := os.environ.get("FAME_DATA_DIR"):
        return Path(env).expanduser().resolve()
    for candidate in (
        Path.cwd() / ".." / "shared" / "data",
        REPO_ROOT / ".." / "shared" / "data",
    ):
        if candidate.is_dir():
            return candidate.resolve()
    return (Path.cwd() / "data").resolve()


def _refuse_bools(raw: Any, spec: type, loc: str) -> None:
    """A boolean given for a non-boolean field of ``spec`` in raw input: pydantic's lax mode
    would read ``steps = true`` as 1."""
    if not isinstance(raw, dict):
        return
    for key, val in raw.items():
        field = spec.__pydantic_fields__.get(key)
        if field is None or not isinstance(val, bool):
            continue
        if bool not in (field.annotation, *get_args(field.annotation)):
            raise ValueError(f"{loc}.{key}: expected a number, got the boolean {str(val).lower()}")


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A config given as a path, or as a name looked up in ./configs then the repo's configs/."""
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.is_file():
        return path.resolve()
    stem = path.name if path.suffix != ".toml" else path.stem
    if not NAME_RE.match(stem):
        raise ConfigError(f"config name {str(name_or_path)!r} is not a valid name or existing file")
    for base in (Path.cwd() / "configs", CONFIG_DIR):
        if (candidate := base / f"{stem}.toml").is_file():
            return candidate.resolve()
    raise ConfigError(
        f"config {str(name_or_path)!r} not found (looked for a file, ./configs/{stem}.toml and "
        f"{CONFIG_DIR}/{stem}.toml)"
    )


def parse_value(raw: str) -> Any:
    """Parse an override value as a TOML value, falling back to a bare string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def parse_overrides(texts: Iterable[str]) -> dict[str, Any]:
    """``section.key=value`` strings (``--set``) as a ``{"section.key": value}`` dict."""
    out: dict[str, Any] = {}
    for text in texts:
        key, eq, raw = text.partition("=")
        if not eq:
            raise ConfigError(f"override {text!r} must look like section.key=value")
        out[key.strip()] = parse_value(raw.strip())
    return out


def apply_overrides(
    data: dict[str, Any], overrides: dict[str, Any] | list[str] | None
) -> dict[str, Any]:
    """Apply dotted-key overrides (``train.lr=3e-4`` strings or a ``{"train.lr": 3e-4}`` dict)."""
    if not overrides:
        return data
    if not isinstance(overrides, dict):
        overrides = parse_overrides(overrides)
    for key, value in overrides.items():
        parts = key.split(".")
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key!r}: {part!r} is not a section")
        node[parts[-1]] = value
    return data


def load_config(
    name_or_path: str | Path,
    overrides: dict[str, Any] | list[str] | None = None,
    data_dir: str | Path | None = None,
) -> RunConfig:
    """Load a TOML config, apply overrides and validate; errors name the file and field."""
    path = resolve_config_path(name_or_path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    data = apply_overrides(data, overrides)
    if data_dir is not None:
        data.setdefault("paths", {})["data_dir"] = str(data_dir)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        lines = [f"{path}: invalid config"]
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            lines.append(f"  {loc}: {err['msg']}")
        raise ConfigError("\n".join(lines)) from exc
