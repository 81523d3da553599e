import errno
import json
import math
import re
import signal

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torchvision import tv_tensors

from segkit import checkpoints, engine, runtime
from segkit.callbacks import Checkpointer
from segkit.checkpoints import load_checkpoint, model_from_checkpoint
from segkit.config import TrainConfig
from segkit.context import RunContext
from segkit.datasets import CityscapesSegmentation
from segkit.engine import Callback, fit
from segkit.inference import evaluate
from segkit.io import DataError
from segkit.labels import label_histogram
from segkit.losses import build_loss, class_weights_from_histogram
from segkit.models import build_model
from segkit.transforms import eval_transforms, train_transforms


class BlockScenes(Dataset):
    """Tiny scenes: class blocks painted in class-dependent colours, with real v2 transforms."""

    def __init__(self, count=8, transforms=None, ignore_all=False, seed=0):
        gen = torch.Generator().manual_seed(seed)
        coarse = torch.randint(0, 4, (count, 4, 8), generator=gen)
        self.masks = coarse.repeat_interleave(8, 1).repeat_interleave(8, 2)  # (count, 32, 64)
        if ignore_all:
            self.masks[:] = 255
        colours = torch.tensor([[200, 30, 30], [30, 200, 30], [30, 30, 200], [220, 220, 40]])
        self.images = colours[self.masks.clamp(max=3)].permute(0, 3, 1, 2).to(torch.uint8)
        self.transforms = transforms

    def __len__(self):
        return len(self.masks)

    def load(self, index):
        return tv_tensors.Image(self.images[index]), tv_tensors.Mask(self.masks[index])

    def __getitem__(self, index):
        return self.transforms(*self.load(index))


def loaders(batch_size=4, shuffle=True):
    train = BlockScenes(transforms=train_transforms(size=(64, 32), scale=(0.75, 1.25)))
    val = BlockScenes(count=4, transforms=eval_transforms(), seed=1)
    return (DataLoader(train, batch_size=batch_size, shuffle=shuffle),
            DataLoader(val, batch_size=4))


def config(**changes):
    """A small run in fp32 whatever the CPU (``amp`` auto would pick bf16 where it is native)."""
    values = {"model": "my_fcn", "amp": "off", "epochs": 2, "batch_size": 4, "size": (64, 32),
              "num_workers": 0, "scheduler": "poly", "warmup_iters": 1, "lr": 3e-3}
    return TrainConfig(**{**values, **changes})


def small_fcn():
    return build_model("my_fcn")


class StopAfter(Callback):
    """Simulates an interrupted run: stops after ``epochs`` epochs."""

    def __init__(self, epochs):
        self.epochs = epochs

    def on_epoch_end(self, state):
        if state.epoch == self.epochs:
            state.stop = "interrupted"


def test_fit_trains_validates_and_checkpoints(tmp_path):
    train_loader, val_loader = loaders()
    torch.manual_seed(0)
    model = small_fcn()
    state = fit(model, train_loader, val_loader, config(epochs=3), [Checkpointer(tmp_path)])
    assert [row["epoch"] for row in state.history] == [1, 2, 3]
    assert state.history[-1]["train_loss"] < state.history[0]["train_loss"]
    assert all(0 <= row["val_miou"] <= 1 for row in state.history)
    checkpoint = load_checkpoint(tmp_path / "last.pt")
    assert checkpoint["epoch"] == 3 and checkpoint["model_name"] == "my_fcn"
    assert checkpoint["config"]["lr"] == 3e-3 and len(checkpoint["history"]) == 3
    assert set(checkpoint) >= {"state_dict", "optimizer", "scheduler", "scaler", "rng", "metrics"}
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["metrics"]["val_miou"] == max(row["val_miou"] for row in state.history)
    rebuilt, _ = model_from_checkpoint(tmp_path / "last.pt")
    images = next(iter(val_loader))[0]
    with torch.inference_mode():
        assert torch.equal(rebuilt(images), model.eval()(images))


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path):
    torch.manual_seed(0)
    straight = fit(small_fcn(), *loaders(), config(epochs=3), [Checkpointer(tmp_path / "a")])

    torch.manual_seed(0)
    fit(small_fcn(), *loaders(), config(epochs=3), [Checkpointer(tmp_path / "b"), StopAfter(1)])
    assert load_checkpoint(tmp_path / "b" / "last.pt")["epoch"] == 1
    torch.manual_seed(123)  # a fresh process: other initial weights, other random state
    resumed = fit(small_fcn(), *loaders(), config(epochs=3), [Checkpointer(tmp_path / "b")],
                  resume=tmp_path / "b" / "last.pt")

    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
    def scores(history):  # as JSON text, so that NaN (a class never seen) compares equal
        drop = ("train_seconds", "val_seconds", "seconds")
        return json.dumps([{k: v for k, v in row.items() if k not in drop} for row in history])

    assert scores(straight.history) == scores(resumed.history)


