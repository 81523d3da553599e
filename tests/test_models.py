"""Tests for ``segkit.models``: shared per-model checks over the registry, then DeepLabV3+ specifics.

Everything runs on CPU with small inputs; nothing is ever downloaded (the download function is
replaced wherever ImageNet weights are requested).
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from segkit.io import DataError
from segkit.models import (
    DeepLabV3Plus,
    PretrainedWeightsUnavailable,
    PretrainedWeightsWarning,
    build_model,
    list_models,
    model_options,
    model_spec,
    parts,
)
from segkit.models import deeplabv3plus as dl
from segkit.models.registry import ModelInfo, model_info

IGNORE = 255
#: Options that keep each model quick on a CPU; DeepLab's default ResNet-101 gets its own tests.
FAST_OPTIONS = {"deeplabv3plus": {"backbone": "mobilenet_v3_large"}}
MODELS = list_models()


def build_fast(name: str, **options) -> nn.Module:
    """``build_model`` with the quick options for ``name`` (overridable)."""
    torch.manual_seed(0)
    return build_model(name, **{**FAST_OPTIONS.get(name, {}), **options})


def tiny_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two 64x64 images of rectangles and stripes over 4 classes, with ignored (255) pixels.

    Classes 1 and 3 share a colour and differ only in shape (blocks vs 4-pixel stripes), so a
    model must use spatial context, not just the colour of each pixel.
    """
    masks = torch.zeros(2, 64, 64, dtype=torch.long)
    masks[0, 8:40, 8:32] = 1
    masks[0, 44:56, :] = 2
    masks[0, 8:40, 40:44] = 3
    masks[0, 8:40, 52:56] = 3
    masks[1, :, 0:16] = 1
    masks[1, 16:48, 24:56] = 2
    masks[1, 4:8, 20:60] = 3
    masks[1, 52:56, 8:60] = 3
    colours = torch.tensor([[0.5, 0.5, 0.5], [0.9, 0.1, 0.1], [0.1, 0.8, 0.2], [0.9, 0.1, 0.1]])
    noise = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    images = colours[masks].permute(0, 3, 1, 2) + 0.05 * noise  # (2, 3, 64, 64)
    masks[0, :4, :] = IGNORE
    masks[1, :, 60:] = IGNORE
    return images, masks


def pixel_accuracy(logits: torch.Tensor, masks: torch.Tensor) -> float:
    """Fraction of non-ignored pixels whose argmax class is right."""
    valid = masks != IGNORE
    return (logits.argmax(1)[valid] == masks[valid]).float().mean().item()


# --- registry ------------------------------------------------------------------------------------


def test_registry_lists_the_models_and_the_alias() -> None:
    assert {"my_fcn", "unet", "deeplabv3plus"} <= set(MODELS)
    assert "deeplab" not in MODELS  # aliases do not duplicate parametrized tests
    assert "deeplab" in list_models(include_aliases=True)


def test_unknown_name_raises_keyerror_listing_choices() -> None:
    with pytest.raises(KeyError) as info:
        build_model("segformer")
    assert "segformer" in str(info.value)
    for name in MODELS:
        assert name in str(info.value)


def test_unknown_option_raises_typeerror_listing_options() -> None:
    with pytest.raises(TypeError, match="base_channels"):
        build_model("unet", base_chanels=8)


def test_alias_deeplab_builds_deeplabv3plus() -> None:
    model = build_model("deeplab", backbone="mobilenet_v3_large", num_classes=5)
    assert isinstance(model, DeepLabV3Plus)
    assert model_spec(model)["name"] == "deeplabv3plus"
    assert model.head.out_channels == 5


def test_model_spec_records_defaults_and_drops_init_only_options() -> None:
    model = build_model("unet", num_classes=7, bilinear=True)
    assert model_spec(model) == {
        "name": "unet",
        "options": {"num_classes": 7, "base_channels": 16, "bilinear": True, "checkpointing": False},
    }
    with pytest.raises(ValueError, match="build_model"):
        model_spec(nn.Conv2d(3, 3, 1))


# --- every model ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(97, 161), (64, 96), (33, 47)])
@pytest.mark.parametrize("name", MODELS)
def test_forward_shape_at_odd_sizes(name: str, size: tuple[int, int]) -> None:
    model = build_fast(name, num_classes=7).eval()
    with torch.inference_mode():
        logits = model(torch.randn(2, 3, *size))
    assert logits.shape == (2, 7, *size)


