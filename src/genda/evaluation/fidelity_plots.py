"""Figures of a fidelity report: profiles, spectra, vertical correlation and tides.

:func:`plot_report` writes every figure of a
:class:`~genda.evaluation.fidelity_records.FidelityReport` as a PNG
(:meth:`FidelityReport.plot <genda.evaluation.fidelity_records.FidelityReport.plot>`
calls it), with the tolerance bands of its acceptance thresholds. The
figures of an ensemble are :mod:`genda.evaluation.ensemble_plots`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps

from genda.evaluation.fidelity_records import HARMONICS, FidelityReport
from genda.evaluation.plots import file_stem, hide_unused, new_figure, panel_grid, save_figure
from genda.grid import VARIABLES


def plot_report(
    report: FidelityReport, out_dir: str | Path, prefix: str | None = None
) -> list[Path]:
    """Write the PNG figures of ``report`` to ``out_dir`` and return their paths.

    The files are those of :meth:`FidelityReport.plot
    <genda.evaluation.fidelity_records.FidelityReport.plot>`.
    """
    out = Path(out_dir)
    stem = file_stem(prefix if prefix is not None else f"fidelity_{report.strategy or 'samples'}")
    paths = [_plot_profiles(report, out, stem, name) for name in report.moments]
    if report.spectra is not None:
        paths.append(_plot_spectra(report, out, stem))
        paths.append(_plot_spectral_ratio(report, out, stem))
    if report.vertical_correlation:
        paths.append(_plot_correlation(report, out, stem))
    if report.tides:
        paths.append(_plot_tides(report, out, stem))
    return paths


def _plot_profiles(report: FidelityReport, out: Path, stem: str, name: str) -> Path:
    moments = report.moments[name]
    altitude = report.grid.altitude
    units = _units(name)
    fig, axes = new_figure(1, 2, panel_size=(4.0, 4.0), sharey=True)
    ax_mean, ax_std = axes[0]
    tol = report.thresholds.mean * moments.reference_std
    ax_mean.fill_betweenx(
        altitude,
        moments.reference_mean - tol,
        moments.reference_mean + tol,
        color="0.85",
        label=f"reference +- {report.thresholds.mean:g} std",
    )
    ax_mean.plot(moments.reference_mean, altitude, "k-o", label="reference")
    ax_mean.plot(moments.sample_mean, altitude, "C3--s", label="samples")
    ax_mean.set(xlabel=f"mean {name} ({units})", ylabel="altitude (km)")
    low, high = report.thresholds.std_ratio
    ax_std.fill_betweenx(
        altitude,
        low * moments.reference_std,
        high * moments.reference_std,
        color="0.85",
        label=f"reference x [{low:g}, {high:g}]",
    )
    ax_std.plot(moments.reference_std, altitude, "k-o", label="reference")
    ax_std.plot(moments.sample_std, altitude, "C3--s", label="samples")
    ax_std.set(xlabel=f"std {name} ({units})")
    for ax in (ax_mean, ax_std):
        ax.legend(fontsize=7)
    fig.suptitle(f"{name}: {report.strategy or 'samples'} vs reference")
    return save_figure(fig, out / f"{stem}_profiles_{file_stem(name)}.png")


def _plot_spectra(report: FidelityReport, out: Path, stem: str) -> Path:
    spectra = report.spectra
    assert spectra is not None
    altitude = report.grid.altitude
    # at most 8 panels: evenly spaced levels (the ratio figure shows all of them)
    shown = np.unique(np.linspace(0, altitude.size - 1, min(8, altitude.size)).round().astype(int))
    nrows, ncols = panel_grid(shown.size)
    fig, axes = new_figure(nrows, ncols, panel_size=(3.4, 3.0))
    tol = report.thresholds.spectrum
    for ax, level in zip(axes.ravel(), shown, strict=False):
        reference = spectra.reference[level]
        ax.fill_between(
            spectra.wavenumber,
            (1 - tol) * reference,
            (1 + tol) * reference,
            color="0.85",
            label=f"reference +- {tol:.0%}",
        )
        ax.loglog(spectra.wavenumber, reference, "k-", label="reference")
        ax.loglog(spectra.wavenumber, spectra.sample[level], "C3--", label="samples")
        ax.set(title=f"{altitude[level]:.1f} km", xlabel="total wavenumber l")
        ax.set_ylabel("E(l) (m2 s-2)")
    axes.ravel()[0].legend(fontsize=7)
    hide_unused(axes, shown.size)
    fig.suptitle(f"kinetic-energy spectra: {report.strategy or 'samples'} vs reference")
    return save_figure(fig, out / f"{stem}_spectra.png")


def _plot_spectral_ratio(report: FidelityReport, out: Path, stem: str) -> Path:
    spectra = report.spectra
    assert spectra is not None
    tol = report.thresholds.spectrum
    fig, axes = new_figure(1, 1, panel_size=(6.0, 4.0))
    ax = axes[0, 0]
    ax.axhspan(-tol, tol, color="0.88", label=f"+- {tol:.0%}")
    ax.axhline(0.0, color="k", lw=0.8)
    error = spectra.relative_error
    for level, altitude in enumerate(report.grid.altitude):
        color = _level_color(level, report.grid.nlevels)
        ax.plot(
            spectra.wavenumber, error[level], "-o", ms=3, color=color, label=f"{altitude:.1f} km"
        )
    ax.set(
        xlabel="total wavenumber l",
        ylabel="E_s(l) / E_r(l) - 1",
        title=f"spectral error of {report.strategy or 'samples'} up to T = {spectra.truncation}",
    )
    ax.legend(fontsize=7, ncols=2)
    return save_figure(fig, out / f"{stem}_spectral_ratio.png")


def _plot_correlation(report: FidelityReport, out: Path, stem: str) -> Path:
    names = list(report.vertical_correlation)
    altitude = report.grid.altitude
    fig, axes = new_figure(len(names), 3, panel_size=(3.2, 2.9), sharex=True, sharey=True)
    extent = _cell_extent(altitude)
    shown = {}
    for row, name in enumerate(names):
        comparison = report.vertical_correlation[name]
        panels = (
            ("samples", comparison.sample, "RdBu_r", 1.0),
            ("reference", comparison.reference, "RdBu_r", 1.0),
            (
                f"difference, max {comparison.max_abs_difference:.2f}",
                comparison.difference,
                "PuOr_r",
                0.5,
            ),
        )
        for col, (title, matrix, cmap, limit) in enumerate(panels):
            ax = axes[row, col]
            shown[col] = ax.imshow(
                matrix, origin="lower", extent=extent, cmap=cmap, vmin=-limit, vmax=limit
            )
            ax.set_title(f"{name}: {title}", fontsize=9)
        axes[row, 0].set_ylabel("altitude (km)")
    for ax in axes[-1]:
        ax.set_xlabel("altitude (km)")
    # one colour bar per scale, not per panel (also keeps the layout cheap)
    fig.colorbar(shown[0], ax=axes[:, :2], shrink=0.6, label="correlation")
    fig.colorbar(shown[2], ax=axes[:, 2], shrink=0.6, label="samples - reference")
    fig.suptitle("vertical correlation of anomalies from the per-point mean")
    return save_figure(fig, out / f"{stem}_vertical_correlation.png")


def _plot_tides(report: FidelityReport, out: Path, stem: str) -> Path:
    """Rows: variables; columns: amplitudes of all harmonics, then the phase of each."""
    names = list(report.grid.variables)
    altitude = report.grid.altitude
    fig, axes = new_figure(len(names), 1 + len(HARMONICS), panel_size=(3.2, 2.9), sharey=True)
    colors = {"reference": "k", "samples": "C3"}
    lines = {1: ("-", "o"), 2: ("--", "s")}
    for row, name in enumerate(names):
        ax_amp = axes[row, 0]
        for source, table in report.tides.items():
            color = colors.get(source, "C0")
            for col, n in enumerate(HARMONICS, start=1):
                profile = table[name][n]
                line, marker = lines.get(n, (":", "x"))
                ax_amp.plot(
                    profile.amplitude,
                    altitude,
                    line,
                    marker=marker,
                    ms=3,
                    color=color,
                    label=f"{source}, {_harmonic(n)}",
                )
                ax_phase = axes[row, col]
                ax_phase.plot(
                    profile.phase_north_hours, altitude, "^", color=color, label=f"{source} N"
                )
                ax_phase.plot(
                    profile.phase_south_hours,
                    altitude,
                    "v",
                    color=color,
                    mfc="none",
                    label=f"{source} S",
                )
                ax_phase.set(xlim=(0, 24 / n), title=f"{name}: {_harmonic(n)} phase")
        ax_amp.set(title=f"{name}: amplitude ({_units(name)})", ylabel="altitude (km)")
    for col in range(1, 1 + len(HARMONICS)):
        axes[-1, col].set_xlabel("local solar time of maximum (h)")
    axes[-1, 0].set_xlabel("amplitude")
    axes[0, 0].legend(fontsize=6)
    axes[0, 1].legend(fontsize=6)
    fig.suptitle("tides: " + ", ".join(report.tides))
    return save_figure(fig, out / f"{stem}_tides.png")


def _harmonic(n: int) -> str:
    return {1: "diurnal", 2: "semidiurnal"}.get(n, f"{n} cpd")


def _units(name: str) -> str:
    return VARIABLES[name].units if name in VARIABLES else "?"


def _level_color(level: int, levels: int) -> tuple[float, float, float, float]:
    return colormaps["viridis"](level / max(levels - 1, 1))


def _cell_extent(altitude: np.ndarray) -> tuple[float, float, float, float]:
    """``imshow`` extent whose cells are centred on the levels (evenly spaced or not, roughly)."""
    if altitude.size == 1:
        low, high = altitude[0] - 0.5, altitude[0] + 0.5
    else:
        half = 0.5 * (altitude[-1] - altitude[0]) / (altitude.size - 1)
        low, high = altitude[0] - half, altitude[-1] + half
    return (float(low), float(high), float(low), float(high))


__all__ = ["plot_report"]
