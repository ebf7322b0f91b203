"""Per-image share of a within-prompt pairwise distance.

For a prompt with n images and distances d_ij, image i scores mean_j≠i d_ij. The mean of these over the
prompt's images equals the mean pairwise distance (each pair counted from both sides), so per-prompt
means are the DreamBooth DIV of that prompt, and per-image values pair with the baseline by seed.
A prompt with one image has no pair: its image is skipped.
"""

from __future__ import annotations

import torch


def mean_distance_to_others(distances: torch.Tensor) -> list[float | None]:
    n = distances.shape[0]
    if n < 2:
        return [None] * n
    off_diagonal = distances * (1 - torch.eye(n, dtype=distances.dtype))  # self-distance is 0 by definition
    return (off_diagonal.sum(dim=1) / (n - 1)).tolist()
