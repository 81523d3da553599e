import json
from pathlib import Path

import numpy as np
import pytest
import torch

from segkit import export
from segkit.checkpoints import model_from_checkpoint
from segkit.cli import main


def test_export_writes_a_dynamic_onnx_model_that_matches_pytorch(tiny_checkpoint, tmp_path, capsys):
    pytest.importorskip("onnxscript")
    onnx = pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    out = tmp_path / "unet.onnx"
    assert main(["export", "--checkpoint", str(tiny_checkpoint), "--out", str(out),
                 "--size", "64x32"]) == 0
    printed = capsys.readouterr().out
    assert "batch, height and width dynamic" in printed
    assert "parity 64x32, batch 1: max |logit difference|" in printed
    assert "parity 35x21, batch 2" in printed and "argmax agreement 100.000 %" in printed
    model = onnx.load(out)
    dims = [[d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
            for value in (model.graph.input[0], model.graph.output[0])]
    assert dims == [["batch", 3, "height", "width"], ["batch", 19, "height", "width"]]
    props = {p.key: p.value for p in model.metadata_props}
    assert props["segkit_model"] == "unet" and json.loads(props["segkit_options"])["base_channels"] == 4
    net, _ = model_from_checkpoint(tiny_checkpoint)
    images = torch.randn(3, 3, 45, 77)  # a batch and a size the export never saw
    logits = onnxruntime.InferenceSession(str(out)).run(["logits"], {"image": images.numpy()})[0]
    with torch.inference_mode():
        np.testing.assert_allclose(logits, net(images).numpy(), atol=1e-4)
    assert main(["export", "--checkpoint", str(tiny_checkpoint), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_export_names_the_extra_when_the_exporter_is_missing(tiny_checkpoint, tmp_path, capsys,
                                                             monkeypatch):
    monkeypatch.setattr(export, "missing_packages", lambda *names: list(names))
    assert main(["export", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "pip install 'segkit[export]'" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_export_without_onnxruntime_says_the_parity_was_not_checked(tiny_checkpoint, tmp_path,
                                                                     capsys, monkeypatch):
    monkeypatch.setattr(export, "missing_packages",
                        lambda *names: [n for n in names if n == "onnxruntime"])
    monkeypatch.setattr(export, "export_onnx", lambda model, path, **options: _fake_file(path))
    assert main(["export", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "m.onnx")]) == 0
    assert "parity not checked: onnxruntime is not installed" in capsys.readouterr().out


def test_export_fails_when_onnx_disagrees_with_pytorch(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(export, "missing_packages", lambda *names: [])
    monkeypatch.setattr(export, "export_onnx", lambda model, path, **options: _fake_file(path))
    monkeypatch.setattr(export, "check_parity", lambda model, path, size: [
        export.Parity(size, 1, 1e-6, 1.0), export.Parity((35, 21), 2, 3.5, 0.98)])
    assert main(["export", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "m.onnx")]) == 1
    captured = capsys.readouterr()
    assert "argmax agreement 98.000 %" in captured.out
    assert "disagrees with PyTorch" in captured.err


def _fake_file(path):
    path = Path(path)
    path.write_bytes(b"onnx")
    return path
