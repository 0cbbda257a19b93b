"""DP-SGD pieces: Opacus grad samplers for project layers, noise calibration, accounting."""
