"""nbval runs every course notebook in the ``ci`` profile, in a throwaway project folder."""

import os
import tempfile


def pytest_configure(config):
    os.environ.setdefault("SEGKIT_PROFILE", "ci")
    if "SEGKIT_HOME" not in os.environ:
        os.environ["SEGKIT_HOME"] = tempfile.mkdtemp(prefix="segkit-notebooks-")
    # the memory planner's calibrations go to a throwaway cache, not the user's ~/.cache
    os.environ.setdefault("XDG_CACHE_HOME", os.path.join(os.environ["SEGKIT_HOME"], "cache"))
