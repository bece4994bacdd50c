"""MonoFlex's edge fusion: a 1D convolution along the border of the feature map.

Why: a truncated object's projected 3D centre lies outside the image, so its heatmap peak is put
on the image border, where the 2D convolutions of the heads see mostly padding. Edge fusion reads
the head features along the border as one closed 1D sequence, lets a 1D conv mix neighbours along
it, and adds the result to the heatmap and 3D-offset outputs at the border pixels only.

Our input pipeline maps the whole original image onto the network input, so the border is the
feature map's own border (MonoFlex pads images instead and uses the padded image's border).
"""

from __future__ import annotations

import torch
from torch import nn


def border_indices(height: int, width: int, device: torch.device | None = None) -> torch.Tensor:
    """Flat indices (y * width + x) of the border pixels in MonoFlex's order: down the left column,
    right along the bottom row, up the right column, left along the top row, and (as the official
    ``get_edge_utils`` does) the top-left corner once more at the end: 2 * (height + width) - 3 entries.

    The repeated corner is kept so that official weights see the same 1D sequence: it is the
    right-hand neighbour of the last pixel (1, 0) in the 1D conv, while the official writes back
    only the first ``len - 1`` outputs (``edge_len = count - 1``), so the corner is corrected once,
    by the output at its first position.
    """
    if height < 2 or width < 2:
        raise ValueError(f"edge fusion needs a feature map of at least 2 x 2, got {height} x {width}")
    ys = torch.cat(
        [
            torch.arange(0, height - 1),  # left column, top -> bottom (excl. corner)
            torch.full((width - 1,), height - 1),  # bottom row, left -> right (excl. corner)
            torch.arange(height - 1, 0, -1),  # right column, bottom -> top (excl. corner)
            torch.zeros(width, dtype=torch.long),  # top row, right -> left (incl. the first corner again)
        ]
    )
    xs = torch.cat(
        [
            torch.zeros(height - 1, dtype=torch.long),
            torch.arange(0, width - 1),
            torch.full((height - 1,), width - 1),
            torch.arange(width - 1, -1, -1),
        ]
    )
    return (ys * width + xs).to(device)


def _edge_branch(channels: int, out_channels: int, kernel_size: int, norm: bool) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2, padding_mode="replicate"),
        nn.BatchNorm1d(channels) if norm else nn.Identity(),
        nn.Conv1d(channels, out_channels, kernel_size=1),
    )


class EdgeFusion(nn.Module):
    """Adds border-sequence corrections to the heatmap logits and the 3D offsets."""

    def __init__(self, head_channels: int, num_classes: int, kernel_size: int = 3, norm: bool = True):
        super().__init__()
        self.heatmap_branch = _edge_branch(head_channels, num_classes, kernel_size, norm)
        self.offset_branch = _edge_branch(head_channels, 2, kernel_size, norm)

    def forward(
        self,
        heatmap_features: torch.Tensor,
        offset_features: torch.Tensor,
        heatmap: torch.Tensor,
        offset_3d: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features ``B x head_channels x h x w`` (inputs of the last 1x1 convs) and the outputs
        ``B x C x h x w`` / ``B x 2 x h x w`` -> the outputs with the border corrections added."""
        batch, _, height, width = heatmap.shape
        index = border_indices(height, width, heatmap.device)
        heatmap_edge = self.heatmap_branch(heatmap_features.flatten(2)[:, :, index])
        offset_edge = self.offset_branch(offset_features.flatten(2)[:, :, index])
        # The corner is listed first and last; only its first output is added (MonoFlex's edge_len).
        index, heatmap_edge, offset_edge = index[:-1], heatmap_edge[..., :-1], offset_edge[..., :-1]
        heatmap = heatmap.flatten(2).index_add(2, index, heatmap_edge).view_as(heatmap)
        offset_3d = offset_3d.flatten(2).index_add(2, index, offset_edge).view_as(offset_3d)
        return heatmap, offset_3d
