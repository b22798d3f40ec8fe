"""samplernn.audio: decoding, mono mix, exact block-wise resampling, atomic 16-bit writing."""

import math

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from samplernn.audio import (AudioError, WavStreamWriter, audio_info, float_to_pcm16,
                             iter_audio_blocks, pcm16_to_float, read_audio, resample_blocks,
                             resampled_length, write_wav)


def _tone(n, rate, freq=440.0, amp=0.5):
    return (amp * np.sin(2 * np.pi * freq * np.arange(n) / rate)).astype(np.float32)


def test_read_audio_mixes_stereo_and_resamples_like_torchaudio(tmp_path):
    rate, n = 44100, 44100 * 2 + 17
    stereo = np.stack([_tone(n, rate, 440), _tone(n, rate, 220, 0.25)], axis=1)
    path = tmp_path / "a.wav"
    sf.write(path, stereo, rate, subtype="FLOAT")
    wav = read_audio(path, 16000)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert len(wav) == math.ceil(n * 16000 / rate) == resampled_length(n, rate, 16000)
    expected = AF.resample(torch.from_numpy(stereo.mean(axis=1)), rate, 16000).numpy()
    np.testing.assert_allclose(wav, expected, atol=1e-5)


def test_same_rate_is_untouched(tmp_path):
    x = _tone(16000, 16000)
    sf.write(tmp_path / "a.flac", x, 16000, subtype="PCM_16")
    np.testing.assert_allclose(read_audio(tmp_path / "a.flac", 16000), x, atol=1 / 32768)


@pytest.mark.parametrize("orig,new", [(44100, 16000), (22050, 16000), (8000, 16000),
                                      (48000, 16000), (16000, 22050)])
def test_block_resampling_equals_whole_signal(orig, new):
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal(2 * orig + 12345)).astype(np.float32)
    whole = AF.resample(torch.from_numpy(x), orig, new).numpy()
    o = orig // math.gcd(orig, new)
    size = o * max(4, 20000 // o)
    got = np.concatenate(list(resample_blocks(iter([x[i:i + size] for i in range(0, len(x), size)]),
                                              orig, new)))
    assert len(got) == len(whole)
    np.testing.assert_allclose(got, whole, atol=1e-6)


def test_iter_audio_blocks_small_blocks_match_read_audio(tmp_path):
    x = _tone(48000 * 3 + 5, 48000)
    sf.write(tmp_path / "a.wav", x, 48000, subtype="FLOAT")
    blocks = list(iter_audio_blocks(tmp_path / "a.wav", 16000, block_frames=4000))
    assert len(blocks) > 10
    np.testing.assert_allclose(np.concatenate(blocks), read_audio(tmp_path / "a.wav", 16000),
                               atol=1e-6)


def test_audio_info(tmp_path):
    sf.write(tmp_path / "a.ogg", np.zeros((8000, 2), np.float32), 8000)
    info = audio_info(tmp_path / "a.ogg")
    assert (info["sample_rate"], info["channels"], info["n_frames"]) == (8000, 2, 8000)
    assert info["seconds"] == pytest.approx(1.0)


def _reason(path):
    with pytest.raises(AudioError) as err:
        read_audio(path, 16000)
    assert err.value.path == str(path) and str(path) in str(err.value)
    return err.value.reason


def test_bad_files_raise_audio_error_with_reason(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    assert _reason(tmp_path / "empty.wav") == "empty"
    (tmp_path / "text.wav").write_text("not audio at all\n" * 20)
    assert _reason(tmp_path / "text.wav") == "not_audio"
    sf.write(tmp_path / "good.flac", _tone(16000, 16000), 16000)
    data = (tmp_path / "good.flac").read_bytes()
    (tmp_path / "corrupt.flac").write_bytes(data[:4] + bytes(range(256)) * 8)
    assert _reason(tmp_path / "corrupt.flac") == "unreadable"
    sf.write(tmp_path / "noframes.wav", np.zeros(0, np.float32), 16000)
    assert _reason(tmp_path / "noframes.wav") == "empty"


def test_pcm16_round_trip_and_clipping():
    x = np.array([-1.5, -1.0, -0.5, 0.0, 0.25, 0.999, 1.0, 2.0], np.float32)
    pcm = float_to_pcm16(x)
    assert pcm.dtype == np.int16
    assert pcm.tolist() == [-32768, -32768, -16384, 0, 8192, 32735, 32767, 32767]
    np.testing.assert_allclose(pcm16_to_float(pcm)[1:7], np.clip(x[1:7], -1, 1), atol=1 / 32768)
    assert float_to_pcm16(torch.tensor([0.5])).tolist() == [16384]


def test_write_wav_is_16_bit_and_leaves_no_partial(tmp_path):
    x = _tone(16000, 16000)
    path = write_wav(tmp_path / "out" / "a.wav", torch.from_numpy(x), 16000)
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (16000, 1, 16000,
                                                                           "PCM_16")
    np.testing.assert_allclose(sf.read(path, dtype="float32")[0], x, atol=1 / 32768)
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.wav"]


def test_stream_writer_appends_blocks(tmp_path):
    path = tmp_path / "long.wav"
    blocks = [_tone(1000 + i, 16000, 100 * (i + 1)) for i in range(5)]
    with WavStreamWriter(path, 16000) as w:
        for i, b in enumerate(blocks):
            w.write(b if i % 2 else torch.from_numpy(b)[None])
            assert not path.exists()          # only the partial exists while writing
    assert w.n_samples == sum(len(b) for b in blocks)
    got, rate = sf.read(path, dtype="float32")
    assert rate == 16000 and len(got) == w.n_samples
    np.testing.assert_allclose(got, np.concatenate(blocks), atol=1 / 32768)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.wav"]


def test_stream_writer_failure_keeps_old_file_and_removes_partial(tmp_path):
    path = tmp_path / "a.wav"
    write_wav(path, _tone(500, 16000), 16000)
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        with WavStreamWriter(path, 16000) as w:
            w.write(np.zeros(100, np.float32))
            raise RuntimeError("generation crashed")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav"]
