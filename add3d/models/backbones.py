"""Backbones: DLA-34 (parameter names of the public ImageNet checkpoint), a narrow DLA and ResNet-18.

Every backbone returns the four feature maps of strides 4, 8, 16 and 32 (``out_channels`` lists
their widths) and names its first convolution's weight in ``first_conv_key`` so that RGB weights can
be widened to extra input channels (the teacher's depth + validity, see models/pretrained.py).

DLA follows Yu et al., "Deep Layer Aggregation" (CVPR 2018): a tree of residual blocks whose
``Root`` nodes fuse their children with a 1x1 conv. Module attribute names (``base_layer``,
``level0`` .. ``level5``, ``tree1``/``tree2``/``root``/``project``, ``conv1``/``bn1``...) are kept
identical to the public ``dla34-ba72cf86.pth`` so it loads strictly (its classifier ``fc`` aside).
"""

from __future__ import annotations

import torch
from torch import nn

from add3d.errors import Add3dError


def _init_conv_bn(module: nn.Module) -> None:
    """He-normal (fan-out) convs and unit BatchNorm, the initialisation of the DLA reference."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection; the residual may be supplied by the parent tree."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        shortcut = x if residual is None else residual
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class Root(nn.Module):
    """Aggregation node: concatenate children, 1x1 conv, BN, ReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, *children: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(torch.cat(children, dim=1))))


class Tree(nn.Module):
    """Hierarchical deep aggregation of ``depth`` levels of blocks.

    A depth-1 tree is two blocks fused by a root together with any ``extra children`` handed down
    by its parents; a deeper tree is two sub-trees where the second inherits the first's output as
    an extra child, so the single root at the bottom sees every intermediate level. With
    ``level_root`` the (downsampled) input of the tree is also one of the root's children.
    """

    def __init__(
        self,
        depth: int,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        level_root: bool = False,
        root_channels: int = 0,
    ):
        super().__init__()
        root_channels = root_channels or 2 * out_channels
        if level_root:
            root_channels += in_channels
        self.depth = depth
        self.level_root = level_root
        if depth == 1:
            self.tree1 = BasicBlock(in_channels, out_channels, stride)
            self.tree2 = BasicBlock(out_channels, out_channels, 1)
            self.root = Root(root_channels, out_channels)
        else:
            self.tree1 = Tree(depth - 1, in_channels, out_channels, stride)
            self.tree2 = Tree(depth - 1, out_channels, out_channels, root_channels=root_channels + out_channels)
        self.downsample = nn.MaxPool2d(stride, stride=stride) if stride > 1 else nn.Identity()
        self.project = None
        if in_channels != out_channels:
            self.project = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
            )
            if depth > 1:
                # The residual of a deeper tree is never used (its first sub-tree makes its own), as
                # in the reference DLA; the projection exists only so that the public checkpoint
                # loads. Frozen, so DDP needs no find_unused_parameters for it.
                self.project.requires_grad_(False)

    def forward(self, x: torch.Tensor, extra_children: list[torch.Tensor] | None = None) -> torch.Tensor:
        children = [] if extra_children is None else extra_children
        bottom = self.downsample(x)
        if self.level_root:
            children.append(bottom)
        if self.depth == 1:
            residual = self.project(bottom) if self.project is not None else bottom
            first = self.tree1(x, residual)
            second = self.tree2(first)
            return self.root(second, first, *children)
        first = self.tree1(x)
        children.append(first)
        return self.tree2(first, children)


