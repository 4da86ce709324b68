"""Makes `import emcoder` find bindings/python/emcoder without installing it, except with
EMCODER_TEST_INSTALLED=1, where the tests run against the installed package
(scripts/test-python-package.sh)."""
import os
import sys
from pathlib import Path

if os.environ.get("EMCODER_TEST_INSTALLED") != "1":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
