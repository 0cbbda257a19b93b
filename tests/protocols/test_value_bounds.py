"""The public bounds on what HE->SS returns (protocols/value_bounds.py) hold, even at the edge.

For the default model at split 3 (with weights as a DP run leaves them: the poly's square term
grown), inputs are driven to the edge of what the protocol lets into HE: split activations of
L2 norm R = he.split_norm_bound (the exact clip's bound), aligned with each output's weights,
then pushed further by gradient ascent on |value| within that ball; delta_z at its clamp. No
value of any returned tensor may reach its bound (else K's range check would stop an honest run).
"""

from __future__ import annotations

from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ppml_hybrid.config import parse_run_config
from ppml_hybrid.model import build_model
from ppml_hybrid.protocols.value_bounds import he_value_bounds, value_bits_for

CONF = Path(__file__).resolve().parents[2] / "conf"
R, D = 16.0, 2.0


def _model():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        raw = compose(config_name="train")
    cfg = parse_run_config(OmegaConf.to_container(raw, resolve=True))
    net = build_model(cfg.model, image_size=32, seed=0)
    with torch.no_grad():  # weights as after DP training: larger, the square term grown (a = 0.45)
        for p in net.parameters():
            p.mul_(4.0)
        net.blocks[3].act.a.fill_(0.45)
    return cfg.model, net


def _tensors(net, a, dz):
    """Every tensor HE->SS returns at split 3, from split activations a and delta_z dz."""
    lin4, act4, lin5 = net.blocks[3].linear, net.blocks[3].act, net.blocks[4].linear
    pre = lin4(a)
    act = act4(pre)
    z = lin5(act)
    d_post = dz @ lin5.weight
    d_pre = d_post * (2 * act4.a * pre + act4.b)
    return {"pre.4": pre, "act.4": act, "logits": z, "delta_post.4": d_post, "delta_pre.4": d_pre,
            "delta_input": d_pre @ lin4.weight}


def test_values_at_the_edge_stay_below_their_public_bounds():
    model, net = _model()
    bounds = he_value_bounds(model=model, state_dict=net.state_dict(), split_layer=3, image_size=32,
                             input_elem_bound=256.0, input_norm_bound=R, delta_bound=D).bounds
    torch.manual_seed(0)
    w4 = net.blocks[3].linear.weight.detach()
    # edge inputs: each output's weight row scaled to norm R (both signs), plus random directions
    a = torch.cat([R * w4 / w4.norm(dim=1, keepdim=True), -R * w4 / w4.norm(dim=1, keepdim=True),
                   torch.nn.functional.normalize(torch.randn(64, 256), dim=1) * R])
    dz = torch.sign(torch.randn(len(a), 2)) * (D - 2.0 ** -15)
    a.requires_grad_(True)
    seen = {k: 0.0 for k in bounds}
    opt = torch.optim.SGD([a], lr=0.5)
    for _ in range(60):  # gradient ascent on the largest |value| of every tensor, a kept on the ball
        values = _tensors(net, a, dz)
        for k, v in values.items():
            seen[k] = max(seen[k], float(v.abs().max()))
        loss = -sum(v.abs().amax(dim=1).mean() / bounds[k] for k, v in values.items())
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            a.mul_(R / a.norm(dim=1, keepdim=True).clamp(min=R))
    for k, top in seen.items():
        assert top <= bounds[k] * (1 + 1e-5), (k, top, bounds[k])  # float32 rounding only
        assert top < 2.0 ** value_bits_for(bounds[k]), (k, top)  # below what the parties announce
        assert top > bounds[k] * 2.0 ** -10, (k, top, bounds[k])  # the ascent really pushed
    print({k: f"{seen[k]:.3g} / {bounds[k]:.3g}" for k in bounds})
