"""``deeplabv3plus``: DeepLabV3+ (Chen et al., ECCV 2018) on full-width torchvision backbones.

Encoder: a torchvision ResNet-101/50 or MobileNetV3-Large, dilated to output stride 16 or 8, then
ASPP (torchvision's). Decoder: low-level (stride 4) features reduced to 48 channels, concatenated
with the upsampled ASPP output, two 3x3 convs, a 1x1 classifier, bilinear upsampling to the input.

ImageNet backbone weights are optional and never fetched silently forever: see
``imagenet_state_dict`` for where they are looked for.
"""

from __future__ import annotations

import os
import socket
import sys
import warnings
from collections import OrderedDict
from functools import partial
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import (
    MobileNet_V3_Large_Weights,
    ResNet50_Weights,
    ResNet101_Weights,
    WeightsEnum,
    resnet50,
    resnet101,
)
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.mobilenetv3 import MobileNetV3, _mobilenet_v3_conf
from torchvision.models.segmentation.deeplabv3 import ASPP

from segkit.io import DataError, load_tensors
from segkit.labels import NUM_CLASSES
from segkit.models.parts import checkpointed
from segkit.models.registry import ModelInfo, register_model

#: ImageNet weights used for ``pretrained_backbone=True``, per backbone.
IMAGENET_WEIGHTS: dict[str, WeightsEnum] = {
    "resnet101": ResNet101_Weights.IMAGENET1K_V2,
    "resnet50": ResNet50_Weights.IMAGENET1K_V2,
    "mobilenet_v3_large": MobileNet_V3_Large_Weights.IMAGENET1K_V2,
}
BACKBONES = tuple(IMAGENET_WEIGHTS)
#: (low-level stride-4 channels, deepest channels) of each backbone.
_CHANNELS = {"resnet101": (256, 2048), "resnet50": (256, 2048), "mobilenet_v3_large": (24, 960)}
#: Seconds any single network operation of the download may block; offline machines fail fast.
DOWNLOAD_TIMEOUT_S = 10.0
#: Classification-head keys a backbone state dict may carry or lack (the head is not used here).
_HEAD_PREFIXES = ("fc.", "classifier.")
#: url -> why its download failed, in this process: an offline machine tries each URL once, not
#: once per model built (a course run builds a second model to time a training step).
_FAILED_DOWNLOADS: dict[str, str] = {}


class PretrainedWeightsUnavailable(RuntimeError):
    """ImageNet backbone weights could be found neither in the torch hub cache nor by download."""


class PretrainedWeightsWarning(UserWarning):
    """The backbone continues with random weights because ImageNet weights were unavailable."""


# --- ImageNet weights: cache, download, local file -----------------------------------------------


def hub_cache_path(weights: WeightsEnum) -> Path:
    """Where torchvision keeps (and looks for) the downloaded file of ``weights``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def _download_state_dict(weights: WeightsEnum) -> dict[str, Tensor]:
    """torchvision's download into the hub cache, with a socket timeout so offline never hangs."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        return weights.get_state_dict(progress=sys.stderr.isatty())
    finally:
        socket.setdefaulttimeout(previous)


def imagenet_state_dict(weights: WeightsEnum) -> dict[str, Tensor]:
    """The state dict of ``weights``: from the torch hub cache if there, else downloaded.

    Raises:
        PretrainedWeightsUnavailable: with what was tried, where to put the file, how to go on.
    """
    path, url = hub_cache_path(weights), weights.url
    how_to_fix = (
        f"To use them, download {url} on a machine with internet access and copy it to {path} "
        f"(or pass pretrained_backbone='/path/to/{path.name}'). To continue without them, pass "
        "pretrained_backbone=False (random init), or allow_random_init=True to warn and go on."
    )
    if path.is_file():
        try:
            return load_tensors(path, "torch hub cache file")
        except DataError as err:
            raise PretrainedWeightsUnavailable(
                f"{err}: it may be truncated: delete it and retry. {how_to_fix}"
            ) from err
    if url in _FAILED_DOWNLOADS:
        raise PretrainedWeightsUnavailable(
            f"ImageNet weights {weights} are unavailable. Tried: the torch hub cache file {path} "
            f"(absent); downloading {url} failed earlier in this process "
            f"({_FAILED_DOWNLOADS[url]}). {how_to_fix}"
        )
    try:
        return _download_state_dict(weights)
    except Exception as err:
        _FAILED_DOWNLOADS[url] = f"{type(err).__name__}: {err}"
        raise PretrainedWeightsUnavailable(
            f"ImageNet weights {weights} are unavailable. Tried: the torch hub cache file {path} "
            f"(absent), then downloading {url} (failed: {type(err).__name__}: {err}). {how_to_fix}"
        ) from err


