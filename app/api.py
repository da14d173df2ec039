"""The Python API: run a pipeline, open a finished run by id (or the latest of a config)
wherever its raw data now is, and score, recommend and explain with its model.

A run is found through the store's records (``runs``: its config; ``stages``: the artifact key
of each stage it used), never by re-hashing the config against raw files, so a run stays usable
when the data folder moves. Items and users are the source ids of the data, in and out.

    from app import api
    run = api.open_run("latest", config="ml-100k")
    run.recommend(["1", "2"], k=10)              # pandas: user, rank, item, title, score
    run.recommend_sequence(["50", "172", "133"], explain=True)
    run.metrics(); run.history()                 # pandas frames of the catalog rows
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fame.config import ColdScores
from pipeline.config import RunConfig, default_artifacts_dir, load_config
from pipeline.errors import PipelineError
from storage import Artifact, ArtifactStore

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from fame.config import Protocol
    from fame.model import SeqRecModel


def run(
    config: str | Path = "ml-100k",
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
    *,
    stages: Iterable[str] | None = None,
    force: Iterable[str] = (),
    data_dir: str | Path | None = None,
    progress: bool = True,
) -> Run:
    """Run the pipeline for a config (a name under configs/ or a TOML path) plus overrides
    (``{"train.epochs": 3}`` or ``["train.epochs=3"]``), in process; returns the finished run."""
    from pipeline.runner import run_pipeline

    cfg = load_config(config, overrides, data_dir)
    ctx = run_pipeline(cfg, stages, force, progress=progress, config_name=str(config))
    return open_run(ctx.run_id, artifacts=cfg.artifacts_dir())


def runs(artifacts: str | Path | None = None) -> pd.DataFrame:
    """Every recorded run, newest first: id, dataset, model, init, seed, status, times."""
    import pandas as pd

    rows = ArtifactStore(_root(artifacts)).records("runs")
    cols = ["run_id", "config_name", "dataset", "model", "init", "seed", "status"]
    frame = pd.DataFrame(rows, columns=[*cols, "started_at", "ended_at", "code_version"])
    return frame.sort_values("started_at", ascending=False, ignore_index=True)


def open_run(
    run_id: str = "latest",
    *,
    artifacts: str | Path | None = None,
    config: str | None = None,
    dataset: str | None = None,
    model: str | None = None,
) -> Run:
    """A finished run that trained a model: by id, or ``"latest"`` (newest completed run,
    optionally of a config name, dataset or model)."""
    from pipeline.runner import recorded_keys

    store = ArtifactStore(_root(artifacts))
    records = store.records("runs")
    keys = recorded_keys(store)
    if run_id == "latest":
        want = {"config_name": config, "dataset": dataset, "model": model}
        found = [
            r
            for r in records
            if r["status"] == "completed"
            and all(v is None or r.get(k) == v for k, v in want.items())
            and "train" in keys.get(r["run_id"], {})
        ]
        if not found:
            asked = ", ".join(f"{k}={v}" for k, v in want.items() if v) or "any config"
            raise PipelineError(f"no completed run with a trained model ({asked}) in {store.root}")
        record = max(found, key=lambda r: r["started_at"])
    else:
        record = next((r for r in records if r["run_id"] == run_id), None)
        if record is None:
            raise PipelineError(
                f"no run {run_id!r} in {store.root} (`fame sql 'select * from runs'`)"
            )
    return Run(store, record, keys.get(record["run_id"], {}))


def open_config(cfg: RunConfig, config_name: str = "") -> tuple[Run, str]:
    """The run that trained ``cfg``'s model: the newest completed run whose train key is the
    config's, else (the raw data moved, or the config changed) the newest completed run of the
    config name. Returns the run and a line saying which rule found it."""
    from pipeline.runner import plan_keys, recorded_keys

    root = cfg.artifacts_dir()
    store = ArtifactStore(root)
    try:
        key = plan_keys(cfg)["train"]
    except Exception:  # noqa: BLE001 - raw files gone or changed: no key to match
        key = None
    done = {r["run_id"]: r for r in store.records("runs") if r["status"] == "completed"}
    exact = [
        done[run_id]
        for run_id, stages in recorded_keys(store).items()
        if stages.get("train") == key and run_id in done
    ]
    if exact:
        record = max(exact, key=lambda r: r["started_at"])
        return open_run(record["run_id"], artifacts=root), f"run {record['run_id']} (this config)"
    try:
        found = open_run("latest", artifacts=root, config=config_name or None)
    except PipelineError:
        raise PipelineError(
            f"no trained model for this config in {root}; train it (`fame run --config "
            f"{config_name or '<config>'}`) or name a run with --run ID"
        ) from None
    return found, f"run {found.run_id} (the latest of config {config_name or 'any'})"


# items columns that are the pipeline's, not item fields a new item may give
_INTERNAL_ITEM_COLUMNS = ("item_id", "source_id", "held_out")


def _item_frame(new: Any) -> pa.Table:
    """New items as an Arrow table: from a frame, a table or a .parquet/.csv/.tsv/.jsonl file."""
    if isinstance(new, pa.Table):
        return new
    if isinstance(new, str | Path):
        path = Path(new)
        if not path.is_file():
            raise PipelineError(f"{path}: no such file of new items")
        try:
            if path.suffix == ".parquet":
                import pyarrow.parquet as pq

                return pq.read_table(path)
            if path.suffix in (".csv", ".tsv"):
                import pyarrow.csv as pcsv

                opts = pcsv.ParseOptions(delimiter="\t" if path.suffix == ".tsv" else ",")
                conv = pcsv.ConvertOptions(column_types={"item_id": pa.string()})
                return pcsv.read_csv(path, parse_options=opts, convert_options=conv)
            if path.suffix == ".jsonl":
                import pyarrow.json as pjson

                return pjson.read_json(path)
        except pa.ArrowInvalid as exc:
            raise PipelineError(f"{path}: cannot read new items: {exc}") from None
        raise PipelineError(f"{path}: new items come as .parquet, .csv, .tsv or .jsonl")
    return pa.Table.from_pandas(new, preserve_index=False)


def _root(artifacts: str | Path | None) -> Path:
    return Path(artifacts).expanduser().resolve() if artifacts else default_artifacts_dir()


@dataclass(frozen=True)
class Explanation:
    """Why FAME scored an item as it did: per-head scores, gate and router, heads named."""

    heads: list[str]  # head h's name: its facet when the item table came from facet pre-training
    gate: np.ndarray  # (n, H)
    contributions: np.ndarray  # (n, k, H) g_h s^h_v: sums over heads to the score
    top_expert: np.ndarray  # (n, H) the router's heaviest expert per head
    expert_weight: np.ndarray  # (n, H) its weight β


class Run:
    """One finished run: its config, artifacts and trained model."""

    def __init__(self, store: ArtifactStore, record: dict[str, Any], keys: dict[str, str]):
        self.store, self.record, self.keys = store, record, keys
        self.run_id: str = record["run_id"]
        # recorded configs may predate a renamed field: read as such, without a warning
        self.config = RunConfig.model_validate(
            json.loads(record["config"]), context={"quiet": True}
        )

    def __repr__(self) -> str:
        c = self.config
        return f"Run({self.run_id!r}, {c.data.name}, {c.model.name}, init={c.init.method})"

    # -- artifacts ---------------------------------------------------------------------------
    def artifact(self, stage: str) -> Artifact:
        key = self.keys.get(stage)
        art = self.store.get(stage, key) if key else None
        if art is None:
            raise PipelineError(f"run {self.run_id} has no {stage} artifact in {self.store.root}")
        return art

    @cached_property
    def model(self) -> SeqRecModel:
        from pipeline.artifacts import trained_model

        return trained_model(self.artifact("train"))

    @cached_property
    def items(self) -> pa.Table:
        """The run's ``items`` table (item_id 1..n, source_id, metadata such as title)."""
        return self.artifact("ingest").table("items")

    @cached_property
    def _sequences(self) -> pa.Table:
        return self.artifact("ingest").table("sequences")

    @cached_property
    def source_ids(self) -> np.ndarray:
        """(num_items,) object array of source item ids as strings: entry i - 1 is item_id i."""
        return self.items["source_id"].cast(pa.string()).to_numpy(zero_copy_only=False)

    @cached_property
    def _item_index(self) -> dict[str, int]:
        return {s: i for i, s in enumerate(self.source_ids.tolist(), 1)}

    @cached_property
    def _user_index(self) -> dict[str, int]:
        return {s: i for i, s in enumerate(self._sequences["source_user_id"].to_pylist())}

    def metrics(self) -> pd.DataFrame:
        """split, protocol, metric, k, value of the run's evaluation."""
        cols = ["split", "protocol", "metric", "k", "value"]
        return self.artifact("evaluate").table("metrics").select(cols).to_pandas()

    def history(self) -> pd.DataFrame:
        """The training curve: epoch, loss, valid metrics, seconds per epoch."""
        return self.artifact("train").table("history").to_pandas()

    def item_embeddings(self) -> np.ndarray:
        """The trained E (num_items + 1, d); row i is item_id i, row 0 padding."""
        return self.model.item_embeddings().detach().float().cpu().numpy()

    # -- ids ---------------------------------------------------------------------------------
    def item_ids(self, source_ids: Sequence[str]) -> np.ndarray:
        """Internal ids of source item ids; an unknown id is an error naming it."""
        index = self._item_index
        missing = [s for s in map(str, source_ids) if s not in index]
        if missing:
            raise PipelineError(
                f"unknown item id(s) {missing[:5]} for dataset {self.config.data.name!r}"
            )
        return np.array([index[s] for s in map(str, source_ids)], dtype=np.int64)

    def history_of(self, users: Sequence[str]) -> list[list[str]]:
        """Each user's whole history (train, valid, test items) as source item ids."""
        offsets, items = self._histories(users)
        return [
            self.source_ids[items[a:b] - 1].tolist()
            for a, b in zip(offsets[:-1], offsets[1:], strict=True)
        ]

    def _histories(self, users: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """CSR (offsets, item ids) of the users' whole histories."""
        index = self._user_index
        missing = [u for u in map(str, users) if u not in index]
        if missing:
            raise PipelineError(
                f"unknown user(s) {missing[:5]} in dataset {self.config.data.name!r}"
            )
        rows = self._sequences.take(pa.array([index[u] for u in map(str, users)]))
        train = rows["train_items"].combine_chunks()
        lengths = pc.list_value_length(train).to_numpy() + 2
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        items = np.empty(offsets[-1], dtype=np.int64)
        flat = pc.list_flatten(train).to_numpy()
        is_train = np.ones(offsets[-1], dtype=bool)
        is_train[offsets[1:] - 2] = is_train[offsets[1:] - 1] = False
        items[is_train] = flat
        items[offsets[1:] - 2] = rows["valid_item"].to_numpy()
        items[offsets[1:] - 1] = rows["test_item"].to_numpy()
        return offsets, items

    def _sequences_csr(self, sequences: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        if not sequences or any(len(s) == 0 for s in sequences):
            raise PipelineError("every sequence needs at least one item")
        lengths = [len(s) for s in sequences]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        return offsets, self.item_ids([i for s in sequences for i in s])

    # -- scoring -----------------------------------------------------------------------------
    def score_sequences(self, sequences: Sequence[Sequence[str]]) -> np.ndarray:
        """(n, num_items + 1) scores of every item as the next one after each sequence (the
        last ``model.max_len`` items count); column i is item_id i, column 0 padding."""
        import torch

        offsets, items = self._sequences_csr(sequences)
        with torch.inference_mode():
            return self.model.score(self._windows(offsets, items)).float().numpy()

    def _windows(self, offsets: np.ndarray, items: np.ndarray) -> torch.Tensor:
        """Left-padded (n, width) inputs: the last ``max_len`` items of each CSR history."""
        import torch

        from fame.data import history_windows

        n = len(offsets) - 1
        width = max(1, min(int(np.diff(offsets).max(initial=1)), self.config.model.max_len))
        return torch.from_numpy(history_windows(offsets, items, np.arange(n), width))

    def recommend(
        self,
        users: Sequence[str],
        k: int = 10,
        *,
        explain: bool = False,
        protocol: Protocol | None = None,
        cold_scores: ColdScores | None = None,
    ) -> pd.DataFrame:
        """Top-k next items after each user's whole history; seen items are removed under
        the primary protocol ``exclude_history`` (or the one given). ``cold_scores``: how
        ``cold_items`` are scored, ``evaluate.cold_scores`` of the run unless given."""
        offsets, items = self._histories(users)
        return self._top(
            list(map(str, users)), "user", offsets, items, k, explain, protocol, cold_scores
        )

    def recommend_sequence(
        self,
        items: Sequence[str] | Sequence[Sequence[str]],
        k: int = 10,
        *,
        explain: bool = False,
        protocol: Protocol | None = None,
        cold_scores: ColdScores | None = None,
    ) -> pd.DataFrame:
        """Top-k next items after a new sequence of source item ids (or several)."""
        many = bool(items) and not isinstance(items[0], str | int)
        seqs = [list(map(str, s)) for s in items] if many else [list(map(str, items))]
        offsets, ids = self._sequences_csr(seqs)
        return self._top(
            list(range(len(seqs))), "sequence", offsets, ids, k, explain, protocol, cold_scores
        )

    @cached_property
    def cold_items(self) -> np.ndarray:
        """Item ids the model never trained, so without an ID part: those the cold-start
        protocol held out, and those ``add_items`` added to this process's model."""
        ids = self.items["item_id"].to_numpy()
        cold = ids > self.artifact("ingest").rows["items"]
        if "held_out" in self.items.column_names:
            cold |= self.items["held_out"].to_numpy(zero_copy_only=False)
        return ids[cold]

    def cold_ids(self, cold_scores: ColdScores | None = None) -> torch.Tensor | None:
        """The ids ``recommend_topk`` matches (``fame.evaluate.match_cold_scores``) under
        ``cold_scores`` (the run's ``evaluate.cold_scores`` unless given), else None."""
        import torch

        if (cold_scores or self.config.evaluate.cold_scores) != "matched":
            return None
        return torch.from_numpy(self.cold_items)

    def explain(self, offsets: np.ndarray, items: np.ndarray, top: np.ndarray) -> Explanation:
        """Per-head contributions, gate and router of FAME for the ``top`` (n, k) items after
        each CSR history; SASRec has no heads to explain (an error that says so)."""
        import torch

        if self.config.model.name != "fame":
            raise PipelineError(
                "explanations need FAME's heads: this run trained SASRec, whose score is one "
                "dot product (use a FAME run, or leave explain off)"
            )
        with torch.inference_mode():
            seq = self._windows(offsets, items)
            per_head, gate, beta = self.model.explain(seq, torch.from_numpy(top))
        weight, expert = beta.max(dim=-1)
        contributions = (per_head * gate[:, None]).numpy()
        return Explanation(
            self.head_names, gate.numpy(), contributions, expert.numpy(), weight.numpy()
        )

    @cached_property
    def head_names(self) -> list[str]:
        """Head h's facet when facet pre-training made the item table (§6.7: slice h = facet h),
        else the facet it aligned with after training (``head_alignment``), else ``head h``."""
        cfg = self.config
        H = cfg.model.heads
        if cfg.init.method == "facet_pretrain" and len(cfg.facets) == H:
            return [f.name for f in cfg.facets]
        names = [f"head {h}" for h in range(H)]
        try:
            rows = self.artifact("evaluate").table("head_alignment").to_pylist()
        except (PipelineError, KeyError, FileNotFoundError):
            return names
        for r in rows:
            if r["best"]:
                names[r["head"]] = f"head {r['head']} (~{r['facet']})"
        return names

    def _top(
        self,
        who: list,
        label: str,
        offsets: np.ndarray,
        items: np.ndarray,
        k: int,
        explain: bool,
        protocol: Protocol | None,
        cold_scores: ColdScores | None = None,
    ) -> pd.DataFrame:
        import pandas as pd

        from fame.evaluate import recommend_topk

        if not 1 <= k <= self.model.num_items:
            raise PipelineError(f"k = {k} must be in [1, {self.model.num_items}] (the items)")
        if cold_scores is not None and cold_scores not in get_args(ColdScores):
            raise PipelineError(f"cold_scores = {cold_scores!r}: give 'raw' or 'matched'")
        spec = self.config.evaluate
        top, scores = recommend_topk(
            self.model,
            offsets,
            items,
            k,
            protocol or spec.primary,
            spec.batch_size,
            cold=self.cold_ids(cold_scores),
        )
        n = len(who)
        frame = pd.DataFrame(
            {
                label: np.repeat(np.asarray(who, dtype=object), k),
                "rank": np.tile(np.arange(1, k + 1), n),
                "item": self.source_ids[top.reshape(-1) - 1],
                "title": self._titles(top.reshape(-1)),
                "score": scores.reshape(-1),
            }
        )
        if explain:
            ex = self.explain(offsets, items, top)
            for h, name in enumerate(ex.heads):
                frame[f"{name}"] = ex.contributions[:, :, h].reshape(-1)
            for h, name in enumerate(ex.heads):
                frame[f"gate {name}"] = np.repeat(ex.gate[:, h], k)
                frame[f"expert {name}"] = np.repeat(ex.top_expert[:, h], k)
                frame[f"expert weight {name}"] = np.repeat(ex.expert_weight[:, h], k)
        return frame

    # -- new items -----------------------------------------------------------------------------
    def add_items(self, new: pd.DataFrame | pa.Table | str | Path) -> pa.Table:
        """Add items that training never saw: a frame, Arrow table or file (.parquet, .csv,
        .tsv, .jsonl) with an ``item_id`` column (their source ids) and any of the run's item
        fields. Each is rendered by the run's encode template, encoded by its encoder and
        embedded by the text pathway (s·φ(t), no ID part: ``model.item_repr = "text"`` runs
        only), so recommendations and explanations include it at once.

        Nothing stored changes (the model of this process does); each addition is recorded
        under ``_records/added_items``. Bad input (no ``item_id``, a duplicate or known id, an
        unknown field, an item whose text renders empty) is a named error and adds nothing.
        Returns the added rows of ``items`` (with their new ``item_id``).
        """
        import time

        import torch

        from pretrain.text import render_texts

        start = time.perf_counter()
        if self.config.model.item_repr != "text":
            raise PipelineError(
                f"run {self.run_id} has a free item table (model.item_repr = "
                f"{self.config.model.item_repr!r}): an item it never trained has no embedding; "
                "add items to a run trained with model.item_repr = 'text'"
            )
        table = _item_frame(new)
        rows = self._checked_new_items(table)
        texts = render_texts(rows, self.config.encode.template)
        empty = [r["item_id"] for r, t in zip(rows, texts, strict=True) if not t]
        if empty:
            raise PipelineError(
                f"item(s) {empty[:5]}: no text for the template {self.config.encode.template!r} "
                "(its fields are empty): a new item is known by its text alone"
            )
        encoder = self.text_encoder
        vectors = encoder.encode(texts, progress=False)
        self.model.add_items(torch.from_numpy(vectors))
        first = len(self.source_ids) + 1
        added = self._item_rows(table, first)
        self.items = pa.concat_tables([self.items, added])
        for cached in ("source_ids", "_item_index", "cold_items"):
            self.__dict__.pop(cached, None)
        self.store.record(
            "added_items",
            f"{self.run_id}-{time.time_ns()}",
            {
                "run_id": self.run_id,
                "items": len(rows),
                "first_item_id": first,
                "source_ids": json.dumps([r["item_id"] for r in rows]),
                "encoder": encoder.name,
                "added_at": time.time(),
                "seconds": time.perf_counter() - start,
            },
        )
        return added

    @cached_property
    def text_encoder(self):
        """The run's encoder (``[encode]``), loaded once: what embeds added items' texts."""
        from pretrain.encoder import TextEncoder

        enc = self.config.encode
        return TextEncoder(enc.model, enc.device, enc.batch_size, enc.max_length)

    def _checked_new_items(self, table: pa.Table) -> list[dict[str, Any]]:
        """The rows of ``table`` with string ids, or the named error of the first bad input."""
        if "item_id" not in table.column_names:
            raise PipelineError(
                f"new items need an item_id column (their source ids); got {table.column_names}"
            )
        fields = [c for c in self.items.column_names if c not in _INTERNAL_ITEM_COLUMNS]
        unknown = [c for c in table.column_names if c != "item_id" and c not in fields]
        if unknown:
            raise PipelineError(f"unknown item field(s) {unknown}; the run's are {fields}")
        rows = table.to_pylist()
        seen: set[str] = set()
        for line, row in enumerate(rows, 1):
            if row["item_id"] is None or str(row["item_id"]) == "":
                raise PipelineError(f"new item {line}: empty item_id")
            sid = row["item_id"] = str(row["item_id"])
            if sid in seen:
                raise PipelineError(f"new item {line}: item_id {sid!r} given twice")
            if sid in self._item_index:
                raise PipelineError(f"new item {line}: item_id {sid!r} is already in the run")
            seen.add(sid)
        if not rows:
            raise PipelineError("no new items given")
        return rows

    def _item_rows(self, table: pa.Table, first: int) -> pa.Table:
        """``table`` in the run's ``items`` schema, item ids from ``first`` on."""
        n = table.num_rows
        cols = {}
        for f in self.items.schema:
            if f.name == "item_id":
                cols[f.name] = pa.array(np.arange(first, first + n), f.type)
            elif f.name == "source_id":
                cols[f.name] = table["item_id"].cast(pa.string()).cast(f.type)
            elif f.name == "held_out":
                cols[f.name] = pa.array([False] * n, f.type)
            elif f.name in table.column_names:
                cols[f.name] = table[f.name].cast(f.type)
            else:
                cols[f.name] = pa.nulls(n, f.type)
        return pa.table(cols, schema=self.items.schema)

    def _titles(self, ids: np.ndarray) -> list[str | None]:
        if "title" not in self.items.column_names:
            return [None] * len(ids)
        return self.items["title"].take(pa.array(ids - 1)).to_pylist()

    def export(self, path: str | Path, k: int = 10, batch_users: int = 4096) -> Path:
        """Top-k for every user into ``path`` (.parquet or .csv: user, rank, item, title,
        score), a chunk of users at a time, written to a temporary name and renamed."""
        import pyarrow.csv as pcsv
        import pyarrow.parquet as pq

        path = Path(path)
        if path.suffix not in (".parquet", ".csv"):
            raise PipelineError(f"{path}: export writes .parquet or .csv")
        users = self._sequences["source_user_id"].to_pylist()
        tmp = path.with_name(f".{path.name}.tmp")
        writer = None
        try:
            for s in range(0, len(users), batch_users):
                chunk = pa.Table.from_pandas(
                    self.recommend(users[s : s + batch_users], k), preserve_index=False
                )
                if writer is None:
                    writer = (pq.ParquetWriter if path.suffix == ".parquet" else pcsv.CSVWriter)(
                        tmp, chunk.schema
                    )
                writer.write_table(chunk)
        finally:
            if writer is not None:
                writer.close()
        tmp.replace(path)
        return path
