"""Built-in LightningModules: an MLP for tabular data, a small CNN with BatchNorm for 8x8 digits
(so sync_batchnorm matters), and torchvision's ResNets (18 to 152 layers) as image classifiers.

All share :class:`Classifier`: cross-entropy, ``train_loss`` per step, ``val_loss``/``val_acc``
and ``test_loss``/``test_acc`` per epoch logged with ``sync_dist=True`` (EarlyStopping and
ModelCheckpoint must decide on the same, globally reduced value on every rank).
``input_shape`` and ``num_classes`` default to what the datamodule describes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torch.nn import functional as F

OPTIMIZERS = ("adamw", "sgd")
SCHEDULERS = ("none", "cosine")


class Classifier(pl.LightningModule):
    def __init__(
        self,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        optimizer: str = "adamw",
        scheduler: str = "none",
    ) -> None:
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
        if scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {scheduler!r}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        self.lr = lr
        self.weight_decay = weight_decay
        self.optimizer_name = optimizer
        self.scheduler_name = scheduler

    def _step(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(dim=1) == y).float().mean()
        return loss, acc

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss, _ = self._step(batch)
        # Step-level only: an epoch-level train metric would need a collective to be correct.
        self.log("train_loss", loss, on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        loss, acc = self._step(batch)
        self.log("val_loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log("val_acc", acc, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        loss, acc = self._step(batch)
        self.log("test_loss", loss, on_step=False, on_epoch=True, sync_dist=True)
        self.log("test_acc", acc, on_step=False, on_epoch=True, sync_dist=True)

    def configure_optimizers(self) -> Any:
        if self.optimizer_name == "sgd":
            opt: torch.optim.Optimizer = torch.optim.SGD(
                self.parameters(), lr=self.lr, momentum=0.9, weight_decay=self.weight_decay, nesterov=True
            )
        else:
            opt = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        if self.scheduler_name == "cosine":
            total = max(1, int(self.trainer.estimated_stepping_batches))
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        return opt


def _shape(input_shape: Sequence[int] | None, name: str) -> tuple[int, ...]:
    if input_shape is None:
        raise ValueError(f"{name} needs input_shape (from the datamodule or model_args)")
    shape = tuple(int(d) for d in input_shape)
    if not shape or any(d < 1 for d in shape):
        raise ValueError(f"input_shape must be positive dimensions, got {input_shape!r}")
    return shape


def _classes(num_classes: int | None, name: str) -> int:
    if num_classes is None or int(num_classes) < 2:
        raise ValueError(f"{name} needs num_classes >= 2, got {num_classes!r}")
    return int(num_classes)


class TabularMLP(Classifier):
    """Multi-layer perceptron on flattened features."""

    def __init__(
        self,
        input_shape: Sequence[int] | None = None,
        num_classes: int | None = None,
        hidden_sizes: Sequence[int] = (128, 64),
        dropout: float = 0.1,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        optimizer: str = "adamw",
        scheduler: str = "none",
    ) -> None:
        super().__init__(lr=lr, weight_decay=weight_decay, optimizer=optimizer, scheduler=scheduler)
        shape = _shape(input_shape, "tabular_mlp")
        classes = _classes(num_classes, "tabular_mlp")
        self.save_hyperparameters()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(shape)
        for h in hidden_sizes:
            layers += [nn.Linear(width, int(h)), nn.ReLU(), nn.Dropout(dropout)]
            width = int(h)
        layers.append(nn.Linear(width, classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class DigitsCNN(Classifier):
    """Small CNN with BatchNorm layers for small images (8x8 digits by default)."""

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 8, 8),
        num_classes: int = 10,
        channels: Sequence[int] = (16, 32),
        dropout: float = 0.1,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        optimizer: str = "adamw",
        scheduler: str = "none",
    ) -> None:
        super().__init__(lr=lr, weight_decay=weight_decay, optimizer=optimizer, scheduler=scheduler)
        shape = _shape(input_shape, "digits_cnn")
        if len(shape) != 3:
            raise ValueError(f"digits_cnn needs input_shape (channels, height, width), got {tuple(input_shape)!r}")
        classes = _classes(num_classes, "digits_cnn")
        if len(channels) < 1:
            raise ValueError("channels must list at least one width")
        self.save_hyperparameters()
        blocks: list[nn.Module] = []
        cin = shape[0]
        for i, c in enumerate(channels):
            blocks.append(_conv_bn(cin, int(c)))
            if i < len(channels) - 1:
                blocks.append(nn.MaxPool2d(2) if min(shape[1:]) >> (i + 1) >= 1 else nn.Identity())
            cin = int(c)
        self.features = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(cin, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _BasicBlock(nn.Module):
    """torchvision's ResNet-18/34 block."""

    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x), inplace=True)


