"""DreamBooth fine-tuning of a Stable Diffusion pipeline: setup -> train -> save -> report.

The UNet learns to predict the noise (or velocity, for v-prediction bases) added to the VAE
latents of the instance images, conditioned on the instance prompt; with prior preservation the
same batch carries class images under the class prompt, whose loss keeps the class from drifting.
Either the whole UNet trains (JumpStart's way) or LoRA adapters (peft) do, merged into the saved
pipeline; train_text_encoder adds the text encoder (or its adapters).
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext

import torch
from torch.nn import functional

from ..contract import Paths
from ..metrics_file import write_metrics
from ..model_folder import ModelMetadata
from ..job import stopping
from ..job.artifacts import ModelWriter, is_disk_full
from ..job.metric_lines import print_metric
from . import facts, images, state
from .data import read_channel
from .examples import Examples
from .model import (TEXT_LORA_TARGETS, UNET_LORA_TARGETS, add_lora, inference_pipeline, load_parts, merge_lora,
                    resolve_base_pipeline)

log = logging.getLogger(__name__)

EVAL_TIMESTEPS = (0.1, 0.3, 0.5, 0.7, 0.9)  # shares of the noise schedule the fixed loss is measured at
TASK = "text-to-image"


def pick_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class DreamBooth:
    def __init__(self, paths: Paths, config):
        self.paths, self.config = paths, config
        self.device = pick_device()
        self.results: dict = {"task": TASK}
        self.before: list = []
        self.clock = facts.PhaseClock()
        self.fid = None  # fid.FidMeter with compute_fid
        self.trackers = None  # open while run() runs

    def run(self) -> None:
        """The job; each step's loss and learning rate, then the final numbers and the report files,
        go to the trackers asked for (TensorBoard, MLflow: tuneforge/trackers)."""
        from ..trackers import job_trackers

        started = time.monotonic()
        with job_trackers(self.paths, self.config, task="text-to-image", report=self.paths.output_data_dir,
                          final=lambda: facts.tracker_finals(self.results)) as self.trackers:
            self.setup()
            self.train()
            self.save()
            self.report(time.monotonic() - started)

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        cfg = self.config
        self.data = read_channel(self.paths.train_channel(), with_prior_preservation=cfg.with_prior_preservation)
        if cfg.compute_fid:  # a wrong weights file fails before the pipeline loads
            from .fid import FidMeter

            self.fid = FidMeter.for_job(self.paths, self.device)
        self.base_dir = resolve_base_pipeline(self.paths, cfg.model_id)
        self.parts = load_parts(self.base_dir)
        for module in (self.parts.unet, self.parts.vae, self.parts.text_encoder):
            module.to(self.device).requires_grad_(False)
        self.resolution = cfg.resolution or self.native_resolution()
        pipeline = inference_pipeline(self.base_dir, self.parts, self.device)
        self.clock.mark("loading data and model")
        class_images, generated = [], 0
        if cfg.with_prior_preservation:
            class_images, generated = images.ensure_class_images(self.paths, pipeline, self.data, cfg,
                                                                 self.resolution, stopping.requested)
            self.clock.mark("class images")
        self.results.update(instance_images=len(self.data.instance_files), class_images=len(class_images),
                            class_images_generated=generated, resolution=self.resolution,
                            data=facts.data_facts(self.data, len(class_images), generated, self.resolution, cfg))
        self.before = self.sample(pipeline)
        self.clock.mark("images before training")
        self.measure_fid(pipeline, "fid_score_before")
        self.examples = Examples(self.data, class_images, self.parts.tokenizer, self.resolution, cfg.center_crop,
                                 cfg.seed)
        self.identity = state.identity(cfg, self.base_dir, self.data, len(class_images), self.resolution)
        self.prepare_training()

    def native_resolution(self) -> int:
        scale = 2 ** (len(self.parts.vae.config.block_out_channels) - 1)
        return int(self.parts.unet.config.sample_size) * scale

    def prepare_training(self) -> None:
        from diffusers.optimization import get_scheduler

        cfg, parts = self.config, self.parts
        self.modules = {"unet": parts.unet}
        if cfg.train_text_encoder:
            self.modules["text_encoder"] = parts.text_encoder
        for prefix, module in self.modules.items():
            if cfg.use_lora:
                add_lora(module, UNET_LORA_TARGETS if prefix == "unet" else TEXT_LORA_TARGETS, cfg, cfg.seed)
            else:
                module.requires_grad_(True)
            module.to(self.device)
        if cfg.gradient_checkpointing:
            parts.unet.enable_gradient_checkpointing()
        params = list(state.trainable(self.modules).values())
        self.results["trainable_parameters"] = sum(p.numel() for p in params)
        self.results["parameters"] = facts.parameters(parts, self.results["trainable_parameters"])
        self.optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                           eps=cfg.adam_epsilon, weight_decay=cfg.adam_weight_decay)
        batches = math.ceil(len(self.examples) / cfg.batch_size)
        self.steps_per_epoch = math.ceil(batches / cfg.gradient_accumulation_steps)
        self.total_steps = cfg.max_steps or cfg.epochs * self.steps_per_epoch
        self.scheduler = get_scheduler(cfg.lr_scheduler, self.optimizer, num_warmup_steps=cfg.lr_warmup_steps,
                                       num_training_steps=self.total_steps)
        self.generator = torch.Generator().manual_seed(cfg.seed)

    def autocast(self):
        wants_bf16 = self.config.precision == "bf16" or (
            self.config.precision == "auto" and self.device == "cuda" and torch.cuda.is_bf16_supported())
        if wants_bf16 and self.device != "cuda":
            from ..errors import ResourceError

            raise ResourceError("precision=bf16 needs a GPU", where="hyperparameter precision", fix="use auto or fp32")
        return torch.autocast("cuda", dtype=torch.bfloat16) if wants_bf16 else nullcontext()

    # ------------------------------------------------------------------ the loss
    def loss(self, pixels, input_ids, timesteps=None, generator=None, prior: bool = False) -> torch.Tensor:
        parts, generator = self.parts, generator or self.generator
        pixels, input_ids = pixels.to(self.device), input_ids.to(self.device)
        with torch.no_grad():
            latents = parts.vae.encode(pixels).latent_dist.sample(generator=generator)
            latents = latents * parts.vae.config.scaling_factor
        noise = torch.randn(latents.shape, generator=generator).to(self.device)
        if timesteps is None:
            timesteps = torch.randint(0, parts.noise_scheduler.config.num_train_timesteps, (latents.shape[0],),
                                      generator=generator)
        timesteps = timesteps.to(self.device)
        noisy = parts.noise_scheduler.add_noise(latents, noise, timesteps)
        grad = torch.enable_grad() if "text_encoder" in self.modules and torch.is_grad_enabled() else torch.no_grad()
        with grad:
            hidden = parts.text_encoder(input_ids)[0]
        prediction = parts.unet(noisy, timesteps, hidden).sample.float()
        if parts.noise_scheduler.config.prediction_type == "v_prediction":
            target = parts.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        if not prior:
            return functional.mse_loss(prediction, target.float())
        prediction, prior_prediction = prediction.chunk(2)
        target, prior_target = target.float().chunk(2)
        prior_loss = functional.mse_loss(prior_prediction, prior_target)
        return functional.mse_loss(prediction, target) + self.config.prior_loss_weight * prior_loss

    @torch.no_grad()
    def fixed_loss(self) -> float:
        """The denoising loss on every instance image at fixed timesteps and noise: comparable before
        and after training, unlike the per-step loss, whose noise and timesteps are random."""
        pixels = self.examples.evaluation_pixels()
        ids = self.examples.instance_ids.expand(len(pixels), -1)
        steps = self.parts.noise_scheduler.config.num_train_timesteps
        generator = torch.Generator().manual_seed(self.config.seed + 1)
        with self.autocast():
            losses = [float(self.loss(pixels, ids, torch.full((len(pixels),), int(share * steps)), generator))
                      for share in EVAL_TIMESTEPS]
        return sum(losses) / len(losses)

    # ------------------------------------------------------------------ train
    def train(self) -> None:
        from .loop import run_loop

        cfg = self.config
        self.results["initial_loss"] = self.fixed_loss()
        print_metric("initial_loss", self.results["initial_loss"])
        checkpoint = state.find(self.paths, self.identity)
        position = state.load(checkpoint, self.modules, self.optimizer, self.scheduler, self.generator) \
            if checkpoint else state.Position()
        if checkpoint:
            self.results["resumed_from"] = str(checkpoint)
        log.info("training %s: %d steps (%d per epoch), batch %d x %d accumulation, resolution %d, on %s",
                 "LoRA" if cfg.use_lora else "the full UNet", self.total_steps, self.steps_per_epoch, cfg.batch_size,
                 cfg.gradient_accumulation_steps, self.resolution, self.device)
        self.clock.mark("preparing training, loss before")
        history = run_loop(self, position)
        seconds = self.clock.mark("training")
        trained = facts.images_trained([step for step, _ in history], len(self.examples), cfg, bool(self.examples.klass))
        self.results.update(steps=self.total_steps, loss_history=history, epochs=facts.epochs_done(
                            self.total_steps, self.steps_per_epoch), train_images=trained,
                            train_images_per_second=facts.per_second(trained, seconds),
                            train_loss=_tail_mean([loss for _, loss in history], self.steps_per_epoch))
        self.results["final_loss"] = self.fixed_loss()
        self.clock.mark("loss after training")
        if self.results.get("train_loss") is not None:
            print_metric("final_train_loss", self.results["train_loss"])
        print_metric("final_loss", self.results["final_loss"])

    def checkpoint(self, position: state.Position):
        return state.save(self.paths, position, self.modules, self.optimizer, self.scheduler, self.generator,
                          self.identity, self.config.save_total_limit)

    # ------------------------------------------------------------------ save and report
    def save(self) -> None:
        from ..errors import ResourceError
        from ..job.finite import check_finite

        for prefix, module in self.modules.items():
            if self.config.use_lora:
                merge_lora(module)
            module.requires_grad_(False).eval()
            check_finite(module.named_parameters(), what=prefix)
        self.pipeline = inference_pipeline(self.base_dir, self.parts, self.device)
        writer = ModelWriter(self.paths)
        try:
            self.pipeline.save_pretrained(writer.start(), safe_serialization=True)
            ModelMetadata.model_validate(self.metadata()).write(writer.staging)
            writer.publish()
        except Exception as exc:
            writer.discard()
            if is_disk_full(exc):
                raise ResourceError(f"no space left while writing the pipeline ({str(exc).splitlines()[0]}); model/ "
                                    "was left as it was", where=str(self.paths.model_dir),
                                    fix="give the job more disk (VolumeSizeInGB) or free space there") from exc
            raise
        log.info("pipeline written to %s", self.paths.model_dir)
        self.clock.mark("saving the pipeline")

    def metadata(self) -> dict:
        cfg = self.config
        # task and the keys after adapter_only are extra fields: ModelMetadata keeps them
        return {"task": TASK, "model_type": "stable-diffusion", "base_model": self.base_dir.name,
                "base_model_path": str(self.base_dir), "adapter_only": False,
                "method": "lora (merged)" if cfg.use_lora else "full", "train_text_encoder": cfg.train_text_encoder,
                "instance_prompt": self.data.instance_prompt, "class_prompt": self.data.class_prompt,
                "resolution": self.resolution, "hyperparameters": cfg.to_dict(),
                "metrics": {k: v for k, v in self.results.items() if k != "loss_history"}}

    def sample(self, pipeline) -> list:
        cfg = self.config
        if not cfg.num_report_images:
            return []
        return images.generate(pipeline, self.data.instance_prompt, cfg.num_report_images, seed=cfg.seed,
                               resolution=self.resolution, steps=cfg.num_inference_steps, guidance=cfg.guidance_scale)

    def measure_fid(self, pipeline, key: str) -> None:
        """fid_score (key) of fid_images pictures of the instance prompt against the training images."""
        if self.fid is None:
            return
        cfg = self.config
        if self.fid.real is None:
            self.fid.set_real(self.data.instance_images, self.resolution)
        drawn = []
        for start in range(0, cfg.fid_images, cfg.sample_batch_size):  # the same pictures before and after
            drawn += images.generate(pipeline, self.data.instance_prompt, min(cfg.sample_batch_size, cfg.fid_images - start),
                                     seed=cfg.seed + 1 + start, resolution=self.resolution,
                                     steps=cfg.num_inference_steps, guidance=cfg.guidance_scale)
        self.results[key] = self.fid.score(drawn)
        self.results["fid_images"] = cfg.fid_images
        print_metric(key, self.results[key])
        self.clock.mark("fid_score")

    def report(self, runtime_s: float) -> None:
        out = self.paths.output_data_dir
        out.mkdir(parents=True, exist_ok=True)
        if self.before:
            after = self.sample(self.pipeline)
            self.results["images"] = images.write_report_images(out, self.data.instance_prompt, self.before, after)
            self.clock.mark("images after training")
        self.measure_fid(self.pipeline, "fid_score")
        self.results.update(train_runtime_s=round(runtime_s, 2), method="lora" if self.config.use_lora else "full",
                            instance_prompt=self.data.instance_prompt, job=facts.job_facts(self),
                            phases=self.clock.seconds)
        write_metrics(out / "metrics.json", self.results)  # through its schema (metrics_file.py), key for key
        from ..report import write_job_report

        write_job_report(self.paths.base)  # never raises: a report error is logged, the pipeline stands


def _tail_mean(values: list[float], count: int) -> float | None:
    tail = values[-max(1, count):]
    return sum(tail) / len(tail) if tail else None
