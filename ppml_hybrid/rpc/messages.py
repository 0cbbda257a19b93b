"""Protocol messages shared by K and E as frozen dataclasses, converted to protobuf at the edge."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Tuple

import numpy as np

from ppml_hybrid.rpc import common_pb2
from ppml_hybrid.rpc.errors import InvalidArgumentError

_KIND = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
MAX_FEATURES = 1 << 20
MAX_VALUE_BITS = 40


@dataclass(frozen=True)
class RoundRef:
    """One HE->SS round: ``shape`` is ``(batch, features)`` of the values it converts, and every
    value v satisfies the public bound ``|v| < 2^value_bits`` (it sets the mask width)."""

    round_id: int
    kind: str
    shape: Tuple[int, int]
    value_bits: int

    def __post_init__(self) -> None:
        if not isinstance(self.round_id, int) or self.round_id < 0:
            raise InvalidArgumentError(f"round_id must be an integer >= 0; got {self.round_id!r}")
        if not isinstance(self.kind, str) or not _KIND.match(self.kind):
            raise InvalidArgumentError(f"round kind must match {_KIND.pattern}; got {self.kind!r}")
        shape = tuple(self.shape)
        if len(shape) != 2 or not all(isinstance(d, int) and d >= 1 for d in shape) or shape[1] > MAX_FEATURES:
            raise InvalidArgumentError(f"round shape must be (batch, features), positive, features <= {MAX_FEATURES}; got {shape}")
        object.__setattr__(self, "shape", shape)
        if not isinstance(self.value_bits, int) or not 0 <= self.value_bits <= MAX_VALUE_BITS:
            raise InvalidArgumentError(f"round value_bits must be an integer in [0, {MAX_VALUE_BITS}]; "
                                       f"got {self.value_bits!r}")

    @property
    def batch(self) -> int:
        return self.shape[0]

    @property
    def n_features(self) -> int:
        return self.shape[1]

    def to_pb(self) -> common_pb2.RoundRef:
        return common_pb2.RoundRef(round_id=self.round_id, kind=self.kind, shape=list(self.shape),
                                   value_bits=self.value_bits)

    @classmethod
    def from_pb(cls, pb: common_pb2.RoundRef) -> "RoundRef":
        return cls(round_id=int(pb.round_id), kind=str(pb.kind), shape=tuple(int(d) for d in pb.shape),
                   value_bits=int(pb.value_bits))


def int64_to_pb(a: np.ndarray) -> common_pb2.Int64Tensor:
    a = np.ascontiguousarray(a, dtype="<i8")
    return common_pb2.Int64Tensor(shape=list(a.shape), data=a.tobytes())


def int64_from_pb(pb: common_pb2.Int64Tensor) -> np.ndarray:
    shape = tuple(int(d) for d in pb.shape)
    if any(d < 0 for d in shape) or int(np.prod(shape)) * 8 != len(pb.data):
        raise InvalidArgumentError(f"int64 tensor of shape {shape} cannot hold {len(pb.data)} bytes")
    return np.frombuffer(pb.data, dtype="<i8").reshape(shape).astype(np.int64)


def float64_to_pb(*, name: str, value: np.ndarray) -> common_pb2.Float64Tensor:
    a = np.ascontiguousarray(value, dtype="<f8")
    return common_pb2.Float64Tensor(name=name, shape=list(a.shape), data=a.tobytes())


def float64_from_pb(pb: common_pb2.Float64Tensor) -> Tuple[str, np.ndarray]:
    shape = tuple(int(d) for d in pb.shape)
    if any(d < 0 for d in shape) or int(np.prod(shape)) * 8 != len(pb.data):
        raise InvalidArgumentError(f"tensor {pb.name!r} of shape {shape} cannot hold {len(pb.data)} bytes")
    return pb.name, np.frombuffer(pb.data, dtype="<f8").reshape(shape).copy()


@dataclass(frozen=True)
class ShareTensor:
    """One party's additive share (int64, ring Z_2^64) of one round's (batch, features) values."""

    round: RoundRef
    share: np.ndarray

    def __post_init__(self) -> None:
        if self.share.dtype != np.int64 or tuple(self.share.shape) != self.round.shape:
            raise InvalidArgumentError(
                f"a share of round {self.round.round_id} must be int64 of shape {self.round.shape}; "
                f"got {self.share.dtype} {tuple(self.share.shape)}"
            )

    def __repr__(self) -> str:  # never print share values
        return f"ShareTensor(round={self.round!r}, share=<int64 {tuple(self.share.shape)}>)"

    def to_pb(self) -> common_pb2.ShareTensor:
        return common_pb2.ShareTensor(round=self.round.to_pb(), share=int64_to_pb(self.share))

    @classmethod
    def from_pb(cls, pb: common_pb2.ShareTensor) -> "ShareTensor":
        return cls(round=RoundRef.from_pb(pb.round), share=int64_from_pb(pb.share))


def weights_to_pb(state: Mapping[str, np.ndarray]) -> list:
    return [float64_to_pb(name=k, value=np.asarray(v.detach().cpu().double().numpy() if hasattr(v, "detach") else v))
            for k, v in state.items()]


MAX_NOISE_VALUES = 1 << 24
MAX_NOISE_SCALE_BITS = 56  # sigma C 2^b must leave room in the 64-bit ring (checked below)


@dataclass(frozen=True)
class NoiseSlot:
    """One released gradient sum: its name, element count and fixed-point scale 2^scale_bits."""

    name: str
    count: int
    scale_bits: int

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _KIND.match(self.name):
            raise InvalidArgumentError(f"noise slot name must match {_KIND.pattern}; got {self.name!r}")
        if not isinstance(self.count, int) or not 1 <= self.count <= MAX_NOISE_VALUES:
            raise InvalidArgumentError(f"noise slot {self.name}: count must be in [1, {MAX_NOISE_VALUES}]; "
                                       f"got {self.count!r}")
        if not isinstance(self.scale_bits, int) or not 0 <= self.scale_bits <= MAX_NOISE_SCALE_BITS:
            raise InvalidArgumentError(f"noise slot {self.name}: scale_bits must be in [0, {MAX_NOISE_SCALE_BITS}]; "
                                       f"got {self.scale_bits!r}")


@dataclass(frozen=True)
class NoiseRequest:
    """A party's request for its share of one step's DP noise (``keyservice/noise.py``)."""

    step: int
    slots: Tuple[NoiseSlot, ...]
    noise_multiplier: float
    max_grad_norm: float

    def __post_init__(self) -> None:
        if not isinstance(self.step, int) or self.step < 0:
            raise InvalidArgumentError(f"noise step must be an integer >= 0; got {self.step!r}")
        object.__setattr__(self, "slots", tuple(self.slots))
        names = [s.name for s in self.slots]
        if len(set(names)) != len(names):
            raise InvalidArgumentError("noise slots must have distinct names")
        if sum(s.count for s in self.slots) > MAX_NOISE_VALUES:
            raise InvalidArgumentError(f"a step's noise holds at most {MAX_NOISE_VALUES} values")
        for label, v in (("noise_multiplier", self.noise_multiplier), ("max_grad_norm", self.max_grad_norm)):
            if not isinstance(v, float) or not (0.0 < v < 2.0 ** 20):
                raise InvalidArgumentError(f"noise {label} must be a float in (0, 2^20); got {v!r}")
        for s in self.slots:
            if self.noise_multiplier * self.max_grad_norm * 2.0 ** s.scale_bits > 2.0 ** 56:
                raise InvalidArgumentError(f"noise slot {s.name}: sigma C 2^{s.scale_bits} exceeds 2^56, too wide "
                                           "for the 64-bit ring")

    def to_pb(self) -> common_pb2.NoiseRequest:
        return common_pb2.NoiseRequest(
            step=self.step, noise_multiplier=self.noise_multiplier, max_grad_norm=self.max_grad_norm,
            slots=[common_pb2.NoiseSlot(name=s.name, count=s.count, scale_bits=s.scale_bits) for s in self.slots])

    @classmethod
    def from_pb(cls, pb: common_pb2.NoiseRequest) -> "NoiseRequest":
        return cls(step=int(pb.step), noise_multiplier=float(pb.noise_multiplier),
                   max_grad_norm=float(pb.max_grad_norm),
                   slots=tuple(NoiseSlot(name=str(s.name), count=int(s.count), scale_bits=int(s.scale_bits))
                               for s in pb.slots))
