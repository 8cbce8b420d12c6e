"""``vlkit demo``: one web page to try a model (FastAPI + uvicorn).

Upload an image, ask a question (top-5 answers with bars), score captions, and see the ELIP
kept-token overlay and, for single-stream models, the word-to-patch alignment map. Uploads are
decoded in memory; anything written (matplotlib's cache) goes under a temporary directory.
(No ``from __future__ import annotations`` here: FastAPI reads the endpoint annotations at runtime.)
"""

import base64
import io
from typing import Any

from PIL import Image, UnidentifiedImageError

from vlkit.api.model import MissingHeadError, VLModel

MAX_UPLOAD_BYTES = 8 * 1024 * 1024
MAX_TEXT_CHARS = 500


class UploadError(ValueError):
    """An upload the demo refuses (not an image, too large, empty text)."""


def size_text(count: int) -> str:
    return f"{count / 1e6:.1f} MB" if count >= 1e6 else f"{count / 1e3:.0f} kB"


def read_upload(data: bytes, content_type: str | None, limit: int = MAX_UPLOAD_BYTES) -> Image.Image:
    """The uploaded bytes as an RGB image, or ``UploadError`` saying why not."""
    if len(data) > limit:
        raise UploadError(f"the upload is larger than {size_text(limit)}, the limit; choose a smaller image")
    if not data:
        raise UploadError("no image was uploaded; choose an image file")
    if content_type and not content_type.startswith("image/"):
        raise UploadError(f"the upload is {content_type}, not an image; choose a JPEG, PNG, ... file")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise UploadError(f"the upload is not a readable image ({err})") from err


def check_text(text: str, what: str) -> str:
    text = (text or "").strip()
    if not text:
        raise UploadError(f"the {what} is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise UploadError(f"the {what} is {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
    return text


def png_data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def create_app(model: VLModel, max_upload_bytes: int = MAX_UPLOAD_BYTES) -> Any:
    """The FastAPI app serving ``model``."""
    from fastapi import FastAPI, File, Form, UploadFile
    from fastapi.responses import HTMLResponse, JSONResponse

    from vlkit.api import pictures
    from vlkit.api.demo_page import page

    app = FastAPI(title="vlkit demo", docs_url=None, redoc_url=None)
    capabilities = {
        "vqa": hasattr(model.model, "vqa_classifier") or hasattr(model.model, "text_decoder"),
        "match": hasattr(model.model, "itm_score"),
        "elip": pictures.prunes_tokens(model),
        "align": model.cfg.model == "single_stream",
    }

    async def image_of(upload: UploadFile) -> Image.Image:
        data = await upload.read(max_upload_bytes + 1)
        return read_upload(data, upload.content_type, max_upload_bytes)

    def refused(err: Exception) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=400)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page(model, capabilities, max_upload_bytes)

    @app.post("/api/vqa")
    async def vqa(image: UploadFile = File(...), question: str = Form(...)) -> Any:
        try:
            picture, question = await image_of(image), check_text(question, "question")
            return {"answers": model.vqa([picture], [question], top_k=5)[0]}
        except (UploadError, MissingHeadError) as err:
            return refused(err)

    @app.post("/api/match")
    async def match(image: UploadFile = File(...), captions: str = Form(...)) -> Any:
        try:
            picture = await image_of(image)
            texts = [check_text(line, "caption") for line in captions.splitlines() if line.strip()]
            if not texts:
                raise UploadError("give at least one caption, one per line")
            scores = model.match([picture], texts)
            return {"captions": [{"caption": text, **score} for text, score in zip(texts, scores)]}
        except (UploadError, MissingHeadError) as err:
            return refused(err)

    @app.post("/api/picture/{kind}")
    async def picture(kind: str, image: UploadFile = File(...), text: str = Form(...)) -> Any:
        draw = {"elip": pictures.elip_png, "align": pictures.alignment_png}.get(kind)
        if draw is None or not capabilities[kind]:
            return refused(UploadError(f"this model has no {kind} picture"))
        try:
            return {"png": png_data_url(draw(model, await image_of(image), check_text(text, "text")))}
        except (UploadError, ValueError) as err:
            return refused(err)

    return app


def serve(model: VLModel, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Run the app with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(model), host=host, port=port, log_level="warning")
