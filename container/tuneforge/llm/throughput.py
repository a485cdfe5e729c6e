"""Model FLOPs utilization (MFU): the share of the GPUs' dense peak that training turned into
model math, from the measured tokens/s.

FLOPs per token (the PaLM appendix B count, adapted to frozen weights): forward 2N, backward 2N
for the activation gradients, plus 2 per trainable parameter for the weight gradients, plus the
attention scores, 12 x layers x hidden x sequence length (forward and backward). Full fine-tuning
gives the familiar 6N; LoRA about 4N. Recomputation (gradient checkpointing) is not counted: it
is work the model did not need, which is the point of MFU.
"""

from __future__ import annotations

from transformers import TrainerCallback

from ..contract import train_env

# Dense (no sparsity) bf16/fp16 tensor-core peak per GPU, TFLOP/s, from NVIDIA's data sheets.
# Checked in order: the first name found in torch.cuda.get_device_name() wins.
PEAK_TFLOPS = (
    ("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("H800", 989.0), ("GH200", 989.0),
    ("A100", 312.0), ("A800", 312.0), ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0),
    ("A10G", 70.0), ("A10", 125.0), ("V100", 125.0), ("T4", 65.0),
)


def flops_per_token(total_params: int, trainable_params: int, layers: int, hidden: int, seq_len: int) -> float:
    return 4.0 * total_params + 2.0 * trainable_params + 12.0 * layers * hidden * seq_len


def peak_flops(device_name: str) -> float | None:
    """Dense peak of one GPU in FLOP/s; TUNEFORGE_PEAK_TFLOPS overrides; None when unknown."""
    override = train_env().peak_tflops
    if override:
        return override * 1e12
    for name, tflops in PEAK_TFLOPS:
        if name in device_name:
            return tflops * 1e12
    return None


def mfu(tokens_per_second: float, per_token_flops: float, device_name: str, devices: int) -> float | None:
    peak = peak_flops(device_name)
    if not peak or not tokens_per_second:
        return None
    return tokens_per_second * per_token_flops / (peak * devices)


class TokensSeen(TrainerCallback):
    """Real (non-padding) input tokens this run trained on, all processes together: the Trainer's
    own count (include_num_input_tokens_seen="non_padding") minus what a resumed checkpoint had
    already seen. Exact for runs of any length, unlike dataset tokens x epochs."""

    def __init__(self):
        self.at_start = 0
        self.total = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.at_start = state.num_input_tokens_seen

    def on_train_end(self, args, state, control, **kwargs):
        self.total = state.num_input_tokens_seen - self.at_start
