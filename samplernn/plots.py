"""Figures as PNG bytes: waveforms, spectrograms and learning curves.

Used by the comparison report (inline images) and by the trainer (run-dir PNGs
and W&B images). Figures are drawn on matplotlib's Agg canvas directly, without
pyplot, so nothing here switches a process-global backend or leaks figures.
This module knows nothing of files, Hydra or W&B.
"""

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100
MAX_WAVEFORM_POINTS = 4000  # columns of the min/max envelope drawn for long waveforms
DB_FLOOR = -80.0  # spectrogram colour range, dB below the loudest bin


def _png(fig: Figure) -> bytes:
    """Render a figure to PNG bytes."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _as_wav(wav) -> np.ndarray:
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise ValueError(f"expected a 1-D (mono) waveform, got an array of shape {wav.shape}; "
                         "mix or pick a channel first")
    if not np.all(np.isfinite(wav)):
        wav = np.nan_to_num(wav, nan=0.0, posinf=1.0, neginf=-1.0)
    return wav


def _check_rate(sample_rate: int) -> int:
    if not sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate={sample_rate!r} must be a positive number of samples per second")
    return int(sample_rate)


def waveform_png(wav, sample_rate: int, title: str | None = None,
                 size: tuple[float, float] = (6.0, 1.8)) -> bytes:
    """Amplitude against time in seconds.

    wav: (n_samples,) float in [-1, 1]. Long waveforms are drawn as a min/max
    envelope of MAX_WAVEFORM_POINTS columns, which looks the same and stays fast.
    """
    wav, sample_rate = _as_wav(wav), _check_rate(sample_rate)
    fig = Figure(figsize=size, layout="constrained")
    ax = fig.add_subplot()
    n = len(wav)
    if n == 0:
        ax.text(0.5, 0.5, "empty waveform", ha="center", va="center", transform=ax.transAxes)
    elif n > MAX_WAVEFORM_POINTS:
        cols = MAX_WAVEFORM_POINTS
        edges = np.linspace(0, n, cols + 1).astype(int)
        lows = np.minimum.reduceat(wav, edges[:-1])
        highs = np.maximum.reduceat(wav, edges[:-1])
        t = edges[:-1] / sample_rate
        ax.fill_between(t, lows, highs, color="C0", linewidth=0.5)
    else:
        ax.plot(np.arange(n) / sample_rate, wav, color="C0", linewidth=0.6)
    ax.set_xlim(0, max(n, 1) / sample_rate)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("amplitude")
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=9)
    return _png(fig)


def stft_db(wav, n_fft: int = 1024, hop: int = 256) -> np.ndarray:
    """Log-magnitude STFT (Hann window) in dB relative to the loudest bin.

    wav: (n_samples,) float. Returns (n_fft // 2 + 1, n_frames) float32, clipped at DB_FLOOR.
    Short inputs are zero-padded to one frame.
    """
    wav = _as_wav(wav)
    if len(wav) < n_fft:
        wav = np.pad(wav, (0, n_fft - len(wav)))
    n_frames = 1 + (len(wav) - n_fft) // hop
    index = np.arange(n_fft)[None, :] + hop * np.arange(n_frames)[:, None]
    frames = wav[index] * np.hanning(n_fft).astype(np.float32)
    magnitude = np.abs(np.fft.rfft(frames, axis=1)).T
    db = 20.0 * np.log10(np.maximum(magnitude, 1e-10))
    db -= db.max()
    return np.maximum(db, DB_FLOOR).astype(np.float32)


def _spectrogram(fig: Figure, ax, wav, sample_rate: int, n_fft: int | None):
    """Draw one log-magnitude spectrogram on ax (its own colour bar)."""
    if n_fft is None:
        n_fft = max(64, 1 << int(round(np.log2(0.064 * sample_rate))))
    db = stft_db(wav, n_fft=n_fft, hop=n_fft // 4)
    seconds = max(len(wav), n_fft) / sample_rate
    image = ax.imshow(db, origin="lower", aspect="auto", cmap="magma", vmin=DB_FLOOR, vmax=0.0,
                      extent=(0.0, seconds, 0.0, sample_rate / 2), interpolation="nearest")
    ax.set_ylabel("frequency (Hz)")
    fig.colorbar(image, ax=ax, pad=0.01).set_label("dB")


def spectrogram_png(wav, sample_rate: int, title: str | None = None,
                    size: tuple[float, float] = (6.0, 2.6), n_fft: int | None = None) -> bytes:
    """Log-magnitude spectrogram: time in seconds, frequency in Hz, colour bar in dB.

    wav: (n_samples,) float in [-1, 1]. n_fft defaults to about 64 ms of audio
    (1024 at 16 kHz), with a hop of a quarter of it.
    """
    wav, sample_rate = _as_wav(wav), _check_rate(sample_rate)
    fig = Figure(figsize=size, layout="constrained")
    ax = fig.add_subplot()
    _spectrogram(fig, ax, wav, sample_rate, n_fft)
    ax.set_xlabel("time (s)")
    if title:
        ax.set_title(title, fontsize=9)
    return _png(fig)


def spectrograms_png(panels: Sequence[tuple[str, np.ndarray]], sample_rate: int,
                     title: str | None = None, width: float = 8.0) -> bytes:
    """Spectrograms one above the other on a shared time axis: (name, wav) per panel
    (e.g. an original and its resynthesis)."""
    sample_rate = _check_rate(sample_rate)
    fig = Figure(figsize=(width, 2.2 * len(panels) + 0.4), layout="constrained")
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (name, wav) in zip(axes, panels):
        _spectrogram(fig, ax, _as_wav(wav), sample_rate, None)
        ax.set_title(name, fontsize=9)
    axes[-1].set_xlabel("time (s)")
    if title:
        fig.suptitle(title, fontsize=10)
    return _png(fig)


LINE_STYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v")


def curves_png(curves: Sequence[tuple[str, Sequence[float], Sequence[float]]], x_label: str,
               y_label: str = "valid NLL (bits)", title: str | None = None,
               families: Sequence[str] | None = None, size: tuple[float, float] = (6.4, 3.6),
               empty_text: str = "no points logged yet") -> bytes:
    """Line plot with one line per (label, xs, ys) triple, e.g. valid NLL against step.

    families: one name per curve (e.g. the preset); curves of one family share a colour
    and differ in line style (e.g. seeds). Default: every curve its own colour.
    Short lines get markers. An empty list gives a figure that says `empty_text`, so a
    report never lacks an image where one is expected.
    """
    families = list(families) if families is not None else [str(i) for i in range(len(curves))]
    if len(families) != len(curves):
        raise ValueError(f"families has {len(families)} entries for {len(curves)} curves")
    colours = {name: f"C{i % 10}" for i, name in enumerate(dict.fromkeys(families))}
    seen: dict[str, int] = {}
    fig = Figure(figsize=size, layout="constrained")
    ax = fig.add_subplot()
    drawn = 0
    for (label, xs, ys), family in zip(curves, families):
        if len(xs) == 0:
            continue
        k = seen[family] = seen.get(family, -1) + 1
        ax.plot(list(xs), list(ys), color=colours[family], linestyle=LINE_STYLES[k % len(LINE_STYLES)],
                marker=MARKERS[k % len(MARKERS)] if len(xs) < 30 else None, markersize=3,
                linewidth=1.2, label=label)
        drawn += 1
    if drawn == 0:
        ax.text(0.5, 0.5, empty_text, ha="center", va="center", transform=ax.transAxes)
    elif drawn <= 12:
        ax.legend(fontsize=7, loc="best")
    else:
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    return _png(fig)