@pytest.mark.parametrize("name", MODELS)
def test_channels_last_gives_the_same_logits(name: str) -> None:
    model = build_fast(name).eval()
    x = torch.randn(2, 3, 65, 97)
    with torch.inference_mode():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)
        logits = model(x.contiguous(memory_format=torch.channels_last))
    assert logits.shape == (2, 19, 65, 97)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", MODELS)
def test_backward_gives_finite_gradients_to_every_parameter(name: str) -> None:
    model = build_fast(name).train()
    x, y = torch.randn(2, 3, 64, 96), torch.randint(0, 19, (2, 64, 96))
    y[:, :8] = IGNORE
    F.cross_entropy(model(x), y, ignore_index=IGNORE).backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(param.grad).all(), f"{pname} has non-finite gradients"
    assert model.get_submodule("head").weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", MODELS)
def test_overfits_a_tiny_batch(name: str) -> None:
    model = build_fast(name, num_classes=4).train()
    images, masks = tiny_batch()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    # Accuracy of the training forward pass: eval mode would judge BN running averages, which
    # lag far behind after a few steps (MobileNetV3 uses BN momentum 0.01).
    accuracies = []
    for _ in range(60):
        logits = model(images)
        accuracies.append(pixel_accuracy(logits.detach(), masks))
        if accuracies[-1] > 0.95:
            break
        optimizer.zero_grad()
        F.cross_entropy(logits, masks, ignore_index=IGNORE).backward()
        optimizer.step()
    assert accuracies[0] < 0.8, f"{name}: the untrained model already fits; the test shows nothing"
    # Above 0.95, at least part of the colour-ambiguous stripes (8% of pixels) must be right.
    assert accuracies[-1] > 0.95, f"{name}: accuracy {accuracies[-1]:.3f} after 60 Adam steps"


@pytest.mark.parametrize("name", MODELS)
def test_save_load_round_trip_through_the_registry(name: str, tmp_path: Path) -> None:
    model = build_fast(name, num_classes=5)
    with torch.no_grad():  # a train-mode pass moves BN statistics away from their defaults
        model.train()(torch.randn(2, 3, 48, 64))
    torch.save({"model": model_spec(model), "state_dict": model.state_dict()}, tmp_path / "ck.pt")

    checkpoint = torch.load(tmp_path / "ck.pt", weights_only=True)
    torch.manual_seed(1)  # a different random init, so equal outputs prove the weights loaded
    rebuilt = build_model(checkpoint["model"]["name"], **checkpoint["model"]["options"])
    rebuilt.load_state_dict(checkpoint["state_dict"])

    x = torch.randn(2, 3, 41, 57)
    with torch.inference_mode():
        torch.testing.assert_close(rebuilt.eval()(x), model.eval()(x), rtol=0, atol=1e-6)
    assert type(rebuilt) is type(model)


# --- my_fcn and U-Net specifics ------------------------------------------------------------------


def test_my_fcn_pools_before_its_bottleneck_and_keeps_skip_sizes() -> None:
    model = build_model("my_fcn").eval()
    shapes = {}
    for part in ("inc", "down2", "bottleneck", "up1", "up3"):
        model.get_submodule(part).register_forward_hook(
            lambda module, args, out, part=part: shapes.__setitem__(part, tuple(out.shape))
        )
    with torch.inference_mode():
        model(torch.randn(1, 3, 45, 67))
    assert shapes["bottleneck"] == (1, 256, 5, 8)  # after a third pooling, not at H/4 as before
    assert shapes["up1"] == shapes["down2"] == (1, 128, 11, 16)  # padded to the skip's size
    assert shapes["up3"] == (1, 32, 45, 67) == shapes["inc"]


@pytest.mark.parametrize("bilinear", [False, True])
def test_unet_width_and_upsampling_options(bilinear: bool) -> None:
    model = build_model("unet", base_channels=8, bilinear=bilinear)
    assert model.inc[0][0].out_channels == 8
    assert model.down4[1][1][0].out_channels == (64 if bilinear else 128)
    assert any(isinstance(m, nn.ConvTranspose2d) for m in model.modules()) is not bilinear
    assert model(torch.randn(2, 3, 37, 53)).shape == (2, 19, 37, 53)


# --- DeepLabV3+ ----------------------------------------------------------------------------------


