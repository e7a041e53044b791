"""``python -m crfold.ops.build``: compile the kNN extension now (cached) and report the backend.

Prints the backend and the cached library it loaded (``-v``: torch's build log too). Exits with
status 1 and the reason (missing compiler, headers, ninja) when the build fails.
"""

from __future__ import annotations

import sys
import time


def main(argv: list[str] | None = None) -> int:
    from . import _ext
    from .knn import backend

    verbose = "-v" in (argv if argv is not None else sys.argv[1:])
    t0 = time.perf_counter()
    ok = _ext.load(verbose=verbose)
    dt = time.perf_counter() - t0
    print(f"crfold.ops backend: {backend()}  ({dt:.1f} s)")
    if _ext.library is not None:
        print(f"library: {_ext.library}")
    if not ok:
        print(f"error: {_ext.build_error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
