"""Search: one image (image→image and image→tracklet) or several frames / a short clip (a query
tracklet) against the gallery, with camera and time filters; or a stored item as the query."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool

from reid.service.gallery import ItemsNotFound
from reid.service.inputs import build_filters
from reid.service.routes.deps import EmbedderDep, GalleryDep, SettingsDep, read_files, require_key
from reid.service.routes.gallery import is_video
from reid.service.schemas import (
    ERROR_RESPONSES,
    Hit,
    ItemId,
    QueryInfo,
    QueryResponse,
    SearchOptions,
    SimilarOptions,
    item_fields,
)
from reid.service.store import Filters
from reid.service.uploads import BadInput, expand, read_clip

router = APIRouter(tags=["query"], dependencies=[Depends(require_key)], responses=ERROR_RESPONSES)


def _filters(options: SearchOptions, gallery) -> Filters:
    """The options' filters, once the re-ranking they ask for is known to be available."""
    if options.rerank == "can" and gallery.pair is None:
        raise BadInput("rerank=can needs a model with CAN's pair model (pair.onnx beside image.onnx; "
                       "train one with `reid train-can`); this model has none", status=422)
    return build_filters(options.cameras, options.exclude_cameras, options.since, options.until)


def _response(hits, t0: float, info: QueryInfo) -> QueryResponse:
    return QueryResponse(results=[Hit(**item_fields(h.record), score=h.score) for h in hits],
                         took_ms=round((time.perf_counter() - t0) * 1000, 2), query=info)


@router.post("/query", response_model=QueryResponse)
async def query(
    request: Request,
    settings: SettingsDep,
    gallery: GalleryDep,
    embedder: EmbedderDep,
    files: Annotated[
        list[UploadFile], File(min_length=1, description="one image, several frames of one person, or a clip "
                               "(each non-empty: a zero-byte file gets 400)")
    ],
    options: Annotated[SearchOptions, Form()],
) -> QueryResponse:
    """Rank gallery items by similarity to the query person."""
    t0 = time.perf_counter()
    filters = _filters(options, gallery)
    if not files:
        raise BadInput("no files uploaded (use the multipart field 'files')")
    if len(files) == 1 and await is_video(files[0]):
        data = await files[0].read()
        if not data:
            raise BadInput(f"{files[0].filename}: empty file")
        frames = await run_in_threadpool(
            read_clip,
            data,
            files[0].filename or "clip.mp4",
            settings.max_query_frames,
            settings.max_image_pixels,
        )
    else:
        raw = await read_files(files, settings)
        frames = [
            im.bgr
            for im in await run_in_threadpool(
                expand, raw, settings.max_files, settings.max_upload_bytes, settings.max_image_pixels
            )
        ]
    if len(frames) == 1:
        q = (await embedder.embed_async(frames))[0]
    else:
        q = await embedder.embed_tracklet_async(frames)
    query_map = await run_in_threadpool(gallery.item_maps, [frames]) if options.rerank == "can" else None
    ts = time.perf_counter()
    hits = await run_in_threadpool(gallery.search, q, options.top_k, filters, options.min_score, options.rerank,
                                   options.rerank_k, query_map[0] if query_map else None)
    request.app.state.metrics.search.observe(time.perf_counter() - ts)
    return _response(hits, t0, QueryInfo(kind="image" if len(frames) == 1 else "tracklet", n_frames=len(frames),
                                         rerank=options.rerank))


@router.get("/gallery/{item_id}/similar", response_model=QueryResponse)
def similar(request: Request, gallery: GalleryDep, item_id: ItemId,
            options: Annotated[SimilarOptions, Query()]) -> QueryResponse:
    """Gallery items like this one (its stored embedding as the query; the item itself left out), or
    like it and the ``also`` items together (one person's sightings, averaged)."""
    t0 = time.perf_counter()
    filters = _filters(options, gallery)
    try:
        hits = gallery.similar([item_id, *(options.also or [])], options.top_k, filters, options.min_score,
                               options.rerank, options.rerank_k)
        rec = gallery.get(item_id)
        if rec is None:  # deleted meanwhile
            raise ItemsNotFound([item_id])
    except ItemsNotFound as e:
        raise BadInput(str(e), 404) from e
    request.app.state.metrics.search.observe(time.perf_counter() - t0)
    return _response(hits, t0, QueryInfo(kind=rec.kind, n_frames=rec.n_frames, rerank=options.rerank))
