"""Gallery endpoints: add (images, zip, tracklet; videos go to the footage job queue), list, get,
thumbnail, scene, crops, delete (one item, or every item a filter matches)."""

from __future__ import annotations

import inspect
import logging
import os
import shutil
import uuid
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response

from reid.service.inputs import build_filters, check_retained, parse_camera, parse_meta, parse_time
from reid.service.routes.deps import EmbedderDep, GalleryDep, SettingsDep, read_files, require_key
from reid.service.schemas import (
    ERROR_RESPONSES,
    AddResponse,
    Deleted,
    GalleryPage,
    ItemFilter,
    ItemId,
    ItemList,
    JobAccepted,
    item_out,
)
from reid.service.store import Filters
from reid.service.uploads import BadInput, expand, looks_like_video

log = logging.getLogger(__name__)
router = APIRouter(tags=["gallery"], dependencies=[Depends(require_key)], responses=ERROR_RESPONSES)


async def is_video(upload: UploadFile) -> bool:
    """Whether an upload is video footage (content type, extension or container magic)."""
    head = await upload.read(16)
    await upload.seek(0)
    return looks_like_video(upload.filename, upload.content_type, head)


async def _hand_to_footage(
    request: Request, settings: Any, upload: UploadFile, camera: str, timestamp: float | None,
    meta: dict | None, fps: float | None,
) -> JSONResponse:
    """Save the video under the data dir and hand it to ``app.state.submit_video`` (set by the footage
    worker): ``submit_video(path=, filename=, camera=, timestamp=, meta=, fps=, request_id=) -> job id``
    (sync or async). Without it, videos are refused with 415."""
    hook = getattr(request.app.state, "submit_video", None)
    if hook is None:
        raise BadInput(
            f"{upload.filename}: video uploads need the footage worker, which is not enabled on this "
            "server; upload person crops (images) instead",
            415,
        )
    updir = Path(settings.data_dir) / "uploads"
    updir.mkdir(parents=True, exist_ok=True)
    suffix = PurePosixPath((upload.filename or "video.mp4").lower()).suffix or ".mp4"
    path = updir / f"{uuid.uuid4().hex}{suffix}"

    def _save() -> int:
        with open(path, "wb") as f:
            shutil.copyfileobj(upload.file, f, 1 << 20)
            f.flush()
            os.fsync(f.fileno())
        return path.stat().st_size

    if await run_in_threadpool(_save) == 0:
        path.unlink(missing_ok=True)
        raise BadInput(f"{upload.filename}: empty file")
    job = hook(
        path=path,
        filename=upload.filename,
        camera=camera,
        timestamp=timestamp,
        meta=meta,
        fps=fps,
        request_id=getattr(request.state, "request_id", None),
    )
    if inspect.isawaitable(job):
        job = await job
    job_id = str(job)
    return JSONResponse(
        JobAccepted(job_id=job_id, status_url=f"/jobs/{job_id}").model_dump(), status_code=202
    )


@router.post(
    "/gallery",
    status_code=201,
    response_model=AddResponse,
    responses={202: {"model": JobAccepted, "description": "video accepted as a footage job"}},
)
async def add_to_gallery(
    request: Request,
    settings: SettingsDep,
    gallery: GalleryDep,
    embedder: EmbedderDep,
    files: Annotated[list[UploadFile], File(min_length=1, description="images, a zip of images, or one video "
                                            "(each non-empty: a zero-byte file gets 400)")],
    camera: Annotated[str, Form(min_length=1, max_length=128, pattern=r"\S", description="camera name")],
    timestamp: Annotated[str | None, Form(description="ISO 8601 capture time")] = None,
    meta: Annotated[str | None, Form(description="JSON object stored with each item")] = None,
    tracklet: Annotated[bool, Form(description="make the uploaded images one tracklet item")] = False,
    fps: Annotated[float | None, Form(gt=0, le=1000, description="video only: frame rate of footage that "
                                      "does not carry one (e.g. raw .264); overrides the container rate")] = None,
):
    """Index people: one item per image, or one tracklet item for all images (``tracklet=true``).
    A video upload is handed to the footage job queue (202 + job id)."""
    cam = parse_camera(camera)
    assert cam is not None
    ts = parse_time(timestamp, "timestamp")
    check_retained(ts, settings.retention_days, "timestamp")
    meta_d = parse_meta(meta)
    if not files:
        raise BadInput("no files uploaded (use the multipart field 'files')")
    videos = [f for f in files if await is_video(f)]
    if videos:
        if len(files) > 1:
            raise BadInput("upload one video per request, without images", 422)
        return await _hand_to_footage(request, settings, videos[0], cam, ts, meta_d, fps)
    if fps is not None:
        raise BadInput("fps applies to video uploads only", 422)
    raw = await read_files(files, settings)
    images = await run_in_threadpool(
        expand, raw, settings.max_files, settings.max_upload_bytes, settings.max_image_pixels
    )
    if tracklet:
        vec = await embedder.embed_tracklet_async([im.bgr for im in images])
        rec = await run_in_threadpool(
            lambda: gallery.add_tracklet(
                images, cam, ts_start=ts, ts_end=ts, source=images[0].name, meta=meta_d, vector=vec
            )
        )
        recs = [rec]
    else:
        vecs = await embedder.embed_async([im.bgr for im in images])
        recs = await run_in_threadpool(
            lambda: gallery.add_images(
                images, cam, timestamp=ts, meta=meta_d, sources=[im.name for im in images], vectors=vecs
            )
        )
    return AddResponse(items=[item_out(r) for r in recs])


