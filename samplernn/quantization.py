"""Quantization between float audio and integer codes, and the NLL unit.

`wav` is float audio in [-1, 1]; `codes` are integers in [0, q_levels).
Values outside [-1, 1] are clipped (documented, never an error): a prepared
dataset is already in range, and clipping is what a 16-bit file would do.
No normalization happens here: 0.0 always maps to the middle code
`q_levels // 2`, so silence stays silence.
"""

import math

import torch
import torch.nn.functional as F
import torchaudio.functional as AF

from .choices import QType, words
from .errors import ConfigError

Q_TYPES = words(QType)


def _check(q_type: str, q_levels: int) -> None:
    if q_type not in Q_TYPES:
        raise ConfigError(f"q_type={q_type!r} is unknown; use one of {Q_TYPES}")
    if q_levels < 2:
        raise ConfigError(f"q_levels={q_levels} must be at least 2")


def quantize(wav: torch.Tensor, q_type: str = "linear", q_levels: int = 256) -> torch.Tensor:
    """Float audio [...] in [-1, 1] -> LongTensor codes [...] in [0, q_levels).

    Linear: uniform bins of width 2 / q_levels over [-1, 1], with 0.0 on the
    middle code. Mu-law: torchaudio's mu-law companding with mu = q_levels - 1.
    """
    _check(q_type, q_levels)
    wav = wav.float().clamp(-1.0, 1.0)
    if q_type == "mu-law":
        return AF.mu_law_encoding(wav, q_levels).long()
    codes = torch.floor((wav + 1.0) * (q_levels / 2.0))
    return codes.clamp_(0, q_levels - 1).long()


def dequantize(codes: torch.Tensor, q_type: str = "linear", q_levels: int = 256) -> torch.Tensor:
    """LongTensor codes [...] in [0, q_levels) -> float audio [...] in [-1, 1].

    The middle code maps back to 0.0: exactly for linear, within 1e-4 for
    mu-law (whose odd mu = q_levels - 1 puts no bin centre on 0 itself).
    """
    _check(q_type, q_levels)
    if q_type == "mu-law":
        return AF.mu_law_decoding(codes.long(), q_levels)
    return codes.float() * (2.0 / q_levels) - 1.0


def silence_code(q_type: str = "linear", q_levels: int = 256) -> int:
    """The code of 0.0: the start state for training segments and generation."""
    return int(quantize(torch.zeros(()), q_type, q_levels))


def nll_bits(logits: torch.Tensor, codes: torch.Tensor, mask: torch.Tensor | None = None,
             reduction: str = "mean") -> torch.Tensor:
    """Negative log-likelihood in bits per audio sample.

    logits [..., q_levels], codes [...] (the targets), mask [...] bool (True = counted).
    reduction "mean" -> scalar bits per counted sample; "sum" -> scalar total bits;
    "rows" -> total bits per row [codes.shape[0]].
    """
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # the loss itself always in full precision
    nats = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), codes.reshape(-1),
                           reduction="none")
    if mask is not None:
        nats = nats * mask.reshape(-1).to(nats.dtype)
        count = mask.sum()
    else:
        count = torch.tensor(nats.numel(), device=nats.device)
    if reduction == "rows":
        return nats.view(codes.shape[0], -1).sum(1) / math.log(2.0)
    total = nats.sum() / math.log(2.0)
    if reduction == "sum":
        return total
    return total / count.clamp(min=1)
