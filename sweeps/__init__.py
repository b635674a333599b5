"""Sweeps: plan IsoFLOP profiles and batch x lr grids from scaling laws, and run them through any Hydra launcher."""
