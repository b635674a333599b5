"""The base layer: what every other layer shares (atomic files, run records, config loading, laws, CLI errors,
run-dir locks). Imports only `model` and third-party packages."""
