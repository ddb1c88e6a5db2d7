"""lina.video: MP4 (or animated WebP/GIF) writing and the frame strip."""

import logging
import sys

import numpy as np
import pytest
from PIL import Image, features

from lina.video import frame_strip, write_video


def _video(frames=5, height=32, width=48):
    """Frames whose colour encodes their index, in the pipeline's float [0, 1] layout."""
    video = np.zeros((frames, height, width, 3), dtype=np.float32)
    video[..., 0] = np.arange(frames)[:, None, None] / max(frames - 1, 1)
    video[..., 2] = 0.5
    return video


def test_frame_strip_puts_first_middle_and_last_side_by_side():
    video = _video(frames=9)
    strip = frame_strip(video)
    assert strip.size == (3 * 48, 32)
    reds = [strip.getpixel((x, 0))[0] for x in (0, 48, 96)]
    assert reds == [0, round(0.5 * 255), 255]  # frames 0, 4, 8


def test_frame_strip_of_pil_frames_and_short_videos():
    frames = [Image.fromarray(f) for f in (_video(frames=2) * 255).round().astype(np.uint8)]
    assert frame_strip(frames, n=3).size == (2 * 48, 32)  # only two distinct frames to show
    assert frame_strip(frames, n=1).size == (48, 32)


@pytest.mark.parametrize("suffix", [".webp", ".gif"])
def test_animations_keep_every_frame_and_the_frame_rate(tmp_path, suffix):
    written = write_video(_video(frames=5), tmp_path / f"clip{suffix}", fps=10)
    assert written == tmp_path / f"clip{suffix}"
    with Image.open(written) as image:
        assert image.n_frames == 5 and image.size == (48, 32)
        image.seek(4)
        image.load()
        assert image.info["duration"] == 100
        assert image.convert("RGB").getpixel((0, 0))[0] >= 250


def test_mp4_keeps_every_frame(tmp_path):
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    written = write_video(_video(frames=7), tmp_path / "clip.mp4", fps=16)
    assert written == tmp_path / "clip.mp4"
    frames, seconds = imageio_ffmpeg.count_frames_and_secs(str(written))
    assert frames == 7 and seconds == pytest.approx(7 / 16, abs=0.07)


def test_mp4_without_an_encoder_falls_back_to_an_animation(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # as if the package were not installed
    with caplog.at_level(logging.WARNING, logger="lina"):
        written = write_video(_video(frames=7), tmp_path / "clip.mp4", fps=16)
    assert written == tmp_path / ("clip.webp" if features.check("webp") else "clip.gif")
    assert "imageio-ffmpeg" in caplog.text
    with Image.open(written) as image:
        assert image.n_frames == 7


def test_bad_inputs_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="one video"):
        write_video(_video()[None], tmp_path / "a.gif")  # a batch of videos
    with pytest.raises(ValueError, match=r"\.mp4, \.webp or \.gif"):
        write_video(_video(), tmp_path / "a.avi")
    with pytest.raises(ValueError, match="no frames"):
        frame_strip([])
    with pytest.raises(ValueError, match="fps"):
        write_video(_video(), tmp_path / "a.gif", fps=0)
