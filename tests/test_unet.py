"""Spherical padding and the U-Net backbone: continuation across poles, equivariance, init."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from genda.grid import gaussian_latitudes
from genda.models.padding import SphericalConv2d, SphericalPad2d, pole_signs, spherical_pad
from genda.models.unet import UNet
from genda.threads import cpu_threads

H, W = 16, 32


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # tiny kernels: one thread is faster and leaves the other cores alone
    with cpu_threads(1):
        yield


def extended_coords(pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Latitudes (deg) continued past the poles, and longitudes continued periodically."""
    lat, _ = gaussian_latitudes(H)
    north = 180.0 - lat[:pad][::-1]  # beyond 90 deg
    south = -180.0 - lat[H - pad :][::-1]  # beyond -90 deg
    lat_ext = np.concatenate([north, lat, south])
    lon = np.arange(W) * 360.0 / W
    lon_ext = np.concatenate([lon[W - pad :] - 360.0, lon, lon[:pad] + 360.0])
    return lat_ext, lon_ext


def scalar_field(lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    """Smooth on the sphere (a polynomial of x, y, z), written in latitude/longitude."""
    phi, lam = np.meshgrid(np.deg2rad(lat_deg), np.deg2rad(lon_deg), indexing="ij")
    x, y, z = np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)
    return z + 0.5 * x - 0.3 * y * z + 0.2 * x * x


