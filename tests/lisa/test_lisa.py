"""LISA regulariser on tiny SD / SD3 / FLUX models built from configs (offline, CPU, deterministic)."""

from __future__ import annotations

import pytest
import torch
from diffusers import ControlNetModel, FluxControlNetModel, SD3ControlNetModel
from torch.nn import functional as F

from lina.lisa import LisaRegularizer, hook_layers
from lina.lisa.decoders import unpatchify
from lina.lisa.families import FAMILIES
from lina.lisa.testing import tiny_sd_pipeline
from lina.testing import tiny_flux_pipeline, tiny_sd3_pipeline

torch.set_num_threads(1)
BATCH = 4


def _case(name: str, prediction_type: str = "epsilon"):
    """(side, main, scheduler, latents, control, text) for a family, all seeded."""
    torch.manual_seed(0)
    latents = torch.randn(BATCH, 4, 16, 16)
    if name == "sd":
        pipe = tiny_sd_pipeline(prediction_type)
        main, control = pipe.unet, torch.rand(BATCH, 3, 32, 32)
        text = {"encoder_hidden_states": torch.randn(BATCH, 7, 16)}
    elif name == "sd3":
        pipe = tiny_sd3_pipeline()
        main, control = pipe.transformer, torch.randn(BATCH, 4, 16, 16)
        text = {"encoder_hidden_states": torch.randn(BATCH, 7, 32), "pooled_projections": torch.randn(BATCH, 32)}
    else:
        pipe = tiny_flux_pipeline()
        main, control = pipe.transformer, torch.randn(BATCH, 4, 16, 16)
        text = {
            "encoder_hidden_states": torch.randn(BATCH, 7, 32),
            "pooled_projections": torch.randn(BATCH, 16),
            "guidance": torch.full((BATCH,), 3.5),
        }
    torch.manual_seed(1)
    if name == "flux":  # one double and one single block, so both kinds of hook point exist
        side = FluxControlNetModel.from_transformer(
            main, num_layers=1, num_single_layers=1, attention_head_dim=8, num_attention_heads=2
        )
    else:
        side = FAMILIES[name].new_side_network(main, vae_scale_factor=2, layers=1)
    return side, main, pipe.scheduler, latents, control, text


def _fixed_noise(latents, scheduler, name, seed=2):
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(latents.shape, generator=generator)
    if name == "sd":
        timesteps = torch.randint(0, 1000, (latents.shape[0],), generator=generator)
    else:
        timesteps = scheduler.timesteps[
            torch.randint(0, len(scheduler.timesteps), (latents.shape[0],), generator=generator)
        ]
    return noise, timesteps


