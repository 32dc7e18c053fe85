"""The pieces of `datakit emit`: names, repeat balance, kohya TOML, validation, report."""
