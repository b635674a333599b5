"""Hydra configuration shipped inside the installed package as `scaling.conf` (see setup.py): every entry point
finds it through `scaling.base.configs` (Hydra's `pkg://scaling.conf` search path), wherever the project is
installed."""
