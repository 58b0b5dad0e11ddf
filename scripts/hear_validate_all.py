"""Run hear-validator on every model of the catalog (or the ones named), with random weights.

    python scripts/hear_validate_all.py                      # every id, default knobs
    python scripts/hear_validate_all.py --presets            # ... and every id:preset
    python scripts/hear_validate_all.py panns-cnn14 'crepe-*' 'efficientat-mn04-as:*' --out table.md

Each model runs in its own `python -m hearvalidator.validate embedzoo.hear -m '<id>?weights=random'`
process -- the HEAR 2021 conformance check as a submission would face it, on the architecture the
card builds (no download needed: `weights=random`). The validator feeds 8 clips of 2 s and 16 clips
of 3.74 s, so a full-size model takes from seconds (CREPE tiny) to minutes (OpenL3 6144) on a CPU.
Writes a markdown table (model, result, seconds, embedding sizes) and exits 1 if any model fails.
"""

from __future__ import annotations

import argparse
import fnmatch
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

from embedzoo.registry import get_registry
from embedzoo.spec import ModelSpec


def targets(patterns: list[str], presets: bool) -> list[str]:
    """Catalog ids matching the patterns (all when none), each followed by its presets if asked;
    a pattern with a colon (`panns-*:sed`) names id:preset pairs itself."""
    id_patterns = [p for p in patterns if ":" not in p]
    pair_patterns = [p for p in patterns if ":" in p]
    out = []
    for card in get_registry():
        card_chosen = not patterns or any(fnmatch.fnmatchcase(card.id, p) for p in id_patterns)
        if card_chosen:
            out.append(card.id)
        for name in card.presets:
            spec = f"{card.id}:{name}"
            if (card_chosen and presets) or any(fnmatch.fnmatchcase(spec, p) for p in pair_patterns):
                out.append(spec)
    return out


def validate(spec: str, device: str, timeout: float) -> tuple[str, float, str]:
    """(result, seconds, detail): result is 'pass', 'FAIL' or 'TIMEOUT'."""
    query = str(ModelSpec.parse(spec).with_weights("random"))
    command = [sys.executable, "-m", "hearvalidator.validate", "embedzoo.hear", "-m", query, "-d", device]
    start = time.perf_counter()
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "TIMEOUT", time.perf_counter() - start, f"over {timeout:g} s"
    seconds = time.perf_counter() - start
    if result.returncode == 0 and "Looks good!" in result.stdout:
        shapes = re.findall(r"Received embedding of shape: torch\.Size\(\[([\d, ]+)\]\)", result.stdout)
        return "pass", seconds, " / ".join(f"({s})" for s in shapes)
    tail = (result.stdout + result.stderr).strip().splitlines()[-3:]
    return "FAIL", seconds, " ".join(tail)[-300:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", help="ids or glob patterns (default: the whole catalog)")
    parser.add_argument("--presets", action="store_true", help="also validate every id:preset")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per model")
    parser.add_argument("--out", type=Path, help="write the markdown table here as well")
    args = parser.parse_args()
    specs = targets(args.models, args.presets)
    if not specs:
        print(f"no catalog model matches {args.models}", file=sys.stderr)
        return 2
    rows = []
    for spec in specs:
        result, seconds, detail = validate(spec, args.device, args.timeout)
        rows.append(f"| `{spec}` | {result} | {seconds:.0f} | {detail} |")
        print(rows[-1], flush=True)
    header = [
        f"hear-validator 2021.0.2 on `embedzoo.hear`, random weights, device {args.device} "
        f"({platform.processor() or platform.machine()}), {time.strftime('%Y-%m-%d')}",
        "",
        "| model | result | seconds | embedding shapes (timestamps / scene) or error |",
        "|---|---|---|---|",
    ]
    if args.out:
        args.out.write_text("\n".join(header + rows) + "\n")
    return 0 if all("| pass |" in row for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