def test_default_deeplab_is_a_real_resnet101() -> None:
    model = build_model("deeplabv3plus").eval()
    backbone_params = sum(p.numel() for p in model.backbone.parameters())
    # torchvision's ResNet-101 without its classifier: 44.55M - 2.05M = 42.50M parameters.
    assert backbone_params == pytest.approx(42.5e6, rel=0.005)
    assert len(model.backbone.layer3) == 23  # ResNet-101's 3-4-23-3 bottleneck blocks
    with torch.inference_mode():
        features = model.backbone(torch.randn(1, 3, 65, 97))
        logits = model(torch.randn(1, 3, 65, 97))
    assert features["out"].shape[1] == 2048 and features["low"].shape[1] == 256
    assert logits.shape == (1, 19, 65, 97)


@pytest.mark.parametrize("backbone", ["mobilenet_v3_large", "resnet50"])
def test_output_stride_8_keeps_output_shape_and_halves_feature_stride(backbone: str) -> None:
    x = torch.randn(2, 3, 64, 96)
    shapes = {}
    for output_stride in (16, 8):
        model = build_model("deeplab", backbone=backbone, output_stride=output_stride).eval()
        with torch.inference_mode():
            features = model.backbone(x)
            logits = model(x)
        assert features["low"].shape[-2:] == (16, 24)  # stride 4 either way
        shapes[output_stride] = (features["out"].shape[-2:], logits.shape)
        # ASPP rates double at stride 8 so the field of view stays the same.
        assert model.aspp.convs[1][0].dilation[0] == 6 * 16 // output_stride
    assert shapes[16][0] == (4, 6)
    assert shapes[8][0] == (8, 12)
    assert shapes[16][1] == shapes[8][1] == (2, 19, 64, 96)


def test_bad_backbone_and_output_stride_are_refused() -> None:
    with pytest.raises(ValueError, match="resnet101"):
        build_model("deeplab", backbone="vgg16")
    with pytest.raises(ValueError, match="output_stride"):
        build_model("deeplab", backbone="mobilenet_v3_large", output_stride=32)


def test_checkpoint_backbone_recomputes_stages_with_the_same_gradients(monkeypatch) -> None:
    calls = []

    def counting_checkpoint(*args, **kwargs):
        calls.append(kwargs.get("use_reentrant"))
        return torch.utils.checkpoint.checkpoint(*args, **kwargs)

    monkeypatch.setattr(parts, "checkpoint", counting_checkpoint)
    plain = build_fast("deeplabv3plus")
    checkpointed = build_fast("deeplabv3plus", checkpoint_backbone=True)
    checkpointed.load_state_dict(plain.state_dict())
    x, y = torch.randn(2, 3, 64, 64), torch.randint(0, 19, (2, 64, 64))
    for model in (plain, checkpointed):
        torch.manual_seed(0)  # the same ASPP dropout mask for both
        F.cross_entropy(model.train()(x), y).backward()
    assert calls and set(calls) == {False}
    grads = dict(checkpointed.named_parameters())
    for name, param in plain.named_parameters():
        torch.testing.assert_close(grads[name].grad, param.grad, rtol=1e-4, atol=1e-5)

    calls.clear()
    with torch.no_grad():
        checkpointed.eval()(x)
    assert not calls  # nothing to save memory for without a backward pass


# --- DeepLabV3+ pretrained backbones (never downloading) -----------------------------------------

BACKBONE = "mobilenet_v3_large"  # the smallest state dict to write in these tests


@pytest.fixture
def no_download(monkeypatch):
    """Replace torchvision's download with one that fails like an offline machine, and count calls."""
    attempts = []

    def offline(weights):
        attempts.append(weights)
        raise OSError("offline: name resolution failed")

    monkeypatch.setattr(dl, "_download_state_dict", offline)
    monkeypatch.setattr(dl, "_FAILED_DOWNLOADS", {})  # no failure remembered from another test
    return attempts


@pytest.fixture
def hub_dir(tmp_path: Path, monkeypatch) -> Path:
    """An empty torch hub directory in ``tmp_path``."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return tmp_path / "hub"


def random_classifier_state_dict() -> dict[str, torch.Tensor]:
    """A randomly initialised torchvision MobileNetV3-Large state dict, to stand in for ImageNet's."""
    torch.manual_seed(123)
    return torchvision.models.mobilenet_v3_large().state_dict()


