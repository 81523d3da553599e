"""Multi-process training: two CPU processes (gloo) must train and score like one process.

The comparison is built so that equality is expected: the two processes take one frame each per
step where the single process takes two (the same global batch, the same shuffled order from the
same ``DistributedSampler`` seed), the transforms are not random, the model has no BatchNorm (whose
statistics would be per process without SyncBatchNorm, which needs CUDA), and the original study's
20 classes leave no pixel ignored (so a mean loss per process averages to the global mean), and all
of it runs in fp32 (a CPU with native bf16 would otherwise train in bf16 and round differently).
"""

import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, DistributedSampler

from segkit import distributed
from segkit.callbacks import Checkpointer
from segkit.checkpoints import load_checkpoint
from segkit.config import TrainConfig
from segkit.datasets import CityscapesSegmentation
from segkit.engine import Callback, fit
from segkit.inference import evaluate
from segkit.loaders import build_loaders
from segkit.models import build_model
from segkit.runtime import resolve_device
from segkit.transforms import eval_transforms

SIZE = (64, 32)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TinyNet(nn.Module):
    """No BatchNorm; named so that checkpoints can describe it."""

    segkit_name, segkit_options = "tiny", {"num_classes": 20}

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 20, 1))

    def forward(self, x):
        return self.body(x)


class StopAfter(Callback):
    def __init__(self, epochs):
        self.epochs = epochs

    def on_epoch_end(self, state):
        if state.epoch == self.epochs:
            state.stop = "interrupted"


def _runs(root, folder, batch_size):
    """Scores of a fixed model, then a straight 2-epoch run and an interrupted, resumed one."""
    frames = {split: CityscapesSegmentation(root, split, eval_transforms(size=SIZE),
                                            label_scheme="original20") for split in ("train", "val")}
    val_loader = DataLoader(frames["val"], batch_size=2, sampler=distributed.ShardSampler(frames["val"]))
    scores = evaluate(TinyNet(), val_loader, num_classes=20)

    data = ConcatDataset([frames["train"], frames["val"]])  # 6 frames: 3 steps of 2 per epoch

    def loader():
        sampler = DistributedSampler(data, distributed.world_size(), distributed.rank(), seed=0)
        return DataLoader(data, batch_size=batch_size, sampler=sampler)

    # two batches per optimizer step: windows of 2 and 1 batches (the second under DDP's no_sync)
    config = TrainConfig(model="tiny", epochs=2, batch_size=batch_size, size=SIZE, num_workers=0,
                         optimizer="sgd", lr=0.05, label_scheme="original20", accumulate=2,
                         amp="off")  # fp32: bf16 rounds one process's sums unlike two's
    main = distributed.is_main_process()
    straight = fit(TinyNet(), loader(), val_loader, config)
    fit(TinyNet(), loader(), val_loader, config,
        [*([Checkpointer(folder)] if main else []), StopAfter(1)])
    resumed = fit(TinyNet(), loader(), val_loader, config, resume=folder / "last.pt")
    return {"confusion": scores["confusion"], "images": scores["images"],
            "straight": (straight.history, _weights(straight)),
            "resumed": (resumed.history, _weights(resumed))}


def _weights(state):
    """The trained weights, from inside the DDP wrapper where there is one."""
    return getattr(state.model, "module", state.model).state_dict()


