"""Fast incremental sampling from a trained SampleRNN: one interface, four backends.

    sampler = Sampler(model, batch_size, temperature, seed, prime)   # build, and prime
    for block in sampler.stream(length): ...                         # LongTensor [B, n] blocks

Each tier keeps its recurrent state and steps only when its frame is complete; nothing of
the past is recomputed. What every backend shares is written once: the options and their
checks, the choice of backend (`make_backend`), the random numbers from the seed
(noise.py), priming (the prime run through the model to warm every tier's state) and
block streaming (blocks of whole top frames, so the codes never depend on the block size).
Each backend is a file of its own with the contract of base.py:

- native (CPU, float32, the default there): the whole loop in C (native_backend.py).
- numpy (CPU): the loop of loop.py on NumPy arrays: float64 models, and where no C
  compiler works (numpy_backend.py).
- triton (CUDA, float32 models, the default there): the Triton kernels of kernels.py for
  the sample level, in float32, bfloat16 or float16 weights, CUDA graphs (triton_backend.py).
- torch (CUDA): the loop of loop.py on torch tensors, CUDA graphs (torch_backend.py).

Each gives the same codes for the same seed every time, and greedy decoding
(temperature 0) equals the teacher-forced model's argmax on each.
"""

import math
import warnings
from collections.abc import Iterator

import torch

from .. import choices, native
from ..errors import ConfigError
from ..model import SampleRNN
from ..quantization import silence_code
from .base import Backend, Start
from .noise import RandomNumbers

BACKENDS = choices.words(choices.Backend)
PRECISIONS = choices.words(choices.Weights)  # stored weights: native's and triton's
STORES = {"native": native.PRECISIONS, "triton": ("fp32", "bf16", "fp16")}
PRIME_CHUNK = 1 << 16  # prime samples run through the frame tiers at a time
PERSISTENT_MAX_STREAMS = 8  # the triton backend's persistent kernel: one block of rows


def default_backend(device: torch.device, dtype: torch.dtype) -> str:
    """CUDA: the Triton kernels for float32 models, else torch. CPU: the C kernel for
    float32 models where it builds, else NumPy."""
    if device.type != "cpu":
        from .. import kernels  # imports triton: only where it may be used
        why = kernels.available(device)
        if why is None and dtype == torch.float32:
            return "triton"
        if why is not None:
            warnings.warn(f"{why}: generation on {device} runs the slower torch backend",
                          stacklevel=3)
        return "torch"
    return "native" if dtype == torch.float32 and native.load() is not None else "numpy"


def make_backend(name: str, model: SampleRNN, start: Start, random: RandomNumbers,
                 temperature: float, *, explicit: bool, threads=None, cuda_graph=False,
                 precision="fp32", graph_samples=512, persistent=False) -> Backend:
    """The one place a backend is chosen and built. Where the Triton kernels fail on this
    machine and triton was the default choice, the torch backend takes over with a
    warning; asked for explicitly, the failure is raised."""
    if name == "native":
        from .native_backend import NativeBackend
        return NativeBackend(model, start, random, temperature, threads, precision)
    if name == "numpy":
        from .numpy_backend import NumpyBackend
        return NumpyBackend(model, start, random, temperature)
    if name == "triton":
        from .triton_backend import TritonBackend
        try:
            return TritonBackend(model, start, random, temperature, precision, persistent,
                                 cuda_graph, graph_samples)
        except Exception as e:  # a GPU or driver Triton cannot compile for, no C compiler, ...
            if explicit:
                raise
            last_line = (str(e).strip().splitlines() or [""])[-1]
            warnings.warn(f"the Triton generation kernels do not run here "
                          f"({type(e).__name__}: {last_line}); "
                          "generating with the slower torch backend in float32", stacklevel=4)
    from .torch_backend import TorchBackend
    return TorchBackend(model, start, random, temperature, cuda_graph)


