"""The prepared GPU check: every GPU step in one run, timed, written as one Markdown + JSON report.

On the GPU machine (after ``bash benchmarks/gpu/fetch.sh`` here; the command is in README.md "GPU"):

    python3 benchmarks/gpu/check.py --out $OUT --data .gpu/data

Here, the same steps at tiny size on the CPU (the test suite runs this):

    .venv/bin/python benchmarks/gpu/check.py --dry-run --out /tmp/gpu-dry

Steps: the CUDA tests (tests/gpu); ``train_throughput`` on ML-1M in fp32, bf16 and bf16 + torch.compile;
``sasrec_ml1m`` trained on the GPU with the wall time to validation NDCG@10 >= 0.18 (seen excluded) and
the test figures of its best checkpoint; that checkpoint exported and its ONNX parity checked on the CPU;
a few hundred sampled-softmax steps on a synthetic 1M-item catalogue, then full ranking over it, with
throughput and peak GPU memory. A step that fails is reported and the next one runs; a step that would
start past ``--budget`` seconds is skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
TARGET_NDCG = 0.18


def make_importable() -> None:
    """``shopformer`` (src/) and the benchmarks importable without installing, here and in subprocesses."""
    try:
        import shopformer  # noqa: F401
    except ImportError:
        root = Path(tempfile.mkdtemp(prefix="shopformer-pkg-"))
        (root / "shopformer").symlink_to(REPO / "src")
        sys.path.insert(0, str(root))
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    sys.path.insert(0, str(REPO / "benchmarks"))
    sys.path.insert(0, str(REPO))  # tests.train.runs for the CUDA tests


@dataclass
class Context:
    out: Path
    work: Path
    dry_run: bool
    accelerator: str
    deadline: float = float("inf")  # time.perf_counter() after which no step or variant starts
    figures: dict[str, Any] = field(default_factory=dict)

    def seconds_left(self) -> float:
        return self.deadline - time.perf_counter()


def cuda_tests(ctx: Context) -> dict[str, Any]:
    """tests/gpu (every CUDA code path against the CPU); all skipped on a machine without CUDA."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "tests/gpu"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=240, env=os.environ)
    lines = [line for line in done.stdout.strip().splitlines() if line.strip()]
    if done.returncode not in (0, 5):
        raise RuntimeError(f"pytest exited {done.returncode}: {' | '.join(lines[-15:])}")
    return {"summary": lines[-1] if lines else "", "returncode": done.returncode}


def throughput(ctx: Context) -> dict[str, Any]:
    """benchmarks/train_throughput.py's variants on this accelerator (one epoch each)."""
    import train_throughput as tt

    from shopformer.data.sources import SyntheticSource
    from shopformer.data.store import DatasetSpec

    spec = DatasetSpec("synthetic-dry", SyntheticSource(n_users=200, n_items=100)) if ctx.dry_run else None
    max_len = 20 if ctx.dry_run else 200
    variants = [("fp32", "32-true", False), ("bf16", "bf16-mixed", False)]
    if not ctx.dry_run:  # inductor's CPU build would dominate the dry run
        variants.append(("bf16 + torch.compile", "bf16-mixed", True))
    rows = {}
    for name, precision, compiled in variants:
        if ctx.seconds_left() < (150 if compiled else 60):
            rows[name] = {"skipped": f"{ctx.seconds_left():.0f} s of the budget left"}
            continue
        row = tt.measure(name, True, precision, 1, ctx.accelerator, compiled, spec, max_len)
        rows[name] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
    return {"machine": tt.machine(), "variants": rows}


