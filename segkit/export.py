"""ONNX export of a trained model, checked against PyTorch with ONNX Runtime.

The exported graph takes ``image`` (N, 3, H, W) float32, normalised as
``segkit.transforms.to_model_input`` does (ImageNet mean and std), and returns ``logits``
(N, C, H, W); batch, height and width are dynamic. It is written by torch's ``torch.export``-based
exporter (the default since PyTorch 2.9; it needs ``onnx`` and ``onnxscript``) and checked with
``onnxruntime``; all three come with ``pip install 'segkit[export]'``::

    from segkit.export import check_parity, export_onnx
    export_onnx(model, "model.onnx", size=(512, 256))
    check_parity(model, "model.onnx", size=(512, 256))  # [Parity(...), Parity(...)]
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segkit.io import DataError, atomic_write
from segkit.models.registry import MIN_INPUT_SIDE
from segkit.transforms import MEAN, STD

EXTRA = "pip install 'segkit[export]'"
#: Share of pixels whose ONNX argmax must equal PyTorch's for the export to pass.
AGREEMENT_NEEDED = 0.999


def missing_packages(*names: str) -> list[str]:
    """Which of the packages ``names`` are not installed."""
    return [name for name in names if importlib.util.find_spec(name) is None]


def export_onnx(model: nn.Module, path: str | os.PathLike, *, size: tuple[int, int] = (512, 256),
                opset: int | None = None, metadata: dict[str, Any] | None = None,
                overwrite: bool = False) -> Path:
    """Write ``model`` as an ONNX file with dynamic batch, height and width; return the path.

    Args:
        model: a segmentation model, (N, 3, H, W) -> (N, C, H, W); exported in eval mode.
        path: the ``.onnx`` file, written atomically; an existing file is refused unless
            ``overwrite``.
        size: (width, height) of the example input the graph is recorded with.
        opset: ONNX opset version (None: the exporter's recommended one).
        metadata: strings stored in the file's ``metadata_props`` (with the input's mean and std).

    Raises ``DataError`` naming the extra when ``onnx`` or ``onnxscript`` is not installed.
    """
    missing = missing_packages("onnx", "onnxscript")
    if missing:
        raise DataError(f"ONNX export needs {' and '.join(missing)}, which are not installed: {EXTRA}")
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder; give --out the .onnx file to write, "
                        f"e.g. {path / 'model.onnx'}")
    if min(size) < MIN_INPUT_SIDE:
        raise DataError(f"--size {size[0]}x{size[1]}: too small to record the graph with; the models "
                        f"need at least {MIN_INPUT_SIDE} pixels a side (e.g. 512x256)")
    if path.exists() and not overwrite:
        raise DataError(f"{path}: already exists; choose another --out or pass --overwrite")
    model.eval()
    width, height = size
    example = torch.randn(2, 3, height, width, device=next(model.parameters()).device)
    with atomic_write(path) as tmp:
        tmp.touch()  # a folder that refuses the file says so now, before the exporter's work
        program = torch.onnx.export(
            model, (example,), input_names=["image"], output_names=["logits"], opset_version=opset,
            dynamic_shapes=({0: "batch", 2: "height", 3: "width"},), dynamo=True, verbose=False)
        props = {"mean": ",".join(map(str, MEAN)), "std": ",".join(map(str, STD)),
                 **(metadata or {})}
        program.model.metadata_props.update({key: str(value) for key, value in props.items()})
        program.save(tmp, external_data=False)
    return path


@dataclass(frozen=True)
class Parity:
    """ONNX Runtime against PyTorch on one random batch."""

    size: tuple[int, int]  # (width, height) of the batch
    batch: int
    max_abs_diff: float  # largest |logit difference|; NaN when the run failed
    agreement: float  # share of pixels with the same argmax class; 0 when the run failed
    error: str | None = None  # why ONNX Runtime could not run the batch

    @property
    def ok(self) -> bool:
        """Whether the argmax agreement reaches ``AGREEMENT_NEEDED``."""
        return self.error is None and self.agreement >= AGREEMENT_NEEDED

    def __str__(self) -> str:
        where = f"{self.size[0]}x{self.size[1]}, batch {self.batch}"
        if self.error is not None:
            return f"{where}: ONNX Runtime failed ({self.error})"
        return (f"{where}: max |logit difference| {self.max_abs_diff:.2e}, "
                f"argmax agreement {100 * self.agreement:.3f} %")


def parity_sizes(size: tuple[int, int]) -> list[tuple[tuple[int, int], int]]:
    """((width, height), batch) pairs checked: the export size with another batch, then a smaller
    odd size, to show the graph is dynamic."""
    width, height = size
    return [(size, 1), ((max(17, width // 2 + 3), max(17, height // 2 + 5)), 2)]


@torch.inference_mode()
def check_parity(model: nn.Module, path: str | os.PathLike, *, size: tuple[int, int] = (512, 256),
                 seed: int = 0) -> list[Parity]:
    """Run the ONNX file and ``model`` on the same random inputs (``parity_sizes(size)``).

    Raises ``DataError`` naming the extra when ``onnxruntime`` is not installed.
    """
    if missing_packages("onnxruntime"):
        raise DataError(f"the parity check needs onnxruntime, which is not installed: {EXTRA}")
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    results = []
    for (width, height), batch in parity_sizes(size):
        images = torch.randn(batch, 3, height, width, generator=generator)
        expected = model(images.to(device)).float().cpu()  # (N, C, H, W)
        try:
            got = torch.from_numpy(session.run(["logits"], {"image": images.numpy()})[0])
        except Exception as error:  # ONNX Runtime's errors share no public base class
            results.append(Parity((width, height), batch, float("nan"), 0.0, str(error)))
            continue
        if got.shape != expected.shape:
            results.append(Parity((width, height), batch, float("nan"), 0.0,
                                  f"logits {tuple(got.shape)}, expected {tuple(expected.shape)}"))
            continue
        agreement = (got.argmax(1) == expected.argmax(1)).double().mean().item()
        results.append(Parity((width, height), batch, (got - expected).abs().max().item(), agreement))
    return results