def _randomise(module: torch.nn.Module, seed: int = 3) -> None:
    """Give zero-initialised layers random weights, as after some training."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))


FAMILY_LAYERS = [
    ("sd", "down_0"),
    ("sd", "down_2"),
    ("sd", "down_3"),
    ("sd", "mid"),
    ("sd3", "block_0"),
    ("flux", "block_0"),
    ("flux", "single_block_0"),
]


def test_hook_layer_names_per_family():
    side, main, *_ = _case("sd")
    assert hook_layers(side, main) == ["down_0", "down_1", "down_2", "down_3", "mid"]
    side, main, *_ = _case("flux")
    assert hook_layers(side, main) == ["block_0", "single_block_0"]


def test_unknown_hook_layer_lists_the_valid_names():
    side, main, scheduler, *_ = _case("sd")
    with pytest.raises(ValueError, match=r"'down_99'.*down_0, down_1, down_2, down_3, mid"):
        LisaRegularizer(side, main, scheduler, hook_layer="down_99")


@pytest.mark.parametrize("name,layer", FAMILY_LAYERS)
def test_hook_captures_the_input_of_the_output_projection(name, layer):
    """With the hooked zero projection set to identity, its residual output equals the captured tensor."""
    side, main, scheduler, latents, control, text = _case(name)
    lisa = LisaRegularizer(side, main, scheduler, hook_layer=layer)
    projection = lisa.family.hook_points(side)[layer]
    with torch.no_grad():
        eye = torch.eye(projection.weight.shape[0])
        projection.weight.copy_(eye if projection.weight.ndim == 2 else eye[:, :, None, None])
        projection.bias.zero_()
    family = lisa.family
    noisy = family.to_model_space(latents)
    residuals = family.residuals(
        side, noisy, torch.full((BATCH,), 500.0), family.control_to_model_space(side, control), text, latents.shape
    )
    captured = lisa.hook.pop()
    index = int(layer.rsplit("_", 1)[1]) if layer != "mid" else None
    if name == "sd":
        expected = residuals[1] if layer == "mid" else residuals[0][index]
    elif name == "sd3":
        expected = residuals[index]
    else:
        expected = residuals[1 if layer.startswith("single") else 0][index]
    assert captured.shape == expected.shape
    torch.testing.assert_close(captured, expected)
    with pytest.raises(RuntimeError, match="did not run"):
        lisa.hook.pop()


@pytest.mark.parametrize("name,layer", FAMILY_LAYERS)
def test_decoder_output_is_zero_and_shaped_like_the_model_output(name, layer):
    side, main, scheduler, latents, control, text = _case(name)
    lisa = LisaRegularizer(side, main, scheduler, hook_layer=layer)
    family = lisa.family
    noisy = family.to_model_space(latents)
    timesteps = torch.full((BATCH,), 500.0)
    residuals = family.residuals(
        side, noisy, timesteps, family.control_to_model_space(side, control), text, latents.shape
    )
    prediction = family.predict(main, noisy, timesteps, text, residuals, latents.shape)
    decoded = lisa.decoder(lisa.hook.pop(), timesteps, prediction.shape)
    assert decoded.shape == prediction.shape
    assert torch.count_nonzero(decoded) == 0


@pytest.mark.parametrize("name", ["sd", "sd3", "flux"])
def test_at_init_lisa_loss_is_the_squared_target_and_equals_the_diffusion_loss(name):
    """Zero decoder and zero residuals: p = p_base, so MSE(D, r) = mean(r^2) = MSE(p, y)."""
    side, main, scheduler, latents, control, text = _case(name)
    lisa = LisaRegularizer(side, main, scheduler, hook_layer=hook_layers(side, main)[-1])
    losses = lisa(latents, control, text)
    torch.testing.assert_close(losses.lisa, losses.target_norm**2)
    torch.testing.assert_close(losses.lisa, losses.diffusion)
    torch.testing.assert_close(losses.total, losses.diffusion * 1.2)


@pytest.mark.parametrize(
    "name,prediction_type", [("sd", "epsilon"), ("sd", "v_prediction"), ("sd3", None), ("flux", None)]
)
def test_weight_zero_is_the_plain_controlnet_loss(name, prediction_type):
    side, main, scheduler, latents, control, text = _case(name, prediction_type or "epsilon")
    _randomise(side.controlnet_mid_block if name == "sd" else side.controlnet_blocks)
    noise, timesteps = _fixed_noise(latents, scheduler, name)
    calls = []
    main.register_forward_hook(lambda module, args, output: calls.append(1))
    plain = LisaRegularizer(side, main, scheduler, hook_layer=hook_layers(side, main)[0], weight=0.0)
    losses = plain(latents, control, text, noise=noise, timesteps=timesteps)
    assert plain.decoder is None and losses.lisa is None and len(calls) == 1

    # The standard ControlNet objective, written out with diffusers calls.
    with torch.no_grad():
        if name == "sd":
            noisy = scheduler.add_noise(latents, noise, timesteps)
            target = noise if prediction_type == "epsilon" else scheduler.get_velocity(latents, noise, timesteps)
            down, mid = side(noisy, timesteps, text["encoder_hidden_states"], control, return_dict=False)
            prediction = main(
                noisy,
                timesteps,
                text["encoder_hidden_states"],
                down_block_additional_residuals=down,
                mid_block_additional_residual=mid,
            ).sample
        elif name == "sd3":
            sigma = (timesteps / 1000).view(-1, 1, 1, 1)
            noisy, target = (1 - sigma) * latents + sigma * noise, noise - latents
            blocks = side(noisy, control, timestep=timesteps, **text).controlnet_block_samples
            prediction = main(noisy, timestep=timesteps, block_controlnet_hidden_states=blocks, **text).sample
        else:
            from diffusers import FluxPipeline

            def pack(x):
                return FluxPipeline._pack_latents(x, BATCH, 4, 16, 16)

            sigma = (timesteps / 1000).view(-1, 1, 1)
            noisy, target = (1 - sigma) * pack(latents) + sigma * pack(noise), pack(noise) - pack(latents)
            ids = {
                "img_ids": FluxPipeline._prepare_latent_image_ids(None, 8, 8, "cpu", torch.float32),
                "txt_ids": torch.zeros(7, 3),
            }
            out = side(noisy, pack(control), timestep=timesteps / 1000, **ids, **text)
            prediction = main(
                noisy,
                timestep=timesteps / 1000,
                controlnet_block_samples=out.controlnet_block_samples,
                controlnet_single_block_samples=out.controlnet_single_block_samples,
                **ids,
                **text,
            ).sample
    expected = F.mse_loss(prediction, target)
    torch.testing.assert_close(losses.total, expected)

    # Turning LISA on adds a term but leaves the diffusion loss itself unchanged.
    side_with_lisa = LisaRegularizer(side, main, scheduler, hook_layer=hook_layers(side, main)[0])
    torch.testing.assert_close(
        side_with_lisa(latents, control, text, noise=noise, timesteps=timesteps).diffusion, expected
    )


@pytest.mark.parametrize("name,layer", [("sd", "down_2"), ("sd3", "block_0"), ("flux", "block_0")])
def test_gradients_reach_side_network_and_decoder_never_the_main_network(name, layer):
    side, main, scheduler, latents, control, text = _case(name)
    lisa = LisaRegularizer(side, main, scheduler, hook_layer=layer)
    _randomise(lisa.decoder.project_out)
    hooked = lisa.family.hook_points(side)[layer]
    losses = lisa(latents, control, text)

    # The LISA term alone trains the decoder and the side network up to the hooked layer, not beyond.
    upstream = [side.conv_in.weight] if name == "sd" else list(side.transformer_blocks[0].parameters())
    wrt = [*lisa.decoder.parameters(), hooked.weight, *upstream]
    lisa_grads = torch.autograd.grad(losses.lisa, wrt, allow_unused=True, retain_graph=True)
    decoder_count = len(list(lisa.decoder.parameters()))
    assert all(g is not None and g.abs().sum() > 0 for g in lisa_grads[:decoder_count])
    assert lisa_grads[decoder_count] is None  # the hooked projection sits after the feature
    assert any(g is not None and g.abs().sum() > 0 for g in lisa_grads[decoder_count + 1 :])

    losses.total.backward()
    assert all(p.grad is None for p in main.parameters())
    assert not any(p.requires_grad for p in main.parameters())
    assert hooked.weight.grad.abs().sum() > 0
    assert set(map(id, lisa.parameters())) == set(map(id, [*side.parameters(), *lisa.decoder.parameters()]))


@pytest.mark.parametrize(
    "fraction,expected",
    [
        (1.0, [(True, 4), (False, 4)]),
        (0.5, [(True, 4), (False, 2)]),
        (0.25, [(True, 4), (False, 1)]),
        (0.0, [(True, 4)]),
    ],
)
def test_frozen_pass_runs_without_grad_on_the_regularised_fraction(fraction, expected):
    side, main, scheduler, latents, control, text = _case("sd3")
    calls = []
    main.register_forward_hook(
        lambda module, args, kwargs, output: calls.append((torch.is_grad_enabled(), kwargs["hidden_states"].shape[0])),
        with_kwargs=True,
    )
    lisa = LisaRegularizer(side, main, scheduler, hook_layer="block_0", regularize_fraction=fraction)
    lisa(latents, control, text)
    assert calls == expected


def test_fraction_regularises_the_first_samples_only():
    side, main, scheduler, latents, control, text = _case("sd3")
    _randomise(side.controlnet_blocks)
    noise, timesteps = _fixed_noise(latents, scheduler, "sd3")
    quarter = LisaRegularizer(side, main, scheduler, hook_layer="block_0", regularize_fraction=0.25)
    _randomise(quarter.decoder.project_out)
    full = LisaRegularizer(side, main, scheduler, hook_layer="block_0")
    full.decoder.load_state_dict(quarter.decoder.state_dict())
    first = {key: value[:1] for key, value in text.items()}
    reference = full(latents[:1], control[:1], first, noise=noise[:1], timesteps=timesteps[:1])
    torch.testing.assert_close(quarter(latents, control, text, noise=noise, timesteps=timesteps).lisa, reference.lisa)


def test_mismatched_side_network_is_rejected():
    _, main, scheduler, *_ = _case("sd")
    other = ControlNetModel(
        block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        layers_per_block=1,
        cross_attention_dim=16,
        attention_head_dim=2,
        norm_num_groups=4,
    )
    with pytest.raises(ValueError, match=r"block_out_channels=\(16, 32\).*block_out_channels=\(8, 16\).*from_unet"):
        LisaRegularizer(other, main, scheduler, hook_layer="mid")
    sd3_side = SD3ControlNetModel(
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=32,
        caption_projection_dim=16,
        pooled_projection_dim=32,
        in_channels=4,
        out_channels=4,
        sample_size=16,
    )
    with pytest.raises(
        TypeError, match="SD3ControlNetModel steers a SD3Transformer2DModel, not a UNet2DConditionModel"
    ):
        LisaRegularizer(sd3_side, main, scheduler, hook_layer="block_0")
    with pytest.raises(TypeError, match="unsupported side network Linear"):
        LisaRegularizer(torch.nn.Linear(2, 2), main, scheduler, hook_layer="mid")


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"weight": -1.0}, "weight must be >= 0"),
        ({"regularize_fraction": 1.5}, r"regularize_fraction must be in \[0, 1\]"),
    ],
)
def test_bad_knobs_are_rejected(kwargs, message):
    side, main, scheduler, *_ = _case("sd")
    with pytest.raises(ValueError, match=message):
        LisaRegularizer(side, main, scheduler, hook_layer="mid", **kwargs)


def test_unsupported_prediction_type_is_named():
    side, main, scheduler, latents, control, text = _case("sd", prediction_type="sample")
    lisa = LisaRegularizer(side, main, scheduler, hook_layer="mid")
    with pytest.raises(ValueError, match="prediction_type 'sample' is not supported"):
        lisa(latents, control, text)


def test_unpatchify_inverts_the_sd3_patch_embedding_layout():
    """Token k covers patch (k // (W/p), k % (W/p)); inside it, entries run over (row, column, channel)."""
    p, channels, height, width = 2, 3, 4, 6
    tokens = torch.arange(2 * (height // p) * (width // p) * p * p * channels, dtype=torch.float32)
    tokens = tokens.reshape(2, (height // p) * (width // p), p * p * channels)
    image = unpatchify(tokens, p, height, width)
    for b, c, y, x in [(0, 0, 0, 0), (0, 2, 1, 3), (1, 1, 3, 5), (1, 0, 2, 1)]:
        token = (y // p) * (width // p) + x // p
        assert image[b, c, y, x] == tokens[b, token, (y % p) * p * channels + (x % p) * channels + c]
    # Round trip through the real SD3 patch layout: a stride-p unfold, flattened row by row.
    patches = torch.nn.functional.unfold(image, kernel_size=p, stride=p)  # (B, C*p*p, tokens), channel-major
    reordered = patches.reshape(2, channels, p, p, -1).permute(0, 4, 2, 3, 1).reshape(2, -1, p * p * channels)
    torch.testing.assert_close(reordered, tokens)
    with pytest.raises(ValueError, match="cannot tile"):
        unpatchify(tokens, p, height, width + 2)


def _main_calls(main) -> list[int]:
    calls = []
    main.register_forward_hook(lambda module, args, output: calls.append(1))
    return calls


@pytest.mark.parametrize("name", ["sd", "sd3", "flux"])
def test_plain_target_regresses_onto_the_diffusion_target_without_a_frozen_pass(name):
    side, main, scheduler, latents, control, text = _case(name)
    noise, timesteps = _fixed_noise(latents, scheduler, name)
    calls = _main_calls(main)
    lisa = LisaRegularizer(side, main, scheduler, hook_layer=hook_layers(side, main)[-1], target="plain")
    losses = lisa(latents, control, text, noise=noise, timesteps=timesteps)
    assert len(calls) == 1
    family = lisa.family
    _, target = family.noise(scheduler, family.to_model_space(latents), family.to_model_space(noise), timesteps)
    torch.testing.assert_close(losses.lisa, target.pow(2).mean())  # zero decoder at init
    torch.testing.assert_close(losses.target_norm, target.pow(2).mean().sqrt())
    likelihood = LisaRegularizer(side, main, scheduler, hook_layer=hook_layers(side, main)[-1])
    assert not torch.allclose(likelihood(latents, control, text, noise=noise, timesteps=timesteps).lisa, losses.lisa)


def test_random_target_is_a_fixed_unit_field_independent_of_the_batch():
    side, main, scheduler, latents, control, text = _case("sd3")
    calls = _main_calls(main)
    lisa = LisaRegularizer(side, main, scheduler, hook_layer="block_0", target="random", random_target_seed=7)
    first = lisa(latents, control, text)
    second = lisa(latents * 3 + 1, control, text)
    assert len(calls) == 2  # one steered pass per call, no frozen pass
    field = lisa.random_field((4, 16, 16))
    torch.testing.assert_close(field.pow(2).mean(), torch.tensor(1.0))
    torch.testing.assert_close(first.lisa, field.pow(2).mean())
    torch.testing.assert_close(second.lisa, first.lisa)
    again = LisaRegularizer(side, main, scheduler, hook_layer="block_0", target="random", random_target_seed=7)
    assert torch.equal(again.random_field((4, 16, 16)), field)  # a resumed run rebuilds the same target
    other = LisaRegularizer(side, main, scheduler, hook_layer="block_0", target="random", random_target_seed=8)
    assert not torch.equal(other.random_field((4, 16, 16)), field)


@pytest.mark.parametrize("name,layer", [("sd", "down_2"), ("sd3", "block_0")])
def test_detached_target_trains_the_decoder_and_leaves_the_side_network_the_diffusion_gradient(name, layer):
    side, main, scheduler, latents, control, text = _case(name)
    _randomise(side.controlnet_down_blocks if name == "sd" else side.controlnet_blocks)
    noise, timesteps = _fixed_noise(latents, scheduler, name)
    gradients = {}
    for target, weight in (("detached", 0.2), ("likelihood", 0.2), ("likelihood", 0.0)):
        lisa = LisaRegularizer(side, main, scheduler, hook_layer=layer, weight=weight, target=target)
        if lisa.decoder is not None:
            _randomise(lisa.decoder)
        side.zero_grad(set_to_none=True)
        losses = lisa(latents, control, text, noise=noise, timesteps=timesteps)
        losses.total.backward()
        gradients[target, weight] = [p.grad.clone() for p in side.parameters() if p.grad is not None]
        if target == "detached":
            likelihood = _likelihood_target_norm(side, main, scheduler, layer, latents, control, text, noise, timesteps)
            torch.testing.assert_close(losses.target_norm, likelihood)
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lisa.decoder.parameters())
    plain, detached, likelihood = gradients["likelihood", 0.0], gradients["detached", 0.2], gradients["likelihood", 0.2]
    assert len(plain) == len(detached) and all(torch.equal(a, b) for a, b in zip(plain, detached))
    assert not all(torch.allclose(a, b) for a, b in zip(plain, likelihood))


def _likelihood_target_norm(side, main, scheduler, layer, latents, control, text, noise, timesteps):
    lisa = LisaRegularizer(side, main, scheduler, hook_layer=layer)
    return lisa(latents, control, text, noise=noise, timesteps=timesteps).target_norm


def test_unknown_target_lists_the_choices():
    side, main, scheduler, *_ = _case("sd3")
    with pytest.raises(ValueError, match="target 'score' is not one of: likelihood, plain, random, detached"):
        LisaRegularizer(side, main, scheduler, hook_layer="block_0", target="score")
