"""``python -m ppml_hybrid predict``: a run's model.pt applied to new scans (real files shipped in
nibabel and pydicom), the same numbers as the model on the training pipeline's slices, clear errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from ppml_hybrid.config import ModelConfig
from ppml_hybrid.errors import ConfigError, DataError
from ppml_hybrid.model import build_model
from ppml_hybrid.roles.cli import main
from ppml_hybrid.training.predict import load_saved_model, predict_scans
from ppml_hybrid.training.results import model_file_contents


def _model_cfg() -> ModelConfig:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from ppml_hybrid.config import parse_run_config

    conf = Path(__file__).resolve().parents[2] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        raw = compose(config_name="train", overrides=["data.image_size=16"])
    return parse_run_config(OmegaConf.to_container(raw, resolve=True))


@pytest.fixture
def saved_model(tmp_path):
    cfg = _model_cfg()
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, slice_range=(0.4, 0.6)))
    model = build_model(cfg.model, image_size=16, seed=3, split_clip=(3, 16.0))
    path = tmp_path / "model.pt"
    torch.save(model_file_contents(cfg, model), path)
    return cfg, model, path


def test_predictions_are_the_models_mean_over_the_scans_slices(saved_model, nibabel_data, pydicom_data):
    from ppml_hybrid.data.readers import read_image
    from ppml_hybrid.data.transforms import slice_pipeline, volume_to_slices

    cfg, model, path = saved_model
    saved = load_saved_model(path)
    assert saved.data.slice_range == (0.4, 0.6)  # the run's slicing travels with the model
    scans = [nibabel_data / "anatomical.nii", pydicom_data / "MR_small.dcm"]
    got = predict_scans(saved, scans)
    model.eval()
    for scan, p in zip(scans, got):
        slices = volume_to_slices(read_image(scan), pipeline=slice_pipeline(image_size=16, slice_range=(0.4, 0.6)))
        want = torch.softmax(model(slices).double(), dim=1).mean(dim=0)
        assert p.slices == len(slices) and torch.allclose(torch.tensor(p.probabilities, dtype=torch.float64), want, atol=1e-9)
        assert p.predicted == int(want.argmax())


def test_the_command_prints_a_table_and_writes_csv(saved_model, nibabel_data, tmp_path, capsys):
    _, _, path = saved_model
    out = tmp_path / "pred.csv"
    assert main(["predict", "--model", str(path), str(nibabel_data / "anatomical.nii"), "--csv", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "anatomical.nii" in printed and "predicted" in printed
    lines = out.read_text().splitlines()
    assert lines[0].startswith("scan,slices,predicted,p0,p1") and len(lines) == 2


def test_bad_inputs_are_named(saved_model, tmp_path, capsys):
    _, _, path = saved_model
    bad = tmp_path / "broken.nii"
    bad.write_bytes(b"not a nifti file")
    assert main(["predict", "--model", str(path), str(bad)]) == DataError.exit_code
    assert "broken.nii" in capsys.readouterr().err
    assert main(["predict", "--model", str(tmp_path / "nope.pt"), str(bad)]) == ConfigError.exit_code
    junk = tmp_path / "junk.pt"
    torch.save({"hello": 1}, junk)
    assert main(["predict", "--model", str(junk), str(bad)]) == ConfigError.exit_code
    assert "not a model file" in capsys.readouterr().err


def test_saliency_writes_one_overlay_per_slice_that_points_at_the_evidence(saved_model, nibabel_data, tmp_path):
    """Grad-CAM on the last conv block: one PNG per slice; the map is in [0, 1] and, for a model
    whose class-1 logit reads one quadrant only, lights up that quadrant."""
    from ppml_hybrid.training.saliency import class_activation_maps

    cfg, model, path = saved_model
    out = tmp_path / "saliency"
    assert main(["predict", "--model", str(path), str(nibabel_data / "anatomical.nii"), "--saliency", str(out)]) == 0
    pngs = sorted(out.glob("anatomical_slice*.png"))
    n = predict_scans(load_saved_model(path), [nibabel_data / "anatomical.nii"])[0].slices
    assert len(pngs) == n and all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)

    # a planted "lesion" detector: every conv passes channel 0 through unchanged (centre tap 1), the
    # hidden layer averages the last conv block, and class 1's logit sums the hidden units; an
    # image bright in its top-left quadrant must light the map up there
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".conv." in name or ".linear." in name:  # (the polynomial activation keeps a x^2 + b x)
                p.zero_()
        for block in model.blocks:
            if "conv" in block:
                w = block["conv"].weight  # (out, in, k, k)
                w[:, 0, w.shape[2] // 2, w.shape[3] // 2] = 1.0
        hidden, out = model.blocks[-2]["linear"], model.blocks[-1]["linear"]
        hidden.weight.fill_(1.0 / hidden.weight.shape[1])
        out.weight[1].fill_(1.0)
    model.eval()
    x = torch.zeros(2, 1, 16, 16)
    x[:, :, :8, :8] = 1.0
    maps, probs = class_activation_maps(model, x)
    assert maps.shape == (2, 16, 16) and float(maps.min()) >= 0 and float(maps.max()) <= 1 + 1e-6
    assert bool((probs.argmax(dim=1) == 1).all())
    assert float(maps[:, :8, :8].mean()) > 3 * float(maps[:, 8:, 8:].mean())
