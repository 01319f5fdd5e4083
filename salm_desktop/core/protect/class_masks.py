"""The class-scope SALM masks of a min-min job (``mask_scope="class"`` / ``"class_from_start"``): each class's
accumulated saliency, its top-``mask_ratio`` mask, and that mask's smoothed weights for the local-mean-free step.
A mixin of the engine's ``_Job`` (engine.py), which owns the state it reads: ``class_score``,
``_class_mask_cache``, ``_class_weight_sum``, ``_round``, ``ratio``, ``precision``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .job_parts import _Bucket
from .masks import topk_mask


class _JobClassMasks:
    def _add_class_saliency(self, b: _Bucket, y: torch.Tensor, grad: torch.Tensor) -> None:
        """Accumulate each sample's |gradient|, normalized to sum 1, into its class's saliency map."""
        g = grad.abs().squeeze(1)
        g = g / g.flatten(1).sum(1).clamp_min(1e-12).view(-1, *([1] * (g.ndim - 1)))
        score = self.class_score.setdefault(id(b), torch.zeros((self._n_classes, *b.shape), device=self.device))
        score.index_add_(0, y, g)

    def _class_saliency_pass(self, model, buckets: list[_Bucket]) -> None:
        """mask_scope="class_from_start": one gradient pass over the clean samples, before round 1's
        noise steps, so that the class masks hold from round 1 on (no round spent on sample masks)."""
        for b in buckets:
            for idx in self._index_batches(b):
                self.progress.check()
                x, d, y = self._batch(b, idx)
                z = torch.clamp(x + d, 0, 1).requires_grad_(True)
                (grad,) = torch.autograd.grad(F.cross_entropy(self._logits(model, self._view(z)).float(), y), z)
                self._add_class_saliency(b, y, grad)

    def _class_mask(self, b: _Bucket, y: torch.Tensor, fg: torch.Tensor | None) -> torch.Tensor:
        """The top pixels of each sample's class saliency (round 1 or the pre-pass). Without a foreground
        restriction all samples of a class share one mask: computed once per class, not once per sample."""
        if fg is not None:
            return topk_mask(self.class_score[id(b)][y].unsqueeze(1), self.ratio, fg)
        key = (id(b), self._round)
        if key not in self._class_mask_cache:
            self._class_mask_cache = {key: topk_mask(self.class_score[id(b)].unsqueeze(1), self.ratio)}
        return self._class_mask_cache[key][y]

    def _class_mask_weight_sum(self, b: _Bucket, y: torch.Tensor) -> torch.Tensor | None:
        """The local-mean-free step's smoothed mask for class masks shared by a class (None: per sample).
        Computed once per class and round instead of once per sample and step (fast paths only: fp32 keeps
        the reference arithmetic, which recomputes it)."""
        if self.precision == "fp32":
            return None
        key = (id(b), self._round)
        if key not in self._class_mask_cache:
            return None
        if self._class_weight_sum.get("key") != key:
            masks = self._class_mask_cache[key].to(torch.float32)
            self._class_weight_sum = {"key": key, "value": self._smooth(masks).clamp_min(1e-6)}
        return self._class_weight_sum["value"][y]
