"""Dense prediction heads: conv3x3 -> ReLU -> conv1x1 per output, as in CenterNet / MonoDLE."""

from __future__ import annotations

from torch import nn

HEATMAP_PRIOR_BIAS = -2.19  # sigmoid(-2.19) ~= 0.1: the focal-loss prior that keeps early training stable


def build_head(in_channels: int, head_channels: int, out_channels: int) -> nn.Sequential:
    """One head. Regression heads start near zero (weights N(0, 0.001), zero bias), like MonoDLE."""
    head = nn.Sequential(
        nn.Conv2d(in_channels, head_channels, 3, padding=1, bias=True),
        nn.ReLU(inplace=True),
        nn.Conv2d(head_channels, out_channels, 1, bias=True),
    )
    for m in head.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.001)
            nn.init.zeros_(m.bias)
    return head


def build_heatmap_head(in_channels: int, head_channels: int, num_classes: int) -> nn.Sequential:
    """Class heatmap head: PyTorch-default conv init, output bias at the focal-loss prior."""
    head = nn.Sequential(
        nn.Conv2d(in_channels, head_channels, 3, padding=1, bias=True),
        nn.ReLU(inplace=True),
        nn.Conv2d(head_channels, num_classes, 1, bias=True),
    )
    nn.init.constant_(head[-1].bias, HEATMAP_PRIOR_BIAS)
    return head


def build_heads(in_channels: int, head_channels: int, outputs: dict[str, int]) -> nn.ModuleDict:
    """Heads named by ``outputs`` (name -> channels); the one named ``heatmap`` gets the prior bias."""
    return nn.ModuleDict(
        {
            name: (build_heatmap_head if name == "heatmap" else build_head)(in_channels, head_channels, channels)
            for name, channels in outputs.items()
        }
    )
