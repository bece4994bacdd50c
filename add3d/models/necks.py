"""DLAUp / IDAUp neck: fuse the stride 4..32 backbone maps into one stride-4 map (MonoDLE's neck).

Iterative deep aggregation (IDA) walks from the deepest map to the shallowest: each deeper map is
projected to the shallower width (3x3 conv), upsampled by a learnable bilinear-initialised
transposed conv and fused with its shallower neighbour by a 3x3 "node" conv over the
concatenation. DLAUp repeats IDA stage by stage so the deep semantics reach stride 4 through every
intermediate resolution. With ``deformable=True`` the projection and node convs are modulated
deformable convolutions (DCNv2, via torchvision.ops), as in MonoFlex's neck.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _he_normal_fan_out(weight: torch.Tensor) -> None:
    """N(0, 2 / (k*k*out)): the initialisation of the DLA/MonoDLE neck convs."""
    out_channels, _, kh, kw = weight.shape
    nn.init.normal_(weight, 0.0, math.sqrt(2.0 / (kh * kw * out_channels)))


class ConvBlock(nn.Sequential):
    """3x3 conv (no bias) -> BN -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )
        _he_normal_fan_out(self[0].weight)


class DeformableConvBlock(nn.Module):
    """Modulated deformable 3x3 conv (DCNv2) -> BN -> ReLU.

    Offsets and masks come from a plain 3x3 conv initialised to zero, so training starts from a
    regular convolution (with the masks at sigmoid(0) = 0.5, as in DCNv2).
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.offset_mask = nn.Conv2d(in_channels, 3 * 9, 3, padding=1, bias=True)
        nn.init.zeros_(self.offset_mask.weight)
        nn.init.zeros_(self.offset_mask.bias)
        from torchvision.ops import DeformConv2d  # imported here: torchvision takes seconds to import

        self.conv = DeformConv2d(in_channels, out_channels, 3, padding=1, bias=False)
        _he_normal_fan_out(self.conv.weight)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset_x, offset_y, mask = self.offset_mask(x).chunk(3, dim=1)
        offset = torch.cat([offset_x, offset_y], dim=1)
        return self.relu(self.bn(self.conv(x, offset, torch.sigmoid(mask))))


def bilinear_upsampling(channels: int, factor: int) -> nn.ConvTranspose2d:
    """Depth-wise transposed conv initialised to bilinear interpolation by ``factor`` (trainable)."""
    up = nn.ConvTranspose2d(
        channels, channels, kernel_size=2 * factor, stride=factor, padding=factor // 2, groups=channels, bias=False
    )
    size = 2 * factor
    centre = (2 * factor - 1 - factor % 2) / (2.0 * factor)
    ramp = torch.tensor([1.0 - abs(i / factor - centre) for i in range(size)])
    with torch.no_grad():
        up.weight.copy_((ramp[:, None] * ramp[None, :]).expand_as(up.weight))
    return up


class IDAUp(nn.Module):
    """One IDA stage: maps ``[x0, x1, ...]`` with strides ``[s, s*f1, ...]`` -> all at stride s.

    Returns the list where map i > 0 is replaced by node_i(cat(map_{i-1}, up_i(proj_i(map_i)))).
    """

    def __init__(self, in_channels: list[int], up_factors: list[int], out_channels: int, deformable: bool = False):
        super().__init__()
        block = DeformableConvBlock if deformable else ConvBlock
        self.projections = nn.ModuleList([block(c, out_channels) for c in in_channels[1:]])
        self.upsamplers = nn.ModuleList([bilinear_upsampling(out_channels, int(f)) for f in up_factors[1:]])
        self.nodes = nn.ModuleList([block(2 * out_channels, out_channels) for _ in in_channels[1:]])

    def forward(self, layers: list[torch.Tensor]) -> list[torch.Tensor]:
        layers = list(layers)
        for i, (project, upsample, node) in enumerate(zip(self.projections, self.upsamplers, self.nodes), start=1):
            upsampled = upsample(project(layers[i]))
            layers[i] = node(torch.cat([layers[i - 1], upsampled], dim=1))
        return layers


class DLAUp(nn.Module):
    """Fuse backbone maps of strides ``[4, 8, 16, 32]`` into one stride-4 map of ``in_channels[0]`` channels."""

    def __init__(self, in_channels: list[int], deformable: bool = False):
        super().__init__()
        channels = list(in_channels)
        scales = [2**i for i in range(len(channels))]
        stages = []
        for i in range(len(channels) - 1):
            j = len(channels) - 2 - i  # shallowest map this stage fuses into
            stages.append(
                IDAUp(channels[j:], [s // scales[j] for s in scales[j:]], channels[j], deformable=deformable)
            )
            # After the stage, every map from j on lives at map j's stride and width.
            scales[j + 1 :] = [scales[j]] * (len(scales) - j - 1)
            channels[j + 1 :] = [channels[j]] * (len(channels) - j - 1)
        self.stages = nn.ModuleList(stages)
        self.out_channels = in_channels[0]

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        layers = list(features)
        for i, stage in enumerate(self.stages):
            start = len(layers) - 2 - i
            layers[start:] = stage(layers[start:])
        return layers[-1]
