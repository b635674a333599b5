"""One training run: its config, data feed, step, loop, checkpoints, trackers and run-directory lifecycle, single or
packed. Imports the base and data layers and `model`; never sweeps, analysis or a command."""
