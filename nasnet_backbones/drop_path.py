"""ScheduledDropPath (Zoph et al., 2018, Sec. 4; TF-slim ``_apply_drop_path`` version 3).

Each op output in a cell is zeroed per sample with probability ``1 - keep`` and the survivors are
scaled by ``1 / keep``. The keep probability falls linearly with depth and with training progress:

    keep = 1 - (cell_index + 1) / total_cells * drop_prob        (deeper cells drop more)
    keep = 1 - min(1, progress) * (1 - keep)                     (ramp up over training)

``progress`` is ``step / total_steps``; the trainer sets it through
:meth:`nasnet_backbones.NASNet.set_drop_path_progress`. It starts at 1.0, so a model trained by
code that never calls it drops at the full scheduled rate. Drop path is off in eval mode and is
never applied to identity ops.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ScheduledDropPath"]


class ScheduledDropPath(nn.Module):
    __jit_unused_properties__ = ["keep_prob"]

    def __init__(self, drop_prob: float, cell_index: int, total_cells: int, scale_by_depth: bool = True) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_path_prob must be in [0, 1), got {drop_prob}")
        self.drop_prob = drop_prob
        self.depth_ratio = (cell_index + 1) / total_cells if scale_by_depth else 1.0
        self.progress = 1.0

    @property
    def keep_prob(self) -> float:
        return self._keep_prob()

    def _keep_prob(self) -> float:
        keep = 1.0 - self.depth_ratio * self.drop_prob
        return 1.0 - min(1.0, self.progress) * (1.0 - keep)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep = self._keep_prob()
        if not self.training or keep >= 1.0:
            return x
        mask = torch.empty((x.shape[0], 1, 1, 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}, depth_ratio={self.depth_ratio:.3f}, progress={self.progress:.3f}"