def _conv_level(in_channels: int, out_channels: int, num_convs: int, stride: int = 1) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(num_convs):
        layers += [
            nn.Conv2d(in_channels, out_channels, 3, stride=stride if i == 0 else 1, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        ]
        in_channels = out_channels
    return nn.Sequential(*layers)


class DLA(nn.Module):
    """DLA with BasicBlocks. ``channels``/``depths`` have six entries (levels 0..5, strides 1..32)."""

    first_conv_key = "base_layer.0.weight"

    def __init__(self, channels: list[int], depths: list[int], in_channels: int = 3):
        super().__init__()
        if len(channels) != 6 or len(depths) != 6:
            raise Add3dError(f"DLA needs 6 channel widths and 6 depths, got {channels} and {depths}")
        self.base_layer = nn.Sequential(
            nn.Conv2d(in_channels, channels[0], 7, stride=1, padding=3, bias=False),
            nn.BatchNorm2d(channels[0]),
            nn.ReLU(inplace=True),
        )
        self.level0 = _conv_level(channels[0], channels[0], depths[0])
        self.level1 = _conv_level(channels[0], channels[1], depths[1], stride=2)
        self.level2 = Tree(depths[2], channels[1], channels[2], stride=2, level_root=False)
        self.level3 = Tree(depths[3], channels[2], channels[3], stride=2, level_root=True)
        self.level4 = Tree(depths[4], channels[3], channels[4], stride=2, level_root=True)
        self.level5 = Tree(depths[5], channels[4], channels[5], stride=2, level_root=True)
        self.in_channels = in_channels
        self.out_channels = list(channels[2:])
        _init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.level1(self.level0(self.base_layer(x)))
        features = []
        for level in (self.level2, self.level3, self.level4, self.level5):
            x = level(x)
            features.append(x)
        return features


class ResNetBackbone(nn.Module):
    """A torchvision ResNet without its classifier; parameter names equal torchvision's (minus ``fc``)."""

    first_conv_key = "conv1.weight"

    def __init__(self, resnet: nn.Module, in_channels: int = 3):
        super().__init__()
        self.conv1 = resnet.conv1
        if in_channels != self.conv1.in_channels:
            self.conv1 = nn.Conv2d(in_channels, self.conv1.out_channels, 7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.bn1, self.relu, self.maxpool = resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4
        self.in_channels = in_channels
        self.out_channels = [self.layer1[-1].bn2.num_features, self.layer2[-1].bn2.num_features,
                             self.layer3[-1].bn2.num_features, self.layer4[-1].bn2.num_features]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        return [c2, c3, c4, self.layer4(c4)]


def dla34(in_channels: int = 3) -> DLA:
    """DLA-34 (15.3 M parameters without the classifier), the backbone of MonoDLE/GUPNet/MonoFlex."""
    return DLA([16, 32, 64, 128, 256, 512], [1, 1, 1, 2, 2, 1], in_channels)


def dla34_small(in_channels: int = 3) -> DLA:
    """DLA-34's topology at half its width (3.9 M parameters): CPU experiments, no pretrained weights."""
    return DLA([8, 16, 32, 64, 128, 256], [1, 1, 1, 2, 2, 1], in_channels)


def dla34_tiny(in_channels: int = 3) -> DLA:
    """DLA-34's topology at a quarter of its width (1.0 M parameters): CPU demos and tests."""
    return DLA([4, 8, 16, 32, 64, 128], [1, 1, 1, 2, 2, 1], in_channels)


def resnet18(in_channels: int = 3) -> ResNetBackbone:
    """torchvision ResNet-18 trunk (11.2 M parameters); a familiar small alternative to DLA-34."""
    import torchvision

    return ResNetBackbone(torchvision.models.resnet18(weights=None), in_channels)


BACKBONES = {"dla34": dla34, "dla34_small": dla34_small, "dla34_tiny": dla34_tiny, "resnet18": resnet18}


def build_backbone(name: str, in_channels: int = 3) -> nn.Module:
    """Backbone by name (``dla34``, ``dla34_small``, ``dla34_tiny``, ``resnet18``), untrained."""
    if name not in BACKBONES:
        raise Add3dError(f"unknown backbone '{name}' (choose from {', '.join(BACKBONES)})")
    if in_channels < 1:
        raise Add3dError(f"in_channels must be positive, got {in_channels}")
    return BACKBONES[name](in_channels)
