"""Write generated videos to disk and summarise them as one image.

MP4 (H.264) needs the ``imageio-ffmpeg`` package (``pip install lina[video]``), which bundles an
ffmpeg binary. Without it an ``.mp4`` request is written as an animated WebP instead (Pillow, lossless),
or an animated GIF where Pillow lacks WebP support; the path actually written is returned.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, features

logger = logging.getLogger("lina")

Frames = np.ndarray | Sequence[Image.Image] | Sequence[np.ndarray]
"""One video: PIL images, or an array (frames, height, width, 3) of floats in [0, 1] or uint8."""

PILLOW_FORMATS = {".webp": "WEBP", ".gif": "GIF"}


def write_video(frames: Frames, path: str | Path, fps: int = 16) -> Path:
    """Write one video to ``path`` (``.mp4``, ``.webp`` or ``.gif``) at ``fps`` frames per second.

    Returns the path written: ``.mp4`` falls back to ``.webp`` (else ``.gif``) with a logged warning
    when ``imageio-ffmpeg`` is not installed. Wan makes 16 fps videos.
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix != ".mp4" and suffix not in PILLOW_FORMATS:
        raise ValueError(f"cannot write {path.name!r}: use a .mp4, .webp or .gif path")
    video = _as_uint8(frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".mp4":
        try:
            import imageio_ffmpeg
        except ImportError:
            fallback = path.with_suffix(".webp" if features.check("webp") else ".gif")
            logger.warning(
                "LINA: imageio-ffmpeg is not installed (pip install 'lina[video]'); writing %s instead of MP4.",
                fallback.name,
            )
            return _write_animation(video, fallback, fps)
        _write_mp4(imageio_ffmpeg, video, path, fps)
        return path
    return _write_animation(video, path, fps)


def frame_strip(frames: Frames, n: int = 3) -> Image.Image:
    """The first, evenly spaced middle and last frames side by side (``n`` frames, fewer if the video is shorter)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    video = _as_uint8(frames)
    picks = np.unique(np.linspace(0, len(video) - 1, n).round().astype(int))
    return Image.fromarray(np.concatenate([video[i] for i in picks], axis=1))


def _as_uint8(frames: Frames) -> np.ndarray:
    """(frames, height, width, 3) uint8 from PIL images or float/uint8 arrays."""
    if isinstance(frames, np.ndarray):
        video = frames
    else:
        frames = list(frames)
        if not frames:
            raise ValueError("the video has no frames")
        video = np.stack([np.asarray(f.convert("RGB") if isinstance(f, Image.Image) else f) for f in frames])
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(
            f"expected one video of shape (frames, height, width, 3), got {video.shape}; "
            "for a pipeline's batched output pass one video, e.g. `output.frames[0]`"
        )
    if len(video) == 0:
        raise ValueError("the video has no frames")
    if video.dtype == np.uint8:
        return video
    return (np.clip(video, 0.0, 1.0) * 255).round().astype(np.uint8)


def _write_mp4(imageio_ffmpeg, video: np.ndarray, path: Path, fps: int) -> None:
    height, width = video.shape[1:3]
    writer = imageio_ffmpeg.write_frames(
        str(path), (width, height), fps=fps, codec="libx264", quality=8, macro_block_size=2, ffmpeg_log_level="error"
    )
    writer.send(None)  # start ffmpeg
    try:
        for frame in video:
            writer.send(np.ascontiguousarray(frame))
    finally:
        writer.close()


def _write_animation(video: np.ndarray, path: Path, fps: int) -> Path:
    images = [Image.fromarray(frame) for frame in video]
    options = {"lossless": True} if path.suffix.lower() == ".webp" else {}
    images[0].save(
        path,
        format=PILLOW_FORMATS[path.suffix.lower()],
        save_all=True,
        append_images=images[1:],
        duration=round(1000 / fps),
        loop=0,
        **options,
    )
    return path
