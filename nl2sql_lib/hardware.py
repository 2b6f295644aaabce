"""What this machine's accelerator can do, read once, as data.

    hw = detect_hardware()          # Hardware(cuda=True, capability=(7, 5), total_memory_gib=14.7, ...)
    hw.bf16                         # False on a T4: compute capability below 8.0

Every hardware-dependent choice (dtype, attention kernel, device placement, vLLM context, the
memory plan) takes a :class:`Hardware` instead of asking ``torch.cuda`` itself, so the tests can
hand it a T4, an A100 or an 8-GPU node on a CPU machine. :func:`detect_hardware` is the only
place that reads ``torch.cuda``; tests fake that module's functions to check it.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# Ampere (8.0) is the first generation with bf16 tensor cores and the first flash-attention 2
# supports; a T4 is 7.5, a V100 7.0.
AMPERE = (8, 0)


@dataclass(frozen=True)
class Hardware:
    """The accelerator as the current process sees it.

    ``local_rank`` / ``world_size`` come from the launcher's environment (``accelerate launch``
    and torchrun set ``LOCAL_RANK`` and ``WORLD_SIZE``); ``name``, ``capability`` and
    ``total_memory_gib`` describe the GPU this process uses (its local rank's), or are None on a
    machine without CUDA.
    """

    cuda: bool
    device_count: int = 0
    local_rank: int = 0
    world_size: int = 1
    name: str | None = None
    capability: tuple[int, int] | None = None
    total_memory_gib: float | None = None
    cpu_bf16: bool = False

    @property
    def bf16(self) -> bool:
        """True where bf16 computes natively: a CUDA GPU of compute capability 8.0 or newer."""
        return self.cuda and self.capability is not None and tuple(self.capability) >= AMPERE

    @property
    def device(self) -> str:
        """The torch device of this process: its local rank's GPU, or the CPU."""
        return f"cuda:{self.local_rank}" if self.cuda else "cpu"

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def describe(self) -> str:
        """One line for logs and reports."""
        if not self.cuda:
            return f"CPU only (native bf16: {'yes' if self.cpu_bf16 else 'no'})"
        cc = ".".join(str(v) for v in self.capability) if self.capability else "?"
        memory = f"{self.total_memory_gib:.1f} GiB" if self.total_memory_gib is not None else "? GiB"
        ranks = f", rank {self.local_rank} of {self.world_size}" if self.distributed else ""
        return f"{self.device_count} x {self.name} (compute capability {cc}, {memory}){ranks}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "bf16": self.bf16, "device": self.device}


def cpu_has_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX): then bf16 is faster."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def detect_hardware() -> Hardware:
    """Read the accelerator once: CUDA or not, how many GPUs, and the local rank's GPU."""
    import torch

    local_rank = _env_int("LOCAL_RANK", 0)
    world_size = _env_int("WORLD_SIZE", 1)
    if not torch.cuda.is_available():
        return Hardware(cuda=False, local_rank=local_rank, world_size=world_size, cpu_bf16=cpu_has_bf16())
    count = torch.cuda.device_count()
    # Under CUDA_VISIBLE_DEVICES each process may see one GPU only: then it is device 0.
    index = local_rank if local_rank < count else 0
    props = torch.cuda.get_device_properties(index)
    return Hardware(
        cuda=True,
        device_count=count,
        local_rank=index,
        world_size=world_size,
        name=props.name,
        capability=(int(props.major), int(props.minor)),
        total_memory_gib=round(props.total_memory / 2**30, 2),
        cpu_bf16=cpu_has_bf16(),
    )