class NaNAfter(nn.Module):
    """Wraps a model and returns NaN logits from its ``calls``-th training call on."""

    def __init__(self, model, calls):
        super().__init__()
        self.model, self.calls, self.seen = model, calls, 0
        self.segkit_name, self.segkit_options = model.segkit_name, model.segkit_options

    def forward(self, x):
        out = self.model(x)
        if self.training:
            self.seen += 1
            if self.seen >= self.calls:
                return out * math.nan
        return out


def test_nan_loss_stops_cleanly_keeping_the_last_good_checkpoint(tmp_path):
    train_loader, val_loader = loaders()
    model = NaNAfter(small_fcn(), calls=len(train_loader) + 1)  # first batch of epoch 2
    state = fit(model, train_loader, val_loader, config(epochs=4), [Checkpointer(tmp_path)])
    assert state.stop is not None and "nan" in state.stop and "epoch 2" in state.stop
    assert len(state.history) == 1
    checkpoint = load_checkpoint(tmp_path / "last.pt")
    assert checkpoint["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in checkpoint["state_dict"].values()
               if t.is_floating_point())


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    train_loader, val_loader = loaders()
    state = fit(small_fcn(), train_loader, val_loader, config(epochs=1), [Checkpointer(tmp_path)])
    before = (tmp_path / "last.pt").read_bytes()

    def crash(obj, file):
        file.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        checkpoints.save_checkpoint(tmp_path / "last.pt", state)
    assert (tmp_path / "last.pt").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]


TORCH_ZIP_FULL = "[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"


def full_disk(monkeypatch, error, free=5_000_000):
    """``torch.save`` writes half a file then fails with ``error``; the disk reports ``free`` bytes."""
    import shutil

    def save(obj, file):
        file.write(b"PK half a checkpoint")
        raise error

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, free))


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"),
                                   RuntimeError(TORCH_ZIP_FULL)], ids=["ENOSPC", "torch-zip"])
def test_a_full_disk_stops_training_in_one_line_and_the_run_continues_after(tmp_path, monkeypatch,
                                                                            error):
    train_loader, val_loader = loaders()
    fit(small_fcn(), train_loader, val_loader, config(epochs=1), [Checkpointer(tmp_path)])
    before = (tmp_path / "last.pt").read_bytes()
    full_disk(monkeypatch, error)
    with pytest.raises(DataError) as info:  # epoch 2 trains, then cannot be saved: no epoch 3
        fit(small_fcn(), train_loader, val_loader, config(epochs=3), [Checkpointer(tmp_path)],
            resume=tmp_path / "last.pt")
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{tmp_path}: the disk is full: writing last.pt")
    assert re.search(r"about \d+\.\d MB needed, 5\.0 MB free there", message), message
    assert "training stopped rather than go on unsaved" in message and "with -c" in message
    assert (tmp_path / "last.pt").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]  # no partial
    monkeypatch.undo()
    state = fit(small_fcn(), train_loader, val_loader, config(epochs=3), [Checkpointer(tmp_path)],
                resume=tmp_path / "last.pt")
    assert [row["epoch"] for row in state.history] == [1, 2, 3]
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 3


def test_a_failed_save_with_space_to_spare_is_not_called_a_full_disk(tmp_path, monkeypatch):
    state = fit(TinyNet(), DataLoader(BlockScenes(count=4, transforms=eval_transforms()), batch_size=4),
                None, config(epochs=1))
    state.model.segkit_name, state.model.segkit_options = "my_fcn", {}
    full_disk(monkeypatch, RuntimeError(TORCH_ZIP_FULL), free=10**9)
    with pytest.raises(RuntimeError, match="inline_container"):
        checkpoints.save_checkpoint(tmp_path / "last.pt", state)
    assert not list(tmp_path.iterdir())


KILLED_MID_SAVE = """
import os, signal, sys
import torch
from segkit import checkpoints, engine
from segkit.config import TrainConfig
from segkit.context import RunContext
from segkit.models import build_model

def killed(obj, file):  # as a SIGKILL (or a power cut) half-way through writing
    file.write(b"PK half a checkpoint")
    file.flush()
    os.kill(os.getpid(), signal.SIGKILL)

last = sys.argv[1]
saved = checkpoints.load_checkpoint(last)
model = build_model(saved["model_name"], **saved["model_options"])
config = TrainConfig.from_dict(saved["config"])
optimizer = engine.build_optimizer(model, config)
state = engine.FitState(model, config, optimizer, engine.build_scheduler(optimizer, config, 1),
                        torch.amp.GradScaler("cpu", enabled=False), RunContext(torch.device("cpu")),
                        19)
checkpoints.restore(state, last)
torch.save = killed
checkpoints.save_checkpoint(last, state)
"""


