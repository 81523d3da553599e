"""nbval runs every course notebook in the ``ci`` profile, in a throwaway project folder."""

import os
import tempfile


def pytest_configure(config):
    os.environ.setdefault("SEGKIT_PROFILE", "ci")
    if "SEGKIT_HOME" not in os.environ:
        os.environ["SEGKIT_HOME"] = tempfile.mkdtemp(prefix="segkit-notebooks-")
    # The memory planner's calibrations go to a throwaway cache, not the user's; torch keeps
    # looking for downloaded weights where it did (its default follows XDG_CACHE_HOME).
    cache = os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache"))
    os.environ.setdefault("TORCH_HOME", os.path.join(cache, "torch"))
    os.environ["XDG_CACHE_HOME"] = os.path.join(os.environ["SEGKIT_HOME"], "cache")
