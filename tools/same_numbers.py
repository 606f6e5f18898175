"""Check that two runs measured the same numbers: ``python tools/same_numbers.py BEFORE AFTER``.

BEFORE and AFTER are output folders of ``python -m thermojax.baseline`` (one run) or of a ``-m``
sweep (one sub-folder per job). Every ``baseline_metrics.json`` under BEFORE must have a twin at
the same relative path under AFTER with equal values, timings, the environment and cache hits
aside, and every ``samples.npz`` must hold bit-identical arrays. Prints each difference and exits
with status 1 if there is one; a restructure that changes no behaviour passes.

Example:
    python -m thermojax.baseline hydra.run.dir=/tmp/before wandb=disabled   # on the old commit
    python -m thermojax.baseline hydra.run.dir=/tmp/after wandb=disabled    # on the new one
    python tools/same_numbers.py /tmp/before /tmp/after
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

# Wall-clock figures, the machine, and whether the stage cache was warm: not measurements.
NOT_NUMBERS = {
    "timings_s",
    "quantization_time_s",
    "environment",
    "cache",
    "parameter_time_s",
    "total_time_s",
    "param_time_s",
    "param_extra_s",
    "param_compile_s",
    "sampling_time_s",
    "sampling_ratio",
    "seconds",
    "bytes_per_second",
}


def differences(before: Any, after: Any, where: str = "") -> Iterator[str]:
    """Every path at which two JSON values differ (NaN equals NaN)."""
    if isinstance(before, dict) and isinstance(after, dict):
        for key in sorted(set(before) | set(after)):
            if key in NOT_NUMBERS:
                continue
            if key not in before or key not in after:
                yield f"{where}.{key}: only in {'after' if key in after else 'before'}"
            else:
                yield from differences(before[key], after[key], f"{where}.{key}")
    elif isinstance(before, list) and isinstance(after, list):
        if len(before) != len(after):
            yield f"{where}: {len(before)} items before, {len(after)} after"
        for i, (b, a) in enumerate(zip(before, after, strict=False)):
            yield from differences(b, a, f"{where}[{i}]")
    elif isinstance(before, float) and isinstance(after, float):
        if not (before == after or (math.isnan(before) and math.isnan(after))):
            yield f"{where}: {before!r} before, {after!r} after"
    elif before != after:
        yield f"{where}: {before!r} before, {after!r} after"


def compare(before_dir: Path, after_dir: Path) -> list[str]:
    """All differences between the reports and samples of two output folders."""
    found: list[str] = []
    reports = sorted(before_dir.rglob("baseline_metrics.json"))
    if not reports:
        return [f"no baseline_metrics.json under {before_dir}"]
    for report in reports:
        relative = report.relative_to(before_dir)
        twin = after_dir / relative
        if not twin.is_file():
            found.append(f"{relative}: missing under {after_dir}")
            continue
        found += [
            f"{relative}{diff}"
            for diff in differences(json.loads(report.read_text()), json.loads(twin.read_text()))
        ]
        samples = report.with_name("samples.npz")
        if samples.is_file():
            with np.load(samples) as b, np.load(twin.with_name("samples.npz")) as a:
                for name in sorted(set(b.files) | set(a.files)):
                    if (
                        name not in b.files
                        or name not in a.files
                        or not np.array_equal(b[name], a[name])
                    ):
                        found.append(f"{relative.with_name('samples.npz')}[{name}] differs")
    return found


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    found = compare(args.before, args.after)
    for line in found:
        print(line)
    count = len(list(args.before.rglob("baseline_metrics.json")))
    print(
        f"{count} report(s) compared: {'identical' if not found else f'{len(found)} differences'}"
    )
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
