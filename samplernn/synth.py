"""The built-in default dataset: deterministic plucked-string music, made on the spot.

The project ships no audio, yet `make train` must work offline. `build_default_dataset`
synthesises short pieces (Karplus-Strong plucked strings: a legato melody over a scale,
varied key, tempo, loudness and brightness) into a temporary folder and prepares them
through `samplernn.prepare.prepare`, the same path as user data.
"""

import math
import tempfile
from pathlib import Path

import numpy as np

from samplernn.audio import write_wav

SCALES = {                      # semitones above the root
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "pentatonic_major": (0, 2, 4, 7, 9),
    "pentatonic_minor": (0, 3, 5, 7, 10),
}


def _midi_hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69) / 12)


def pluck(freq_hz: float, seconds: float, sample_rate: int, rng: np.random.Generator,
          brightness: float = 0.5, t60_seconds: float = 2.0) -> np.ndarray:
    """One Karplus-Strong note, float32 [round(seconds * sample_rate)], peak about 1.

    Loop: y[n] = g * (c0 y[n-p] + c1 y[n-p-1] + c2 y[n-p-2]) with the 3-tap lowpass
    ((1-w)/2, 1/2, w/2) whose delay 0.5 + w tunes the loop to the exact period; computed one
    period at a time (each period only reads earlier ones). brightness in [0, 1] shapes the
    excitation; t60_seconds is the time for the fundamental to decay by 60 dB (higher
    harmonics die faster; high notes cannot ring longer than the loop lowpass allows).
    """
    period = sample_rate / freq_hz
    p = max(2, int(math.floor(period - 0.5)))
    w = min(max(period - 0.5 - p, 0.0), 1.0)
    c0, c1, c2 = (1 - w) / 2, 0.5, w / 2
    # The loop lowpass also damps the fundamental: g undoes that, so t60 holds. g may pass 1,
    # so DC is held at unit gain below (it can't grow).
    omega = 2 * math.pi * freq_hz / sample_rate
    loss = abs(c0 + c1 * np.exp(-1j * omega) + c2 * np.exp(-2j * omega))
    g = 10.0 ** (-3.0 / (t60_seconds * freq_hz)) / loss
    n = max(1, round(seconds * sample_rate))
    # Darker: a wider Hann lowpass (in periods, so every note keeps a few harmonics), applied
    # circularly so the burst loops without a click.
    smooth = 3 + int(round((1.0 - brightness) * p / 4))
    kernel = np.zeros(p)
    np.add.at(kernel, np.arange(smooth) % p, np.hanning(smooth))
    burst = np.fft.irfft(np.fft.rfft(rng.uniform(-1.0, 1.0, p)) * np.fft.rfft(kernel), p)
    burst = burst - burst.mean()
    y = np.zeros(n + p + 2)                                  # 2 leading zeros for y[n-p-2]
    y[2:2 + p] = burst[:min(p, n + p)]
    for s in range(2 + p, n + 2, p):
        e = min(s + p, n + 2)
        dc = y[s - p:s].mean()
        y[s:e] = g * (c0 * y[s - p:e - p] + c1 * y[s - p - 1:e - p - 1]
                      + c2 * y[s - p - 2:e - p - 2]) - (g - 1.0) * dc
    out = y[2:n + 2]
    attack = min(n, round(0.01 * sample_rate))               # soften the noise-burst onset
    out[:attack] *= np.linspace(0.0, 1.0, attack)
    fade = min(n, round(0.03 * sample_rate))                 # no click at the cut
    out[n - fade:] *= np.linspace(1.0, 0.0, fade)
    return (out / max(np.abs(out).max(), 1e-9)).astype(np.float32)


def piece(seconds: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A legato melody, float32 [round(seconds * sample_rate)], peak in [-3, -1] dBFS.

    Dense on purpose, so that a small model learns pitched notes within minutes: one note at a
    time, no rests, each note sustains (long t60) until the next one damps it, dark excitations
    (few noisy attacks), a middle register (periods of 25 to 75 samples at 16 kHz) and a loud,
    steady level; key, scale, tempo, rhythm, loudness and brightness vary.
    """
    n = round(seconds * sample_rate)
    mix = np.zeros(n + sample_rate * 8, np.float64)          # room for the last note
    scale = SCALES[list(SCALES)[rng.integers(len(SCALES))]]
    root = int(rng.integers(57, 65))
    beat = 60.0 / rng.uniform(60, 120)
    degree, t = int(rng.integers(0, len(scale))), 0.0
    while t < seconds:
        length = beat * float(rng.choice([0.5, 1.0, 1.0, 1.0, 2.0, 2.0]))
        degree = int(np.clip(degree + rng.integers(-2, 3), 0, len(scale) + 2))
        midi = root + scale[degree % len(scale)] + 12 * (degree // len(scale))
        _add(mix, pluck(_midi_hz(midi), length + 0.03, sample_rate, rng,
                        brightness=rng.uniform(0.0, 0.4), t60_seconds=rng.uniform(4.0, 8.0)),
             t, rng.uniform(0.7, 1.0), sample_rate)
        t += length
    out = mix[:n]
    level = 10.0 ** (rng.uniform(-3.0, -1.0) / 20.0)
    return (out * (level / max(np.abs(out).max(), 1e-9))).astype(np.float32)


def _add(mix: np.ndarray, note: np.ndarray, at_seconds: float, gain: float,
         sample_rate: int) -> None:
    a = round(at_seconds * sample_rate)
    b = min(len(mix), a + len(note))
    if b > a:
        mix[a:b] += gain * note[:b - a]


def synthesize(out_dir, n_files: int = 24, seconds: float = 10.0, sample_rate: int = 16000,
               seed: int = 0) -> list[Path]:
    """Write n_files pieces as 16-bit WAVs piece_000.wav ... into out_dir; file i depends only
    on (seed, i)."""
    out_dir = Path(out_dir)
    paths = []
    for i in range(n_files):
        rng = np.random.default_rng([seed, i])
        paths.append(write_wav(out_dir / f"piece_{i:03d}.wav", piece(seconds, sample_rate, rng),
                               sample_rate))
    return paths


DEFAULT_PATH = Path("data/default")  # the one place the built-in data are made (from the cwd)


def build_default_dataset(out_dir=DEFAULT_PATH, overwrite: bool = False) -> Path:
    """Synthesise and prepare the default dataset into out_dir (relative to the cwd); a no-op
    when out_dir already holds a prepared dataset, unless overwrite. Returns out_dir."""
    from samplernn.prepare import prepare
    out_dir = Path(out_dir)
    if (out_dir / "manifest.json").is_file() and not overwrite:
        return out_dir
    with tempfile.TemporaryDirectory(prefix="samplernn-default-") as tmp:
        synthesize(tmp)
        prepare(tmp, out_dir, overwrite=overwrite)
    return out_dir