def _read_state_dict_file(path: Path) -> dict[str, Tensor]:
    """A state dict saved with ``torch.save(net.state_dict(), path)``, loaded safely."""
    state_dict = load_tensors(path, "--pretrained-backbone file")
    if not isinstance(state_dict, dict):
        kind = type(state_dict).__name__
        raise ValueError(f"pretrained_backbone file {path} holds a {kind}, not a state dict")
    return state_dict


def _load_backbone_weights(net: nn.Module, state_dict: dict[str, Tensor], source: str) -> None:
    """Load a classification network's state dict into ``net``; its head may be absent."""
    expected = f"expected the state dict of torchvision's {type(net).__name__} classification model"
    try:
        result = net.load_state_dict(state_dict, strict=False)
    except RuntimeError as err:  # shape mismatches raise even with strict=False
        raise ValueError(f"{source} does not fit this backbone: {err}; {expected}") from err
    missing = [k for k in result.missing_keys if not k.startswith(_HEAD_PREFIXES)]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{source} does not fit this backbone: {len(missing)} missing keys {missing[:5]}, "
            f"{len(result.unexpected_keys)} unexpected keys {result.unexpected_keys[:5]}; "
            f"{expected}"
        )


def init_backbone_weights(
    net: nn.Module,
    backbone: str,
    pretrained: bool | str | os.PathLike | None,
    allow_random_init: bool,
) -> bool:
    """Load ``pretrained`` (False/None, True/"imagenet" or a .pth path) into classifier ``net``;
    return whether weights were loaded.

    An explicit file that is missing or does not fit always raises: a typo must not silently train
    from scratch. ``allow_random_init`` only covers ImageNet weights that cannot be obtained.
    """
    if pretrained is None or pretrained is False:
        return False
    if pretrained is True or pretrained == "imagenet":
        weights = IMAGENET_WEIGHTS[backbone]
        try:
            state_dict = imagenet_state_dict(weights)
        except PretrainedWeightsUnavailable as err:
            if not allow_random_init:
                raise
            cause = err.__cause__ or _FAILED_DOWNLOADS.get(weights.url, "")
            cause = " ".join(str(cause).split())  # one line, whatever the cause says
            warnings.warn(
                f"{backbone} backbone RANDOMLY INITIALISED (slower training, lower accuracy): "
                f"ImageNet weights neither read from {hub_cache_path(weights)} nor downloaded from "
                f"{weights.url}{f' ({cause})' if cause else ''}",
                PretrainedWeightsWarning,
                stacklevel=2,
            )
            return False
        _load_backbone_weights(net, state_dict, f"ImageNet weights file {hub_cache_path(weights)}")
        return True
    if isinstance(pretrained, str | os.PathLike):
        path = Path(pretrained).expanduser()
        _load_backbone_weights(net, _read_state_dict_file(path), f"pretrained_backbone file {path}")
        return True
    raise TypeError(
        f"pretrained_backbone must be False, True, 'imagenet' or a path, not {pretrained!r}"
    )


# --- backbone ------------------------------------------------------------------------------------