def solid_body_wind(lat_deg: np.ndarray, lon_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eastward and northward components of ``omega x r`` about a tilted axis."""
    omega = np.array([0.4, -0.7, 1.0])
    phi, lam = np.meshgrid(np.deg2rad(lat_deg), np.deg2rad(lon_deg), indexing="ij")
    r = np.stack([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)])
    vel = np.cross(omega, r, axis=0)
    east = np.stack([-np.sin(lam), np.cos(lam), np.zeros_like(lam)])
    north = np.stack([-np.sin(phi) * np.cos(lam), -np.sin(phi) * np.sin(lam), np.cos(phi)])
    return (vel * east).sum(0), (vel * north).sum(0)


# ---------------------------------------------------------------------- padding


@pytest.mark.parametrize("pad", [1, 2, 3])
def test_padding_is_the_analytic_continuation_of_scalars_and_winds(pad: int) -> None:
    lat, _ = gaussian_latitudes(H)
    lon = np.arange(W) * 360.0 / W
    u, v = solid_body_wind(lat, lon)
    fields = np.stack([u, v, scalar_field(lat, lon)])[None]  # (1, 3, H, W)
    padded = SphericalPad2d(pad, pole_signs(("u", "v", "T")))(torch.from_numpy(fields))

    lat_ext, lon_ext = extended_coords(pad)
    u_ext, v_ext = solid_body_wind(lat_ext, lon_ext)
    expected = np.stack([u_ext, v_ext, scalar_field(lat_ext, lon_ext)])
    assert padded.shape == (1, 3, H + 2 * pad, W + 2 * pad)
    np.testing.assert_allclose(padded[0].numpy(), expected, atol=1e-12)
    # the winds really are non-trivial across the poles: scalar treatment would be wrong
    wrong = SphericalPad2d(pad)(torch.from_numpy(fields))
    assert np.abs(wrong[0, :2, :pad].numpy() - expected[:2, :pad]).max() > 0.1


def test_padding_is_exactly_periodic_in_longitude_and_mirrors_rows() -> None:
    x = torch.randn(2, 3, H, W)
    sign = torch.tensor([-1.0, -1.0, 1.0])
    p = 2
    y = spherical_pad(x, p, sign)
    assert torch.equal(y[..., :p], y[..., W : W + p])
    assert torch.equal(y[..., W + p :], y[..., p : 2 * p])
    assert torch.equal(y[:, :, p:-p, p:-p], x)
    # row just beyond the north pole = northernmost row, half a turn away, signed
    assert torch.equal(y[:, :, p - 1, p:-p], x[:, :, 0].roll(W // 2, -1) * sign[:, None])
    assert torch.equal(y[:, :, 0, p:-p], x[:, :, 1].roll(W // 2, -1) * sign[:, None])
    assert torch.equal(y[:, :, -p, p:-p], x[:, :, -1].roll(W // 2, -1) * sign[:, None])


def test_padded_conv_commutes_with_any_longitude_roll() -> None:
    torch.manual_seed(0)
    conv = SphericalConv2d(3, 5, 3, pole_sign=[-1.0, -1.0, 1.0])
    x = torch.randn(2, 3, H, W)
    with torch.no_grad():
        y = conv(x)
        for k in (1, 3, 16, 31):
            torch.testing.assert_close(conv(x.roll(k, -1)), y.roll(k, -1), atol=1e-6, rtol=0)


def test_padding_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="even number of longitudes"):
        spherical_pad(torch.zeros(1, 1, 4, 7), 1)
    with pytest.raises(ValueError, match="exceeds the grid"):
        spherical_pad(torch.zeros(1, 1, 2, 8), 3)
    with pytest.raises(ValueError, match="2 entries for 3 channels"):
        SphericalPad2d(1, [1.0, -1.0])(torch.zeros(1, 3, 4, 8))
    with pytest.raises(ValueError, match=r"\+1 or -1"):
        SphericalPad2d(1, [1.0, 0.5])
    with pytest.raises(ValueError, match="pole_sign has 2 entries"):
        SphericalConv2d(3, 4, pole_sign=[1.0, -1.0])


# ---------------------------------------------------------------------- U-Net


def tiny_unet(**kwargs: object) -> UNet:
    options: dict[str, object] = {
        "in_channels": 3,
        "out_channels": 2,
        "base_channels": 8,
        "channel_mult": (1, 2, 2),
        "noise_embedding_dim": 16,
        "pole_sign": [-1.0, -1.0, 1.0],
    }
    options.update(kwargs)
    return UNet(**options)  # type: ignore[arg-type]


def randomise_output_layer(net: UNet) -> None:
    with torch.no_grad():
        net.conv_out.conv.weight.normal_(0.0, 0.1)
        net.conv_out.conv.bias.normal_(0.0, 0.1)


def test_output_shape_and_zero_initial_output() -> None:
    torch.manual_seed(0)
    net = tiny_unet(cond_dim=4, attention_levels=(2,))
    x = torch.randn(3, 3, H, W)
    y = net(x, torch.randn(3), torch.randn(3, 4))
    assert y.shape == (3, 2, H, W)
    assert torch.equal(y, torch.zeros_like(y))


@pytest.mark.parametrize("attention_levels", [(), (1, 2)])
def test_equivariant_to_longitude_rolls_by_the_downsampling_factor(
    attention_levels: tuple[int, ...],
) -> None:
    torch.manual_seed(1)
    net = tiny_unet(attention_levels=attention_levels, blocks_per_level=2).eval()
    randomise_output_layer(net)
    factor = net.downsampling_factor
    assert factor == 4
    x = torch.randn(2, 3, H, W)
    c = torch.tensor([-1.0, 0.5])
    with torch.no_grad():
        y = net(x, c)
        assert y.abs().max() > 0.1
        for k in (1, 3, 7):
            shifted = net(x.roll(factor * k, -1), c)
            torch.testing.assert_close(shifted, y.roll(factor * k, -1), atol=1e-5, rtol=0)


def test_noise_level_changes_the_output_after_one_step_and_gradients_are_finite() -> None:
    torch.manual_seed(2)
    net = tiny_unet(cond_dim=3, dropout=0.1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, cond = torch.randn(4, 3, H, W), torch.randn(4, 3)
    c = torch.linspace(-1.5, 1.0, 4)
    loss = (net(x, c, cond) - x[:, :2]).square().mean()
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert net.conv_out.conv.weight.grad.abs().max() > 0  # type: ignore[union-attr]
    opt.step()
    net.eval()
    with torch.no_grad():
        low = net(x, torch.full((4,), -1.5), cond)
        high = net(x, torch.full((4,), 1.0), cond)
        other_cond = net(x, torch.full((4,), -1.5), torch.randn(4, 3))
    assert (low - high).abs().max() > 1e-4
    assert (low - other_cond).abs().max() > 1e-4
    assert torch.isfinite(low).all()


def test_grid_and_conditioning_errors_are_clear() -> None:
    net = tiny_unet(cond_dim=2)
    with pytest.raises(ValueError, match=r"H must be divisible by 2\*\*2 = 4 and W by 2\*\*3 = 8"):
        net(torch.zeros(1, 3, 18, 32), torch.zeros(1), torch.zeros(1, 2))
    with pytest.raises(ValueError, match=r"H must be divisible"):
        net(torch.zeros(1, 3, 16, 36), torch.zeros(1), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="needs cond"):
        net(torch.zeros(1, 3, H, W), torch.zeros(1))
    with pytest.raises(ValueError, match="expects 3 input channels"):
        net(torch.zeros(1, 4, H, W), torch.zeros(1), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="c_noise has 2 entries"):
        net(torch.zeros(1, 3, H, W), torch.zeros(2), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="cond_dim=0"):
        tiny_unet()(torch.zeros(1, 3, H, W), torch.zeros(1), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="pole_sign has 2 entries"):
        tiny_unet(pole_sign=[1.0, 1.0])
    with pytest.raises(ValueError, match="attention_levels"):
        tiny_unet(attention_levels=(3,))


def test_config_rebuilds_the_same_network() -> None:
    torch.manual_seed(3)
    net = tiny_unet(cond_dim=2, attention_levels=(2,))
    randomise_output_layer(net)
    clone = UNet.from_config(net.config)
    clone.load_state_dict(net.state_dict())
    x, c, cond = torch.randn(1, 3, H, W), torch.zeros(1), torch.randn(1, 2)
    with torch.no_grad():
        assert torch.equal(net.eval()(x, c, cond), clone.eval()(x, c, cond))
    assert "conv_in.pad.pole_sign" not in net.state_dict()  # configuration, not a weight


@pytest.mark.parametrize(
    ("in_channels", "out_channels", "cond_dim", "expected"),
    [(24, 24, 0, 814_104), (9, 3, 7, 804_611)],
)
def test_default_configuration_stays_small(
    in_channels: int, out_channels: int, cond_dim: int, expected: int
) -> None:
    # joint3d of u, v, T on 8 levels; layer2d with window 1 (7 altitude features)
    net = UNet(in_channels, out_channels, cond_dim=cond_dim)
    assert net.count_parameters() == expected
    assert net.count_parameters() * 4 < 20e6  # float32 checkpoint < 20 MB
