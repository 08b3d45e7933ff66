"""The Sun's zenith angle and lidars that observe at night (genda.observations.solar)."""

from __future__ import annotations

import numpy as np
import pytest

from genda.grid import Grid
from genda.observations import draw_observations
from genda.observations.catalog import LIDARS
from genda.observations.solar import is_dark, solar_zenith_deg
from genda.storage import open_archive


def test_the_sun_is_overhead_where_the_almanac_puts_it() -> None:
    # 2020 March equinox 03:50 UTC: at 12:00 UTC the declination is +0.08 deg and the
    # equation of time -7.5 min, so the Sun stands over 0.08 N, 1.9 E
    assert solar_zenith_deg(np.datetime64("2020-03-20T12:00"), 0.08, 1.9) < 0.3
    assert solar_zenith_deg(np.datetime64("2020-03-20T12:00"), -0.08, -178.1) > 179.7
    # June solstice: the Tropic of Cancer at local noon (the equation of time is -1.5 min)
    assert solar_zenith_deg(np.datetime64("2020-06-20T12:02"), 23.44, 0.0) < 0.5
    # December solstice at ALOMAR (69.3 N, 16.0 E; local noon near 10:58 UTC): the zenith
    # angle at noon is the latitude less the declination, 69.28 + 23.44 (polar night)
    noon = solar_zenith_deg(np.datetime64("2020-12-21T10:58"), 69.28, 16.01)
    assert noon == pytest.approx(69.28 + 23.44, abs=0.1)
    # broadcasting: a grid of points at once
    zenith = solar_zenith_deg(np.datetime64("2020-03-20T12:00"), np.zeros((2, 1)), np.zeros(3))
    assert zenith.shape == (2, 3)


def test_night_is_dark_and_noon_is_not() -> None:
    lat, lon = 54.12, 11.77  # Kuehlungsborn
    assert bool(is_dark(np.datetime64("2020-01-15T00:00"), lat, lon))
    assert not bool(is_dark(np.datetime64("2020-01-15T11:30"), lat, lon))
    # in June the Sun at midnight stays within 18 deg of the horizon there
    assert not bool(is_dark(np.datetime64("2020-06-21T23:15"), lat, lon, zenith=108.0))


def test_lidars_observe_only_at_night(tiny_archive) -> None:
    truth = open_archive(tiny_archive)
    grid = Grid.from_dataset(truth)
    seen_any_hour = set()
    for when in truth.time.values[:24]:
        obs = draw_observations(truth, grid, when, "radars,lidars", lidars_at_night=True)
        lidars = set(obs.loc[obs["network"] == "lidars", "station"])
        dark = {s.name for s in LIDARS if bool(is_dark(when, s.lat, s.lon))}
        assert lidars == {name for name in dark if name in lidars}  # none in daylight
        every = draw_observations(truth, grid, when, "radars,lidars")
        observing = set(every.loc[every["network"] == "lidars", "station"])
        assert lidars == observing & dark
        seen_any_hour |= lidars
    assert seen_any_hour  # a day has night somewhere