def train_to_quality(ctx: Context) -> dict[str, Any]:
    """sasrec_ml1m on the GPU: wall time until validation NDCG@10 >= 0.18, then its best checkpoint's test."""
    from hydra import compose, initialize_config_dir

    from shopformer.train.config import CONF_DIR
    from shopformer.train.train import run

    run_dir = ctx.work / "sasrec"
    if ctx.dry_run:
        # The GPU recipe's options at tiny size: bf16 autocast, seen items excluded, sliding windows.
        recipe = ["data.source.n_users=200", "data.source.n_items=100", "datamodule.max_len=20",
                  "model.dim=16", "trainer=cpu", "trainer.max_epochs=2", "trainer.precision=bf16-mixed",
                  "lit_module.exclude_seen=true", "datamodule.train_windows=sliding",
                  "datamodule.length_bucketing=true"]  # fmt: skip
    else:
        recipe = ["experiment=sasrec_ml1m", "trainer=gpu", "+trainer.max_time=00:00:03:30",
                  "callbacks.early_stopping.patience=8", "threads=4"]  # fmt: skip
    overrides = [
        *recipe,
        "logger=none",
        "export=false",
        f"paths.cache_dir={ctx.work / 'cache'}",
        f"trainer.default_root_dir={run_dir}",
        f"callbacks.model_checkpoint.dirpath={run_dir / 'checkpoints'}",
        "+callbacks.time_to_target._target_=shopformer.train.callbacks.TimeToTarget",
        f"+callbacks.time_to_target.target={0.0 if ctx.dry_run else TARGET_NDCG}",
        f"+callbacks.time_to_target.report={run_dir / 'time_to_target.json'}",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    started = time.perf_counter()
    summary = run(cfg)
    seconds = time.perf_counter() - started
    timer = json.loads((run_dir / "time_to_target.json").read_text())
    ctx.figures["checkpoint"] = summary["checkpoint"]
    ctx.figures["cache_dir"] = str(ctx.work / "cache")
    test = summary["test"]
    return {
        "epochs": summary["epochs"],
        "wall_s": round(seconds, 1),
        "s_per_epoch": round(seconds / max(1, summary["epochs"]), 2),
        "val_target": timer["target"],
        "val_best_ndcg10": timer["best"],
        "s_to_val_target": None if timer["reached_s"] is None else round(timer["reached_s"], 1),
        "epoch_at_val_target": timer["reached_epoch"],
        "test_ndcg10": test.get("ndcg@10"),
        "test_hr10": test.get("hr@10"),
        "test_reached_target": bool(test.get("ndcg@10", 0) >= TARGET_NDCG),
    }


def export_parity(ctx: Context) -> dict[str, Any]:
    """The trained checkpoint as a bundle; the ONNX encoder's parity with torch, checked on the CPU."""
    from hydra import compose, initialize_config_dir

    from shopformer.train.config import CONF_DIR
    from shopformer.train.export import export_checkpoint

    if "checkpoint" not in ctx.figures:
        raise RuntimeError("no checkpoint: the training step did not finish")
    out = ctx.work / "bundle"
    overrides = [
        f"ckpt={ctx.figures['checkpoint']}",
        f"out={out}",
        f"paths.cache_dir={ctx.figures['cache_dir']}",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        summary = export_checkpoint(compose("export", overrides=overrides))
    manifest = json.loads((out / "manifest.json").read_text())
    return {
        "seconds": summary["seconds"],
        "parity_max_abs_diff": manifest["export"]["parity_max_abs_diff"],
        "parity_n": manifest["export"]["parity_n"],
        "index_recall": summary["index"]["recall"],
    }


def million_items(ctx: Context) -> dict[str, Any]:
    """Sampled-softmax training steps on a synthetic 1M-item catalogue, then full ranking over all of it."""
    import torch

    from shopformer.models.losses import SampledSoftmax
    from shopformer.models.ranking_metrics import FullRankingMetrics
    from shopformer.models.sasrec import SASRec

    n_items, steps, batch, length = (5_000, 5, 32, 20) if ctx.dry_run else (1_000_000, 300, 256, 50)
    device = torch.device("cuda" if ctx.accelerator == "gpu" else "cpu")
    torch.manual_seed(0)
    model = SASRec(n_items + 1, dim=64, max_len=length, n_blocks=2, heads=1, dropout=0.1).to(device)
    loss_fn = SampledSoftmax(n_negatives=1024 if not ctx.dry_run else 64)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    # Zipf-like item popularity, as real catalogues: most draws from a few items, every item possible.
    weights = 1.0 / torch.arange(1, n_items + 1, device=device, dtype=torch.float32)

    def draw(rows: int) -> torch.Tensor:
        return torch.multinomial(weights, rows * (length + 1), replacement=True).view(rows, length + 1) + 1

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    started = time.perf_counter()
    for step in range(steps):
        if step == min(10, steps - 1):  # warm-up excluded from the rate
            sync(device)
            started, counted = time.perf_counter(), step
        seqs = draw(batch)
        with autocast:
            hidden = model(seqs[:, :-1])
            loss = loss_fn(
                hidden.reshape(-1, hidden.shape[-1]), seqs[:, 1:].reshape(-1), model.item_vectors()
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync(device)
    train_rate = batch * (steps - counted) / (time.perf_counter() - started)
    queries = 256 if ctx.dry_run else 4096
    metrics = FullRankingMetrics(n_items + 1, ks=(10, 100), chunk_size=65536)
    model.eval()
    with torch.no_grad(), autocast:
        seqs = draw(queries)
        sync(device)
        started = time.perf_counter()
        for i in range(0, queries, 512):
            part = seqs[i : i + 512]
            metrics.update(model.encode(part[:, :-1]).float(), model.item_vectors().float(), part[:, -1])
        sync(device)
    eval_rate = queries / (time.perf_counter() - started)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    values = metrics.compute()
    return {
        "n_items": n_items,
        "train_steps": steps,
        "batch": batch,
        "seq_len": length,
        "train_seq_s": round(train_rate, 1),
        "final_loss": round(float(loss.detach()), 4),
        "eval_queries_s": round(eval_rate, 1),
        "eval_hr100": round(values["hr@100"], 4),
        "peak_gpu_gib": None if peak is None else round(peak, 2),
    }


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


# The most wanted figures first: a budget that runs out costs the throughput table's last rows.
STEPS: list[tuple[str, Callable[[Context], dict[str, Any]]]] = [
    ("cuda_tests", cuda_tests),
    ("train_to_quality", train_to_quality),
    ("export_parity", export_parity),
    ("million_items", million_items),
    ("throughput", throughput),
]


def run_steps(
    ctx: Context, budget_s: float, only: list[str] | None = None, save: Callable[[dict], None] | None = None
) -> dict[str, Any]:
    """Every step in order, each result saved as soon as it is known (a killed run keeps what it had)."""
    started = time.perf_counter()
    ctx.deadline = started + budget_s
    results: dict[str, Any] = {}
    for name, step in STEPS:
        if only and name not in only:
            continue
        elapsed = time.perf_counter() - started
        if elapsed > budget_s:
            results[name] = {
                "status": "skipped",
                "reason": f"budget of {budget_s:.0f} s spent ({elapsed:.0f} s)",
            }
            continue
        t0 = time.perf_counter()
        print(f"[gpu-check] {name} ...", file=sys.stderr, flush=True)
        try:
            results[name] = {"status": "ok", **step(ctx)}
        except Exception as exc:  # one failing step must not cost the others their figures
            results[name] = {
                "status": "failed",
                "error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}",
                "traceback": traceback.format_exc()[-3000:],
            }
        results[name]["seconds"] = round(time.perf_counter() - t0, 1)
        if save:
            save(results)
        print(
            f"[gpu-check] {name}: {results[name]['status']} in {results[name]['seconds']} s", file=sys.stderr
        )
    return results


def environment() -> dict[str, Any]:
    import torch

    info = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=5
        )
        info["commit"] = commit.stdout.strip() or None
    except OSError:
        info["commit"] = None
    return info


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [
        f"# GPU check — {env['date_utc']} UTC{' (dry run, CPU)' if report['dry_run'] else ''}",
        "",
        f"GPU {env['gpu']}, torch {env['torch']} (CUDA {env['cuda']}), Python {env['python']}, "
        f"commit {env['commit']}; total {report['total_s']} s.",
        "",
        "| step | status | seconds | figures |",
        "|---|---|---|---|",
    ]
    for name, result in report["steps"].items():
        figures = {k: v for k, v in result.items() if k not in ("status", "seconds", "traceback", "variants")}
        lines.append(f"| {name} | {result['status']} | {result.get('seconds', '')} | {json.dumps(figures)} |")
    variants = report["steps"].get("throughput", {}).get("variants")
    if variants:
        lines += ["", "| throughput variant | s / epoch | train seq/s | eval seq/s |", "|---|---|---|---|"]
        for name, row in variants.items():
            keys = ("epoch_s", "train_seq_s", "eval_seq_s")
            cells = [str(row.get(key, row.get("skipped", ""))) for key in keys]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for report.md and report.json")
    parser.add_argument("--data", default=str(REPO / ".gpu" / "data"), help="folder holding ml-1m/ml-1m.txt")
    parser.add_argument("--dry-run", action="store_true", help="every step on the CPU at tiny size")
    parser.add_argument("--budget", type=float, default=420.0, help="no step starts after this many seconds")
    parser.add_argument("--only", nargs="*", help="run only these steps")
    args = parser.parse_args(argv)
    make_importable()
    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ["SHOPFORMER_DATA"] = str(Path(args.data).resolve())
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    os.environ.setdefault("SHOPFORMER_CACHE", str(work / "cache"))
    accelerator = "gpu" if torch.cuda.is_available() and not args.dry_run else "cpu"
    if not args.dry_run and accelerator != "gpu":
        print("no CUDA device: use --dry-run on a machine without a GPU", file=sys.stderr)
        return 2
    ctx = Context(out=out, work=work, dry_run=args.dry_run, accelerator=accelerator)
    started = time.perf_counter()
    env = environment()

    def save(steps: dict[str, Any]) -> dict[str, Any]:
        report = {
            "dry_run": args.dry_run,
            "environment": env,
            "total_s": round(time.perf_counter() - started, 1),
            "steps": steps,
        }
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (out / "report.md").write_text(markdown(report))
        return report

    steps = run_steps(ctx, args.budget, args.only, save)
    print(markdown(save(steps)))
    return 0 if all(s["status"] == "ok" for s in steps.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
