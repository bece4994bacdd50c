"""The two attention adapters of ADD, used on the student side during training only.

- :class:`SelfAttention3D` (3D-SA): one transformer encoder layer over the student's neck map,
  pooled to a coarse grid (stride 16 by default) so that memory stays bounded at 384 x 1280 inputs;
  3D-PE is added to queries and keys; the update is upsampled and added back to the stride-4 map,
  which a 1x1 conv then projects to the teacher's channels for feature distillation.
- :class:`TargetCrossAttention` (TCA): one query per ground-truth object (student feature at the
  object's heatmap centre + 3D-PE there + optional class embedding) attends over the 3D-SA tokens.
  Keys and values come from the student only — teacher features there would leak the target.

Both are pre-norm layers (LayerNorm before attention and FFN), the form that trains stably from
scratch without warm-up tricks.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def _feed_forward(channels: int, hidden: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(channels, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, channels))


def _add_position(x: Tensor, position: Tensor | None) -> Tensor:
    return x if position is None else x + position


class SelfAttention3D(nn.Module):
    """Pooled-token self-attention over the student map; returns the refined stride-4 map and tokens."""

    def __init__(self, channels: int, num_heads: int = 4, ffn_channels: int = 256, pool: int = 4, dropout: float = 0.0):
        super().__init__()
        self.pool = pool
        self.norm_attention = nn.LayerNorm(channels)
        self.attention = nn.MultiheadAttention(channels, num_heads, dropout=dropout, batch_first=True)
        self.norm_ffn = nn.LayerNorm(channels)
        self.ffn = _feed_forward(channels, ffn_channels, dropout)

    def pooled_shape(self, height: int, width: int) -> tuple[int, int]:
        return -(-height // self.pool), -(-width // self.pool)

    def forward(self, features: Tensor, position: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``features`` B x C x h x w, ``position`` B x N x C for the pooled grid (or None).

        Returns (refined map B x C x h x w, tokens B x N x C) with N = ceil(h / pool) * ceil(w / pool).
        """
        batch, channels, height, width = features.shape
        pooled = F.avg_pool2d(features, self.pool, ceil_mode=True) if self.pool > 1 else features
        pooled_h, pooled_w = pooled.shape[-2:]
        tokens = pooled.flatten(2).transpose(1, 2)  # B x N x C
        normed = self.norm_attention(tokens)
        query_key = _add_position(normed, position)
        tokens = tokens + self.attention(query_key, query_key, normed, need_weights=False)[0]
        tokens = tokens + self.ffn(self.norm_ffn(tokens))
        update = tokens.transpose(1, 2).reshape(batch, channels, pooled_h, pooled_w) - pooled
        if self.pool > 1:
            update = F.interpolate(update, size=(height, width), mode="bilinear", align_corners=False)
        return features + update, tokens


class TargetCrossAttention(nn.Module):
    """Object queries attend over student tokens; one output vector per object slot (B x M x C)."""

    def __init__(
        self,
        channels: int,
        num_heads: int = 4,
        ffn_channels: int = 256,
        num_classes: int = 3,
        class_embedding: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.class_embedding = nn.Embedding(num_classes, channels) if class_embedding else None
        self.norm_query = nn.LayerNorm(channels)
        self.norm_memory = nn.LayerNorm(channels)
        self.attention = nn.MultiheadAttention(channels, num_heads, dropout=dropout, batch_first=True)
        self.norm_ffn = nn.LayerNorm(channels)
        self.ffn = _feed_forward(channels, ffn_channels, dropout)

    def forward(
        self,
        object_features: Tensor,
        tokens: Tensor,
        object_position: Tensor | None = None,
        token_position: Tensor | None = None,
        class_ids: Tensor | None = None,
    ) -> Tensor:
        """``object_features`` B x M x C (student map at the objects' centres), ``tokens`` B x N x C.

        Position encodings go onto queries and keys (not values), as in DETR. Padded object slots
        produce outputs too; the loss masks them out, so a batch with 0 objects costs nothing and
        never divides by zero.
        """
        stream = object_features
        if self.class_embedding is not None and class_ids is not None:
            classes = class_ids.clamp(0, self.class_embedding.num_embeddings - 1)
            stream = stream + self.class_embedding(classes)
        queries = _add_position(self.norm_query(stream), object_position)
        memory = self.norm_memory(tokens)
        keys = _add_position(memory, token_position)
        stream = stream + self.attention(queries, keys, memory, need_weights=False)[0]
        return stream + self.ffn(self.norm_ffn(stream))
