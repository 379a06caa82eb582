"""Point the ros-jazzy PyPI wheels' exported CMake files at this interpreter.

The wheels are built in a manylinux container and export the container's Python include dir
and numpy include dir; rosidl's Python generator then fails to find Python.h / numpy headers.
Idempotent: run it after every `pip install` of ros-jazzy wheels.
"""

from __future__ import annotations

import pathlib
import sys
import sysconfig

import numpy

WRONG = {
    "/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include": numpy.get_include(),
    "/opt/python/cp311-cp311/include/python3.11": sysconfig.get_paths()["include"],
}


def main() -> int:
    share = pathlib.Path(sys.prefix) / "share"
    patched = 0
    for path in share.rglob("*.cmake"):
        text = path.read_text(errors="surrogateescape")
        new = text
        for old, right in WRONG.items():
            new = new.replace(old, right)
        if new != text:
            path.write_text(new, errors="surrogateescape")
            patched += 1
    print(f"patched {patched} CMake files under {share}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