def _dilated_mobilenet_v3_large(output_stride: int) -> MobileNetV3:
    """MobileNetV3-Large whose stages past ``output_stride`` dilate instead of striding.

    Generalises torchvision's ``mobilenet_v3_large(dilated=True)`` (used by its DeepLabV3 and
    LR-ASPP, output stride 16) to stride 8. Parameter names and shapes are unchanged, so ImageNet
    weights fit.

    Batch norm keeps torch's default momentum 0.1 instead of torchvision's 0.01 (tuned for long
    ImageNet runs): with 0.01 the running statistics of a randomly initialised backbone still lag
    far behind its weights after a few hundred steps, and evaluation-mode predictions collapse
    (measured: validation mIoU 0.02 after 15 CPU epochs while the training loss fell as U-Net's).
    """
    setting, last_channel = _mobilenet_v3_conf("mobilenet_v3_large")
    stride, dilation = 2, 1  # the stem convolution has stride 2
    for cnf in setting:
        if cnf.stride > 1:
            if stride >= output_stride:
                dilation *= cnf.stride  # torchvision's InvertedResidual then uses stride 1
            else:
                stride *= cnf.stride
        cnf.dilation = dilation
    return MobileNetV3(setting, last_channel, norm_layer=partial(nn.BatchNorm2d, eps=0.001, momentum=0.1))


def _classification_net(backbone: str, output_stride: int) -> nn.Module:
    """The full torchvision classification net for ``backbone``, dilated to ``output_stride``."""
    if backbone == "mobilenet_v3_large":
        return _dilated_mobilenet_v3_large(output_stride)
    # ResNet stages 2-4 stride by 2 each (overall 8, 16, 32); dilate the last one or two instead.
    dilate = [False, output_stride == 8, True]
    build = {"resnet101": resnet101, "resnet50": resnet50}[backbone]
    return build(weights=None, replace_stride_with_dilation=dilate)


class Backbone(IntermediateLayerGetter):
    """torchvision's IntermediateLayerGetter returning ``{"low": stride 4, "out": deepest}`` maps.

    Modules named in ``checkpointed`` are recomputed during backward instead of keeping their
    activations (training only), trading about one extra forward pass for much less memory; the
    recomputation leaves batch norm's running statistics alone (``parts.checkpointed``).
    """

    def __init__(
        self, body: nn.Module, low: str, out: str, checkpointed: tuple[str, ...] = ()
    ) -> None:
        super().__init__(body, {low: "low", out: "out"})
        self.checkpointed = frozenset(checkpointed)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features: dict[str, Tensor] = OrderedDict()
        recompute = self.training and torch.is_grad_enabled()
        for name, module in self.items():
            x = checkpointed(module, x) if recompute and name in self.checkpointed else module(x)
            if name in self.return_layers:
                features[self.return_layers[name]] = x
        return features


def make_backbone(
    backbone: str,
    output_stride: int,
    *,
    pretrained: bool | str | os.PathLike | None = False,
    allow_random_init: bool = False,
    checkpointed: bool = False,
) -> tuple[Backbone, int, int]:
    """The feature extractor, its low-level (stride 4) channels and its deepest channels.

    The extractor's ``pretrained`` attribute says whether it holds loaded weights (the optimizer
    gives those a lower learning rate).
    """
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {list(BACKBONES)}")
    if output_stride not in (8, 16):
        raise ValueError(f"output_stride must be 8 or 16, not {output_stride!r}")
    net = _classification_net(backbone, output_stride)
    loaded = init_backbone_weights(net, backbone, pretrained, allow_random_init)
    if backbone == "mobilenet_v3_large":
        body = net.features
        # First block of each stage, found as torchvision's _deeplabv3_mobilenetv3 does:
        # [0 (stem, /2), 2 (/4), 4 (/8), 7 (/16), 13 (/32 or dilated)]. The low-level features
        # are the output of the last stride-4 block, just before the stride-8 stage.
        starts = [0] + [i for i, b in enumerate(body) if getattr(b, "_is_cn", False)]
        low, out = str(starts[2] - 1), str(len(body) - 1)
        stages = tuple(name for name, _ in body.named_children() if name != "0")
    else:
        body, low, out = net, "layer1", "layer4"
        stages = ("layer1", "layer2", "layer3", "layer4")
    features = Backbone(body, low, out, checkpointed=stages if checkpointed else ())
    features.pretrained = loaded
    return features, *_CHANNELS[backbone]


