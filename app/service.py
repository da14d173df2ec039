"""The recommendation service: one trained run behind HTTP (FastAPI on uvicorn), for
``fame serve-model``.

The model and the item table are loaded once, at startup, and warmed with one request, so a
request pays only for its forward pass, one (1, d) x (d, |V|+1) product and a top-k. A posted
sequence takes a lean path (``Recommender``) rather than ``Run.recommend_sequence``: the API
builds a pandas frame and ``recommend_topk`` copies E to a new layout on every call, ~12 ms
against ~1 ms for one 50-item sequence over 12k items here. Same candidates, same scores: the
tests compare the two.

Input errors are 4xx with a message naming what is wrong, never a 500:

- 422: malformed JSON or a field of the wrong type; an empty sequence or one over
  ``MAX_SEQUENCE`` items; an unknown item id (named); ``k`` outside [1, min(MAX_K, items)];
  ``explain`` on a SASRec run (it has no heads).
- 404: an unknown user.

``POST /items`` adds items unseen in training to the served model (text-pathway runs:
``Run.add_items``), each embedded from its text; the stored run is not changed. A bad item (no
``item_id``, a duplicate or known id, an unknown field, no text) is a 422 and adds nothing.
A run evaluated with ``evaluate.cold_scores = "matched"`` is served with matched scores for its
held-out and added items (``Run.cold_items``), as ``Run.recommend`` gives them.

Every 422 has FastAPI's shape, ``{"detail": [{"loc": [...], "msg": "...", "type": ...}]}``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import torch
from fastapi import FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StrictInt

from fame.evaluate import item_table_t, recommend_topk
from pipeline.errors import PipelineError

if TYPE_CHECKING:
    from app.api import Run

MAX_SEQUENCE = 10_000  # items in a posted sequence: the model reads the last max_len of them
MAX_K = 1000  # items in one answer (and at most the run's number of items)
Mode = Literal["serial", "threads"]


# -- the wire format --------------------------------------------------------------------------


class SequenceRequest(BaseModel):
    """A new item sequence, oldest first, to recommend the next items for."""

    items: list[str | StrictInt] = Field(
        min_length=1,
        max_length=MAX_SEQUENCE,
        description="source item ids, oldest first (numbers are read as their decimal "
        f"string); the model reads the last max_len, all are excluded from the answer under "
        f"the exclude_history protocol; 1 to {MAX_SEQUENCE:,} items",
        examples=[["50", "172", "133"]],
    )
    k: int = Field(10, description=f"number of items to return, 1 to min({MAX_K}, items)")
    explain: bool = Field(
        False, description="FAME only: per-head contributions, gate and top router expert"
    )


class RecommendedItem(BaseModel):
    rank: int = Field(description="1 = best")
    item: str = Field(description="source item id")
    title: str | None = Field(description="the item's title, when the data has one")
    score: float = Field(description="<E[item], u>: the model's next-item score")
    contributions: dict[str, float] | None = Field(
        None, description="explain: g_h s^h_item per head name; they sum to the score"
    )


class HeadRouting(BaseModel):
    head: str = Field(description="the head's name: its facet when facet pre-training set it")
    gate: float = Field(description="g_h: the head's weight in the fused score (sums to 1)")
    top_expert: int = Field(description="the router's heaviest expert for this head")
    expert_weight: float = Field(description="that expert's router weight beta")


class Recommendations(BaseModel):
    run_id: str
    user: str | None = Field(None, description="the user, for a user's recommendations")
    protocol: str = Field(description="exclude_history: the input's items are not candidates")
    items: list[RecommendedItem] = Field(
        description="best first; fewer than k when the history leaves fewer candidates"
    )
    heads: list[HeadRouting] | None = Field(None, description="explain: gate and router")


class NewItems(BaseModel):
    """Items to add: each an object with ``item_id`` (its source id) and item fields."""

    items: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=100_000,
        description="one object per item: item_id and any of the run's item fields (title, "
        "brand, categories, …), rendered by the run's encode template",
        examples=[[{"item_id": "new-1", "title": "rose water facial toner"}]],
    )


class AddedItems(BaseModel):
    run_id: str
    added: list[str] = Field(description="the source ids added, in order")
    items: int = Field(description="items the model ranks now")
    seconds: float = Field(description="time to encode, embed and lay out the new items")


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    run_id: str
    dataset: str
    model: str
    init: str
    items: int = Field(description="number of items the model ranks")
    max_len: int = Field(description="the model reads the last max_len items of a sequence")
    max_sequence: int = MAX_SEQUENCE
    max_k: int
    heads: list[str] = Field(description="head names (FAME), empty for SASRec")
    torch_threads: int
    mode: Mode = Field(description="serial: one request at a time; threads: a thread pool")


UserPath = Annotated[str, Path(description="the user's source id")]
KQuery = Annotated[int, Query(description=f"items to return, 1 to min({MAX_K}, items)")]
ExplainQuery = Annotated[
    bool, Query(description="FAME only: per-head contributions, gate and top router expert")
]

# -- scoring ----------------------------------------------------------------------------------


class InvalidInput(Exception):
    """A request the model cannot answer: a 422 at ``loc`` (FastAPI's error shape)."""

    def __init__(self, loc: tuple[str, ...], msg: str):
        super().__init__(msg)
        self.loc, self.msg = loc, msg


class UnknownUser(Exception):
    """A user the data does not hold: a 404."""


@dataclass(frozen=True)
class _Top:
    top: np.ndarray  # (k,) item ids, best first, finite scores only
    scores: np.ndarray  # (k,)


class Recommender:
    """A run's model held for serving: E laid out once for ``u @ E^T``, ids and titles as arrays
    so an answer costs no pandas, and the primary protocol's history exclusion."""

    def __init__(self, run: Run):

        self.run = run
        self.model = run.model.eval()
        self.fame = run.config.model.name == "fame"
        self.max_len = run.config.model.max_len
        self.protocol = run.config.evaluate.primary
        self.heads = run.head_names if self.fame else []
        self._lay_out()
        self.no_explain = ""  # the API's own reason, said again on explain=true
        if not self.fame:
            try:
                run.explain(np.zeros(2, np.int64), np.ones(1, np.int64), np.ones((1, 1), np.int64))
            except PipelineError as exc:
                self.no_explain = str(exc)

    def _lay_out(self) -> None:
        """E^T (d, |V|+1), source ids and titles of the catalogue as it is now: once at start,
        again after items are added."""
        with torch.inference_mode():
            self.Et = item_table_t(self.model)
        self.src = self.run.source_ids  # entry i - 1 = item_id i
        items = self.run.items
        has_title = "title" in items.column_names
        self.titles = items["title"].to_pylist() if has_title else [None] * len(self.src)
        self.num_items = self.model.num_items
        self.max_k = min(MAX_K, self.num_items)
        self.cold = self.run.cold_ids()  # matched as the run's evaluate stage does, or None

    def add_items(self, items: list[dict[str, Any]]) -> AddedItems:
        """``Run.add_items``, then E^T, ids and titles laid out again for the new catalogue."""
        import time

        import pyarrow as pa

        start = time.perf_counter()
        threads = torch.get_num_threads()
        torch.set_num_threads(os.cpu_count() or 1)  # encoding is batch work: every core
        try:
            added = self.run.add_items(pa.Table.from_pylist(items))
        except (PipelineError, pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise InvalidInput(("body", "items"), str(exc)) from None
        finally:
            torch.set_num_threads(threads)
        self._lay_out()
        return AddedItems(
            run_id=self.run.run_id,
            added=added["source_id"].to_pylist(),
            items=self.num_items,
            seconds=time.perf_counter() - start,
        )

    def item_ids(self, items: list[str | int]) -> np.ndarray:
        try:
            return self.run.item_ids([str(i) for i in items])
        except PipelineError as exc:
            raise InvalidInput(("body", "items"), str(exc)) from None

    def user_history(self, user: str) -> np.ndarray:
        """The user's whole history (train, valid, test items), as Run.recommend reads it."""
        try:
            return self.run._histories([user])[1]
        except PipelineError as exc:
            raise UnknownUser(str(exc)) from None

    def check(self, k: int, explain: bool, where: str) -> None:
        if not 1 <= k <= self.max_k:
            raise InvalidInput(
                (where, "k"),
                f"k = {k} must be in [1, {self.max_k}] (min({MAX_K}, the run's "
                f"{self.num_items:,} items))",
            )
        if explain and not self.fame:
            raise InvalidInput((where, "explain"), self.no_explain)

    def top(self, history: np.ndarray, k: int) -> _Top:
        """The k best next items after ``history`` (item ids), through ``recommend_topk``
        with the E^T laid out at startup; excluded candidates (-inf) are dropped."""
        offsets = np.array([0, len(history)], dtype=np.int64)
        top, values = recommend_topk(
            self.model, offsets, history, k, self.protocol, Et=self.Et, cold=self.cold
        )
        keep = np.isfinite(values[0])
        return _Top(top[0][keep], values[0][keep])

    def answer(
        self, history: np.ndarray, k: int, explain: bool, user: str | None = None
    ) -> Recommendations:
        found = self.top(history, k)
        rows = [
            RecommendedItem(rank=r, item=self.src[i - 1], title=self.titles[i - 1], score=float(s))
            for r, (i, s) in enumerate(
                zip(found.top.tolist(), found.scores.tolist(), strict=True), 1
            )
        ]
        heads = None
        if explain and len(found.top):
            heads = self._explain(history, found.top, rows)
        return Recommendations(
            run_id=self.run.run_id, user=user, protocol=self.protocol, items=rows, heads=heads
        )

    def _explain(
        self, history: np.ndarray, top: np.ndarray, rows: list[RecommendedItem]
    ) -> list[HeadRouting]:
        offsets = np.array([0, len(history)], dtype=np.int64)
        ex = self.run.explain(offsets, history, top[None])
        for row, parts in zip(rows, ex.contributions[0].tolist(), strict=True):  # (k, H)
            row.contributions = dict(zip(ex.heads, parts, strict=True))
        return [
            HeadRouting(
                head=name,
                gate=float(ex.gate[0, h]),
                top_expert=int(ex.top_expert[0, h]),
                expert_weight=float(ex.expert_weight[0, h]),
            )
            for h, name in enumerate(ex.heads)
        ]

    def warm(self) -> None:
        """One request through the whole path, so the first real one finds kernels and
        allocator pools ready."""
        history = np.arange(1, min(self.max_len, self.num_items) + 1, dtype=np.int64)
        self.answer(history, min(10, self.num_items), explain=self.fame)
        if self.run.config.model.item_repr == "text":  # POST /items finds the encoder loaded
            self.run.text_encoder.encode(["warm"], progress=False)


# -- the app ----------------------------------------------------------------------------------


def create_app(run: Run, *, mode: Mode = "serial", threads: int | None = 1) -> FastAPI:
    """The FastAPI app serving ``run``; the model is loaded and warmed here, once.

    ``mode="serial"``: handlers are ``async`` and score inline on the event loop, one request at
    a time, each with ``threads`` torch threads; ``"threads"``: FastAPI's thread pool scores
    requests side by side. ``threads=None`` leaves torch's setting as it is.
    """
    if threads is not None:
        torch.set_num_threads(threads)
    rec = Recommender(run)
    rec.warm()
    cfg = run.config
    app = FastAPI(
        title="fame recommendation service",
        version=run.run_id,
        description=f"Top-k next items from run {run.run_id} ({cfg.data.name}, "
        f"{cfg.model.name}, {rec.num_items:,} items). Items and users are the data's source ids.",
    )

    @app.exception_handler(InvalidInput)
    async def _invalid(request: Request, exc: InvalidInput) -> JSONResponse:
        error = {"type": "value_error", "loc": list(exc.loc), "msg": exc.msg}
        return JSONResponse({"detail": [error]}, status_code=422)

    @app.exception_handler(UnknownUser)
    async def _unknown_user(request: Request, exc: UnknownUser) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    def handler(fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` as FastAPI will call it: inline on the loop (serial) or in its pool."""
        if mode == "threads":
            return fn

        @functools.wraps(fn)
        async def inline(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

        return inline

    @app.get("/health", summary="the run being served")
    def health() -> Health:
        return Health(
            run_id=run.run_id,
            dataset=cfg.data.name,
            model=cfg.model.name,
            init=cfg.init.method,
            items=rec.num_items,
            max_len=rec.max_len,
            max_k=rec.max_k,
            heads=rec.heads,
            torch_threads=torch.get_num_threads(),
            mode=mode,
        )

    @app.get(
        "/users/{user}/recommendations",
        summary="top-k next items after a user's whole history",
        responses={404: {"description": "unknown user"}},
    )
    @handler
    def user_recommendations(
        user: UserPath,
        k: KQuery = 10,
        explain: ExplainQuery = False,
    ) -> Recommendations:
        rec.check(k, explain, "query")
        return rec.answer(rec.user_history(user), k, explain, user=user)

    @app.post("/recommendations", summary="top-k next items after a posted item sequence")
    @handler
    def sequence_recommendations(body: SequenceRequest) -> Recommendations:
        rec.check(body.k, body.explain, "body")
        return rec.answer(rec.item_ids(body.items), body.k, body.explain)

    @app.post(
        "/items",
        summary="add items unseen in training, embedded from their text (text-pathway runs)",
        status_code=201,
    )
    @handler
    def add_items(body: NewItems) -> AddedItems:
        return rec.add_items(body.items)

    return app


def serve(
    run: Run,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    mode: Mode = "serial",
    threads: int | None = 1,
) -> None:
    """Serve ``run`` with uvicorn until interrupted (access log off: it costs per request)."""
    import uvicorn

    app = create_app(run, mode=mode, threads=threads)
    print(
        f"serving run {run.run_id} ({run.config.data.name}, {run.config.model.name}) on "
        f"http://{host}:{port}  (docs: http://{host}:{port}/docs)",
        flush=True,
    )
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
