import logging

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def sd3_path(tmp_path_factory):
    """A tiny SD3 pipeline saved to disk, to be loaded exactly as a user loads SD3.5."""
    from lina.testing import tiny_sd3_pipeline

    path = tmp_path_factory.mktemp("tiny-sd3")
    tiny_sd3_pipeline().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def flux_path(tmp_path_factory):
    from lina.testing import tiny_flux_pipeline

    path = tmp_path_factory.mktemp("tiny-flux")
    tiny_flux_pipeline().save_pretrained(path)
    return path


def _load(path, cls_name):
    import diffusers

    pipe = getattr(diffusers, cls_name).from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def sd3_pipe(sd3_path):
    return _load(sd3_path, "StableDiffusion3Pipeline")


@pytest.fixture(scope="session")
def flux_pipe(flux_path):
    return _load(flux_path, "FluxPipeline")


@pytest.fixture(scope="module")
def single_thread():
    """One torch thread for a module of toy models too small for threads to pay off; restored afterwards.
    Use with ``pytestmark = pytest.mark.usefixtures("single_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _lina_logs_propagate():
    logging.getLogger("lina").propagate = True
    yield


_PATCH_EMBEDDERS = ("x_embedder", "patch_embedding", "img_in", "pos_embed")


class denoiser_batches:
    """Record the batch size of every denoiser forward pass, as the model itself runs it (a hook on its
    patch embedding, so that branches appended inside the call are counted)."""

    def __init__(self, *modules):
        self.sizes: list[int] = []
        self._modules = modules

    def __enter__(self):
        self._handles = []
        for module in self._modules:
            embedder = next(getattr(module, n) for n in _PATCH_EMBEDDERS if hasattr(module, n))
            self._handles.append(embedder.register_forward_pre_hook(lambda m, args: self.sizes.append(args[0].shape[0])))
        return self.sizes

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