def assert_backbone_holds(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Every backbone tensor equals the ``features.*`` entry of a MobileNetV3 state dict."""
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, state_dict[f"features.{key}"]), key


def test_pretrained_backbone_from_a_local_file(tmp_path: Path, no_download) -> None:
    state_dict = random_classifier_state_dict()
    torch.save(state_dict, tmp_path / "mnv3.pth")
    model = build_model("deeplab", backbone=BACKBONE, pretrained_backbone=tmp_path / "mnv3.pth")
    assert_backbone_holds(model, state_dict)
    assert model.backbone.pretrained and not build_fast("deeplabv3plus").backbone.pretrained
    assert not torch.equal(build_fast("deeplabv3plus").backbone["0"][0].weight,
                           model.backbone["0"][0].weight)  # random init would differ
    assert not no_download
    # A checkpoint of this model rebuilds without the file: weights come from the state dict.
    assert "pretrained_backbone" not in model_spec(model)["options"]


def test_pretrained_backbone_file_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(DataError, match="nope.pth"):
        build_model("deeplab", backbone=BACKBONE, pretrained_backbone=missing,
                    allow_random_init=True)

    state_dict = random_classifier_state_dict()
    del state_dict["features.0.0.weight"]
    torch.save(state_dict, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"partial\.pth.*features\.0\.0\.weight"):
        build_model("deeplab", backbone=BACKBONE, pretrained_backbone=tmp_path / "partial.pth")

    torch.save(random_classifier_state_dict(), tmp_path / "mnv3.pth")
    with pytest.raises(ValueError, match=r"mnv3\.pth"):  # MobileNet weights for a ResNet
        build_model("deeplab", backbone="resnet50", pretrained_backbone=tmp_path / "mnv3.pth")


class Touches:
    """A pickle that, loaded unsafely, would create a file: code run from a weights file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


@pytest.mark.parametrize("content", ["code", "png"])
def test_a_pretrained_backbone_file_that_is_not_weights_is_refused_safely(tmp_path: Path, content) -> None:
    path = tmp_path / "weights.pth"
    if content == "code":
        torch.save(Touches(tmp_path / "code-ran"), path)
    else:
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.raises(DataError) as info:
        build_model("deeplab", backbone=BACKBONE, pretrained_backbone=path)
    message = str(info.value)
    assert message.startswith(f"{path}: not a readable --pretrained-backbone file")
    assert "weights_only" not in message and "\n" not in message  # never the unsafe advice
    assert not (tmp_path / "code-ran").exists()


def test_pretrained_backbone_from_the_torch_hub_cache(hub_dir: Path, no_download) -> None:
    state_dict = random_classifier_state_dict()
    url = dl.IMAGENET_WEIGHTS[BACKBONE].url  # .../mobilenet_v3_large-<hash>.pth
    cached = hub_dir / "checkpoints" / url.rsplit("/", 1)[-1]
    assert dl.hub_cache_path(dl.IMAGENET_WEIGHTS[BACKBONE]) == cached
    cached.parent.mkdir(parents=True)
    torch.save(state_dict, cached)
    for value in (True, "imagenet"):
        model = build_model("deeplab", backbone=BACKBONE, pretrained_backbone=value)
        assert_backbone_holds(model, state_dict)
    assert not no_download


def test_unavailable_imagenet_weights_raise_a_helpful_error(hub_dir: Path, no_download) -> None:
    with pytest.raises(PretrainedWeightsUnavailable) as info:
        build_model("deeplab", backbone=BACKBONE, pretrained_backbone=True)
    message = str(info.value)
    weights = dl.IMAGENET_WEIGHTS[BACKBONE]
    assert str(dl.hub_cache_path(weights)) in message
    assert weights.url in message
    assert "offline" in message  # why the download failed
    assert "pretrained_backbone=False" in message and "allow_random_init=True" in message
    assert len(no_download) == 1
    assert isinstance(info.value, RuntimeError)


def test_allow_random_init_warns_and_continues(hub_dir: Path, no_download) -> None:
    with pytest.warns(PretrainedWeightsWarning, match="RANDOMLY INITIALISED"):
        model = build_model("deeplab", backbone=BACKBONE, pretrained_backbone=True,
                            allow_random_init=True)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 19, 32, 32)
    assert not model.backbone.pretrained  # so it learns at the full rate (engine.build_optimizer)


def test_offline_fallback_tries_the_download_once_and_says_so_in_one_line(hub_dir: Path, no_download) -> None:
    weights = dl.IMAGENET_WEIGHTS[BACKBONE]
    with pytest.warns(PretrainedWeightsWarning) as caught:
        for _ in range(2):  # e.g. the trained model, then one to time a training step
            build_model("deeplab", backbone=BACKBONE, pretrained_backbone=True, allow_random_init=True)
    assert len(no_download) == 1  # the failure is remembered within the process
    for message in (str(w.message) for w in caught):
        assert "\n" not in message
        assert BACKBONE in message and str(dl.hub_cache_path(weights)) in message
        assert weights.url in message and "offline" in message
    with pytest.raises(PretrainedWeightsUnavailable, match="failed earlier in this process"):
        build_model("deeplab", backbone=BACKBONE, pretrained_backbone=True)