def _process(rank, port, root, folder):
    """One of two processes, as torchrun would start it."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    with distributed.process_group("cpu"):
        results = _runs(root, folder, batch_size=1)
    torch.save(results, folder / f"rank{rank}.pt")


def _close(a, b):
    assert [row["epoch"] for row in a[0]] == [row["epoch"] for row in b[0]]
    for key in ("train_loss", "val_loss", "val_pixel_acc", "val_miou", "val_images"):
        assert [row[key] for row in a[0]] == pytest.approx([row[key] for row in b[0]], rel=1e-4), key
    torch.testing.assert_close(a[1], b[1], rtol=1e-4, atol=1e-6)


def test_two_processes_train_and_score_like_one_with_the_same_global_batch(prepared_root, tmp_path):
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
    mp.spawn(_process, args=(free_port(), prepared_root, tmp_path / "two"), nprocs=2)
    two = [torch.load(tmp_path / "two" / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    one = _runs(prepared_root, tmp_path / "one", batch_size=2)

    # validation: each of the 3 frames scored once (2 in one process, 1 in the other), summed
    assert one["images"] == two[0]["images"] == two[1]["images"] == 3
    assert one["confusion"].sum() == 3 * SIZE[0] * SIZE[1]
    for rank in (0, 1):
        assert torch.equal(two[rank]["confusion"], one["confusion"])
    # training: the same steps as one process with twice the batch; both processes agree
    _close(two[0]["straight"], one["straight"])
    _close(two[1]["straight"], two[0]["straight"])
    # resumed from process 0's checkpoint, exactly where the uninterrupted run went
    _close(two[0]["resumed"], two[0]["straight"])
    _close(two[1]["resumed"], two[0]["straight"])
    assert "module." not in next(iter(load_checkpoint(tmp_path / "two" / "last.pt")["state_dict"]))


@pytest.mark.parametrize(("size", "world"), [(0, 2), (1, 2), (3, 2), (7, 3), (8, 4)])
def test_validation_shards_hold_every_frame_exactly_once(size, world):
    shards = [list(distributed.ShardSampler(range(size), world, rank)) for rank in range(world)]
    assert sorted(i for shard in shards for i in shard) == list(range(size))
    assert [len(distributed.ShardSampler(range(size), world, r)) for r in range(world)] == \
        [len(shard) for shard in shards]
    padded = [list(DistributedSampler(range(size), world, rank, shuffle=False)) for rank in range(world)]
    assert sum(map(len, padded)) == (size if size % world == 0 else world * (size // world + 1))


def test_process_seeds_differ_by_process_and_epoch(monkeypatch):
    seeds = set()
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        seeds |= {distributed.process_seed(0, epoch) for epoch in (0, 1)}
        assert distributed.process_seed(0, 1) == distributed.process_seed(0, 1)
    assert len(seeds) == 4


class EpochsSeen(DistributedSampler):
    def __init__(self, data):
        super().__init__(data, num_replicas=1, rank=0)
        self.epochs = []

    def set_epoch(self, epoch):
        self.epochs.append(epoch)
        super().set_epoch(epoch)


def test_fit_reshuffles_a_distributed_sampler_every_epoch(prepared_root):
    data = CityscapesSegmentation(prepared_root, "train", eval_transforms(size=SIZE),
                                  label_scheme="original20")
    sampler = EpochsSeen(data)
    config = TrainConfig(model="tiny", epochs=2, batch_size=3, size=SIZE, num_workers=0,
                         label_scheme="original20")
    fit(TinyNet(), DataLoader(data, batch_size=3, sampler=sampler), None, config)
    assert sampler.epochs == [0, 1]


@pytest.fixture
def one_process_env(monkeypatch):
    """The environment torchrun gives a group of one process."""
    for name, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"),
                        ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", str(free_port()))):
        monkeypatch.setenv(name, value)


def test_gradients_are_averaged_once_per_accumulation_window(prepared_root, one_process_env,
                                                             monkeypatch):
    calls = []

    def counted(state, bucket):  # a comm hook: counts the exchange, keeps the local gradients
        calls.append(len(bucket.gradients()))
        future = torch.futures.Future()
        future.set_result(bucket.buffer())
        return future

    wrap = distributed.wrap

    def wrap_counting(model, device, **options):
        wrapped = wrap(model, device, **options)
        wrapped.register_comm_hook(None, counted)
        return wrapped

    monkeypatch.setattr(distributed, "wrap", wrap_counting)
    data = CityscapesSegmentation(prepared_root, "train", eval_transforms(size=SIZE),
                                  label_scheme="original20")  # 3 frames: 3 batches of 1 an epoch
    config = TrainConfig(model="tiny", epochs=2, batch_size=1, size=SIZE, num_workers=0,
                         label_scheme="original20", accumulate=2)
    with distributed.process_group("cpu"):
        state = fit(TinyNet(), DataLoader(data, batch_size=1), None, config)
    assert state.step == 4  # windows of 2 and 1 batches, each epoch
    assert len(calls) == 4  # one exchange per optimizer step, none for the first batch of a window


def test_a_group_of_one_process(prepared_root, one_process_env):
    with distributed.process_group("cpu"):
        assert distributed.is_initialized() and distributed.world_size() == 1
        assert distributed.is_main_process()
        train_loader, val_loader = build_loaders(prepared_root, TrainConfig(size=SIZE, num_workers=0))
        assert isinstance(train_loader.sampler, DistributedSampler)
        assert isinstance(val_loader.sampler, distributed.ShardSampler)
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="give --device cuda"):
            distributed.process_device("cuda:1")
        with pytest.raises(ValueError, match="--sync-bn needs CUDA"):
            distributed.wrap(build_model("my_fcn"), torch.device("cpu"), sync_bn=True)
        with pytest.raises(ValueError, match="smaller --batch-size"):
            distributed.wrap(TinyNet(), torch.device("cpu"), oom="retry")
        assert distributed.all_reduce_mean(1.5) == 1.5 and distributed.all_reduce_sum(3) == 3
        assert distributed.first_set("why") == "why"
    assert not distributed.is_initialized()


@pytest.mark.slow
def test_train_command_under_torchrun(prepared_root, tmp_path):
    """``torchrun --nproc_per_node 2 -m segkit train``: one log, one checkpoint, every frame scored."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "segkit", "train", "-m", "my_fcn", "--profile", "ci", "--data", str(prepared_root),
               "--out", str(tmp_path / "checkpoints"), "--log_dir", str(tmp_path / "runs"), "-n", "1",
               "--quiet"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("training my_fcn") == 1
    assert "batch 4 per process x 2 processes = 8" in result.stdout
    assert result.stdout.count("epoch   1/1") == 1
    checkpoint = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    build_model("my_fcn").load_state_dict(checkpoint["state_dict"])  # no "module." prefixes
    assert checkpoint["history"][0]["val_images"] == 3
    assert len(list((tmp_path / "runs").glob("events.out.tfevents.*"))) == 1