# --- decoder and assembly ------------------------------------------------------------------------


class Decoder(nn.Module):
    """DeepLabV3+ decoder: fuse upsampled ASPP output with 48-channel low-level features."""

    def __init__(self, low_channels: int, aspp_channels: int = 256, reduced: int = 48) -> None:
        super().__init__()
        # Few low-level channels so the richer ASPP features dominate the fusion (paper, Sec. 4.1).
        self.reduce = nn.Sequential(
            nn.Conv2d(low_channels, reduced, 1, bias=False), nn.BatchNorm2d(reduced), nn.ReLU()
        )
        self.fuse = nn.Sequential(
            _conv3x3_bn_relu(aspp_channels + reduced, 256), _conv3x3_bn_relu(256, 256)
        )

    def forward(self, x: Tensor, low: Tensor) -> Tensor:
        low = self.reduce(low)  # (N, 48, H/4, W/4)
        # (N, 256, H/os, W/os) -> (N, 256, H/4, W/4)
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)
        x = torch.cat([x, low], dim=1)  # (N, 256 + 48, H/4, W/4)
        return self.fuse(x)  # (N, 256, H/4, W/4)


def _conv3x3_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 conv -> BN -> ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


class DeepLabV3Plus(nn.Module):
    """Backbone -> ASPP -> decoder with low-level skip -> 1x1 classifier -> upsample to the input.

    Train with batches of 2 or more: ASPP's image-pooling branch batch-normalises a 1x1 map.
    Pretrained backbones expect ImageNet-normalised input.
    """

    def __init__(
        self,
        backbone: Backbone,
        low_channels: int,
        high_channels: int,
        num_classes: int = NUM_CLASSES,
        output_stride: int = 16,
    ) -> None:
        super().__init__()
        self.output_stride = output_stride
        # Rates are tuned for stride 16; at stride 8 the same field of view needs twice the rate.
        rates = (6, 12, 18) if output_stride == 16 else (12, 24, 36)
        self.backbone = backbone
        self.aspp = ASPP(high_channels, rates, out_channels=256)
        self.decoder = Decoder(low_channels, aspp_channels=256)
        self.head = nn.Conv2d(256, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        features = self.backbone(x)  # low: (N, C_low, H/4, W/4); out: (N, C_high, H/os, W/os)
        x = self.aspp(features["out"])  # (N, 256, H/os, W/os)
        x = self.decoder(x, features["low"])  # (N, 256, H/4, W/4)
        x = self.head(x)  # (N, num_classes, H/4, W/4)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)  # (N, K, H, W)


# ASPP's image-pooling branch batch-normalises a 1x1 map: one value per channel for a batch of one
@register_model(aliases=("deeplab",), info=ModelInfo(checkpoint_option="checkpoint_backbone",
                                                     min_batch=2, backbone=True))
def deeplabv3plus(
    *,
    num_classes: int = NUM_CLASSES,
    backbone: str = "resnet101",
    output_stride: int = 16,
    pretrained_backbone: bool | str | os.PathLike | None = False,
    allow_random_init: bool = False,
    checkpoint_backbone: bool = False,
) -> DeepLabV3Plus:
    """DeepLabV3+ on a torchvision backbone.

    Args:
        backbone: "resnet101", "resnet50" or "mobilenet_v3_large" (full-width torchvision nets).
        output_stride: 16 or 8; the deepest stages dilate instead of striding.
        pretrained_backbone: False (random init), True or "imagenet" (torchvision's ImageNet
            weights, from the torch hub cache or downloaded), or the path of a .pth state dict of
            the torchvision classification model.
        allow_random_init: if ImageNet weights cannot be obtained, warn and go on with random
            weights instead of raising ``PretrainedWeightsUnavailable``.
        checkpoint_backbone: recompute backbone stages during backward to save memory.
    """
    features, low_channels, high_channels = make_backbone(
        backbone,
        output_stride,
        pretrained=pretrained_backbone,
        allow_random_init=allow_random_init,
        checkpointed=checkpoint_backbone,
    )
    return DeepLabV3Plus(features, low_channels, high_channels, num_classes, output_stride)

