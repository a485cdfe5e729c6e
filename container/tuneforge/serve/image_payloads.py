"""Text-to-image request bodies and answers, in JumpStart's Stable Diffusion format.

    Content-Type: application/x-text   body: the prompt (a JSON-quoted string is accepted too)
        -> {"generated_image": <H x W x 3 RGB integers>, "prompt": "..."}
    Content-Type: application/json     {"prompt": "..." or [...], "width": 512, "height": 512,
        "num_inference_steps": 50, "guidance_scale": 7.5, "negative_prompt": "...",
        "num_images_per_prompt": 1, "seed": 0}
        -> {"generated_images": [...], "prompt": ...}
    Accept: application/json;jpeg -> the images as base64 JPEG strings instead of pixel arrays.

Pixel arrays cost about 4 bytes of JSON per value (a 512 x 512 image is ~3 MB), so a request
whose answer would pass the response limit is refused before any image is made.
"""

from __future__ import annotations

import base64
import difflib
import io
import json
import math
from dataclasses import dataclass

from ..contract import IMAGE_LIMIT_VARIABLES, image_limit_texts
from ..json_body import JsonBodyError, read_json

TEXT_TYPES = ("application/x-text", "text/plain")
JSON_TYPES = ("application/json", "text/json", "application/x-json")
JPEG_ACCEPT = "application/json;jpeg"
BYTES_PER_PIXEL_VALUE = 4  # "255," ; the estimate for pixel-array answers
FIELDS = ("prompt", "width", "height", "num_inference_steps", "guidance_scale", "negative_prompt",
          "num_images_per_prompt", "seed")


class ImageRequestError(Exception):
    def __init__(self, status: int, message: str, error_type: str = "validation"):
        super().__init__(message)
        self.status, self.message, self.error_type = status, message, error_type


@dataclass(frozen=True)
class Limits:
    """Bounds on one request, from the environment (docs/diffusion.md lists them)."""

    max_side: int = 1024  # TUNEFORGE_MAX_IMAGE_SIDE: largest width or height
    max_images: int = 8  # TUNEFORGE_MAX_IMAGES: prompts x num_images_per_prompt
    max_steps: int = 200  # TUNEFORGE_MAX_INFERENCE_STEPS
    max_response_mb: float = 6.0  # TUNEFORGE_MAX_RESPONSE_MB: SageMaker's real-time answers stop at 6 MB

    @classmethod
    def from_env(cls) -> "Limits":
        values = {}
        for field, text in image_limit_texts().items():
            var = IMAGE_LIMIT_VARIABLES[field]
            if text:
                kind = float if field == "max_response_mb" else int
                try:
                    values[field] = kind(text)
                except ValueError:
                    raise ValueError(f"{var}={text!r} is not a number") from None
        return cls(**values)


@dataclass
class ImageRequest:
    prompts: list[str]
    width: int
    height: int
    num_inference_steps: int
    guidance_scale: float
    negative_prompts: list[str] | None
    num_images_per_prompt: int
    seed: int | None
    single: bool  # application/x-text: one image, answered as generated_image
    prompt_echo: object  # the prompt as the caller sent it
    jpeg: bool = False

    @property
    def image_count(self) -> int:
        return len(self.prompts) * self.num_images_per_prompt


def parse(mimetype: str, body: bytes, defaults: dict, limits: Limits) -> ImageRequest:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ImageRequestError(400, "the request body is not UTF-8 text", "malformed_request") from None
    if mimetype in TEXT_TYPES:
        prompt = _text_prompt(text)
        return _validated({"prompt": prompt}, defaults, limits, single=True)
    if mimetype in JSON_TYPES:
        try:
            document = read_json(text)
        except JsonBodyError as exc:
            raise ImageRequestError(400, exc.message, exc.kind) from None
        if isinstance(document, str):  # JSONSerializer of a bare prompt
            document = {"prompt": document}
        if not isinstance(document, dict):
            raise ImageRequestError(400, 'the JSON body must be an object such as {"prompt": "a photo of a dog", '
                                    '"width": 512, "height": 512}')
        return _validated(document, defaults, limits, single=False)
    raise ImageRequestError(415, f"unsupported content type {mimetype!r}; use application/json or application/x-text",
                            "unsupported_media_type")


def _text_prompt(text: str) -> str:
    prompt = text.strip()
    if len(prompt) >= 2 and prompt[0] == prompt[-1] == '"':
        try:
            decoded = read_json(prompt)
            prompt = decoded.strip() if isinstance(decoded, str) else prompt
        except JsonBodyError as exc:
            if exc.kind != "malformed_json":  # a lone surrogate escape: not text
                raise ImageRequestError(400, exc.message, exc.kind) from None
    if not prompt:
        raise ImageRequestError(400, "the request body is empty; send the prompt as the body")
    return prompt


