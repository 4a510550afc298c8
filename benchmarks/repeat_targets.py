"""Where the leaderboard's hits come from on a session log: targets already in the session, or new items.

    SHOPFORMER_DATA=../shared/data .venv/bin/python benchmarks/repeat_targets.py [--data taobao]

A session often returns to an item it has shown already (a second look at a product page). Such a
*repeat* target is found by a model that can point back into its history (self-attention can; a first-
order transition table only where the item follows itself); a *new* target needs what other sessions
taught. This script splits each leaderboard cell's test hits@10 and NDCG@10 between the two kinds of
targets, from the per-query ranks the leaderboard keeps (``benchmarks/leaderboard.py --pair`` writes
them under ``outputs/leaderboard/ranks/``) and the test queries' histories.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from leaderboard import MAIN_PROTOCOL, MODELS, machine, ranks_path  # noqa: E402


def repeat_flags(positions: np.ndarray, items: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """For each target event (its row ``positions[i]`` in the event table, its sequence beginning at
    ``starts[i]``): is its item among the events before it in the same sequence?"""
    return np.array([items[p] in items[s:p] for p, s in zip(positions, starts, strict=True)], dtype=bool)


def split_hits(rank: np.ndarray, repeat: np.ndarray, k: int = 10) -> dict[str, float]:
    """Hits@k and NDCG@k (summed over repeat or new targets, divided by all queries: the two parts add
    up to the cell's NDCG@k) of one model's test ranks."""
    hit = rank < k
    gain = np.where(hit, 1.0 / np.log2(rank + 2.0), 0.0)
    n = len(rank)
    return {
        "repeat_hits": int(hit[repeat].sum()),
        "new_hits": int(hit[~repeat].sum()),
        "ndcg_repeat": float(gain[repeat].sum() / n) if n else 0.0,
        "ndcg_new": float(gain[~repeat].sum() / n) if n else 0.0,
    }


def test_queries(dataset: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(target positions, item of every event, start of each target's sequence) of ``dataset``'s test."""
    from hydra import compose, initialize_config_dir

    from shopformer.train.config import CONF_DIR, build_datamodule

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"data={dataset}", "logger=none"])
    dm = build_datamodule(cfg)
    dm.setup()
    test = dm.test_set
    return np.asarray(test.ends), np.asarray(test.tokens.item), np.asarray(test.starts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="taobao", help="a dataset of the leaderboard (default: taobao)")
    args = parser.parse_args(argv)
    from shopformer.models.query_ranks import QueryRanks

    protocol = MAIN_PROTOCOL[args.data]
    positions, items, starts = test_queries(args.data)
    repeat = dict(zip(positions.tolist(), repeat_flags(positions, items, starts).tolist(), strict=True))
    n_repeat = sum(repeat.values())
    print(
        f"{args.data} test ({protocol}): {len(repeat):,} queries, {n_repeat:,} targets already in the session"
    )
    print(f"machine: {machine()}")
    print("| model | hits@10 on repeat targets | hits@10 on new targets | NDCG@10 from repeats | from new |")
    print("|---|---|---|---|---|")
    for model in MODELS:
        path = ranks_path(model, args.data, protocol)
        if not path.is_file():
            print(f"| {model} | no ranks kept ({path.relative_to(REPO)}) | | | |")
            continue
        ranks = QueryRanks.read(path)
        flags = np.array([repeat[p] for p in ranks.position.tolist()], dtype=bool)
        s = split_hits(ranks.rank, flags)
        print(
            f"| {model} | {s['repeat_hits']} of {flags.sum():,} | {s['new_hits']} of {(~flags).sum():,} | "
            f"{s['ndcg_repeat']:.4f} | {s['ndcg_new']:.4f} |"
        )


if __name__ == "__main__":
    main()
