"""Every text-to-image (DreamBooth) hyperparameter: type, default, range, meaning and aliases.

JumpStart's names and defaults for Stable Diffusion 2.1 fine-tuning are canonical; diffusers'
train_dreambooth.py names (and a few language-model names) are aliases. Values arrive in every
SageMaker string encoding and are read by the same base as the language-model hyperparameters
(tuneforge.hyperparameters), with the same error messages.
"""

from __future__ import annotations

from typing import Any, Literal

from ..hyperparameters import Flag, Float, Int, OptionalInt, Rule, SageMakerHyperparameters, Text, hp


class DreamBoothConfig(SageMakerHyperparameters):
    unknown_name = "unknown text-to-image hyperparameter"
    names_doc = "docs/hyperparameters.md (text-to-image)"

    # --- schedule (JumpStart names and defaults) ---
    epochs: Int = hp(20, "Passes over the instance images.", ge=1, le=10000,
                     aliases={"epoch": None, "num_train_epochs": None})
    max_steps: OptionalInt = hp(None, "Stop after this many optimizer steps (wins over epochs); None = run all epochs.", ge=1,
                                aliases={"max_train_steps": None})
    batch_size: Int = hp(1, "Instance images per step (as many class images are added with prior preservation).", ge=1, le=256,
                         aliases={"train_batch_size": None, "per_device_train_batch_size": None})
    learning_rate: Float = hp(2e-6, "Peak learning rate (LoRA wants about 1e-4).", gt=0.0, le=1.0)
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts",
                          "polynomial"] = hp("constant", "Learning-rate schedule.", aliases={"lr_scheduler_type": None})
    lr_warmup_steps: Int = hp(0, "Warm-up steps of the schedule.", ge=0)
    adam_weight_decay: Float = hp(0.01, "AdamW weight decay.", ge=0.0, le=1.0,
                                  aliases={"weight_decay": None})
    adam_beta1: Float = hp(0.9, "AdamW beta1.", ge=0.0, le=1.0)
    adam_beta2: Float = hp(0.999, "AdamW beta2.", ge=0.0, le=1.0)
    adam_epsilon: Float = hp(1e-8, "AdamW epsilon.", gt=0.0, le=1.0)
    gradient_accumulation_steps: Int = hp(1, "Micro-batches per optimizer step.", ge=1, le=1024)
    max_grad_norm: Float = hp(1.0, "Gradient clipping norm (0 = off).", ge=0.0)
    seed: Int = hp(0, "Seed of noise, timesteps, data order, LoRA initialization and the before/after images.", ge=0)
    tensorboard: Flag = hp(False, "Write the loss and learning rate of every step as TensorBoard event files to /opt/ml/output/tensorboard (docs/trackers.md); written whenever that folder exists (SageMaker's TensorBoardOutputConfig), even with False.")
    # --- data ---
    with_prior_preservation: Flag = hp(False, "Also train on class images (class_data_dir/, the rest generated from class_prompt) so the model keeps its idea of the class.")
    num_class_images: Int = hp(100, "Class images used with prior preservation; missing ones are generated with the base model.", ge=1, le=100000)
    prior_loss_weight: Float = hp(1.0, "Weight of the class images' loss.", ge=0.0)
    center_crop: Flag = hp(False, "Crop images at the center after resizing (else at a random place).")
    resolution: Int = hp(0, "Training image side in pixels, a multiple of 8; 0 = the model's own (unet sample_size x the VAE's scale).", ge=0, le=4096)
    # --- method ---
    peft_type: Literal["none", "lora"] = hp("none", "none = fine-tune the whole UNet (as JumpStart); lora = train LoRA adapters, merged into the saved pipeline.")
    train_text_encoder: Flag = hp(False, "Train the text encoder too (its LoRA adapters with peft_type=lora).")
    lora_r: Int = hp(4, "LoRA rank.", ge=1, le=1024,
                     aliases={"rank": None})
    lora_alpha: Int = hp(4, "LoRA scaling numerator.", ge=1, le=4096)
    lora_dropout: Float = hp(0.0, "Dropout on the LoRA input.", ge=0.0, le=1.0)
    gradient_checkpointing: Flag = hp(False, "Recompute UNet activations in backward to save memory.")
    precision: Literal["auto", "fp32", "bf16"] = hp("auto", "auto = bf16 autocast on GPUs that have it, else fp32; fp32; bf16 (GPU only).")
    # --- images made by the job ---
    num_inference_steps: Int = hp(30, "Denoising steps for generated class images and the before/after images.", ge=1, le=1000)
    guidance_scale: Float = hp(7.5, "Classifier-free guidance of those images.", ge=0.0, le=100.0)
    sample_batch_size: Int = hp(4, "Class images generated per call.", ge=1, le=256)
    num_report_images: Int = hp(2, "Images of the instance prompt made before and after training (output/data/image_grid.png); 0 = none.", ge=0, le=16)
    compute_fid: Flag = hp(False, "Report fid_score: the FID between the training images and images of the instance prompt drawn before and after training. Needs the `fid` channel holding pytorch-fid's Inception-v3 weights (pt_inception-2015-12-05-6726825d.pth); without it True fails at the start.")
    fid_images: Int = hp(8, "Images of the instance prompt drawn (before and after training) for fid_score with compute_fid.", ge=2, le=1000)
    # --- model and checkpoints ---
    model_id: Text = hp("", "Local pipeline folder with the base model, used when there is no `model` channel.")
    checkpoint_steps: Int = hp(500, "Save a resumable checkpoint to /opt/ml/checkpoints every this many steps; 0 = only when stopped (SIGTERM).", ge=0,
                               aliases={"checkpointing_steps": None})
    save_total_limit: Int = hp(1, "Checkpoints to keep in /opt/ml/checkpoints.", ge=1,
                               aliases={"checkpoints_total_limit": None})

    COMBINATION_RULES = (
        Rule(lambda c: c.resolution % 8, "{resolution} is not a multiple of 8", "hyperparameter resolution",
             "use a multiple of 8 (512 for Stable Diffusion 2.1 base, 768 for 2.1) or 0 for the model's own"),
    )

    @property
    def use_lora(self) -> bool:
        return self.peft_type == "lora"


FIELDS = DreamBoothConfig.fields()

# alias -> canonical name (diffusers' train_dreambooth.py and the language-model names)
ALIASES: dict[str, str] = {alias: name for alias, (name, _) in DreamBoothConfig.aliases().items()}


def parse_diffusion_hyperparameters(raw: dict[str, Any]) -> DreamBoothConfig:
    """SageMaker's string map -> a validated DreamBoothConfig (HyperparameterError naming the key)."""
    return DreamBoothConfig.parse(raw)


def markdown_table() -> str:
    """The text-to-image section of docs/hyperparameters.md."""
    lines = ["## Text-to-image (Stable Diffusion DreamBooth)", "",
             "Used when the job is text-to-image: the training channel holds `dataset_info.json`, or the base model "
             "(the `model` channel or `model_id`) is a diffusers pipeline (`model_index.json`). See "
             "[diffusion.md](diffusion.md).", "", *DreamBoothConfig.markdown_rows()]
    lines += ["", "Aliases (diffusers' train_dreambooth.py and language-model names):", "",
              "| alias | means |", "|---|---|"]
    lines += [f"| `{alias}` | `{name}` |" for alias, name in ALIASES.items()]
    return "\n".join(lines) + "\n"
