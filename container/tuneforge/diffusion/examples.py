"""Images -> training tensors, and the order they are trained in.

Images are resized once (shorter side = resolution) and cropped at every use: at the center with
center_crop, else at a place drawn from the job's generator. With prior preservation an epoch is
max(instance, class) examples long, each pairing instance i % n with class i % m, as diffusers'
DreamBooth does; the order of each epoch comes from (seed, epoch) alone, so a resumed run sees
the same order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def resize_shorter_side(image, size: int):
    from PIL import Image

    width, height = image.size
    scale = size / min(width, height)
    return image.resize((max(size, round(width * scale)), max(size, round(height * scale))), Image.BICUBIC)


def crop_tensor(image, size: int, center: bool, generator: torch.Generator | None) -> torch.Tensor:
    """A size x size crop as a (3, size, size) tensor in [-1, 1]."""
    width, height = image.size
    if center or generator is None:
        left, top = (width - size) // 2, (height - size) // 2
    else:
        left = int(torch.randint(0, width - size + 1, (1,), generator=generator))
        top = int(torch.randint(0, height - size + 1, (1,), generator=generator))
    pixels = np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()


def tokenize(tokenizer, prompt: str) -> torch.Tensor:
    return tokenizer(prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids[0]


@dataclass
class Batch:
    pixels: torch.Tensor  # (B, 3, H, W): instance images, then class images with prior preservation
    input_ids: torch.Tensor  # (B, tokens)
    prior: bool


class Examples:
    def __init__(self, data, class_images: list, tokenizer, resolution: int, center_crop: bool, seed: int):
        self.instance = [resize_shorter_side(image, resolution) for image in data.instance_images]
        self.klass = [resize_shorter_side(image, resolution) for image in class_images]
        self.resolution, self.center_crop, self.seed = resolution, center_crop, seed
        self.instance_ids = tokenize(tokenizer, data.instance_prompt)
        self.class_ids = tokenize(tokenizer, data.class_prompt) if self.klass else None

    def __len__(self) -> int:
        return max(len(self.instance), len(self.klass))

    def order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(len(self), generator=generator).tolist()

    def batches(self, epoch: int, batch_size: int) -> list[list[int]]:
        order = self.order(epoch)
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]

    def batch(self, indices: list[int], generator: torch.Generator) -> Batch:
        size, center = self.resolution, self.center_crop
        pixels = [crop_tensor(self.instance[i % len(self.instance)], size, center, generator) for i in indices]
        ids = [self.instance_ids] * len(indices)
        if self.klass:
            pixels += [crop_tensor(self.klass[i % len(self.klass)], size, center, generator) for i in indices]
            ids += [self.class_ids] * len(indices)
        return Batch(torch.stack(pixels), torch.stack(ids), prior=bool(self.klass))

    def evaluation_pixels(self) -> torch.Tensor:
        """Every instance image, center-cropped: the fixed set the before/after loss is measured on."""
        return torch.stack([crop_tensor(image, self.resolution, True, None) for image in self.instance])