def test_a_save_killed_half_way_keeps_last_pt_and_continue_goes_on_from_it(prepared_root, tmp_path):
    import subprocess
    import sys

    from segkit.training import train

    out = tmp_path / "ck"
    run = {"profile": "ci", "data": prepared_root, "out": out, "log_dir": tmp_path / "tb",
           "progress": False}
    train("my_fcn", **run, epochs=1, max_iters=1)
    before = (out / "last.pt").read_bytes()
    killed = subprocess.run([sys.executable, "-c", KILLED_MID_SAVE, str(out / "last.pt")],
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (out / "last.pt").read_bytes() == before
    assert len(list(out.glob(".last.pt.*.partial"))) == 1
    state = train("my_fcn", **run, resume=True, epochs=2)
    assert state.epoch == 2 and [row["epoch"] for row in state.history] == [1, 2]
    assert not list(out.glob("*.partial"))
    assert load_checkpoint(out / "last.pt")["epoch"] == 2


class Payload:
    """An arbitrary object: weights_only loading must refuse to unpickle it."""


def test_checkpoints_load_with_weights_only(tmp_path):
    torch.save({"format": checkpoints.CHECKPOINT_FORMAT, "evil": Payload()}, tmp_path / "bad.pt")
    with pytest.raises(DataError, match="bad.pt: not a readable segkit checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(DataError, match="foreign.pt: not a segkit checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(DataError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_checkpoints_never_go_into_the_package():
    import segkit

    with pytest.raises(ValueError, match="never written into the segkit package"):
        Checkpointer(segkit.__path__[0] + "/runs")


def test_a_split_without_labels_is_refused():
    loader = DataLoader(BlockScenes(count=4, transforms=eval_transforms(), ignore_all=True),
                        batch_size=2)
    with pytest.raises(DataError, match="test split has no public labels"):
        evaluate(small_fcn(), loader)


class TinyNet(nn.Module):
    """No batch norm, so that gradient accumulation must equal one large batch exactly."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 19, 1))

    def forward(self, x):
        return self.body(x)


def test_gradient_accumulation_matches_a_larger_batch():
    data = BlockScenes(transforms=eval_transforms())
    one = fit(TinyNet(), DataLoader(data, batch_size=4), None,
              config(epochs=1, batch_size=4, optimizer="sgd", scheduler="none", warmup_iters=0))
    two = fit(TinyNet(), DataLoader(data, batch_size=2), None,
              config(epochs=1, batch_size=2, accumulate=2, optimizer="sgd", scheduler="none",
                     warmup_iters=0))
    assert one.step == two.step == 2
    for a, b in zip(one.model.parameters(), two.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


class OutOfMemoryAbove(TinyNet):
    """Raises CUDA's out-of-memory error for batches larger than ``limit``."""

    def __init__(self, limit):
        super().__init__()
        self.limit = limit

    def forward(self, x):
        if len(x) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().forward(x)


def test_out_of_memory_advises_or_retries_smaller(capsys):
    data = DataLoader(BlockScenes(transforms=eval_transforms()), batch_size=4)
    with pytest.raises(RuntimeError, match="smaller --batch-size.*--oom retry"):
        fit(OutOfMemoryAbove(1), data, None, config(epochs=1))
    state = fit(OutOfMemoryAbove(1), data, None, config(epochs=1, oom="retry"))
    assert state.step == 2 and math.isfinite(state.history[0]["train_loss"])
    assert "redoing the accumulation window in 4" in capsys.readouterr().out


@pytest.mark.parametrize(("scheduler", "check"), [
    ("poly", lambda lrs: lrs[0] < lrs[1] > lrs[2] > lrs[3] > lrs[4] > lrs[5] and lrs[-1] < 0.3 * lrs[1]),
    ("cosine", lambda lrs: lrs[-1] < 0.1 * max(lrs) and lrs[2] > lrs[-2]),
    ("step", lambda lrs: lrs[4] == pytest.approx(0.1 * lrs[2])),
    ("none", lambda lrs: len(set(lrs[1:])) == 1),
])
def test_schedulers(scheduler, check, engine_rates):
    lrs = engine_rates(TinyNet(), config(epochs=3, scheduler=scheduler, warmup_iters=1, step_epochs=1), 2, 6)
    assert check(lrs), lrs


def test_bf16_autocast_on_cpu_trains(monkeypatch):
    train_loader, val_loader = loaders()
    model, seen = small_fcn(), set()
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    first_conv.register_forward_hook(lambda module, args, out: seen.add((module.training, out.dtype)))
    state = fit(model, train_loader, val_loader, config(epochs=1, amp="bf16"))
    assert seen == {(True, torch.bfloat16), (False, torch.bfloat16)}  # training and validation
    assert math.isfinite(state.history[0]["train_loss"])
    assert runtime.autocast_dtype("bf16", torch.device("cpu")) is torch.bfloat16
    for native, chosen in ((False, None), (True, torch.bfloat16)):  # auto: bf16 only where native
        monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda native=native: native)
        assert runtime.autocast_dtype("auto", torch.device("cpu")) is chosen


def test_class_weights_favour_rare_classes():
    data = BlockScenes(transforms=eval_transforms())
    data.masks[:, :8] = 3  # make class 3 common
    weights = engine.dataset_class_weights(data, 19)
    counts = torch.bincount(data.masks.flatten(), minlength=19)
    assert weights[3] == weights[:4].min()
    assert (weights[counts == 0] == 0).all()


def test_class_weights_of_a_prepared_split_are_read_from_its_manifest(prepared_root, monkeypatch):
    data = CityscapesSegmentation(prepared_root, "train", train_transforms(size=(64, 32)))
    masks = [data.load(i)[1] for i in range(len(data))]
    decoded = class_weights_from_histogram(label_histogram(masks)[:-1])
    monkeypatch.setattr(CityscapesSegmentation, "load", lambda self, i: 1 / 0)  # nothing decoded
    assert torch.equal(engine.dataset_class_weights(data, 19), decoded)


@pytest.mark.filterwarnings("ignore:for .* copying from a non-meta parameter")
def test_resume_reads_the_checkpoint_onto_the_cpu_whatever_the_training_device(tmp_path):
    """A model on a GPU once got its checkpoint mapped there, random states included, which
    ``torch.set_rng_state`` refuses. The meta device stands in for the GPU here."""
    train_loader, val_loader = loaders()
    fit(small_fcn(), train_loader, val_loader, config(epochs=1), [Checkpointer(tmp_path)])
    saved = load_checkpoint(tmp_path / "last.pt")
    model, cfg = small_fcn().to("meta"), config()
    optimizer = engine.build_optimizer(model, cfg)
    state = engine.FitState(model, cfg, optimizer, engine.build_scheduler(optimizer, cfg, 2),
                            torch.amp.GradScaler("cpu", enabled=False),
                            RunContext(torch.device("meta")), 19)
    torch.manual_seed(123)
    checkpoints.restore(state, tmp_path / "last.pt")
    assert state.epoch == 1 and state.step == saved["step"]
    assert torch.equal(torch.get_rng_state(), saved["rng"]["torch"])
    assert next(model.parameters()).device.type == "meta"


class CountLogs(Callback):
    def __init__(self):
        self.losses = []

    def on_log(self, state):
        self.losses.append(state.batch_loss)


def test_the_loss_is_read_back_at_logging_intervals_only(monkeypatch):
    """Every ``.item()`` waits for the GPU: the loop reads the loss back every ``log_every`` batches."""
    import sys

    reads = []
    item = torch.Tensor.item

    def counted(tensor):
        if sys._getframe(1).f_globals["__name__"] == "segkit.engine":
            reads.append(1)
        return item(tensor)

    monkeypatch.setattr(torch.Tensor, "item", counted)
    data = DataLoader(BlockScenes(transforms=eval_transforms()), batch_size=1)  # 8 batches
    logs = CountLogs()
    state = fit(TinyNet(), data, None, config(epochs=1, log_every=3), [logs])
    assert len(reads) == 3 and len(logs.losses) == 3  # after batches 3, 6 and 8
    assert all(math.isfinite(loss) for loss in logs.losses)
    assert state.history[0]["train_loss"] == pytest.approx((3 * logs.losses[0] + 3 * logs.losses[1]
                                                            + 2 * logs.losses[2]) / 8)


class OutOfMemoryOnce(TinyNet):
    """Raises CUDA's out-of-memory error once, on the ``at``-th training forward pass."""

    def __init__(self, at):
        super().__init__()
        self.at, self.calls = at, 0

    def forward(self, x):
        self.calls += 1
        if self.calls == self.at:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().forward(x)


def test_out_of_memory_retry_redoes_the_whole_accumulation_window(capsys):
    """An OOM on the window's second batch must not lose the first batch's gradients."""
    data = DataLoader(BlockScenes(transforms=eval_transforms()), batch_size=2)
    settings = config(epochs=1, batch_size=2, accumulate=2, optimizer="sgd", scheduler="none",
                      warmup_iters=0)
    clean = fit(TinyNet(), data, None, settings)
    retried = fit(OutOfMemoryOnce(at=2), data, None, settings.replace(oom="retry"))
    assert "redoing the accumulation window in 2" in capsys.readouterr().out
    assert retried.splits == 2 and retried.step == clean.step == 2
    for a, b in zip(clean.model.parameters(), retried.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert retried.history[0]["train_loss"] == pytest.approx(clean.history[0]["train_loss"], rel=1e-5)


def test_a_batch_of_nothing_but_void_adds_no_loss_and_trains_on():
    data = BlockScenes(transforms=eval_transforms())
    data.masks[:2] = 255  # the first batch is all ignore
    state = fit(TinyNet(), DataLoader(data, batch_size=2), None, config(epochs=1, log_every=1))
    assert state.stop is None and math.isfinite(state.history[0]["train_loss"])


def test_weights_that_became_non_finite_are_never_saved(tmp_path):
    train_loader, val_loader = loaders()
    state = fit(TinyNet(), train_loader, val_loader,  # one step at an infinite learning rate
                config(epochs=2, lr=math.inf, optimizer="sgd", scheduler="none", warmup_iters=0,
                       max_iters=1), [Checkpointer(tmp_path)])
    assert "a weight became non-finite in epoch 1" in state.stop
    assert "no checkpoint was written" in state.stop
    assert not (tmp_path / "last.pt").exists() and not (tmp_path / "best.pt").exists()


def test_weights_blown_up_to_finite_but_huge_values_are_never_saved(tmp_path):
    """lr 1e30 for one step leaves finite weights of 1e30 whose outputs overflow: not a good epoch."""
    train_loader, val_loader = loaders()
    state = fit(small_fcn(), train_loader, val_loader,
                config(epochs=3, lr=1e30, max_iters=1, warmup_iters=0), [Checkpointer(tmp_path)])
    assert state.stop is not None and "no checkpoint was written" in state.stop
    assert not (tmp_path / "last.pt").exists() and not (tmp_path / "best.pt").exists()


def test_weight_decay_spares_biases_and_norms():
    model = small_fcn()
    optimizer = engine.build_optimizer(model, config(weight_decay=0.01))
    decay = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0.01 for p in g["params"]}
    for name, parameter in model.named_parameters():
        assert (id(parameter) in decay) == (parameter.ndim >= 2), name
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


def deeplab_with_a_loaded_backbone(tmp_path):
    """DeepLabV3+ (MobileNetV3) whose backbone weights are loaded from a file, as ImageNet's are."""
    import torchvision

    torch.save(torchvision.models.mobilenet_v3_large().state_dict(), tmp_path / "mnv3.pth")
    return build_model("deeplab", backbone="mobilenet_v3_large",
                       pretrained_backbone=tmp_path / "mnv3.pth")


def group_lrs(optimizer):
    return [group["lr"] for group in optimizer.param_groups]


def test_a_pretrained_backbone_learns_at_a_fraction_of_the_rate_all_along(tmp_path):
    model = deeplab_with_a_loaded_backbone(tmp_path)
    assert model.backbone.pretrained
    cfg = config(lr=1e-3, backbone_lr=0.1, weight_decay=0.01, epochs=2, warmup_iters=2)
    optimizer = engine.build_optimizer(model, cfg)
    # the rest (decay, no decay), then the backbone (decay, no decay)
    assert group_lrs(optimizer) == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4])
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.01, 0.0, 0.01, 0.0]
    backbone = {id(p) for p in model.backbone.parameters()}
    for index, group in enumerate(optimizer.param_groups):
        assert all((id(p) in backbone) == (index >= 2) for p in group["params"]), index
        assert all((p.ndim >= 2) == (index % 2 == 0) for p in group["params"]), index
    assert sorted(id(p) for g in optimizer.param_groups for p in g["params"]) == sorted(
        id(p) for p in model.parameters())
    schedule = engine.build_scheduler(optimizer, cfg, steps_per_epoch=5)
    for _ in range(7):  # through the warm-up and into the poly decay
        optimizer.step()
        schedule.step()
        head, _, body, _ = group_lrs(optimizer)
        assert 0 < head <= 1e-3 and body == pytest.approx(0.1 * head)
    same = engine.build_optimizer(model, cfg.replace(backbone_lr=1.0))
    assert group_lrs(same) == pytest.approx([1e-3] * 4)


