"""Conversion parameters are validated at start-up with clear errors."""

from __future__ import annotations

import pytest

from ppml_hybrid.errors import ConfigError, PPMLError
from ppml_hybrid.protocols import ConversionParams, ConversionParamsError


def test_defaults_follow_the_design():
    p = ConversionParams(parties=2)
    assert (p.fraction_bits, p.clamp_bits, p.modulus_bits, p.carry_bits, p.chain_levels) == (16, 24, 25, 1, 1)
    assert ConversionParams(parties=3).carry_bits == 2 and ConversionParams(parties=5).carry_bits == 3
    assert p.clamp_bound < 2 ** 8


@pytest.mark.parametrize("kw, match", [
    (dict(parties=1), "at least 2 parties"),
    (dict(parties=2, integer_bits=0), "integer_bits"),
    (dict(parties=2, integer_bits=40), "modulus bits"),
    (dict(parties=2, scale_bits=40), "scale"),
    (dict(parties=2, scale_bits=60), "scale"),
    (dict(parties=2, fraction_bits=20), "CrypTen"),
])
def test_bad_parameters_raise_typed_errors(kw, match):
    with pytest.raises(ConversionParamsError, match=match) as info:
        ConversionParams(**kw)
    assert isinstance(info.value, ConfigError) and isinstance(info.value, PPMLError)


def test_context_must_fit_the_conversion():
    p = ConversionParams(parties=3)
    p.check_context(multiplicative_depth=3, scale_bits=50)
    with pytest.raises(ConversionParamsError, match="XOR chain"):
        p.check_context(multiplicative_depth=1, scale_bits=50)
    with pytest.raises(ConversionParamsError, match="scale"):
        p.check_context(multiplicative_depth=3, scale_bits=55)
