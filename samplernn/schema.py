"""The typed shape of every command's config, registered in Hydra's ConfigStore.

Each primary config (configs/train.yaml, generate.yaml, evaluate.yaml, prepare.yaml,
benchmark.yaml) starts its defaults list with its schema here, so composition checks every
key, type and choice: a misspelt key, `train.max_steps=abc` or `logger.mode=offlin` fails
with Hydra's message before anything runs (choices are choices.py's words). Values a type
cannot express (ranges; device, which may be cuda:<index>) are checked when a command
starts, with one line naming the key (runconfig.check_config and each task's own checks).
Hydra composes, Python constructs: these dataclasses only describe; the model's group
is `SampleRNNConfig` itself.
"""

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore

from .choices import (Backend, Clip, FeatureAblation, ListenAction, ListenMode, LoggerMode,
                      Normalize, Order, Precision, Protocol, Split, Weights)
from .modelconfig import SampleRNNConfig


@dataclass
class DatasetConfig:
    name: str = "default"
    path: str = "data/default"
    segment_seconds: float = 8.0
    num_workers: int = 1
    builtin: bool = False


@dataclass
class OptimConfig:
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    clip: Clip = Clip.value
    clip_value: float = 1.0
    warmup_steps: int = 0


@dataclass
class LoggerConfig:
    mode: LoggerMode = LoggerMode.offline
    project: str = "samplernn"
    entity: Optional[str] = None
    tags: list[str] = field(default_factory=list)
    system_metrics: bool = True
    console: str = "auto"


@dataclass
class TrainLoopConfig:
    max_steps: int = 3000
    max_minutes: Optional[float] = None
    batch_size: int = 16
    seq_len: int = 512
    log_every: int = 25
    order: Order = Order.epoch
    max_nonfinite_steps: int = 10


@dataclass
class EvalConfig:
    every: int = 500
    batch_size: int = 32
    seq_len: int = 4096
    protocol: Protocol = Protocol.files
    split: Split = Split.valid
    test: bool = True
    n_samples: int = 2
    sample_seconds: float = 2.0
    temperature: float = 1.0


@dataclass
class TrainConfig:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: SampleRNNConfig = field(default_factory=SampleRNNConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = 1
    device: str = "auto"
    threads: Optional[int] = 1
    precision: Precision = Precision.fp32
    compile: bool = False
    resume: Any = "auto"
    experiment_name: Optional[str] = None
    group: Optional[str] = None
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


@dataclass
class DatasetPathConfig:
    path: Optional[str] = None


@dataclass
class EvaluateConfig:
    checkpoint: str = "???"
    split: Split = Split.test
    dataset: DatasetPathConfig = field(default_factory=DatasetPathConfig)
    seq_len: Optional[int] = None
    batch_size: int = 32
    device: str = "auto"
    threads: Optional[int] = 1
    precision: Precision = Precision.fp32
    weights: Weights = Weights.fp32
    protocol: Optional[Protocol] = None
    out: Optional[str] = None
    label: Optional[str] = None
    features: Optional[FeatureAblation] = None


@dataclass
class GenerateConfig:
    checkpoint: str = "???"
    num_samples: int = 4
    seconds: float = 10.0
    temperature: Any = 1.0  # a number, or a list of them
    prime: Optional[str] = None
    prime_seconds: Optional[float] = 2.0
    seed: int = 1
    batch_size: int = 16
    block_seconds: float = 1.0
    out_dir: Optional[str] = None
    device: str = "auto"
    backend: Optional[Backend] = None
    precision: Weights = Weights.fp32
    graph_samples: int = 512
    persistent: bool = False
    threads: Optional[int] = None
    label: Any = None  # a label's name, or a list of them
    label_mix: Any = None  # [a:0.7,b:0.3] (or the string "a:0.7,b:0.3")
    features: Any = None  # an audio file, .npy or .npz, or a list of them


@dataclass
class PrepareConfig:
    source: str = "???"
    name: str = "???"
    out_dir: Optional[str] = None
    sample_rate: int = 16000
    normalize: Normalize = Normalize.none
    chunk_seconds: float = 8.0
    valid_fraction: float = 0.05
    test_fraction: float = 0.05
    seed: int = 0
    min_seconds: float = 0.5
    silence_db: float = -60.0
    overwrite: bool = False
    num_workers: Optional[int] = None
    labels: Optional[str] = None
    features: Optional[str] = None
    mel_bands: int = 80
    mel_hop: int = 160
    mel_win: int = 640
    mel_n_fft: int = 1024


@dataclass
class BenchmarkConfig:
    model: SampleRNNConfig = field(default_factory=SampleRNNConfig)
    preset: Optional[str] = None
    device: str = "cpu"
    threads: Optional[int] = 1
    precision: Weights = Weights.fp32
    compile: bool = False
    batch_sizes: list[int] = field(default_factory=lambda: [1, 16])
    train_seq_len: int = 512
    train_steps: int = 5
    warmup_steps: int = 2
    gen_seconds: float = 1.0
    repeats: int = 5
    backend: Optional[Backend] = None
    cuda_graph: Optional[bool] = None
    graph_samples: int = 512
    persistent: bool = False
    sample_rate: int = 16000
    seed: int = 0
    out: Optional[str] = None


@dataclass
class ListenConfig:
    action: ListenAction = "???"
    test: str = "???"
    conditions: Any = None  # [paths], or {name: path}
    real: Any = False  # true: the first checkpoint's data; or a prepared dataset folder
    mode: ListenMode = ListenMode.ab
    n_items: int = 8
    items_per_rater: Optional[int] = None
    seconds: float = 4.0
    temperature: Any = 1.0  # a number, or {condition: number}
    seed: int = 1
    allow_tie: bool = False
    anchor_hz: float = 3500.0
    loudness_lufs: float = -23.0
    device: str = "cpu"
    overwrite: bool = False
    host: str = "127.0.0.1"
    port: int = 8765
    json: bool = False
    wandb: bool = True


SCHEMAS = {"train": TrainConfig, "evaluate": EvaluateConfig, "generate": GenerateConfig,
           "prepare": PrepareConfig, "benchmark": BenchmarkConfig, "listen": ListenConfig}


def register() -> None:
    """Store every schema as `<command>_schema` (the first default of configs/<command>.yaml)."""
    store = ConfigStore.instance()
    for command, schema in SCHEMAS.items():
        store.store(name=f"{command}_schema", node=schema)


register()
