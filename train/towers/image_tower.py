"""Image tower: MobileNetV3-Small (Howard et al., 2019, "Searching for MobileNetV3", Table 2) on grey word
images, a projector to the shared embedding space, L2-normalised output.

Written here from the paper because torchvision cannot be installed beside the CPU torch build (DESIGN.md,
traps). Two reading notes on Table 2:
- the paper marks SE on the final 1×1 conv (96→576); the authors' reference code and the published 0.927 M
  feature-extractor count have no SE there, so neither do we (an SE block there would add 166,608 weights);
- a bneck whose expansion size equals its input width (the first one, 16→16) has no 1×1 expansion conv.

Parameters (in_channels=1): feature extractor 926,720 (the 3-channel figure 927,008 minus 16·9·2 = 288 stem
weights), projector 361,088, whole tower 1,287,808 ≤ 1.29 M. The test derives these by hand.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from train.config import STRIDE2_STAGES, ImageTowerConfig

# One row of Table 2 (MobileNetV3-Small): kernel, expansion size, output width, SE, activation, stride.
# "RE" = ReLU, "HS" = hard-swish.
BNECK_SMALL: tuple[tuple[int, int, int, bool, str, int], ...] = (
    (3, 16, 16, True, "RE", 2),
    (3, 72, 24, False, "RE", 2),
    (3, 88, 24, False, "RE", 1),
    (5, 96, 40, True, "HS", 2),
    (5, 240, 40, True, "HS", 1),
    (5, 240, 40, True, "HS", 1),
    (5, 120, 48, True, "HS", 1),
    (5, 144, 48, True, "HS", 1),
    (5, 288, 96, True, "HS", 2),
    (5, 576, 96, True, "HS", 1),
    (5, 576, 96, True, "HS", 1),
)
STEM_WIDTH = 16     # conv2d 3×3, stride 2, hard-swish
assert STRIDE2_STAGES == 1 + sum(row[5] == 2 for row in BNECK_SMALL)  # the stem and four bnecks
LAST_WIDTH = 576    # conv2d 1×1 closing the feature extractor (the tower's pooled feature size)

# BatchNorm settings of the authors' TensorFlow code (decay 0.99 → PyTorch momentum 0.01).
BN_EPS = 1e-3
BN_MOMENTUM = 0.01


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to the nearest multiple of `divisor`, never more than 10 % below `value`."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def activation(name: str) -> nn.Module:
    return nn.ReLU(inplace=True) if name == "RE" else nn.Hardswish(inplace=True)


class ConvBNAct(nn.Sequential):
    """Conv (no bias: BN follows) → BN → activation; `groups=in_ch` makes it depthwise."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1,
                 act: str | None = "RE") -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel, stride, padding=(kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch, eps=BN_EPS, momentum=BN_MOMENTUM),
        ]
        if act is not None:
            layers.append(activation(act))
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """Channel gate (MobileNetV3 §5.3): pool → 1×1 reduce to exp/4 → ReLU → 1×1 → hard-sigmoid."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        squeezed = make_divisible(channels / 4)
        self.reduce = nn.Conv2d(channels, squeezed, 1)  # with bias, like the reference code
        self.expand = nn.Conv2d(squeezed, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        gate = F.adaptive_avg_pool2d(x, 1)  # (B, C, 1, 1)
        gate = F.hardsigmoid(self.expand(F.relu(self.reduce(gate), inplace=True)))
        return x * gate


class InvertedResidual(nn.Module):
    """bneck: [1×1 expand] → k×k depthwise → [SE] → 1×1 linear projection; residual when shapes match."""

    def __init__(self, in_ch: int, kernel: int, exp: int, out_ch: int, se: bool, act: str,
                 stride: int | tuple[int, int]) -> None:
        super().__init__()
        self.use_residual = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if exp != in_ch:
            layers.append(ConvBNAct(in_ch, exp, 1, act=act))
        layers.append(ConvBNAct(exp, exp, kernel, stride, groups=exp, act=act))
        if se:
            layers.append(SqueezeExcite(exp))
        layers.append(ConvBNAct(exp, out_ch, 1, act=None))  # linear bottleneck: no activation
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_residual else y


def mobilenet_v3_small_features(in_channels: int = 1, keep_width: int = 0, relu_only: bool = False) -> nn.Sequential:
    """Table 2 up to and including the 576-channel 1×1 conv: 13 blocks (stem, 11 bnecks, last conv).

    Output stride 32: a (B, in_channels, 64, 256) input gives (B, 576, 2, 8). With `keep_width` k the last
    k stride-2 stages use stride (2, 1), and the width is divided by 2^(5−k) instead. `relu_only` puts
    ReLU wherever Table 2 has hard-swish.
    """
    hs = "RE" if relu_only else "HS"
    strides = [2 if i < STRIDE2_STAGES - keep_width else (2, 1) for i in range(STRIDE2_STAGES)]
    blocks: list[nn.Module] = [ConvBNAct(in_channels, STEM_WIDTH, 3, stride=strides.pop(0), act=hs)]
    width = STEM_WIDTH
    for kernel, exp, out_ch, se, act, stride in BNECK_SMALL:
        blocks.append(InvertedResidual(width, kernel, exp, out_ch, se, hs if act == "HS" else act,
                                       strides.pop(0) if stride == 2 else 1))
        width = out_ch
    blocks.append(ConvBNAct(width, LAST_WIDTH, 1, act=hs))
    return nn.Sequential(*blocks)


class ImageTower(nn.Module):
    """Word image (B, 1, H, W) in [0, 1] → L2-normalised embedding (B, embed_dim)."""

    def __init__(self, config: ImageTowerConfig | None = None) -> None:
        super().__init__()
        self.config = config or ImageTowerConfig()
        c = self.config
        self.features = mobilenet_v3_small_features(c.in_channels, c.keep_width, c.relu_only)
        self.dropout = nn.Dropout(c.dropout)
        self.projector = nn.Sequential(
            nn.Linear(LAST_WIDTH, c.proj_hidden), activation("RE" if c.relu_only else "HS"),
            nn.Linear(c.proj_hidden, c.embed_dim)
        )
        self._frozen_blocks = 0  # leading blocks of self.features held frozen by lock()
        self._init_weights()
        # NHWC kernels: on CPU (oneDNN) a training step at 32×128 runs 2.1× faster than NCHW
        # (docs/benchmarks.md); loading a state dict copies values into these tensors and keeps the layout.
        self.features.to(memory_format=torch.channels_last)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    @property
    def num_blocks(self) -> int:
        return len(self.features)

    def lock(self, unlocked_layers: int | None = 0) -> None:
        """Freeze all but the last `unlocked_layers` of the 13 backbone blocks; the projector stays trainable.

        0 (the default, as in open_clip) trains only the projector; None, -1 or ≥ 13 trains everything.
        Frozen blocks also keep their BatchNorm statistics fixed (they stay in eval mode, see `train`).
        Idempotent: each call sets every flag from scratch, so lock(2) after lock(5) leaves exactly the last
        2 blocks trainable.
        """
        if unlocked_layers is None or unlocked_layers < 0:
            frozen = 0
        else:
            frozen = max(0, self.num_blocks - unlocked_layers)
        self._frozen_blocks = frozen
        for i, block in enumerate(self.features):
            block.requires_grad_(i >= frozen)
        self.projector.requires_grad_(True)
        self.train(self.training)

    def train(self, mode: bool = True) -> ImageTower:
        super().train(mode)
        for block in self.features[: self._frozen_blocks]:
            block.eval()  # frozen means frozen: BN running stats must not drift either
        return self

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features after global average pooling: (B, 1, H, W) → (B, 576)."""
        x = ((images - 0.5) / 0.5).contiguous(memory_format=torch.channels_last)  # [0, 1] → [-1, 1]: ink and paper symmetric
        x = self.features(x)  # (B, 576, H/32, W/32)
        return x.mean(dim=(2, 3))  # (B, 576)

    def embed(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, 576) → L2-normalised embedding (B, embed_dim)."""
        return F.normalize(self.projector(self.dropout(pooled)), dim=-1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed(self.pooled(images))


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (BN running statistics are buffers and not counted)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
