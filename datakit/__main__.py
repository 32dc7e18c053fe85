"""Allow `python -m datakit`."""

from datakit.cli.main import main

main()