def test_a_backbone_without_loaded_weights_learns_at_the_full_rate_in_the_same_groups():
    model = build_model("deeplab", backbone="mobilenet_v3_large")  # random init, as after a fallback
    assert not model.backbone.pretrained
    optimizer = engine.build_optimizer(model, config(lr=1e-3, backbone_lr=0.1))
    assert group_lrs(optimizer) == pytest.approx([1e-3] * 4)
    assert len(engine.build_optimizer(small_fcn(), config()).param_groups) == 2  # no backbone
    with pytest.raises(ValueError, match="backbone_lr"):
        config(backbone_lr=0.0)


class SeesDtypes(TinyNet):
    """Records the dtype of the first layer's output in training: the proof that autocast ran."""

    def __init__(self):
        super().__init__()
        self.seen = set()

    def forward(self, x):
        out = self.body[0](x)
        if self.training:
            self.seen.add(out.dtype)
        return self.body[2](self.body[1](out))


@pytest.mark.parametrize(("amp", "dtype"), [("bf16", torch.bfloat16), ("fp16", torch.float16),
                                            ("off", torch.float32)])
def test_mixed_precision_really_runs_in_fit(amp, dtype):
    model = SeesDtypes()
    data = DataLoader(BlockScenes(count=4, transforms=eval_transforms()), batch_size=2)
    start = [p.detach().clone() for p in model.parameters()]
    state = fit(model, data, None, config(epochs=1, amp=amp))
    assert model.seen == {dtype} and math.isfinite(state.history[0]["train_loss"])
    assert state.scaler.is_enabled() == (amp == "fp16")  # fp16 needs loss scaling, bf16 does not
    assert all(p.isfinite().all() for p in model.parameters())
    assert any(not torch.equal(p, s) for p, s in zip(model.parameters(), start, strict=True))


