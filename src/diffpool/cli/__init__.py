"""Console scripts: ``diffpool-train``, ``diffpool-report``, ``diffpool-predict`` and
``diffpool-viz``."""

from __future__ import annotations

import sys

from diffpool.utils.extras import require


def extras_present(prog: str, *extras: str) -> bool:
    """Whether the extras a console script needs are installed; if not, say which to install
    on stderr (the script then exits with 2)."""
    try:
        for extra in extras:
            require(extra, prog)
    except ImportError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return False
    return True
