"""The model registry: names -> builder functions, timm style, as plain dicts, and what each model
declares about itself (``ModelInfo``) for the parts that plan, split or describe its training."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

from segkit.labels import NUM_CLASSES

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])

#: canonical name -> builder (a function taking keyword-only options, returning an nn.Module).
_MODELS: dict[str, Callable[..., nn.Module]] = {}
#: alias -> canonical name.
_ALIASES: dict[str, str] = {}


@dataclass(frozen=True)
class ModelInfo:
    """What a model declares at registration, so that the planner, the command line and the
    out-of-memory splitter read it instead of naming models."""

    checkpoint_option: str | None = None  # the option that switches activation checkpointing on
    min_batch: int = 1  # the smallest batch it trains on (batch norm over a 1x1 map needs 2)
    backbone: bool = False  # takes a classification backbone (backbone, output_stride, pretrained_…)


#: canonical name -> what the model declares.
_INFO: dict[str, ModelInfo] = {}

#: Options that only decide the *initial* weights. A checkpoint's state dict replaces those weights,
#: so ``model_spec`` leaves them out: rebuilding a trained model then never needs ImageNet weights
#: (nor a network connection).
#: The smallest input side (pixels) every model takes: my_fcn pools 3 times, U-Net 4, DeepLab's
#: backbones stride 16 or 32 before dilating.
MIN_INPUT_SIDE = 32
INIT_ONLY_OPTIONS = frozenset({"pretrained_backbone", "allow_random_init"})


def register_model(
    fn: Builder | None = None, *, name: str | None = None, aliases: tuple[str, ...] = (),
    info: ModelInfo | None = None,
) -> Builder | Callable[[Builder], Builder]:
    """Register a builder under its function name (or ``name``), plus optional ``aliases`` and
    what the model declares about itself (``info``, default ``ModelInfo()``).

    Use bare (``@register_model``) or with arguments (``@register_model(aliases=("deeplab",))``).
    """

    def register(builder: Builder) -> Builder:
        key = name or builder.__name__
        for taken in (key, *aliases):
            if taken in _MODELS or taken in _ALIASES:
                raise ValueError(f"model name {taken!r} is already registered")
        _MODELS[key] = builder
        _ALIASES.update(dict.fromkeys(aliases, key))
        _INFO[key] = info or ModelInfo()
        return builder

    return register(fn) if fn is not None else register


def list_models(*, include_aliases: bool = False) -> list[str]:
    """Sorted names of the registered models (canonical names only unless ``include_aliases``)."""
    return sorted([*_MODELS, *_ALIASES] if include_aliases else _MODELS)


def resolve_name(name: str) -> str:
    """The canonical name for ``name`` or an alias; ``KeyError`` listing the choices otherwise."""
    if name in _MODELS:
        return name
    if name in _ALIASES:
        return _ALIASES[name]
    raise KeyError(
        f"unknown model {name!r}; choose one of {list_models()} "
        f"(aliases: {', '.join(f'{a} -> {c}' for a, c in sorted(_ALIASES.items())) or 'none'})"
    )


def model_info(name: str) -> ModelInfo:
    """What model ``name`` (or an alias) declares: its checkpointing option, smallest training
    batch, whether it takes a backbone; ``KeyError`` listing the choices for an unknown name."""
    return _INFO[resolve_name(name)]


def min_train_batch(model: nn.Module) -> int:
    """The smallest batch ``model`` trains on: its registry's ``min_batch``, 1 for a model the
    registry did not build (or a wrapper around one it did: DDP, ``torch.compile``)."""
    for inner in (model, getattr(model, "module", None), getattr(model, "_orig_mod", None)):
        if getattr(inner, "segkit_name", None) in _INFO:
            return _INFO[inner.segkit_name].min_batch
    return 1


def model_options(name: str) -> dict[str, Any]:
    """The keyword options a model accepts, with their defaults."""
    params = inspect.signature(_MODELS[resolve_name(name)]).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def build_model(name: str, *, num_classes: int = NUM_CLASSES, **options: Any) -> nn.Module:
    """Build a registered model, returning logits ``(N, num_classes, H, W)`` for ``(N, 3, H, W)``.

    Args:
        name: a name from ``list_models()`` or an alias (e.g. ``"deeplab"``).
        num_classes: number of output channels (19 for the Cityscapes training classes).
        **options: model-specific keyword options; see ``model_options(name)``.

    The model remembers how it was built (``model.segkit_name``, ``model.segkit_options``) so a
    checkpoint can store ``model_spec(model)`` and rebuild it through this function.
    """
    canonical = resolve_name(name)
    unknown = set(options) - set(model_options(canonical))
    if unknown:
        raise TypeError(
            f"model {canonical!r} got unknown options {sorted(unknown)}; "
            f"it accepts {model_options(canonical)}"
        )
    model = _MODELS[canonical](num_classes=num_classes, **options)
    model.segkit_name = canonical
    # Defaults are recorded too, so a checkpoint rebuilds the same model even if a default changes;
    # paths become strings so the spec stays plain data for torch.load(weights_only=True).
    resolved = {**model_options(canonical), **options, "num_classes": num_classes}
    model.segkit_options = {
        key: os.fspath(value) if isinstance(value, os.PathLike) else value
        for key, value in resolved.items()
    }
    return model


def model_spec(model: nn.Module) -> dict[str, Any]:
    """``{"name": ..., "options": {...}}`` such that ``build_model(name, **options)`` rebuilds it.

    Looks through ``torch.compile`` (``_orig_mod``) and DDP/DataParallel (``module``) wrappers.
    Initialisation-only options (``INIT_ONLY_OPTIONS``) are left out, since the weights will come
    from the checkpoint's state dict.
    """
    for inner in (model, getattr(model, "_orig_mod", None), getattr(model, "module", None)):
        if inner is not None and hasattr(inner, "segkit_name"):
            options = {k: v for k, v in inner.segkit_options.items() if k not in INIT_ONLY_OPTIONS}
            return {"name": inner.segkit_name, "options": options}
    raise ValueError("this model was not built by segkit.models.build_model; it has no spec")
