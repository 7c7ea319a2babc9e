"""Pydantic models at the API edge (responses are documented in OpenAPI at /docs)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from fastapi import Path as PathParam
from fastapi import Query
from pydantic import BaseModel, Field

from reid.service.store import ItemRecord

#: SQLite integers are signed 64-bit: larger ids and offsets cannot exist
MAX_SQL_INT = 2**63 - 1
ItemId = Annotated[int, PathParam(ge=1, le=MAX_SQL_INT, description="gallery item id")]
Offset = Annotated[int, Query(ge=0, le=MAX_SQL_INT, description="skip this many")]
ItemKind = Literal["image", "tracklet"]
JobState = Literal["queued", "running", "done", "failed", "cancelled"]

#: POST /query's second stage: none, or CAN's cross-attention pair model over the shortlist
Rerank = Literal["none", "can"]


class Source(BaseModel):
    name: str | None = Field(None, description="uploaded file name (image items)")
    footage_id: str | None = Field(None, description="footage the tracklet came from")
    frame_start: int | None = None
    frame_end: int | None = None


class Item(BaseModel):
    id: int
    kind: ItemKind
    camera: str
    timestamp_start: datetime | None = None
    timestamp_end: datetime | None = None
    source: Source
    box: list[float] | None = Field(None, description="[x, y, w, h] in the source frame")
    meta: dict[str, Any] | None = None
    n_frames: int = 1
    n_crops: int = Field(0, description="stored crops, served at /gallery/{id}/crops/{n}")
    thumbnail_url: str
    scene_url: str | None = Field(None, description="footage tracklets: the frame the person was seen in, "
                                  "downscaled, their box marked (JPEG)")
    model_id: str
    created_at: datetime


class ItemList(BaseModel):
    items: list[Item]
    total: int
    offset: int
    limit: int


class AddResponse(BaseModel):
    items: list[Item]


class ItemFilter(BaseModel):
    """Which items: query parameters of GET /gallery (what it lists) and DELETE /gallery (what it
    deletes — the same items, so a listing previews a deletion)."""

    camera: list[str] | None = Field(None, description="only these cameras (repeat or comma-separate)")
    exclude_camera: list[str] | None = Field(None, description="skip these cameras")
    since: str | None = Field(None, description="ISO 8601: items seen at or after (items without a time "
                              "are left out)")
    until: str | None = Field(None, description="ISO 8601: items seen at or before")
    kind: ItemKind | None = None


class GalleryPage(ItemFilter):
    offset: int = Field(0, ge=0, le=MAX_SQL_INT, description="skip this many")
    limit: int = Field(50, ge=1, le=500)


class Deleted(BaseModel):
    deleted: int = Field(description="items removed (rows, vectors, crops, thumbnails, scenes)")


class JobAccepted(BaseModel):
    job_id: str
    status_url: str


class Hit(Item):
    score: float = Field(description="cosine similarity in [-1, 1] (with rerank=can: CAN's pair score, "
                         "also a cosine)")


class SearchOptions(BaseModel):
    """What every search takes besides the query itself: form fields of POST /query, query
    parameters of GET /gallery/{id}/similar."""

    top_k: int = Field(10, ge=1, le=1000)
    cameras: list[str] | None = Field(None, description="only these cameras (repeat or comma-separate)")
    exclude_cameras: list[str] | None = Field(None, description="skip these cameras")
    since: str | None = Field(None, description="ISO 8601: items seen at or after")
    until: str | None = Field(None, description="ISO 8601: items seen at or before")
    min_score: float | None = Field(None, ge=-1.0, le=1.0, description="drop hits below this score")
    rerank: Rerank = Field("none", description="can: re-score the index's best rerank_k with CAN's cross-attention "
                           "pair model (needs pair.onnx in the model directory; see GET /readyz rerankers)")
    rerank_k: int = Field(100, ge=1, le=1000, description="rerank=can: shortlist length")


class SimilarOptions(SearchOptions):
    """GET /gallery/{id}/similar: the search options, plus more items of the same person."""

    also: list[Annotated[int, Field(ge=1, le=MAX_SQL_INT)]] | None = Field(
        None, max_length=100, description="more items the investigator confirmed as the same person (repeat "
        "the parameter): their stored vectors are averaged with the item's, and all of them are left out")


class QueryInfo(BaseModel):
    kind: ItemKind
    n_frames: int
    rerank: Rerank = "none"


class QueryResponse(BaseModel):
    results: list[Hit]
    took_ms: float
    query: QueryInfo


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="where: e.g. [\"query\", \"offset\"]")
    msg: str
    type: str


class Error(BaseModel):
    """The one error shape every endpoint returns (reid/service/errors.py)."""

    detail: str = Field(description="what went wrong, for a person")
    errors: list[FieldError] | None = Field(None, description="per-field details of a 422")


#: the error responses every API route may give, declared once for OpenAPI
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": Error, "description": text} for code, text in (
        (400, "bad input"), (401, "missing or invalid API key"), (404, "not found"),
        (405, "method not allowed (see Allow)"), (413, "too large"), (415, "unsupported media type"),
        (422, "invalid parameters"), (503, "starting up"))}



class Ready(BaseModel):
    status: str
    items: int
    index_size: int
    model_id: str
    model: str
    precision: str = Field(description="fp32, or int8 for a quantised model")
    dim: int
    index: str
    exact: bool
    providers: list[str]
    detector: str = Field(description="the footage person detector REID_DETECTOR_NAME resolves to")
    rerankers: list[Rerank] = Field(description="what POST /query's rerank accepts with this model "
                                   "(can: the model directory has CAN's pair.onnx)")
    queue: dict[str, Any] | None = Field(None, description="footage job queue: backend, ok, depth")


def _dt(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, tz=timezone.utc) if ts is not None else None


def item_fields(rec: ItemRecord) -> dict[str, Any]:
    return dict(
        id=rec.id,
        kind=rec.kind,
        camera=rec.camera,
        timestamp_start=_dt(rec.ts_start),
        timestamp_end=_dt(rec.ts_end),
        source=Source(
            name=rec.source, footage_id=rec.footage_id, frame_start=rec.frame_start, frame_end=rec.frame_end
        ),
        box=rec.box,
        meta=rec.meta,
        n_frames=rec.n_frames,
        n_crops=len(rec.crops),
        thumbnail_url=f"/gallery/{rec.id}/thumbnail",
        scene_url=f"/gallery/{rec.id}/scene" if rec.scene else None,
        model_id=rec.model_id,
        created_at=_dt(rec.created_at),
    )


def item_out(rec: ItemRecord) -> Item:
    return Item(**item_fields(rec))
