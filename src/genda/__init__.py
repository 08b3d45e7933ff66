"""genda: generative data assimilation for the mesosphere and lower thermosphere.

Diffusion models trained on circulation fields of numerical models turn sparse
point observations (meteor-radar winds, lidar temperatures, limb profiles)
into large posterior ensembles of full (u, v, T) fields.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("genda")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
