"""Necks: fuse the stride 4..32 backbone maps into one stride-4 map.

Iterative deep aggregation (IDA) walks from the deepest map to the shallowest: each deeper map is
projected to the shallower width (3x3 conv), upsampled by a learnable bilinear-initialised
transposed conv and fused with its shallower neighbour by a 3x3 "node" conv. DLAUp repeats IDA
stage by stage so the deep semantics reach stride 4 through every intermediate resolution.

Two published variants, kept apart because released weights need their own:

* :class:`DLAUp` with ``fuse="concat"``: the node sees the concatenation (2o -> o channels), the
  neck of MonoDLE and GUPNet (xinzhuma/monodle, SuperMHP/GUPNet).
* :class:`DLASegNeck`: MonoFlex's ``DLASeg`` (zhangyp15/MonoFlex): DLAUp with nodes over the SUM
  (o -> o) and modulated deformable convs with bias (DCNv2, here torchvision.ops), then one more
  IDA over the stride 4 / 8 / 16 outputs of the DLAUp stages. ``deformable=False`` keeps its
  topology with plain convs (cheap on CPU).
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
    """Modulated deformable 3x3 conv (DCNv2, with bias as in its reference ``DCN``) -> BN -> ReLU.

    Offsets and masks come from a plain 3x3 conv initialised to zero, so training starts from a
    regular convolution (with the masks at sigmoid(0) = 0.5, as in DCNv2). The offset channels
    are (dy, dx) pairs per kernel tap, the layout of DCNv2 and torchvision alike.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.offset_mask = nn.Conv2d(in_channels, 3 * 9, 3, padding=1, bias=True)
        nn.init.zeros_(self.offset_mask.weight)
        nn.init.zeros_(self.offset_mask.bias)
        from torchvision.ops import DeformConv2d  # imported here: torchvision takes seconds to import

        self.conv = DeformConv2d(in_channels, out_channels, 3, padding=1, bias=True)
        _he_normal_fan_out(self.conv.weight)
        # DCNv2's reference initialises the bias uniformly in +-1/sqrt(fan_in); zero is as good before BN.
        nn.init.zeros_(self.conv.bias)
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


FUSIONS = ("concat", "add")


class IDAUp(nn.Module):
    """One IDA stage: maps ``[x0, x1, ...]`` with strides ``[s, s*f1, ...]`` -> all at stride s.

    Returns the list where map i > 0 is replaced by node_i(fuse(map_{i-1}, up_i(proj_i(map_i)))),
    fuse being the concatenation (``"concat"``, MonoDLE) or the sum (``"add"``, MonoFlex).
    """

    def __init__(
        self,
        in_channels: list[int],
        up_factors: list[int],
        out_channels: int,
        deformable: bool = False,
        fuse: str = "concat",
    ):
        super().__init__()
        if fuse not in FUSIONS:
            raise ValueError(f"fuse must be one of {FUSIONS}, got {fuse!r}")
        block = DeformableConvBlock if deformable else ConvBlock
        node_in = 2 * out_channels if fuse == "concat" else out_channels
        self.concatenate = fuse == "concat"
        self.projections = nn.ModuleList([block(c, out_channels) for c in in_channels[1:]])
        self.upsamplers = nn.ModuleList([bilinear_upsampling(out_channels, int(f)) for f in up_factors[1:]])
        self.nodes = nn.ModuleList([block(node_in, out_channels) for _ in in_channels[1:]])

    def forward(self, layers: list[torch.Tensor]) -> list[torch.Tensor]:
        layers = list(layers)
        for i, (project, upsample, node) in enumerate(zip(self.projections, self.upsamplers, self.nodes), start=1):
            upsampled = upsample(project(layers[i]))
            fused = torch.cat([layers[i - 1], upsampled], dim=1) if self.concatenate else layers[i - 1] + upsampled
            layers[i] = node(fused)
        return layers


class DLAUp(nn.Module):
    """Fuse backbone maps of strides ``[4, 8, 16, 32]`` into one stride-4 map of ``in_channels[0]`` channels."""

    def __init__(self, in_channels: list[int], deformable: bool = False, fuse: str = "concat"):
        super().__init__()
        channels = list(in_channels)
        scales = [2**i for i in range(len(channels))]
        stages = []
        for i in range(len(channels) - 1):
            j = len(channels) - 2 - i  # shallowest map this stage fuses into
            stages.append(
                IDAUp(channels[j:], [s // scales[j] for s in scales[j:]], channels[j], deformable=deformable, fuse=fuse)
            )
            # After the stage, every map from j on lives at map j's stride and width.
            scales[j + 1 :] = [scales[j]] * (len(scales) - j - 1)
            channels[j + 1 :] = [channels[j]] * (len(channels) - j - 1)
        self.stages = nn.ModuleList(stages)
        self.out_channels = in_channels[0]

    def stage_outputs(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """The last map of every stage, shallowest first: strides 4, 8, 16 (widths ``in_channels[:3]``)."""
        layers = list(features)
        outputs = []
        for i, stage in enumerate(self.stages):
            start = len(layers) - 2 - i
            layers[start:] = stage(layers[start:])
            outputs.insert(0, layers[-1])
        return outputs

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.stage_outputs(features)[0]


class DLASegNeck(nn.Module):
    """MonoFlex's neck (``DLASeg`` without its backbone): DLAUp fusing by addition, then a final IDA
    over the DLAUp stages' stride 4 / 8 / 16 outputs -> one stride-4 map of ``in_channels[0]`` channels.

    Why the final IDA: the stride-8 and stride-16 stage outputs have already aggregated every deeper
    level, so fusing them once more into stride 4 gives the heads a second path from the coarse
    semantics (CenterNet's DLASeg, which MonoFlex keeps). Attribute names follow the official
    ``dla_up`` / ``ida_up`` so conversion of released weights is a rename per module.
    """

    def __init__(self, in_channels: list[int], deformable: bool = True):
        super().__init__()
        if len(in_channels) != 4:
            raise ValueError(f"DLASegNeck needs the widths of the stride 4/8/16/32 maps, got {in_channels}")
        self.dla_up = DLAUp(in_channels, deformable=deformable, fuse="add")
        self.ida_up = IDAUp(list(in_channels[:3]), [1, 2, 4], in_channels[0], deformable=deformable, fuse="add")
        self.out_channels = in_channels[0]

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.ida_up(self.dla_up.stage_outputs(features)[:3])[-1]
