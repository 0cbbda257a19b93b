"""Every dependency of the design installs and does one real operation, in one environment."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn


def _crypten_multiply():
    from ppml_hybrid.smpc_stage.crypten_compat import import_crypten

    crypten = import_crypten()
    rank = crypten.comm.get().get_rank()
    x = crypten.cryptensor(torch.tensor([1.5, -2.0, 0.25]), src=0)
    y = crypten.cryptensor(torch.tensor([3.0, 4.0, -8.0]), src=1)
    z = x * y
    # Each party's share alone must not equal the product: it is a random ring element.
    # Plain lists: tensors would travel through shared memory that dies with the process.
    return rank, z.get_plain_text().tolist(), z.share.tolist()


def test_crypten_two_party_multiply_in_two_processes():
    from ppml_hybrid.smpc_stage.crypten_compat import import_crypten

    crypten = import_crypten()
    results = crypten.mpc.run_multiprocess(world_size=2)(_crypten_multiply)()
    assert results is not None and len(results) == 2
    expected = torch.tensor([4.5, -8.0, -2.0])
    ranks = sorted(r for r, _, _ in results)
    assert ranks == [0, 1]
    for _, plain, _ in results:
        torch.testing.assert_close(torch.tensor(plain), expected, atol=1e-3, rtol=0)
    shares = [torch.tensor(s, dtype=torch.int64) for _, _, s in results]
    # The two shares add up (mod 2^64) to the fixed-point product and neither is the product.
    encoded = (expected * 2**16).round().long()
    torch.testing.assert_close((shares[0] + shares[1]).float() / 2**16, encoded.float() / 2**16, atol=1e-3, rtol=0)
    assert not torch.allclose(shares[0].float(), encoded.float(), atol=2**10)


def test_openfhe_ckks_encrypt_multiply_decrypt_at_128_bits():
    import openfhe as fhe

    params = fhe.CCParamsCKKSRNS()
    params.SetMultiplicativeDepth(2)
    params.SetScalingModSize(50)
    params.SetFirstModSize(60)
    params.SetSecurityLevel(fhe.SecurityLevel.HEStd_128_classic)
    params.SetScalingTechnique(fhe.ScalingTechnique.FLEXIBLEAUTO)
    cc = fhe.GenCryptoContext(params)
    cc.Enable(fhe.PKESchemeFeature.PKE)
    cc.Enable(fhe.PKESchemeFeature.KEYSWITCH)
    cc.Enable(fhe.PKESchemeFeature.LEVELEDSHE)
    assert cc.GetRingDimension() >= 2**13  # 128-bit security forces a large ring
    keys = cc.KeyGen()
    cc.EvalMultKeyGen(keys.secretKey)
    a = [0.5, -1.25, 3.0, 2.0]
    b = [2.0, 4.0, -0.5, 0.125]
    ct_a = cc.Encrypt(keys.publicKey, cc.MakeCKKSPackedPlaintext(a))
    ct_b = cc.Encrypt(keys.publicKey, cc.MakeCKKSPackedPlaintext(b))
    product = cc.Decrypt(keys.secretKey, cc.EvalMult(ct_a, ct_b))
    product.SetLength(len(a))
    got = np.array(product.GetRealPackedValue())
    np.testing.assert_allclose(got, np.array(a) * np.array(b), atol=1e-6)


def test_opacus_private_step_clips_and_noises():
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))
    data = TensorDataset(torch.randn(64, 1, 4, 4), torch.randint(0, 2, (64,)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    engine = PrivacyEngine(accountant="rdp")
    model, optimizer, loader = engine.make_private(
        module=model, optimizer=optimizer, data_loader=DataLoader(data, batch_size=16),
        noise_multiplier=1.0, max_grad_norm=0.5, poisson_sampling=True,
    )
    before = [p.detach().clone() for p in model.parameters()]
    x, y = next(iter(loader))
    nn.functional.cross_entropy(model(x), y).backward()
    per_sample = torch.cat([p.grad_sample.flatten(1) for p in model.parameters()], dim=1)
    assert per_sample.shape[0] == len(y)
    optimizer.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    assert engine.get_epsilon(1e-5) > 0


def test_monai_transform_chain_on_nifti_file():
    from monai.transforms import Compose, EnsureChannelFirst, LoadImage, NormalizeIntensity, Resize
    from nibabel.testing import data_path

    chain = Compose([
        LoadImage(image_only=True),
        EnsureChannelFirst(),
        NormalizeIntensity(),
        Resize((16, 16, 8)),
    ])
    out = chain(f"{data_path}/anatomical.nii")
    assert tuple(out.shape) == (1, 16, 16, 8)
    assert torch.isfinite(torch.as_tensor(out)).all()
    assert abs(float(out.mean())) < 0.2


def test_pydicom_and_hydra_import():
    import hydra  # noqa: F401
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
    assert ds.pixel_array.shape == (128, 128)
