"""Losses for per-pixel classification, and class weights for imbalanced label histograms.

Every loss takes logits ``(N, C, H, W)`` and a class-index target ``(N, H, W)`` whose
``ignore_index`` pixels (255, see ``segkit.labels``) contribute nothing, like
``nn.CrossEntropyLoss(ignore_index=255)`` in torchvision's segmentation references.

* ``build_loss("ce" | "focal", ...)``: the one place the CLI, notebooks and tests get a loss from.
* ``FocalLoss``: the multi-class focal loss of Lin et al., "Focal Loss for Dense Object Detection"
  (ICCV 2017), ``FL = -alpha_t (1 - p_t)^gamma log p_t``.
* ``class_weights_from_histogram``: per-class pixel counts of the training masks
  (``segkit.labels.label_histogram``, ``segkit.datasets.class_pixels``) turned into class weights
  (e.g. ENet's ``1 / ln(1.02 + p)``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segkit.labels import IGNORE_INDEX

WEIGHT_METHODS = ("inverse_log", "inverse_sqrt", "inverse")


class FocalLoss(nn.Module):
    """Multi-class focal loss ``-alpha_t * w_t * (1 - p_t)^gamma * log p_t``, averaged over pixels.

    ``p_t`` is the softmax probability of the target class. ``gamma`` > 0 shrinks the loss of
    pixels that are already classified confidently (``p_t`` near 1), so training concentrates on the
    hard ones; ``gamma = 0`` without ``alpha`` is exactly cross-entropy.

    Two optional per-class factors, which differ only in how the mean is taken:

    * ``weight`` (C,): class weights as in ``nn.CrossEntropyLoss``; the mean divides by the sum of
      the target classes' weights, so ``gamma = 0`` with ``weight`` equals the weighted
      ``nn.CrossEntropyLoss`` exactly.
    * ``alpha`` (float or (C,)): the balancing factor of Lin et al., a plain multiplier; the mean
      divides by the number of valid pixels, so a float ``alpha`` scales the loss as in the paper.

    Args:
        gamma: focusing parameter, >= 0 (the paper uses 2).
        alpha: balancing factor, a float or one value per class, or None for 1.
        weight: class weights (C,), or None for 1.
        ignore_index: target value of pixels left out of the loss.
        reduction: ``"mean"`` (over valid pixels, weighted as above), ``"sum"``, or ``"none"``
            (the per-pixel loss, shaped like the target, 0 at ignored pixels).

    Shapes: ``forward(logits (N, C, d1, ...), target (N, d1, ...))`` -> a scalar, or for
    ``reduction="none"`` a tensor shaped like ``target``. When no pixel is valid the mean is 0
    (with zero gradients), not the NaN that ``nn.CrossEntropyLoss`` returns.
    """

    def __init__(self, gamma: float = 2.0, *, alpha: float | Sequence[float] | Tensor | None = None,
                 weight: Tensor | None = None, ignore_index: int = IGNORE_INDEX,
                 reduction: str = "mean") -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.gamma = float(gamma)
        self.ignore_index = ignore_index
        self.reduction = reduction
        # A float alpha stays a number; per-class factors are buffers so .to(device) moves them.
        self.alpha_scale = float(alpha) if isinstance(alpha, (int, float)) else None
        per_class_alpha = _per_class(alpha, "alpha") if self.alpha_scale is None else None
        self.register_buffer("alpha", per_class_alpha)
        self.register_buffer("weight", _per_class(weight, "weight"))

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Focal loss of logits (N, C, d1, ...) against class indices (N, d1, ...)."""
        self._check_classes(logits.shape[1])
        valid = target != self.ignore_index  # (N, d1, ...)
        # Ignored pixels read class 0 only to keep gather in range; they are masked out below.
        index = torch.where(valid, target, 0).long().unsqueeze(1)  # (N, 1, d1, ...)
        log_pt = F.log_softmax(logits, dim=1).gather(1, index).squeeze(1)  # (N, d1, ...)
        loss = -log_pt * self._modulating_factor(log_pt)
        if self.alpha is not None:
            loss = loss * self.alpha[index.squeeze(1)]
        elif self.alpha_scale is not None:
            loss = loss * self.alpha_scale
        pixel_weight = pixel_weights(target, self.weight, self.ignore_index).to(loss.dtype)
        # where (not a product) so that a non-finite value at an ignored pixel cannot leak in.
        loss = torch.where(valid, loss * pixel_weight, 0.0)
        if self.reduction == "none":
            return loss
        if self.reduction == "sum":
            return loss.sum()
        total = pixel_weight.sum()
        # With nothing to average the sum is an exact 0; dividing it by 1 keeps the graph finite.
        return loss.sum() / torch.where(total > 0, total, 1.0)

    def _modulating_factor(self, log_pt: Tensor) -> Tensor | float:
        """``(1 - p_t)^gamma`` from log p_t (any shape), accurate even for p_t near 1."""
        if self.gamma == 0:
            # Skipping the power keeps gamma = 0 bit-identical to cross-entropy.
            return 1.0
        # -expm1(log p) is 1 - p without the cancellation of 1 - exp(log p); the clamp keeps the
        # gradient of x^gamma finite at x = 0 when gamma < 1.
        one_minus_pt = (-torch.expm1(log_pt)).clamp_min(torch.finfo(log_pt.dtype).tiny)
        return one_minus_pt.pow(self.gamma)

    def _check_classes(self, num_classes: int) -> None:
        for name, values in (("alpha", self.alpha), ("weight", self.weight)):
            if values is not None and values.numel() != num_classes:
                raise ValueError(f"{name} has {values.numel()} values but the logits have "
                                 f"{num_classes} classes; pass one value per class")

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, ignore_index={self.ignore_index}, reduction={self.reduction!r}"


