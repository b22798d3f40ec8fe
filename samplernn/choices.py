"""The words a config value may be, defined once: the configs' schemas use them (Hydra then
refuses any other word when it composes: `logger.mode=offlin` fails there, naming the
allowed ones) and so does the code that reads the values. Torch-free: the commands' --help
imports it.

A member is equal to, hashes and prints as its word, so code compares it with plain strings;
`words(Choice)` is the tuple of words.
"""

from enum import Enum

from .errors import ConfigError


class Choice(str, Enum):
    """One of a fixed set of words."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @classmethod
    def of(cls, name: str, value) -> "Choice":
        """`value` as a member; ConfigError naming the key `name` and the allowed words."""
        try:
            return cls(value)
        except ValueError:
            raise ConfigError(f"{name}={value!r} is unknown; use one of "
                              f"{', '.join(words(cls))}") from None


def _choice(name: str, *members: str) -> type[Choice]:
    return Choice(name, {m: m for m in members})


def words(choice: type[Choice]) -> tuple[str, ...]:
    return tuple(m.value for m in choice)


# the model (modelconfig.py)
RnnType = _choice("RnnType", "gru", "lstm")
QType = _choice("QType", "linear", "mu-law")
FrameInput = _choice("FrameInput", "codes", "audio")
TopInput = _choice("TopInput", "direct", "projected")
LabelInto = _choice("LabelInto", "top", "all")  # where a label enters the model
Init = _choice("Init", "authors", "pytorch")
# training, evaluation, generation, preparation
Precision = _choice("Precision", "fp32", "bf16", "fp16")  # autocast
# generation's stored weights: native (CPU) fp32 | bf16 | int8, triton (CUDA) fp32 | bf16 | fp16
Weights = _choice("Weights", "fp32", "bf16", "fp16", "int8")
Order = _choice("Order", "epoch", "random")
Protocol = _choice("Protocol", "files", "paper")
Split = _choice("Split", "train", "valid", "test")
# evaluate features=: a vocoder scored with every frame the train split's mean (its features
# saying nothing): how much it leans on them
FeatureAblation = _choice("FeatureAblation", "mean")
Clip = _choice("Clip", "value", "norm", "none")
LoggerMode = _choice("LoggerMode", "offline", "online", "disabled")
Normalize = _choice("Normalize", "none", "peak", "minmax")
Backend = _choice("Backend", "native", "numpy", "torch", "triton")
# listening tests (listen/)
ListenAction = _choice("ListenAction", "build", "serve", "results")
ListenMode = _choice("ListenMode", "ab", "mushra")
