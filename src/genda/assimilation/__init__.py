"""Posterior sampling: guidance of the diffusion prior by observations, the assimilation pipeline, baselines."""