def _per_class(values: Sequence[float] | Tensor | None, name: str) -> Tensor | None:
    """A 1-D float tensor of per-class factors (C,), checked to be finite and non-negative."""
    if values is None:
        return None
    values = torch.as_tensor(values, dtype=torch.get_default_dtype()).detach().clone()
    if values.dim() != 1:
        raise ValueError(f"{name} must hold one value per class (a 1-D sequence), "
                         f"got shape {tuple(values.shape)}")
    if not torch.isfinite(values).all() or (values < 0).any():
        raise ValueError(f"{name} must be finite and >= 0, got {values.tolist()}")
    return values


def pixel_weights(target: Tensor, weight: Tensor | None, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """The weight of each pixel of ``target`` (N, d1, ...) in a loss's mean: its class's ``weight``
    (1 without weights), 0 at ``ignore_index``. Their sum is what the mean divides by."""
    valid = target != ignore_index
    if weight is None:
        return valid.float()
    # ignored pixels read class 0 only to keep the lookup in range; where() then zeroes them
    return torch.where(valid, weight[torch.where(valid, target, 0)], 0.0)


class CrossEntropyLoss(nn.CrossEntropyLoss):
    """``nn.CrossEntropyLoss`` (mean over valid pixels, weighted by ``weight``), except that a batch
    without a single valid pixel gives 0 with zero gradients instead of NaN, so that a crop of
    nothing but void does not look like a diverged run. Its mean is the only reduction: another
    ``reduction`` is refused rather than silently ignored."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.reduction != "mean":
            raise ValueError(f"reduction={self.reduction!r}: this loss is a mean over the valid "
                             "pixels; use torch.nn.functional.cross_entropy for other reductions")

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Cross-entropy of logits (N, C, d1, ...) against class indices (N, d1, ...)."""
        total = F.cross_entropy(logits, target, weight=self.weight, ignore_index=self.ignore_index,
                                reduction="sum", label_smoothing=self.label_smoothing)
        count = pixel_weights(target, self.weight, self.ignore_index).sum().to(total.dtype)
        # no .item() test: dividing by 1 where nothing is valid keeps the step free of a device sync
        return total / torch.where(count > 0, count, 1.0)


def _cross_entropy(*, gamma: float, class_weights: Tensor | None,
                   alpha: float | Sequence[float] | Tensor | None, ignore_index: int) -> nn.Module:
    if alpha is not None:
        raise ValueError("alpha only applies to the 'focal' loss; for 'ce' use class_weights")
    weight = None if class_weights is None else _per_class(class_weights, "class_weights")
    return CrossEntropyLoss(weight=weight, ignore_index=ignore_index)


def _focal(*, gamma: float, class_weights: Tensor | None,
           alpha: float | Sequence[float] | Tensor | None, ignore_index: int) -> nn.Module:
    return FocalLoss(gamma, alpha=alpha, weight=class_weights, ignore_index=ignore_index)


#: Loss name -> builder; ``build_loss`` is the only caller.
LOSSES: dict[str, Callable[..., nn.Module]] = {"ce": _cross_entropy, "focal": _focal}


def build_loss(name: str = "ce", *, gamma: float = 2.0, class_weights: Tensor | None = None,
               alpha: float | Sequence[float] | Tensor | None = None,
               ignore_index: int = IGNORE_INDEX) -> nn.Module:
    """Build a loss taking logits (N, C, H, W) and targets (N, H, W) and returning a scalar.

    Args:
        name: ``"ce"`` (``CrossEntropyLoss``) or ``"focal"`` (``FocalLoss``).
        gamma: focal loss focusing parameter (>= 0); only ``"focal"`` reads it.
        class_weights: per-class weights (C,) for a weighted mean, e.g. from
            ``class_weights_from_histogram``; both losses accept them.
        alpha: focal loss balancing factor (float or (C,)); ``"ce"`` rejects it.
        ignore_index: target value of pixels left out of the loss.

    Raises:
        KeyError: for an unknown ``name``, listing the choices.
    """
    if name not in LOSSES:
        raise KeyError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    return LOSSES[name](gamma=gamma, class_weights=class_weights, alpha=alpha,
                        ignore_index=ignore_index)


def class_weights_from_histogram(counts: Tensor, *, method: str = "inverse_log", c: float = 1.02,
                                 normalize: bool = False) -> Tensor:
    """Class weights that grow as classes get rarer, from per-class pixel counts.

    With ``p`` the class frequency ``counts / counts.sum()``:

    * ``"inverse_log"``: ``1 / ln(c + p)``, from ENet (Paszke et al., 2016, c = 1.02). Weights stay
      within ``(1 / ln(1 + c), 1 / ln(c)]``, about (1.4, 50.5] for c = 1.02, so no class dominates.
    * ``"inverse_sqrt"``: ``1 / sqrt(p)``, a milder inverse frequency.
    * ``"inverse"``: ``1 / p``, so every class carries the same total weight.

    A class with zero count gets weight 0 rather than infinity: it has no training pixel to
    weigh, and a 0 keeps the weights finite if such a pixel shows up.

    Args:
        counts: (C,) non-negative pixel counts of the training classes, void / ignore excluded
            (the first C of ``segkit.labels.label_histogram``).
        method: one of ``"inverse_log"``, ``"inverse_sqrt"``, ``"inverse"``.
        c: ENet's constant for ``"inverse_log"``, > 1 so that ``ln(c + p) > 0``.
        normalize: rescale so the weights of classes present average 1. The weighted mean of
            ``nn.CrossEntropyLoss`` and ``FocalLoss`` does not depend on the scale; a sum does.

    Returns:
        (C,) float32 weights.
    """
    if method not in WEIGHT_METHODS:
        raise KeyError(f"unknown weighting {method!r}; choose one of {', '.join(WEIGHT_METHODS)}")
    counts = torch.as_tensor(counts).to(torch.float64)
    if counts.dim() != 1 or (counts < 0).any() or counts.sum() <= 0:
        raise ValueError("counts must be a 1-D histogram of non-negative pixel counts with at "
                         "least one pixel; build it with segkit.labels.label_histogram(masks)[:-1]")
    if method == "inverse_log" and c <= 1:
        raise ValueError(f"c must be > 1 so that ln(c + p) stays positive, got {c}")
    present = counts > 0
    freq = counts / counts.sum()
    if method == "inverse_log":
        weights = 1.0 / torch.log(c + freq)
    elif method == "inverse_sqrt":
        weights = freq.rsqrt()
    else:
        weights = freq.reciprocal()
    weights = torch.where(present, weights, 0.0)
    if normalize:
        weights = weights / weights[present].mean()
    return weights.to(torch.float32)