def test_gradient_clipping_bounds_the_step():
    data = DataLoader(BlockScenes(count=2, transforms=eval_transforms()), batch_size=2)
    settings = config(epochs=1, optimizer="sgd", scheduler="none", warmup_iters=0, lr=1.0,
                      weight_decay=0.0)
    free, clipped = TinyNet(), TinyNet()
    start = [p.detach().clone() for p in free.parameters()]
    fit(free, data, None, settings)
    fit(clipped, data, None, settings.replace(grad_clip=1e-3))
    moved = [torch.linalg.vector_norm(torch.cat([(p.detach() - s).flatten() for p, s in zip(
        m.parameters(), start, strict=True)])) for m in (free, clipped)]
    assert moved[1] <= 1e-3 * 1.0001 < moved[0]  # one SGD step of lr 1: the step is the gradient


def test_gradient_clipping_sees_the_unscaled_gradients_under_fp16(monkeypatch):
    """With loss scaling, clipping the scaled gradients would clip 65536 times too hard."""
    seen = []
    clip = torch.nn.utils.clip_grad_norm_

    def spy(parameters, max_norm, **kwargs):
        parameters = list(parameters)
        seen.append((max_norm, float(torch.linalg.vector_norm(
            torch.cat([p.grad.flatten() for p in parameters if p.grad is not None])))))
        return clip(parameters, max_norm, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    data = DataLoader(BlockScenes(count=2, transforms=eval_transforms()), batch_size=2)
    settings = config(epochs=1, optimizer="sgd", scheduler="none", warmup_iters=0, grad_clip=0.5)
    fit(TinyNet(), data, None, settings.replace(amp="off"))
    state = fit(TinyNet(), data, None, settings.replace(amp="fp16"))
    assert state.scaler.is_enabled() and state.scaler.get_scale() > 1
    (clip_off, norm_off), (clip_fp16, norm_fp16) = seen
    assert clip_off == clip_fp16 == 0.5
    assert norm_fp16 == pytest.approx(norm_off, rel=0.05)


def test_channels_last_runs_inside_fit():
    class SeesLayout(TinyNet):
        def forward(self, x):
            assert x.is_contiguous(memory_format=torch.channels_last)
            return super().forward(x)

    data = DataLoader(BlockScenes(count=4, transforms=eval_transforms()), batch_size=2)
    state = fit(SeesLayout(), data, None, config(epochs=1, channels_last=True))
    assert state.step == 2
    convs = [m for m in state.model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)


class CountBatches(Callback):
    def __init__(self):
        self.per_epoch = []

    def on_fit_start(self, state):
        self.per_epoch.append(0)

    def on_batch_end(self, state):
        self.per_epoch[-1] += 1

    def on_epoch_end(self, state):
        self.per_epoch.append(0)


def test_val_every_and_max_iters():
    train_loader, val_loader = loaders(batch_size=2)  # 4 batches an epoch
    batches = CountBatches()
    state = fit(TinyNet(), train_loader, val_loader, config(epochs=4, val_every=2, max_iters=3,
                                                            batch_size=2), [batches])
    assert batches.per_epoch == [3, 3, 3, 3, 0] and state.step == 4 * 3
    assert ["val_miou" in row for row in state.history] == [False, True, False, True]
    assert ["val_loss" in row for row in state.history] == [False, True, False, True]


def test_the_last_epoch_is_validated_whatever_val_every_says():
    train_loader, val_loader = loaders(batch_size=2)
    state = fit(TinyNet(), train_loader, val_loader, config(epochs=3, val_every=2, max_iters=1,
                                                            batch_size=2))
    assert ["val_miou" in row for row in state.history] == [False, True, True]


# --- the validation loss --------------------------------------------------------------------------

def _two_class_logits():
    """Four 1x2 frames whose logits give p(class 0) = 3/4 at every pixel, and their labels.

    Labelled pixels: class 0 three times (frames 0 and 2), class 1 three times (frames 1 and 3).
    """
    logits = torch.tensor([math.log(3), 0.0])[None, :, None, None].expand(4, 2, 1, 2).clone()
    masks = torch.tensor([[[0, 0]], [[1, 255]], [[0, 255]], [[1, 1]]])  # (4, 1, 2)
    return logits, masks


@pytest.mark.parametrize(("loss", "of_class_0", "of_class_1"), [
    ("ce", math.log(4 / 3), math.log(4)),  # -log p
    ("focal", (1 / 4) ** 2 * math.log(4 / 3), (3 / 4) ** 2 * math.log(4)),  # -(1 - p)^2 log p
])
def test_the_validation_loss_is_the_weighted_mean_over_every_labelled_pixel(loss, of_class_0, of_class_1):
    logits, masks = _two_class_logits()
    criterion = build_loss(loss, gamma=2.0, class_weights=torch.tensor([1.0, 2.0]))
    # batches of 3 frames and 1: the logits are the "images" of a model that passes them through
    loader = DataLoader(TensorDataset(logits, masks), batch_size=3)
    scores = engine.validate(nn.Identity(), loader, num_classes=2, device=torch.device("cpu"),
                             criterion=criterion)
    # class 0: three pixels of weight 1; class 1: three pixels of weight 2
    assert scores["loss"] == pytest.approx((3 * of_class_0 + 6 * of_class_1) / (3 + 6))
    first = (3 * of_class_0 + 2 * of_class_1) / 5  # frames 0-2: class 0 three times, class 1 once
    assert scores["loss"] != pytest.approx((first + of_class_1) / 2)  # not a mean of batch means
    no_loss = engine.validate(nn.Identity(), loader, num_classes=2, device=torch.device("cpu"))
    assert "loss" not in no_loss


def test_the_validation_loss_needs_the_logits_of_one_pass():
    from segkit.inference import Inference

    logits, masks = _two_class_logits()
    with pytest.raises(ValueError, match="single pass"):
        engine.validate(nn.Identity(), DataLoader(TensorDataset(logits, masks)), num_classes=2,
                        device=torch.device("cpu"), criterion=build_loss("ce"),
                        forward=Inference(flip=True))


def test_the_history_gains_the_training_loss_over_the_validation_split():
    train_loader, _ = loaders()
    val = BlockScenes(count=4, transforms=eval_transforms(), seed=1)
    state = fit(TinyNet(), train_loader, DataLoader(val, batch_size=3),
                config(epochs=1, class_weights=True))
    images, masks = zip(*(val[i] for i in range(len(val))), strict=True)
    weights = engine.dataset_class_weights(train_loader.dataset, 19)
    with torch.inference_mode():
        logits = state.model.eval()(torch.stack(images))
    expected = nn.functional.cross_entropy(logits, torch.stack(masks), weight=weights, ignore_index=255)
    assert state.history[-1]["val_loss"] == pytest.approx(expected.item(), rel=1e-5)


def test_the_epoch_line_and_tensorboard_show_the_validation_loss(capsys):
    from types import SimpleNamespace

    from segkit.callbacks import PrintMetrics, TensorBoardLogger

    row = {"epoch": 2, "train_loss": 0.9, "lr": 1e-3, "train_seconds": 3.0, "val_loss": 1.25,
           "val_pixel_acc": 0.75, "val_mean_acc": 0.5, "val_miou": 0.25}
    state = SimpleNamespace(last=row, history=[row], epoch=2, plan=None, step=8, val_example=None,
                            config=SimpleNamespace(epochs=4))
    PrintMetrics().on_epoch_end(state)
    assert "val: loss 1.2500  global acc 0.750  mean acc 0.500  mIoU 0.250" in capsys.readouterr().out
    logged = {}
    logger = TensorBoardLogger("unused")
    logger.writer = SimpleNamespace(add_scalar=lambda tag, value, step: logged.update({tag: (value, step)}),
                                    flush=lambda: None)
    logger.on_epoch_end(state)
    assert logged["val/loss"] == (1.25, 2) and logged["train/loss"] == (0.9, 2)


# --- defects a review found on the GPU path, each reproduced on the CPU -----------------------

def test_the_last_partial_window_is_the_mean_of_its_own_batches():
    """3 batches with accumulate=2: the second window holds one batch, whose gradient must count
    whole (as a step of its own would), not halved as if a second batch were missing."""
    data = BlockScenes(count=6, transforms=eval_transforms())
    settings = config(epochs=1, batch_size=2, optimizer="sgd", scheduler="none", warmup_iters=0)
    accumulated = fit(TinyNet(), DataLoader(data, batch_size=2), None, settings.replace(accumulate=2))
    # the same two steps: frames 0-3 as one batch of 4, then frames 4-5 alone
    reference = fit(TinyNet(), DataLoader(data, batch_sampler=[[0, 1, 2, 3], [4, 5]]), None, settings)
    assert accumulated.step == reference.step == 2
    for a, b in zip(accumulated.model.parameters(), reference.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def _deeplab_running_out_above(limit: int) -> nn.Module:
    """DeepLabV3+ (MobileNetV3, random init) whose forward raises CUDA's out-of-memory error for
    more than ``limit`` frames; its image pooling cannot train on one frame."""
    model = build_model("deeplabv3plus", backbone="mobilenet_v3_large")

    def out_of_memory(module, args):
        if module.training and len(args[0]) > limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    model.register_forward_pre_hook(out_of_memory)
    return model


def test_out_of_memory_retry_never_splits_below_the_models_smallest_batch(capsys):
    """7 frames in 4 chunks would be 2 + 2 + 2 + 1, and DeepLab's batch norm fails on the 1: they go
    in 3 chunks (3 + 2 + 2) instead; 3 frames that fit in no chunk of 2 or more are refused with
    the advice."""
    seven = DataLoader(BlockScenes(count=7, transforms=eval_transforms()), batch_size=7)
    state = fit(_deeplab_running_out_above(3), seven, None, config(epochs=1, batch_size=7, oom="retry"))
    assert state.step == 1 and math.isfinite(state.history[0]["train_loss"])
    assert "redoing the accumulation window in 3" in capsys.readouterr().out
    three = DataLoader(BlockScenes(count=3, transforms=eval_transforms()), batch_size=3)
    with pytest.raises(RuntimeError, match="no fewer than 2 frames at once"):
        fit(_deeplab_running_out_above(2), three, None, config(epochs=1, batch_size=3, oom="retry"))


def test_a_run_saved_in_bf16_continues_in_fp16_saying_so(tmp_path, capsys):
    """A run saved where ``auto`` resolved to bf16 (an Ampere card, a CPU) and continued where it
    resolves to fp16 (a Turing card): no loss scale to continue from, a fresh one instead."""
    data = DataLoader(BlockScenes(count=4, transforms=eval_transforms()), batch_size=2)
    cpu = torch.device("cpu")
    settings = config(amp="auto", epochs=1)
    fit(small_fcn(), data, None, settings, [Checkpointer(tmp_path)],
        context=RunContext(cpu, torch.bfloat16, "auto: native bf16 on this GPU"))
    assert load_checkpoint(tmp_path / "last.pt")["precision"] == "bf16"
    state = fit(small_fcn(), data, None, settings.replace(epochs=2), [Checkpointer(tmp_path)],
                resume=tmp_path / "last.pt",
                context=RunContext(cpu, torch.float16, "auto: this GPU only emulates bf16"))
    assert state.epoch == 2 and state.scaler.is_enabled() and math.isfinite(state.last["train_loss"])
    notes = [line for line in capsys.readouterr().out.splitlines() if "other hardware" in line]
    assert notes == [f"note: {tmp_path / 'last.pt'} continues on other hardware: trained in bf16, "
                     "continues in fp16, its loss scale starting afresh"]
    assert load_checkpoint(tmp_path / "last.pt")["precision"] == "fp16"


def test_a_run_of_two_gpus_continues_on_one_saying_so(tmp_path, monkeypatch):
    """A run from a two-GPU workstation (two processes, two GPU random states) continued on a
    laptop with one GPU: torch.cuda.set_rng_state_all fails on the second state."""
    data = DataLoader(BlockScenes(count=4, transforms=eval_transforms()), batch_size=2)
    fit(small_fcn(), data, None, config(epochs=1, device="cpu"), [Checkpointer(tmp_path)])
    saved = load_checkpoint(tmp_path / "last.pt")
    saved["rng"]["cuda"] = [torch.full((16,), gpu, dtype=torch.uint8) for gpu in (0, 1)]
    saved["processes"] = 2
    torch.save(saved, tmp_path / "last.pt")
    restored = []

    def set_gpu_rng_state(state, device="cuda"):  # as CUDA answers for a GPU it lacks
        index = device if isinstance(device, int) else torch.device(device).index or 0
        if index >= torch.cuda.device_count():
            raise IndexError("list index out of range")
        restored.append(int(state[0]))

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for module in (torch.cuda, torch.cuda.random):
        monkeypatch.setattr(module, "set_rng_state", set_gpu_rng_state)
    model, cfg = small_fcn(), config()
    optimizer = engine.build_optimizer(model, cfg)
    state = engine.FitState(model, cfg, optimizer, engine.build_scheduler(optimizer, cfg, 2),
                            torch.amp.GradScaler("cpu", enabled=False),
                            RunContext(torch.device("cpu")), 19)
    note = checkpoints.restore(state, tmp_path / "last.pt")
    assert state.epoch == 1 and restored == [0]
    assert note == (f"note: {tmp_path / 'last.pt'} continues on other hardware: trained by 2 "
                    "processes, continues with 1: a global batch of 4 instead of 8; the random "
                    "states of 2 GPUs saved, 1 here to take them")
