"""A party's client of K's DP noise (``FetchNoise``, ``keyservice/noise.py``): wire code only, so
the party's protocols reach it without importing the key service's own package."""

from __future__ import annotations

import numpy as np

from ppml_hybrid.rpc import keyservice_pb2_grpc as pb_grpc
from ppml_hybrid.rpc.client import ServiceChannel
from ppml_hybrid.rpc.errors import InvalidArgumentError
from ppml_hybrid.rpc.messages import NoiseRequest, int64_from_pb


class NoiseClient(ServiceChannel):
    """Party P_j's channel to K for noise shares (its client certificate decides whose share)."""

    service_name = "key service"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._stub = pb_grpc.KeyServiceStub(self._channel)

    def fetch_noise(self, *, request: NoiseRequest) -> np.ndarray:
        """This party's additive share (int64, the slots concatenated) of the step's DP noise."""
        r = self.call(self._stub.FetchNoise, request.to_pb())
        share = int64_from_pb(r.share)
        if int(r.step) != request.step or share.shape != (sum(s.count for s in request.slots),):
            raise InvalidArgumentError(f"K answered step {int(r.step)} with {share.shape} values for a request of "
                                       f"step {request.step}")
        return share
