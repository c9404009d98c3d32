"""A test-only model plugin: the built-in digits CNN, which saves what its rank trained with.

It joins the trainer through the ``ltj.models`` entry point, as a user's model does
(test_gpu_training.py writes the distribution metadata), so the run under test is the trainer's
own path. The record is saved in ``on_train_end``: after the last step, before Lightning's DDP
teardown turns SyncBatchNorm layers back into BatchNorm.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from ltj_trainer.models import DigitsCNN


class SyncBNProbe(DigitsCNN):
    autocast_dtype: str | None = None
    step_buffers: dict[str, torch.Tensor] = {}

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        # Lightning's precision plugin wraps the step in autocast; record the dtype it chose.
        if torch.is_autocast_enabled("cuda"):
            self.autocast_dtype = str(torch.get_autocast_dtype("cuda"))
        return super().training_step(batch, batch_idx)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # DDP copies rank 0's buffers to every rank at the start of each forward (validation's too),
        # so the ranks' running statistics show what each one's own normalisation did only between
        # a training step and the next forward: here.
        self.step_buffers = {name: buf.detach().cpu().clone() for name, buf in self.named_buffers()}

    def on_train_end(self) -> None:
        dist = torch.distributed
        record = {
            "global_rank": self.global_rank,
            "local_rank": self.local_rank,
            "world_size": self.trainer.world_size,
            "backend": dist.get_backend() if dist.is_initialized() else None,
            "device": str(self.device),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "autocast_dtype": self.autocast_dtype,
            "norm_types": [type(m).__name__ for m in self.modules() if isinstance(m, (nn.BatchNorm2d, nn.SyncBatchNorm))],
            "buffers": self.step_buffers,
        }
        torch.save(record, os.path.join(self.trainer.default_root_dir, f"probe-rank{self.global_rank}.pt"))