def _check(backend: str, batch_size: int, precision: str, persistent: bool,
           cuda_graph: bool | None, device: torch.device, dtype: torch.dtype) -> None:
    """The options, before anything is built."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend={backend!r}; use one of {BACKENDS}")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r}; use one of {PRECISIONS}")
    if precision not in STORES.get(backend, ("fp32",)):
        where = " and ".join(f"{b} ({', '.join(p for p in s if p != 'fp32')})"
                             for b, s in STORES.items() if precision in s)
        raise ConfigError(f"precision={precision!r} is for the {where} backend, not "
                          f"backend={backend!r}: drop precision= or choose that backend")
    if persistent and backend != "triton":
        raise ConfigError(f"persistent=true is the triton backend's (CUDA); this is "
                          f"backend={backend!r}: drop persistent= or generate on a GPU")
    if persistent and batch_size > PERSISTENT_MAX_STREAMS:
        raise ConfigError(f"persistent=true runs up to {PERSISTENT_MAX_STREAMS} streams at "
                          f"once, not {batch_size}: give batch_size <= "
                          f"{PERSISTENT_MAX_STREAMS} or drop persistent=")
    if cuda_graph and not (backend in ("torch", "triton") and device.type == "cuda"):
        raise ConfigError("cuda_graph=True needs backend='torch' or 'triton' on a CUDA device")


class Sampler:
    """Incremental generator of codes for `batch_size` parallel streams.

    sampler = Sampler(model, batch_size, temperature, seed, prime)
    for block in sampler.stream(length): ...   # LongTensor [B, n] blocks of new codes

    prime: codes [1 or B, P] run through the model before the first new code (one row
        primes every stream).
    backend: "native", "numpy", "torch" or "triton" (default: native on the CPU,
        triton on CUDA); `engine` is the backend object, `backend` its name.
    threads: CPU threads for the native backend, each taking a share of the streams
        (default: every core this process may use).
    cuda_graph: replay recorded top frames instead of launching each kernel (default: on
        CUDA): one frame per replay for torch, `graph_samples` for triton.
    precision: how the weights are stored, float32 sums and logits either way: the native
        backend's "fp32", "bf16" or "int8" (one scale per output column), the triton
        backend's "fp32", "bf16" or "fp16" (for cards without fast bf16, e.g. T4 and V100).
    persistent: the triton backend's sample level as one kernel per bottom frame, with a
        grid-wide barrier between layers, instead of four kernels per sample (up to 8
        streams).
    label: a conditioned model's label per stream, LongTensor [B] (label indices) or float
        [B, n_labels] (the weights of a mix of label embeddings); None for a model without.
    features: a model with features (local conditioning): each stream's normalised feature
        frames, [B, F + 2 * radius, n_features] (radius silence frames before and after:
        features.for_model); F * hop samples at most can be generated. The stack runs once
        here; the steps then add its vector for the feature frame they are in.
    """

    def __init__(self, model: SampleRNN, batch_size: int, temperature: float = 1.0,
                 seed: int | None = None, prime: torch.Tensor | None = None,
                 backend: str | None = None, threads: int | None = None,
                 cuda_graph: bool | None = None, precision: str = "fp32",
                 graph_samples: int = 512, persistent: bool = False,
                 label: torch.Tensor | None = None, features: torch.Tensor | None = None):
        if temperature < 0:
            raise ConfigError(f"temperature={temperature} must be >= 0 (0 means greedy)")
        parameter = next(model.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype
        name = backend or default_backend(self.device, self.dtype)
        _check(name, batch_size, precision, persistent, cuda_graph, self.device, self.dtype)
        self.model, self.batch_size = model, batch_size
        self.temperature, self.lookback = float(temperature), model.lookback
        random = RandomNumbers(seed, self.device, batch_size, model.config.q_levels,
                               self.lookback)
        if features is not None and prime is not None and prime.shape[-1]:
            raise ConfigError("prime= with features= is not supported: the features say what "
                              "to generate from the first sample; drop prime=")
        start = self._start(prime, label)
        self._features(features, start)
        if self.per_frame is not None:  # a replay within one feature frame
            graph_samples = min(graph_samples, model.config.feature_hop)
        cuda_graph = self.device.type == "cuda" if cuda_graph is None else cuda_graph
        self.engine = make_backend(name, model, start, random, temperature,
                                   explicit=backend is not None, threads=threads,
                                   cuda_graph=cuda_graph, precision=precision,
                                   graph_samples=graph_samples, persistent=persistent)
        self.history = self.engine.to_array(start.codes.t().contiguous())  # [lookback, B]
        self.steps = 0  # codes generated per stream so far

    @property
    def backend(self) -> str:
        return self.engine.name

    @property
    def precision(self) -> str:
        return self.engine.precision

    @property
    def persistent(self) -> bool:
        return self.engine.persistent

    @property
    def state(self) -> list:
        """Per tier, its recurrent state arrays (h per layer, then c per layer for LSTMs)."""
        return self.engine.state

    def _features(self, features, start: Start) -> None:
        """self.per_frame: per place, what the features add per feature frame [B, F, width]
        (None without features); places they enter get arrays in `start` even without a label."""
        cfg, b = self.model.config, self.batch_size
        self.per_frame = self.base = None
        if features is None and not cfg.has_features:
            return
        if features is None:
            raise ConfigError(f"this model is conditioned on {cfg.n_features}-band features; "
                              "give each stream's feature frames (generate: features=<audio "
                              "file or .npy>)")
        if not cfg.has_features:
            raise ConfigError("this model was trained without features; drop features=")
        features = features.to(self.device, self.dtype)
        if features.dim() != 3 or features.shape[0] != b or features.shape[2] != cfg.n_features:
            raise ConfigError(f"features of shape {tuple(features.shape)}; give [{b} streams, "
                              f"frames + {2 * cfg.feature_radius}, {cfg.n_features} bands]")
        with torch.no_grad():
            self.per_frame = self.model.feature_vectors(features)
        self.n_feature_frames = next(v for v in self.per_frame if v is not None).shape[1]
        self.base = list(start.labels)
        start.labels = [lab if vec is None else
                        (lab.clone() if lab is not None else vec.new_zeros(b, vec.shape[-1]))
                        for lab, vec in zip(self.base, self.per_frame)]

    def _condition(self, frame: int) -> None:
        """What the labels and feature frame `frame` add, into the backend's arrays."""
        self.engine.condition([None if vec is None else
                               vec[:, frame] + (lab if lab is not None else 0)
                               for lab, vec in zip(self.base, self.per_frame)])

    def _run(self, hist, n: int) -> None:
        """The next n steps (whole top frames) into hist, one feature frame at a time when
        the model has features."""
        if self.per_frame is None:
            self.engine.run(hist, self.steps, n)
            return
        lb, hop, t = self.lookback, self.model.config.feature_hop, 0
        while t < n:
            step = self.steps + t
            frame, m = step // hop, min(n - t, hop - step % hop)
            self._condition(frame)
            self.engine.run(hist[t:t + lb + m], step, m)
            t += m

    def _start(self, prime, label) -> Start:
        """Silence, and the prime run through the frame tiers to warm them (each stream's
        prime under its own label); what the labels add at each place."""
        cfg, b, lb = self.model.config, self.batch_size, self.lookback
        silence = silence_code(cfg.q_type, cfg.q_levels)
        if label is not None:
            label = label.to(self.device)
            if label.shape[0] != b:
                raise ConfigError(f"{label.shape[0]} labels for {b} streams; give one per stream")
        with torch.no_grad():
            labels = self.model.label_vectors(label)
        if prime is None or prime.shape[-1] == 0:
            codes = torch.full((b, lb), silence, dtype=torch.long, device=self.device)
            return Start(codes, [h.to(self.dtype) for h in self.model.initial_hidden(b)], labels)
        prime = prime.to(self.device).long()
        if prime.dim() == 1:
            prime = prime[None]
        if prime.shape[0] not in (1, b):
            raise ConfigError(f"prime has {prime.shape[0]} rows; give 1 or num_samples={b}")
        if label is not None and prime.shape[0] == 1 and b > 1:  # one prime, heard per label
            prime = prime.expand(b, -1)
        pad = (-prime.shape[1]) % lb
        start = torch.full((prime.shape[0], lb + pad), silence, dtype=torch.long, device=self.device)
        codes = torch.cat([start, prime], dim=1)  # [1 or B, lb + whole frames]
        hidden, n = None, codes.shape[1] - lb
        step = max(lb, PRIME_CHUNK // lb * lb)  # in chunks: constant memory for any prime
        with torch.no_grad():  # one row for a shared prime, whose state every stream starts from
            for a in range(0, n, step):
                hidden = self.model.advance(codes[:, a:a + lb + min(step, n - a)], hidden,
                                            label)
        return Start(codes[:, -lb:].expand(b, -1), [h.expand(-1, b, -1) for h in hidden],
                     labels)

    def stream(self, length: int, block_size: int = 8192) -> Iterator[torch.Tensor]:
        """Yield LongTensor blocks [B, n] of new codes until `length` codes per stream.

        Blocks are multiples of the top frame size, so memory stays constant
        however long the output; the codes do not depend on `block_size`.
        """
        lb, engine = self.lookback, self.engine
        block_size = max(lb, block_size // lb * lb)
        done = 0
        if self.per_frame is not None:
            most = self.n_feature_frames * self.model.config.feature_hop - self.steps
            if length > most:
                raise ConfigError(f"{length} samples asked for, the features describe "
                                  f"{most} more; give a length within them")
        while done < length:
            n = min(block_size, length - done)
            n_frames = math.ceil(n / lb) * lb
            hist = engine.history(lb + n_frames)
            hist[:lb] = self.history
            self._run(hist, n_frames)
            engine.check()
            self.history = engine.copy(hist[n_frames:])
            self.steps += n_frames
            done += n
            yield engine.codes(hist[lb:lb + n])
            if n_frames != n:  # the state ran past the last whole frame: the stream ends here
                break


def generate(model: SampleRNN, num_samples: int, length: int, temperature: float = 1.0,
             prime: torch.Tensor | None = None, seed: int | None = None,
             backend: str | None = None, threads: int | None = None,
             precision: str = "fp32", persistent: bool = False,
             label: torch.Tensor | None = None,
             features: torch.Tensor | None = None) -> torch.Tensor:
    """Sample `num_samples` streams of `length` new codes -> LongTensor [num_samples, length].

    Starts from the model's initial state and `lookback` samples of silence, or
    after `prime` (codes [1 or num_samples, P]) run through the whole model.
    temperature=0 is greedy (argmax). The same seed gives the same codes. label: a
    conditioned model's label per stream; features: the feature frames of a model with
    features (see Sampler).
    """
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            sampler = Sampler(model, num_samples, temperature, seed, prime, backend, threads,
                              precision=precision, persistent=persistent, label=label,
                              features=features)
            blocks = list(sampler.stream(length))
    finally:
        model.train(was_training)
    return torch.cat(blocks, dim=1).to(next(model.parameters()).device)