def _validated(doc: dict, defaults: dict, limits: Limits, *, single: bool) -> ImageRequest:
    unknown = [key for key in doc if key not in FIELDS]
    if unknown:
        close = difflib.get_close_matches(unknown[0], FIELDS, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else f"; accepted fields: {', '.join(FIELDS)}"
        raise ImageRequestError(400, f"unknown field {unknown[0]!r}{hint}")
    prompts = _prompts(doc.get("prompt"), "prompt", required=True)
    negative = _prompts(doc.get("negative_prompt"), "negative_prompt", required=False)
    if negative is not None and len(negative) == 1 and len(prompts) > 1:
        negative = negative * len(prompts)
    if negative is not None and len(negative) != len(prompts):
        raise ImageRequestError(400, f"negative_prompt has {len(negative)} entries for {len(prompts)} prompts; "
                                "send one, or one per prompt")
    width = _integer(doc, "width", defaults["width"], 8, limits.max_side, multiple=8)
    height = _integer(doc, "height", defaults["height"], 8, limits.max_side, multiple=8)
    steps = _integer(doc, "num_inference_steps", defaults["num_inference_steps"], 1, limits.max_steps)
    per_prompt = _integer(doc, "num_images_per_prompt", 1, 1, limits.max_images)
    seed = _integer(doc, "seed", None, 0, 2**63 - 1)
    guidance = _number(doc, "guidance_scale", defaults["guidance_scale"], 0.0, 100.0)
    request = ImageRequest(prompts, width, height, steps, guidance, negative, per_prompt, seed, single,
                           doc["prompt"])
    if request.image_count > limits.max_images:
        raise ImageRequestError(400, f"{request.image_count} images asked for ({len(prompts)} prompts x "
                                f"{per_prompt} each); the most is {limits.max_images} (TUNEFORGE_MAX_IMAGES)")
    return request


def _prompts(value, name: str, *, required: bool) -> list[str] | None:
    if value is None and not required:
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(p, str) and p.strip() for p in items):
        raise ImageRequestError(400, f"`{name}` must be a non-empty string or a list of them")
    return items


def _integer(doc: dict, name: str, default, lo: int, hi: int, multiple: int = 1):
    value = doc.get(name, default)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ImageRequestError(400, f"`{name}` must be an integer, not {json.dumps(value)[:40]}")
    if not lo <= value <= hi:
        raise ImageRequestError(400, f"`{name}` is {value}; it must be from {lo} to {hi}")
    if value % multiple:
        raise ImageRequestError(400, f"`{name}` is {value}, which is not a multiple of {multiple}; use e.g. "
                                f"{max(multiple, value - value % multiple)}")
    return value


def _number(doc: dict, name: str, default: float, lo: float, hi: float) -> float:
    value = doc.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ImageRequestError(400, f"`{name}` must be a number, not {json.dumps(value)[:40]}")
    if not lo <= value <= hi:
        raise ImageRequestError(400, f"`{name}` is {value}; it must be from {lo:g} to {hi:g}")
    return float(value)


def wants_jpeg(accept_header: str | None) -> bool:
    """Accept: application/json;jpeg (in any case, spaces allowed); 406 for what cannot be made."""
    offers = [part.replace(" ", "").lower() for part in (accept_header or "").split(",") if part.strip()]
    if not offers or any(o.startswith(("*/*", "application/*")) for o in offers):
        return any(o.startswith(JPEG_ACCEPT) for o in offers)
    if any(o.startswith(JPEG_ACCEPT) for o in offers):
        return True
    if any(o.split(";")[0] in JSON_TYPES for o in offers):
        return False
    raise ImageRequestError(406, f"cannot answer with Accept: {accept_header}; use application/json (pixel arrays) "
                            f"or {JPEG_ACCEPT} (base64 JPEG)", "not_acceptable")


def check_response_size(request: ImageRequest, limits: Limits) -> None:
    """Refuse, before generating, an answer of pixel arrays over the response limit."""
    if request.jpeg:
        return
    estimate = request.image_count * request.width * request.height * 3 * BYTES_PER_PIXEL_VALUE
    if estimate > limits.max_response_mb * 1024 * 1024:
        raise ImageRequestError(400, f"the answer would hold about {estimate / 2**20:.1f} MB of pixel arrays "
                                f"({request.image_count} x {request.width}x{request.height}), over the "
                                f"{limits.max_response_mb:g} MB response limit (TUNEFORGE_MAX_RESPONSE_MB); send "
                                f"Accept: {JPEG_ACCEPT} for JPEG images, or ask for fewer or smaller images",
                                "response_too_large")


def render(request: ImageRequest, pixels, limits: Limits) -> bytes:
    """The JSON answer for uint8 images (N, H, W, 3); 413 when even JPEG passes the limit."""
    images = [_jpeg(image) for image in pixels] if request.jpeg else [image.tolist() for image in pixels]
    if request.single:
        body = {"generated_image": images[0], "prompt": request.prompt_echo}
    else:
        body = {"generated_images": images, "prompt": request.prompt_echo}
    data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    if len(data) > limits.max_response_mb * 1024 * 1024:
        raise ImageRequestError(400, f"the answer is {len(data) / 2**20:.1f} MB, over the {limits.max_response_mb:g} MB "
                                "response limit (TUNEFORGE_MAX_RESPONSE_MB); ask for fewer or smaller images",
                                "response_too_large")
    return data


def _jpeg(image) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=90)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
