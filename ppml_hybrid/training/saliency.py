"""Class-activation overlays for ``predict --saliency`` (Grad-CAM, Selvaraju et al. 2017).

For each slice: the last convolutional block's activations A (channels x h x w) and the gradient
of the predicted class's logit with respect to them; channel weights are the gradients' spatial
means; the map is ``relu(sum_c w_c A_c)``, upsampled to the slice and scaled to [0, 1]. It runs
in plaintext at the site that holds the scans: the weights are the run's DP-released model (the
scans never leave the host).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import List, Sequence, Tuple

import torch

from ppml_hybrid.errors import ConfigError


def last_conv_block(model) -> int:
    """0-based index of the model's last convolutional block."""
    convs = [i for i, b in enumerate(model.spec.blocks) if b.type == "conv"]
    if not convs:
        raise ConfigError(f"--saliency needs a convolutional block; model {model.spec.name!r} has none")
    return convs[-1]


def class_activation_maps(model, slices: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(maps in [0, 1] of shape (n, H, W), class probabilities (n, K)) for ``slices`` (n, 1, H, W)."""
    k = last_conv_block(model)
    with torch.enable_grad():
        acts = model.forward_blocks(slices, 0, k + 1).detach().requires_grad_(True)
        logits = model.forward_blocks(acts, k + 1)
        predicted = logits.argmax(dim=1)
        (grads,) = torch.autograd.grad(logits.gather(1, predicted[:, None]).sum(), acts)
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * acts.detach()).sum(dim=1, keepdim=True))
    cam = torch.nn.functional.interpolate(cam, size=tuple(slices.shape[-2:]), mode="bilinear", align_corners=False)
    cam = cam[:, 0]
    peak = cam.flatten(1).max(dim=1).values.clamp_min(1e-12)
    return cam / peak[:, None, None], torch.softmax(logits.detach().double(), dim=1)


def write_overlays(scan: Path, slices: torch.Tensor, maps: torch.Tensor, probs: torch.Tensor,
                   out_dir: Path) -> List[Path]:
    """One PNG per slice: the slice in grey, the map over it, the predicted class and P(class)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", scan.name.replace(".nii.gz", "").replace(".nii", "")) or "scan"
    written = []
    for i in range(len(slices)):
        fig, ax = plt.subplots(figsize=(4, 4.3))
        ax.imshow(slices[i, 0].T.numpy(), cmap="gray", origin="lower")  # RAS: first axis left-right
        heat = plt.get_cmap("jet")(maps[i].T.numpy())
        heat[..., 3] = 0.55 * maps[i].T.numpy()  # transparent where the map is 0: the slice shows as is
        ax.imshow(heat, origin="lower")
        c = int(probs[i].argmax())
        ax.set_title(f"{scan.name} slice {i}: class {c}, P = {float(probs[i, c]):.3f}", fontsize=9)
        ax.axis("off")
        path = out_dir / f"{stem}_slice{i:03d}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def overlay_all(model, scan: Path, slices: torch.Tensor, out_dir: Path) -> Sequence[Path]:
    maps, probs = class_activation_maps(model, slices)
    return write_overlays(scan, slices, maps, probs, out_dir)
