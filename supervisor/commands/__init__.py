"""One module per ``superv`` command: ``add_parser(subparsers)`` and ``run(args) -> int``."""
