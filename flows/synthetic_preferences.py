"""Write the synthetic TRL-format demo set with known token credit (components.synthetic_preferences).

python -m flows.synthetic_preferences --out runs/guidance_fit/demo.jsonl [--n 300] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys

from components.synthetic_preferences import write_synthetic_pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.synthetic_preferences", description=__doc__)
    parser.add_argument("--out", default="runs/guidance_fit/demo.jsonl")
    parser.add_argument("--n", type=int, default=300, help="pairs (default 300)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"wrote {write_synthetic_pairs(args.out, args.n, args.seed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