@router.get("/gallery", response_model=ItemList)
def list_gallery(gallery: GalleryDep, page: Annotated[GalleryPage, Query()]) -> ItemList:
    """Page through the gallery (by id), filtered by camera, time and kind."""
    recs, total = gallery.list(_filters(page), page.offset, page.limit)
    return ItemList(items=[item_out(r) for r in recs], total=total, offset=page.offset, limit=page.limit)


@router.delete("/gallery", response_model=Deleted)
def delete_matching(gallery: GalleryDep, which: Annotated[ItemFilter, Query()]) -> Deleted:
    """Delete every item GET /gallery lists with the same filters (at least one is required: this
    never empties the gallery by accident). For erasure requests and clean-ups; REID_RETENTION_DAYS
    deletes old items on its own."""
    filters = _filters(which)
    if not filters.active():
        raise BadInput("DELETE /gallery needs a filter (camera, exclude_camera, since, until or kind); "
                       "to delete one item use DELETE /gallery/{id}", 422)
    n = gallery.delete_matching(filters)
    asked = which.model_dump(exclude_none=True)  # an erasure is an auditable event: what was asked, how much went
    log.info("erased %d items matching %s", n, asked, extra={"erased": n, "filters": asked})
    return Deleted(deleted=n)


def _filters(which: ItemFilter) -> Filters:
    return build_filters(which.camera, which.exclude_camera, which.since, which.until, which.kind)


def _get(gallery: Any, item_id: int):
    rec = gallery.get(item_id)
    if rec is None:
        raise BadInput(f"gallery item {item_id} not found", 404)
    return rec


@router.get("/cameras")
def list_cameras(gallery: GalleryDep) -> dict:
    """Cameras in the gallery with their item counts and time span (for browsing and filters)."""
    from reid.service.schemas import _dt

    rows = gallery.store.cameras()
    return {"cameras": [{"camera": c, "items": n, "first": _dt(a), "last": _dt(b)} for c, n, a, b in rows]}


@router.get("/gallery/{item_id}")
def get_item(gallery: GalleryDep, item_id: ItemId):
    """One gallery item."""
    return item_out(_get(gallery, item_id))


@router.get("/gallery/{item_id}/thumbnail", response_class=FileResponse,
            responses={200: {"content": {"image/jpeg": {}}, "description": "JPEG thumbnail"}})
def get_thumbnail(gallery: GalleryDep, item_id: ItemId):
    """The item's JPEG thumbnail."""
    rec = _get(gallery, item_id)
    path = gallery.path(rec.thumbnail) if rec.thumbnail else None
    if path is None or not path.is_file():
        raise BadInput(f"gallery item {item_id} has no thumbnail", 404)
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})


@router.get("/gallery/{item_id}/scene", response_class=FileResponse,
            responses={200: {"content": {"image/jpeg": {}}, "description": "the scene, the person's box marked"}})
def get_scene(gallery: GalleryDep, item_id: ItemId):
    """Where the person was: the footage frame of the tracklet's best crop, downscaled, box marked.
    Items from footage have one; uploaded images and tracklets do not (404)."""
    rec = _get(gallery, item_id)
    path = gallery.path(rec.scene) if rec.scene else None
    if path is None or not path.is_file():
        raise BadInput(f"gallery item {item_id} has no scene (only tracklets cut from footage have one)", 404)
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})


@router.get("/gallery/{item_id}/crops/{n}", response_class=FileResponse,
            responses={200: {"content": {"image/jpeg": {}, "image/png": {}}, "description": "the stored crop"}})
def get_crop(gallery: GalleryDep, item_id: ItemId,
             n: Annotated[int, PathParam(ge=0, le=1_000_000, description="crop index, 0-based")]):
    """The item's n-th stored crop (a tracklet's frames, in order; 0-based)."""
    rec = _get(gallery, item_id)
    if not 0 <= n < len(rec.crops):
        raise BadInput(f"gallery item {item_id} has {len(rec.crops)} crops; no crop {n}", 404)
    path = gallery.path(rec.crops[n])
    if not path.is_file():
        raise BadInput(f"crop {n} of gallery item {item_id} is missing", 404)
    return FileResponse(path, headers={"Cache-Control": "private, max-age=86400"})


@router.delete("/gallery/{item_id}", status_code=204)
def delete_item(gallery: GalleryDep, item_id: ItemId) -> Response:
    """Remove an item (row, vector, crops, thumbnail)."""
    if not gallery.delete(item_id):
        raise BadInput(f"gallery item {item_id} not found", 404)
    return Response(status_code=204)
