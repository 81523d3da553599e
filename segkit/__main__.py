"""``python -m segkit …``: the command line."""

from segkit.cli import main

raise SystemExit(main())