class _Bottleneck(nn.Module):
    """torchvision's ResNet-50+ block (V1.5: the stride sits on the 3x3 convolution)."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * self.expansion
        self.body = nn.Sequential(
            nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x), inplace=True)


STEMS = ("cifar", "imagenet")
# torchvision's resnet<depth>: the block type and the number of blocks per stage.
DEPTHS: dict[int, tuple[type[nn.Module], tuple[int, ...]]] = {
    18: (_BasicBlock, (2, 2, 2, 2)),
    34: (_BasicBlock, (3, 4, 6, 3)),
    50: (_Bottleneck, (3, 4, 6, 3)),
    101: (_Bottleneck, (3, 4, 23, 3)),
    152: (_Bottleneck, (3, 8, 36, 3)),
}
DEFAULT_DEPTH = 18


class ResNet(Classifier):
    """torchvision's ResNet-``depth`` (18, 34, 50, 101, 152) as a classifier; ``widths``/``blocks`` scale it.

    ``stem="cifar"`` (a 3x3 convolution, full resolution) suits small images; ``stem="imagenet"``
    is the original 7x7/2 convolution + 3x3/2 max pool, which makes ``depth`` torchvision's
    ``resnet<depth>`` layer for layer (on 224x224 inputs the CIFAR stem would leave the stages 16x
    the positions to compute). ``blocks`` instead of ``depth`` builds basic blocks, that many per
    stage (a smaller network for tests and small data).
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (3, 32, 32),
        num_classes: int = 10,
        depth: int | None = None,
        widths: Sequence[int] = (64, 128, 256, 512),
        blocks: Sequence[int] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 5e-4,
        optimizer: str = "adamw",
        scheduler: str = "cosine",
        channels_last: bool = True,
        stem: str = "cifar",
    ) -> None:
        super().__init__(lr=lr, weight_decay=weight_decay, optimizer=optimizer, scheduler=scheduler)
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {', '.join(STEMS)}, got {stem!r}")
        shape = _shape(input_shape, "resnet")
        if len(shape) != 3:
            raise ValueError(f"resnet needs input_shape (channels, height, width), got {tuple(input_shape)!r}")
        block, counts = self._layout(depth, blocks)
        if len(widths) != len(counts):
            raise ValueError(f"widths must give one width per stage ({len(counts)} stages), got {widths!r}")
        classes = _classes(num_classes, "resnet")
        self.save_hyperparameters()
        self.channels_last = channels_last
        if stem == "imagenet":
            self.stem: nn.Module = nn.Sequential(
                nn.Conv2d(shape[0], int(widths[0]), 7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(int(widths[0])),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, stride=2, padding=1),
            )
        else:
            self.stem = _conv_bn(shape[0], int(widths[0]))
        stages: list[nn.Module] = []
        cin = int(widths[0])
        for i, (w, n) in enumerate(zip(widths, counts)):
            for j in range(int(n)):
                stride = 2 if (i > 0 and j == 0) else 1
                stages.append(block(cin, int(w), stride))
                cin = int(w) * block.expansion
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes))
        if channels_last:
            self.to(memory_format=torch.channels_last)

    @staticmethod
    def _layout(depth: int | None, blocks: Sequence[int] | None) -> tuple[Any, tuple[int, ...]]:
        if blocks is None:
            depth = DEFAULT_DEPTH if depth is None else depth
            if depth not in DEPTHS:
                raise ValueError(f"depth must be one of {', '.join(map(str, DEPTHS))}, got {depth!r}")
            return DEPTHS[depth]
        if depth is not None:
            raise ValueError("give depth (torchvision's layouts) or blocks (basic blocks per stage), not both")
        if not blocks:
            raise ValueError("blocks must list at least one stage")
        return _BasicBlock, tuple(int(n) for n in blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.head(self.stages(self.stem(x)))
