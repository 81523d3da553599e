"""``python -m segkit.train -m my_fcn …``: the original study's command, kept working.

It is ``python -m segkit train …`` under its old name; see ``python -m segkit train --help``.
"""

import sys

from segkit.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["train", *sys.argv[1:]]))
