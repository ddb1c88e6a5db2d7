"""Thread count: no more threads than free cores by default, and the same images whatever the count."""

import numpy as np
import pytest
import torch

from lina import Interventions
from lina.runtime import default_threads, free_cores, set_threads


@pytest.mark.parametrize("cores, load, expected", [(2, 0.1, 2), (2, 0.4, 2), (2, 0.6, 1), (2, 1.3, 1), (2, 5.0, 1),
                                                   (8, 2.6, 5), (1, 0.0, 1)])
def test_free_cores_are_the_usable_cores_minus_the_load(cores, load, expected):
    assert free_cores(cores, load) == expected


def test_omp_num_threads_wins_over_the_free_cores(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert 1 <= default_threads() <= free_cores()
    with pytest.raises(ValueError, match="--threads must be >= 1"):
        set_threads(0)


def test_testbed_images_are_identical_across_thread_counts():
    from lina.benchmarks.runner import make_generate_fn
    from lina.loading import sampling_defaults
    from lina.pipeline import LinaPipeline
    from lina.world.model import load_testbed_pipeline

    pipe = load_testbed_pipeline()
    pipe.set_progress_bar_config(disable=True)
    setting = Interventions(token_scale=1.8, contrast=3.0, shift_gain=2.0)
    generate = make_generate_fn(LinaPipeline.from_pipe(pipe), setting, **{**sampling_defaults(pipe), "num_inference_steps": 4})
    before = torch.get_num_threads()
    try:
        images = []
        for threads in (1, 2):
            set_threads(threads)
            images += [np.asarray(generate("a blue circle above a red circle", m, 0).image) for m in ("baseline", "lina")]
    finally:
        torch.set_num_threads(before)
    assert np.array_equal(images[0], images[2]) and np.array_equal(images[1], images[3])
    assert not np.array_equal(images[0], images[1])  # LINA changed the image, the same way on 1 and 2 threads
