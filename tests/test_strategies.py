"""joint3d / layer2d strategies: layouts, windows, conditioning, chunking, registry."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from genda.grid import Grid, GridMismatchError
from genda.models.strategies import (
    STRATEGIES,
    Backbone,
    Joint3D,
    Layer2D,
    Strategy,
    StrategyBackbone,
    build_backbone,
    get_strategy,
)
from genda.models.unet import UNet
from genda.threads import cpu_threads

GRID = Grid.gaussian(16, 32, 4)  # u, v, T on 4 levels, 80-115 km
B, V, L, H, W = 2, 3, 4, 16, 32


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with cpu_threads(1):
        yield


def field(seed: int = 0) -> torch.Tensor:
    return torch.randn(B, V, L, H, W, generator=torch.Generator().manual_seed(seed))


def backbone_for(strategy: Strategy, seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    c_in, c_out, cond_dim = strategy.network_channels(GRID)
    net = UNet(
        c_in,
        c_out,
        base_channels=8,
        channel_mult=(1, 2),
        cond_dim=cond_dim,
        noise_embedding_dim=16,
        pole_sign=strategy.pole_sign(GRID),
    ).eval()
    with torch.no_grad():  # non-zero output so that the checks below see something
        net.conv_out.conv.weight.normal_(0.0, 0.1)
    return net


@pytest.mark.parametrize("strategy", [Joint3D(), Layer2D(window=0), Layer2D(window=2)])
def test_to_and_from_network_round_trip_exactly(strategy: Strategy) -> None:
    x = field()
    x_net, cond = strategy.to_network(x, GRID)
    c_in, c_out, cond_dim = strategy.network_channels(GRID)
    assert x_net.shape[1:] == (c_in, H, W)
    if isinstance(strategy, Layer2D):
        assert x_net.shape[0] == B * L
        assert cond is not None and cond.shape == (B * L, cond_dim)
        y_net = strategy.centre_layer(x_net)
    else:
        assert x_net.shape[0] == B and cond is None and cond_dim == 0
        y_net = x_net
    assert y_net.shape[1] == c_out
    assert torch.equal(strategy.from_network(y_net, x.shape), x)


def test_joint3d_channels_are_variable_major() -> None:
    x = field()
    x_net, _ = Joint3D().to_network(x, GRID)
    for v in range(V):
        for lev in range(L):
            assert torch.equal(x_net[:, v * L + lev], x[:, v, lev])


@pytest.mark.parametrize("window", [1, 2])
def test_layer2d_windows_hold_exactly_the_neighbouring_layers(window: int) -> None:
    # x[:, v, l] = 10 l + v (+ 1000 b): every channel says which layer and variable it holds
    x = torch.zeros(B, V, L, H, W)
    for b in range(B):
        for v in range(V):
            for lev in range(L):
                x[b, v, lev] = 1000 * b + 10 * lev + v
    strategy = Layer2D(window=window)
    x_net, _ = strategy.to_network(x, GRID)
    assert x_net.shape == (B * L, V * (2 * window + 1), H, W)
    for b in range(B):
        for lev in range(L):
            for k in range(2 * window + 1):
                source = min(max(lev + k - window, 0), L - 1)
                for v in range(V):
                    channel = x_net[b * L + lev, k * V + v]
                    assert torch.all(channel == 1000 * b + 10 * source + v), (b, lev, k, v)


def test_layer2d_conditioning_encodes_altitude_and_edges() -> None:
    strategy = Layer2D(window=2, altitude_range=(80.0, 115.0), altitude_frequencies=1)
    _, cond = strategy.to_network(field(), GRID)
    assert strategy.cond_dim == 5 and cond is not None and cond.shape == (B * L, 5)
    s = torch.linspace(-1.0, 1.0, L)  # the 4 levels span 80-115 km exactly
    torch.testing.assert_close(cond[:L, 0], s)
    torch.testing.assert_close(cond[:L, 1], torch.sin(torch.pi * s))
    torch.testing.assert_close(cond[:L, 2], torch.cos(torch.pi * s))
    # missing layers below / above, over window=2: levels 0..3 of 4
    assert cond[:L, 3].tolist() == [1.0, 0.5, 0.0, 0.0]
    assert cond[:L, 4].tolist() == [0.0, 0.0, 0.5, 1.0]
    assert torch.equal(cond[L:], cond[:L])  # same for every field of the batch
    # default: absolute altitude scale 50-120 km, cond_dim = 3 + 2 * 2
    assert Layer2D().cond_dim == 7
    assert Layer2D().network_channels(GRID) == (9, 3, 7)


def test_pole_signs_follow_the_variables() -> None:
    assert Joint3D().pole_sign(GRID) == [-1.0] * 8 + [1.0] * 4
    assert Layer2D(window=1).pole_sign(GRID) == [-1.0, -1.0, 1.0] * 3
    grid = Grid.gaussian(16, 32, 2, variables=("T", "u", "w", "v"))
    assert Layer2D(window=0).pole_sign(grid) == [1.0, -1.0, 1.0, -1.0]
    assert Joint3D().pole_sign(grid) == [1.0, 1.0, -1.0, -1.0, 1.0, 1.0, -1.0, -1.0]


def per_sample(net: UNet) -> Backbone:
    """``net`` applied one sample at a time: its per-sample result cannot depend on the batch."""

    def call(x_in: torch.Tensor, c_noise: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        assert cond is not None
        return torch.cat(
            [net(x_in[i : i + 1], c_noise[i : i + 1], cond[i : i + 1]) for i in range(len(x_in))]
        )

    return call


@pytest.mark.parametrize("layers_per_batch", [1, 3, 5, 8])
def test_layer2d_chunking_is_bit_identical(layers_per_batch: int) -> None:
    whole = Layer2D(window=1)
    chunked = Layer2D(window=1, layers_per_batch=layers_per_batch)
    net = backbone_for(whole)
    x, c = field(1), torch.tensor([-1.0, 0.7])
    with torch.no_grad():
        # bit-identical for a backbone whose per-sample output is batch-independent
        reference = whole.denoise(per_sample(net), x, c, GRID)
        assert torch.equal(chunked.denoise(per_sample(net), x, c, GRID), reference)
        # the batched U-Net: CPU sgemm / conv kernels depend on the batch size (round-off)
        batched = chunked.denoise(net, x, c, GRID)
    torch.testing.assert_close(batched, reference, atol=1e-5, rtol=0)


def test_layer2d_chunks_bound_the_memory_under_autograd() -> None:
    """With grad enabled the chunks are checkpointed: far fewer saved activations,
    the same output and the same vector-Jacobian products, as often as asked."""
    saved: list[int] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    results = {}
    for layers_per_batch in (None, 2):
        strategy = Layer2D(window=1, layers_per_batch=layers_per_batch)
        net = backbone_for(strategy)
        x = field(3).requires_grad_(True)
        saved.clear()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y = strategy.denoise(net, x, torch.tensor([0.3, -0.4]), GRID)
        cotangents = [field(4), field(5)]
        vjps = [torch.autograd.grad(y, x, v, retain_graph=True)[0] for v in cotangents]
        results[layers_per_batch] = (sum(saved), y.detach(), vjps)
    whole_bytes, y_whole, vjp_whole = results[None]
    chunk_bytes, y_chunk, vjp_chunk = results[2]
    # B * L = 8 layer samples in chunks of 2: only the chunks' inputs are kept
    assert chunk_bytes < whole_bytes / 8
    torch.testing.assert_close(y_chunk, y_whole, atol=1e-5, rtol=0)
    for chunked, whole in zip(vjp_chunk, vjp_whole, strict=True):
        assert chunked.abs().sum() > 0
        torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)


def test_layer2d_calls_the_backbone_in_chunks() -> None:
    calls: list[int] = []

    def centre(
        x_in: torch.Tensor, c_noise: torch.Tensor, cond: torch.Tensor | None
    ) -> torch.Tensor:
        calls.append(x_in.shape[0])
        assert c_noise.shape == (x_in.shape[0],) and cond is not None
        return strategy.centre_layer(x_in) * c_noise[:, None, None, None]

    strategy = Layer2D(window=2, layers_per_batch=3)
    x, c = field(2), torch.tensor([2.0, -3.0])
    out = strategy.denoise(centre, x, c, GRID)
    assert calls == [3, 3, 2]
    # the centre layer comes back where it belongs, with its field's noise level
    assert torch.equal(out, x * c[:, None, None, None, None])


def test_layer2d_denoising_is_local_in_altitude() -> None:
    strategy = Layer2D(window=1)
    net = backbone_for(strategy, seed=4)
    x = field(3)
    perturbed = x.clone()
    perturbed[:, :, 0] += 1.0
    with torch.no_grad():
        a = strategy.denoise(net, x, torch.zeros(B), GRID)
        b = strategy.denoise(net, perturbed, torch.zeros(B), GRID)
    changed = (a - b).abs().amax(dim=(0, 1, 3, 4))
    assert changed[0] > 0 and changed[1] > 0  # the layer and its neighbour above
    assert torch.equal(changed[2:], torch.zeros(L - 2))  # beyond the window: untouched


def test_joint3d_denoise_uses_the_whole_field() -> None:
    strategy = Joint3D()
    net = backbone_for(strategy, seed=5)
    x = field(4)
    with torch.no_grad():
        out = strategy.denoise(net, x, torch.tensor([0.1, -0.2]), GRID)
        perturbed = x.clone()
        perturbed[:, :, 0] += 1.0
        moved = strategy.denoise(net, perturbed, torch.tensor([0.1, -0.2]), GRID)
    assert out.shape == x.shape
    assert ((out - moved).abs().amax(dim=(0, 1, 3, 4)) > 0).all()


def test_registry_and_errors() -> None:
    assert set(STRATEGIES) == {"joint3d", "layer2d"}
    assert isinstance(get_strategy("joint3d"), Joint3D)
    layer = get_strategy("layer2d", window=2, layers_per_batch=4)
    assert isinstance(layer, Layer2D) and layer.window == 2
    rebuilt = get_strategy(layer.name, **layer.options())
    assert isinstance(rebuilt, Layer2D) and rebuilt.options() == layer.options()
    with pytest.raises(
        KeyError, match=r"unknown strategy 'layers'; known strategies: joint3d, layer2d"
    ):
        get_strategy("layers")
    with pytest.raises(TypeError, match=r"invalid options .* for strategy 'joint3d'"):
        get_strategy("joint3d", window=1)
    with pytest.raises(ValueError, match="window must be an integer >= 0"):
        Layer2D(window=-1)
    with pytest.raises(ValueError, match="layers_per_batch"):
        Layer2D(layers_per_batch=0)
    with pytest.raises(GridMismatchError, match="L=4 levels but 3 altitudes"):
        Layer2D().to_network(field(), [80.0, 90.0, 100.0])
    with pytest.raises(GridMismatchError, match=r"expected a field \(B, V, L, H, W\)"):
        Joint3D().to_network(torch.zeros(3, L, H, W), GRID)
    with pytest.raises(ValueError, match="layer2d network output has shape"):
        Layer2D().from_network(torch.zeros(B, V, H, W), (B, V, L, H, W))
    with pytest.raises(ValueError, match="c_noise has 3 entries"):
        Joint3D().denoise(lambda x, c, cond: x, field(), torch.zeros(3), GRID)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_build_backbone_gives_a_field_level_module(name: str) -> None:
    torch.manual_seed(6)
    strategy = get_strategy(name)
    backbone = build_backbone(strategy, GRID, base_channels=8, channel_mult=(1, 2))
    assert isinstance(backbone, StrategyBackbone) and isinstance(backbone.network, UNet)
    assert backbone.network.config["pole_sign"] == strategy.pole_sign(GRID)
    x = field(5)
    out = backbone(x, torch.zeros(B))
    assert out.shape == x.shape and torch.equal(out, torch.zeros_like(out))  # zero-init output
    with pytest.raises(ValueError, match="field-level cond"):
        backbone(x, torch.zeros(B), cond=torch.zeros(B, 1))
    with pytest.raises(TypeError, match="set by the strategy"):
        build_backbone(strategy, GRID, in_channels=3)