def test_corrupt_cached_weights_are_reported(hub_dir: Path, no_download) -> None:
    cached = dl.hub_cache_path(dl.IMAGENET_WEIGHTS[BACKBONE])
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"truncated download")
    with pytest.raises(PretrainedWeightsUnavailable, match="delete it"):
        build_model("deeplab", backbone=BACKBONE, pretrained_backbone=True)


def test_download_runs_under_a_socket_timeout_then_restores_it() -> None:
    seen = []

    class FakeWeights:
        def get_state_dict(self, progress: bool) -> dict:
            seen.append(socket.getdefaulttimeout())
            raise OSError("timed out")

    before = socket.getdefaulttimeout()
    with pytest.raises(OSError):
        dl._download_state_dict(FakeWeights())
    assert seen == [dl.DOWNLOAD_TIMEOUT_S]
    assert socket.getdefaulttimeout() == before


def test_mobilenet_backbone_batch_norm_uses_torch_default_momentum() -> None:
    # torchvision's 0.01 leaves a random backbone's running statistics far behind its weights after
    # a CPU course's few hundred steps, and evaluation-mode predictions collapse.
    model = build_model("deeplab", backbone="mobilenet_v3_large")
    momenta = {m.momentum for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert momenta == {0.1}


#: Every model with activation checkpointing, and the option it declares for it.
CHECKPOINTED = [(name, model_info(name).checkpoint_option) for name in MODELS
                if model_info(name).checkpoint_option]


def test_every_model_declares_what_the_planner_cli_and_oom_splitter_read() -> None:
    assert {name: model_info(name) for name in MODELS} == {
        "my_fcn": ModelInfo(checkpoint_option="checkpointing"),
        "unet": ModelInfo(checkpoint_option="checkpointing"),
        "deeplabv3plus": ModelInfo(checkpoint_option="checkpoint_backbone", min_batch=2, backbone=True)}
    assert model_info("deeplab") is model_info("deeplabv3plus")
    for name in MODELS:
        info = model_info(name)
        assert info.checkpoint_option in model_options(name)
        assert ("backbone" in model_options(name)) == info.backbone


@pytest.mark.parametrize("name", MODELS)
def test_every_model_trains_on_its_smallest_batch_and_none_smaller(name: str) -> None:
    smallest = model_info(name).min_batch
    images, masks = tiny_batch()
    model = build_fast(name).train()
    F.cross_entropy(model(images[:smallest]), masks[:smallest], ignore_index=IGNORE).backward()
    if smallest > 1:  # the declaration is needed, not just cautious
        with pytest.raises(ValueError, match="more than 1 value per channel"):
            model(images[:smallest - 1])


@pytest.mark.parametrize(("name", "option"), CHECKPOINTED)
def test_checkpointing_trains_the_same_batch_norm_statistics(name: str, option: str) -> None:
    """The recomputation in backward must not update batch norm's running statistics a second
    time: a checkpointed run would otherwise learn other statistics (momentum 0.19, not 0.1)."""
    images, masks = tiny_batch()
    statistics = []
    for recompute in (False, True):
        model = build_fast(name, **{option: recompute}).train()
        F.cross_entropy(model(images), masks, ignore_index=IGNORE).backward()
        statistics.append({key: value for key, value in model.state_dict().items()
                           if key.endswith(("running_mean", "running_var", "num_batches_tracked"))})
    assert statistics[0].keys() == statistics[1].keys() and statistics[0]
    for key, value in statistics[0].items():
        torch.testing.assert_close(statistics[1][key], value, msg=key)


@pytest.mark.parametrize(("name", "option"), CHECKPOINTED)
def test_activation_checkpointing_keeps_results_and_saves_memory(name, option):
    """Same outputs and gradients, same state dict, fewer bytes kept for backward."""
    extra = FAST_OPTIONS.get(name, {})
    plain, recomputed = (build_model(name, **extra, **{option: flag}) for flag in (False, True))
    recomputed.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 128)
    kept = []
    for model in (plain, recomputed):
        model.train()
        sizes = {}

        def pack(t, sizes=sizes):
            sizes[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            torch.manual_seed(0)
            out = model(x)
        out.square().mean().backward()
        kept.append((out.detach(), sum(sizes.values()),
                     [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(kept[0][0], kept[1][0])
    for a, b in zip(kept[0][2], kept[1][2], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert kept[1][1] < 0.8 * kept[0][1]
