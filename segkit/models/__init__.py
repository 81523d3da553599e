"""Segmentation models behind one registry: ``build_model(name, *, num_classes, **options)``.

Every model maps images ``(N, 3, H, W)`` of any size to logits ``(N, num_classes, H, W)``::

    from segkit.models import build_model, list_models, model_spec
    model = build_model("unet", base_channels=16)
    spec = model_spec(model)  # {"name": "unet", "options": {"num_classes": 19, ...}}
    same = build_model(spec["name"], **spec["options"])
"""

# Importing the model modules registers them; the registry itself lives in ``registry``.
from segkit.models import deeplabv3plus, my_fcn, unet
from segkit.models.deeplabv3plus import (
    DeepLabV3Plus,
    PretrainedWeightsUnavailable,
    PretrainedWeightsWarning,
)
from segkit.models.my_fcn import MyFCN
from segkit.models.registry import (
    build_model,
    list_models,
    model_options,
    model_spec,
    register_model,
)
from segkit.models.unet import UNet

__all__ = [
    "DeepLabV3Plus",
    "MyFCN",
    "PretrainedWeightsUnavailable",
    "PretrainedWeightsWarning",
    "UNet",
    "build_model",
    "deeplabv3plus",
    "list_models",
    "model_options",
    "model_spec",
    "my_fcn",
    "register_model",
    "unet",
]
