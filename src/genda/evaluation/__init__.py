"""Evaluation of fields and ensembles against model data: spectra, tides, scores, plots."""
