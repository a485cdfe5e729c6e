"""The DreamBooth training channel: instance images, dataset_info.json, optional class_data_dir/.

    training/
        dog1.jpg dog2.png ...          instance images (.png, .jpg, .jpeg) at the top level
        dataset_info.json              {"instance_prompt": "a photo of a Doppler dog",
                                        "class_prompt": "a photo of a dog"}   (class_prompt: prior preservation)
        class_data_dir/                optional class images

Every problem is a DataError naming the file and the fix; images are opened (and decoded) here,
once, so a broken file fails the job before any model is loaded.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError
from . import DATASET_INFO

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
CLASS_DIR = "class_data_dir"
EXAMPLE_INFO = '{"instance_prompt": "a photo of a Doppler dog", "class_prompt": "a photo of a dog"}'


@dataclass
class DreamBoothData:
    channel: Path
    instance_prompt: str
    class_prompt: str | None
    instance_images: list = field(default_factory=list)  # PIL RGB images
    instance_files: list[Path] = field(default_factory=list)
    class_images: list = field(default_factory=list)
    class_files: list[Path] = field(default_factory=list)


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))


def open_image(path: Path):
    """The file as an RGB PIL image, decoded now; DataError naming the file otherwise."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"the image cannot be read ({type(exc).__name__}: {str(exc)[:200]})", where=str(path),
                        fix="replace it with a valid .png or .jpg file, or remove it") from None


def read_dataset_info(channel: Path, *, need_class_prompt: bool) -> tuple[str, str | None]:
    path = channel / DATASET_INFO
    if not path.is_file():
        raise DataError(f"{DATASET_INFO} is missing", where=str(channel),
                        fix=f"add {DATASET_INFO} beside the images, e.g. {EXAMPLE_INFO}")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        line = f" (line {exc.lineno}: {exc.msg})" if isinstance(exc, json.JSONDecodeError) else ""
        raise DataError(f"not valid JSON{line}", where=str(path), fix=f"write one JSON object, e.g. {EXAMPLE_INFO}") from None
    if not isinstance(info, dict):
        raise DataError("must be a JSON object", where=str(path), fix=f"write one JSON object, e.g. {EXAMPLE_INFO}")
    instance = _prompt(info, "instance_prompt", path, "the words that name your subject, e.g. "
                       '"a photo of a Doppler dog" (a rare word such as Doppler becomes its name)')
    if not need_class_prompt:
        return instance, info.get("class_prompt") if isinstance(info.get("class_prompt"), str) else None
    return instance, _prompt(info, "class_prompt", path, 'the class without the name, e.g. "a photo of a dog" '
                             "(needed by with_prior_preservation=True)")


def _prompt(info: dict, key: str, path: Path, what: str) -> str:
    value = info.get(key)
    if not isinstance(value, str) or not value.strip():
        found = "is missing" if key not in info else f"is {json.dumps(value)[:60]}, not a non-empty string"
        raise DataError(f"`{key}` {found}", where=f"{path} field {key}", fix=f"set {key} to {what}")
    return value.strip()


def read_channel(channel: Path | None, *, with_prior_preservation: bool) -> DreamBoothData:
    if channel is None:
        raise DataError("no training data: the job has no `training` (or `train`) channel",
                        fix="add a `training` channel holding the instance images and dataset_info.json")
    instance_prompt, class_prompt = read_dataset_info(channel, need_class_prompt=with_prior_preservation)
    files = image_files(channel)
    if not files:
        others = sorted(p.name for p in channel.iterdir() if p.name != DATASET_INFO)[:8]
        seen = f" (found: {', '.join(others)})" if others else ""
        raise DataError(f"no instance images at the top of the channel{seen}", where=str(channel),
                        fix="put the subject's images (.png, .jpg or .jpeg; 5 or more) beside dataset_info.json")
    data = DreamBoothData(channel, instance_prompt, class_prompt, [open_image(p) for p in files], files)
    class_dir = channel / CLASS_DIR
    if with_prior_preservation and class_dir.is_dir():
        data.class_files = image_files(class_dir)
        data.class_images = [open_image(p) for p in data.class_files]
    elif class_dir.is_dir():
        log.info("%s is not used: with_prior_preservation is False", class_dir)
    log.info("training data: %d instance images (%r), %d class images given", len(files), instance_prompt,
             len(data.class_files))
    return data
