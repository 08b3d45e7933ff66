"""Progress bars of sampling: one style (tqdm on standard error), shown to a person only.

A bar is drawn when it is asked for and standard error is a terminal; in logs,
pipes and captured output it is off (tqdm's ``disable=None``), so a log holds
results, not carriage returns. Sampling counts sampler steps, the unit that
moves at a steady pace: ``batches x steps`` for a window, where one step is
one to three denoiser calls (:func:`genda.models.sampling.sample`).
"""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

__all__ = ["progress_bar", "sampling_bar"]


def progress_bar(total: int, desc: str, unit: str, enabled: bool = True) -> tqdm:
    """A tqdm bar of ``total`` ``unit`` on standard error; off unless ``enabled`` and a terminal.

    ``bar.disable`` tells the caller whether anything is drawn (to skip work
    that only feeds the bar).
    """
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        disable=None if enabled else True,  # None: off when the file is not a terminal
        dynamic_ncols=True,
    )


def sampling_bar(batches: int, steps: int, enabled: bool = True) -> tqdm:
    """The bar of a window's sampling: ``batches x steps`` sampler steps."""
    return progress_bar(batches * steps, "sampling", "step", enabled)
