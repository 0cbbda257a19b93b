"""Typed run configuration.

Hydra composes YAML from ``conf/``; :func:`parse_run_config` turns the result into frozen
dataclasses, checking every key and type and naming the full key (``dp.max_grad_norm``) in
any error. Code below the pipeline only ever sees these dataclasses, never a DictConfig.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from ppml_hybrid.errors import ConfigError


# The fixed-point encoding every role shares: CrypTen's fraction bits (x is stored as
# round(x * 2^16) in Z_2^64), which the conversions and the exact clip assume too. Defined once.
FIXED_POINT_BITS = 16


@dataclass(frozen=True)
class DemoConfig:
    """Shape of the built-in demo set (generated offline on first use; ppml_hybrid.data.demo).

    Defaults: 400 subjects x 12 slices = 4,800 slices, about 3,360 in train at the default
    fractions, enough for DP-SGD to learn; generation takes seconds on 2 cores.
    """

    n_subjects: int = 400
    slices_per_subject: int = 12
    # Even; lesions are drawn on a stored_size/2 grid so data.image_size = stored_size/2 sees them exactly.
    stored_size: int = 64
    lesion_fraction: float = 0.5


@dataclass(frozen=True)
class DataConfig:
    name: str = "demo"
    # Folder the labels CSV's paths are relative to. For demo: None means the user cache.
    root: Optional[str] = None
    labels: Optional[str] = None
    image_size: int = 32
    # 3D inputs: 2D slices are taken along this axis, from this fractional range [start, stop).
    slice_axis: int = 2
    slice_range: Tuple[float, float] = (0.0, 1.0)
    slice_step: int = 1
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    demo: DemoConfig = field(default_factory=DemoConfig)


@dataclass(frozen=True)
class BlockConfig:
    """One block of the model: conv + activation + pooling, or dense + activation."""

    type: str
    out: int
    activation: str = "none"
    kernel_size: int = 3
    padding: int = 1
    stride: int = 1
    pool: str = "none"
    pool_size: int = 2


@dataclass(frozen=True)
class PolyConfig:
    """a*x^2 + b*x activation: initial coefficients and whether they train."""

    a: float = 0.05
    b: float = 1.0
    trainable: bool = True


@dataclass(frozen=True)
class ModelConfig:
    name: str
    blocks: Tuple[BlockConfig, ...]
    in_channels: int = 1
    num_classes: int = 2
    poly: PolyConfig = field(default_factory=PolyConfig)


@dataclass(frozen=True)
class DPConfig:
    enabled: bool = True
    noise_multiplier: Optional[float] = 1.0
    # When set, the noise multiplier is calibrated to reach this epsilon after all steps.
    target_epsilon: Optional[float] = None
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    accountant: str = "rdp"
    # encrypted modes: std (rows) of the Gaussian noise on each party's released batch size
    # (privacy/batch_count.py); the accountant counts it
    count_noise: float = 4.0
    # encrypted modes: who draws the gradient noise. "enclave": the key service, one exact
    # discrete Gaussian per step, secret-shared to the parties (the accountant's sigma is the
    # noise released). "parties": each party adds N(0, sigma^2 C^2 / (n-1)) itself, so the
    # released noise is sqrt(n/(n-1)) sigma C while only sigma is credited (no enclave trusted
    # with noise). keyservice/noise.py, docs/privacy.md.
    noise_source: str = "enclave"
    # stop before a release would take epsilon beyond this (null: no cap). In encrypted runs each
    # party enforces it from its own privacy ledger (training/ledger.py), the coordinator stops there
    max_epsilon: Optional[float] = None


NOISE_SOURCES = ("enclave", "parties")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    max_steps: Optional[int] = None
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.05
    lr_reference_batch: Optional[int] = None
    momentum: float = 0.9
    lr_schedule: str = "cosine"
    lr_warmup: float = 0.0  # fraction of the run's steps with a linear learning-rate warm-up
    num_threads: int = 1
    progress: bool = True
    # A run folder whose checkpoint.pt this run continues (same settings; training/checkpoint.py).
    resume: Optional[str] = None


@dataclass(frozen=True)
class SMPCConfig:
    """MPC parties and their rendezvous (ppml_hybrid.smpc_stage.rendezvous).

    On one machine the orchestrator starts every party and the dealer (``rank`` null). Across
    machines each host runs one role with the same section and its own ``rank``: 0..parties-1
    for the parties, ``parties`` for the dealer; rank 0 listens on master_addr:master_port.
    ``master_port: 0`` lets the local orchestrator pick a free port.
    """

    parties: int = 2
    backend: str = "gloo"
    master_addr: str = "127.0.0.1"
    master_port: int = 0
    # A run stops with an error naming the party when no party progresses for this long.
    timeout_s: float = 300.0
    rank: Optional[int] = None


@dataclass(frozen=True)
class HEConfig:
    name: str = "ckks_128"
    security_level: str = "HEStd_128_classic"
    # 0: chosen by OpenFHE from the security level and depth.
    ring_dim: int = 0
    scale_bits: int = 50
    first_mod_bits: int = 60
    insecure: bool = False
    # HE->SS: each round's values have a public bound |v| < 2^V (protocols/value_bounds.py) and
    # its mask R is uniform real in [-2^(V+H), 2^(V+H)): H bits of statistical hiding per slot.
    # None: 38. K decrypts at most 2^(H-10) slots in its lifetime (union over them <= 2^-10).
    mask_hiding_bits: Optional[int] = None
    # V + H never exceeds this (modulus room: one spare level at scale 2^50 holds |v + R| < 2^58)
    max_mask_bits: int = 56
    # each sample's split activations enter HE with L2 norm <= this (an exact check in MPC)
    split_norm_bound: float = 16.0
    # delta_z = softmax(z) - y enters HE clamped to |delta_z| < 2^delta_clamp_bits
    delta_clamp_bits: int = 1
    # steps whose ciphertexts the evaluator keeps between forward and backward (oldest dropped)
    max_held_steps: int = 2
    # OpenMP threads of E's OpenFHE (E computes while the parties wait for it)
    evaluator_threads: int = 1
    # threads of E that encode the weights' plaintexts ahead of the thread that multiplies
    # (he_stage/linear.py); 0: encode inline
    encoder_threads: int = 2


@dataclass(frozen=True)
class NetworkConfig:
    name: str = "lan"
    bandwidth_bps: float = 10e9
    rtt_s: float = 0.2e-3


@dataclass(frozen=True)
class KeyServiceConfig:
    address: str = "127.0.0.1:0"
    # requests one caller may make naming one round (accepted or refused); then RESOURCE_EXHAUSTED
    round_quota: int = 4
    # rounds announced but not yet decrypted, at most (announcing further ahead is refused)
    max_open_rounds: int = 8
    # how long a share fetch waits for its round to be decrypted
    share_wait_s: float = 60.0
    # how long the orchestrator waits for K (key generation) and E to report ready
    startup_timeout_s: float = 600.0
    # attestation producer: "development" (local signer, marked development) or "nsm" (inside a Nitro Enclave)
    attestation: str = "development"
    # PCRs a client requires, "index:hex" (48-byte SHA-384 values), e.g. from enclave/pcrs.json
    expected_pcrs: Tuple[str, ...] = ()
    # (no key here accepts development attestation: that is each client host's own command-line
    # choice, made by the one-machine launcher only for the K it started itself on loopback)
    # clients accept debug-mode enclaves (PCR0/1/2 all zero) only with this opt-in
    allow_debug_enclave: bool = False
    # oldest attestation document a client accepts
    attestation_max_age_s: float = 300.0
    # where K keeps its KMS-sealed secret key: a file, or the parent's sealed-key store
    # (vsock:CID:PORT, unix:PATH; keyservice/sealing/store.py); "" = fresh keys at every start
    sealed_key_path: str = ""
    # KMS key (ARN or alias) that wraps the sealing data key
    kms_key_id: str = ""
    # region of that KMS key (the client talks to kms.<region>.amazonaws.com)
    kms_region: str = ""
    # how K reaches KMS: "" direct TCP to kms.<region>.amazonaws.com:443; "vsock:3:8000" (the parent's
    # vsock-proxy, inside an enclave); "tcp:HOST:PORT" (a relay). TLS is always end to end with K.
    kms_endpoint: str = ""
    # PEM CA bundle that verifies KMS's certificate ("" = the default trust store)
    kms_ca_bundle: str = ""
    # timeout of one KMS call (connect + answer)
    kms_timeout_s: float = 30.0


@dataclass(frozen=True)
class RunConfig:
    mode: str
    split_layer: int
    seed: int
    data: DataConfig
    model: ModelConfig
    dp: DPConfig
    train: TrainConfig
    smpc: SMPCConfig
    he: HEConfig
    network: NetworkConfig
    keyservice: KeyServiceConfig
    output_dir: Optional[str] = None


MODES = ("hybrid", "plaintext")


def parse_run_config(raw: Mapping[str, Any]) -> RunConfig:
    """Build and check a :class:`RunConfig` from a plain (resolved) mapping."""
    cfg = from_mapping(RunConfig, raw, "")
    if cfg.mode not in MODES:
        raise ConfigError(f"mode={cfg.mode!r} is not one of {', '.join(MODES)}")
    _check_ranges(cfg)
    return cfg


def _check_ranges(cfg: RunConfig) -> None:
    checks = [
        ("data.image_size", cfg.data.image_size >= 4, "must be at least 4"),
        ("data.val_fraction", 0 <= cfg.data.val_fraction < 1, "must be in [0, 1)"),
        ("data.test_fraction", 0 <= cfg.data.test_fraction < 1, "must be in [0, 1)"),
        (
            "data.val_fraction + data.test_fraction",
            cfg.data.val_fraction + cfg.data.test_fraction < 1,
            "must leave rows for training (sum < 1)",
        ),
        (
            "data.slice_range",
            0.0 <= cfg.data.slice_range[0] < cfg.data.slice_range[1] <= 1.0,
            "must be [start, stop) with 0 <= start < stop <= 1 (fractions of the axis)",
        ),
        ("data.slice_step", cfg.data.slice_step >= 1, "must be at least 1"),
        ("data.slice_axis", cfg.data.slice_axis in (0, 1, 2), "must be 0, 1 or 2 (the axis of a 3D volume)"),
        ("train.batch_size", cfg.train.batch_size >= 1, "must be at least 1"),
        ("train.epochs", cfg.train.epochs >= 1, "must be at least 1"),
        ("train.max_steps", cfg.train.max_steps is None or cfg.train.max_steps >= 1, "must be at least 1 or null"),
        ("train.lr", cfg.train.lr > 0, "must be positive"),
        ("train.lr_reference_batch", cfg.train.lr_reference_batch is None or cfg.train.lr_reference_batch >= 1,
         "must be at least 1 or null"),
        ("train.lr_warmup", 0.0 <= cfg.train.lr_warmup < 1.0, "must be in [0, 1) (a fraction of the run's steps)"),
        ("train.num_threads", cfg.train.num_threads >= 1, "must be at least 1"),
        ("dp.max_grad_norm", cfg.dp.max_grad_norm > 0, "must be positive"),
        ("dp.delta", 0 < cfg.dp.delta < 1, "must be in (0, 1)"),
        ("dp.accountant", cfg.dp.accountant in ("rdp", "prv"), "must be 'rdp' or 'prv'"),
        ("dp.max_epsilon", cfg.dp.max_epsilon is None or cfg.dp.max_epsilon > 0, "must be positive or null"),
        ("dp.noise_source", cfg.dp.noise_source in NOISE_SOURCES, f"must be one of {', '.join(NOISE_SOURCES)}"),
        ("dp.count_noise", cfg.dp.count_noise > 0, "must be positive (each party's row count is released with it)"),
        (
            "dp.noise_multiplier",
            cfg.dp.noise_multiplier is None or cfg.dp.noise_multiplier >= 0,
            "must be non-negative",
        ),
        (
            "dp.target_epsilon",
            cfg.dp.target_epsilon is None or cfg.dp.target_epsilon > 0,
            "must be positive or null",
        ),
        ("smpc.parties", cfg.smpc.parties in (2, 3), "must be 2 or 3"),
        ("he.evaluator_threads", cfg.he.evaluator_threads >= 1, "must be at least 1"),
        ("he.encoder_threads", 0 <= cfg.he.encoder_threads <= 16, "must be in [0, 16] (0: E encodes inline)"),
        (
            "he.mask_hiding_bits",
            cfg.he.mask_hiding_bits is None or 32 <= cfg.he.mask_hiding_bits <= 50,
            "must be null (derived) or in [32, 50] (at least 32 bits of statistical hiding per slot)",
        ),
        ("he.max_mask_bits", 40 <= cfg.he.max_mask_bits <= 57, "must be in [40, 57] (modulus room of one spare level)"),
        ("he.split_norm_bound", 0 < cfg.he.split_norm_bound <= 2.0 ** 12, "must be in (0, 4096]"),
        ("he.delta_clamp_bits", 1 <= cfg.he.delta_clamp_bits <= 8, "must be in [1, 8]"),
    ]
    for key, ok, why in checks:
        if not ok:
            got = _value_of(cfg, key)
            raise ConfigError(f"{key} {why}; got {got if '+' in key else repr(got)}")
    if cfg.dp.enabled and cfg.dp.noise_multiplier is None and cfg.dp.target_epsilon is None:
        raise ConfigError("dp needs dp.noise_multiplier or dp.target_epsilon (or dp=off)")


def _value_of(cfg: Any, dotted: str) -> Any:
    if "+" in dotted:  # a sum of keys: show each value and the sum
        parts = [p.strip() for p in dotted.split("+")]
        values = [_value_of(cfg, p) for p in parts]
        return f"{' + '.join(repr(v) for v in values)} = {sum(values):g}"
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


# --------------------------------------------------------------------------- builder


def from_mapping(cls: type, raw: Any, path: str) -> Any:
    """Build dataclass ``cls`` from ``raw``, recursively, naming ``path.key`` in errors."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path or 'config'} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        where = path or "top level"
        raise ConfigError(
            f"unknown config key(s) {', '.join(_join(path, k) for k in unknown)} at {where}; "
            f"known: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, f in fields.items():
        key = _join(path, name)
        if name in raw:
            kwargs[name] = _convert(hints[name], raw[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing config key {key}")
    return cls(**kwargs)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _convert(inner[0], value, key)
        raise ConfigError(f"{key}: unsupported union type {tp}")  # pragma: no cover
    if value is None:
        raise ConfigError(f"{key} must not be null")
    if dataclasses.is_dataclass(tp):
        return from_mapping(tp, value, key)
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        items = list(value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{key}[{i}]") for i, v in enumerate(items))
        if len(items) != len(args):
            raise ConfigError(f"{key} must have {len(args)} items, got {len(items)}")
        return tuple(_convert(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, items)))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads "1e-5" as a string
            except ValueError:
                pass
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {tp}")  # pragma: no cover


# Keys that may differ between sites of one run (where each host keeps its data and writes
# its outputs); everything else must be identical at every site.
SITE_LOCAL_KEYS = ("output_dir",)
SITE_LOCAL_DATA_KEYS = ("root", "labels")


def digest_fields(cfg: RunConfig) -> Dict[str, Any]:
    """The config every site of one run must agree on, as plain JSON values: everything but
    site-local paths, the party's rank, ``train.resume`` (where the coordinator finds its
    checkpoint: a resumed run is the same run), and each process's own display and thread
    settings (``train.progress``, ``train.num_threads``)."""
    import json

    raw = dataclasses.asdict(cfg)
    for k in SITE_LOCAL_KEYS:
        raw.pop(k, None)
    for k in SITE_LOCAL_DATA_KEYS:
        raw["data"].pop(k, None)
    raw["smpc"].pop("rank", None)
    for k in ("resume", "progress", "num_threads"):
        raw["train"].pop(k, None)
    return json.loads(json.dumps(raw, sort_keys=True, default=str))


def run_digest(cfg: RunConfig) -> str:
    """SHA-256 of :func:`digest_fields` (model, split, DP, HE, MPC, training schedule and seed,
    data geometry). The MPC links compare it before the first message
    (:mod:`ppml_hybrid.smpc_stage.links`)."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(digest_fields(cfg), sort_keys=True).encode()).hexdigest()
