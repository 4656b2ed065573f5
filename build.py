"""Bundle plug-ins into a static site: ``python build.py [MANIFEST] [--out dist] [--base /p/]``.

A thin wrapper over ``valor build`` that works from a checkout without installing the package.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "runtime_py"))

from valor.build import main

if __name__ == "__main__":
    sys.exit(main())
