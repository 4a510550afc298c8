"""Next-item recommendation as a task: SASRec, BERT4Rec, GRU4Rec and the fitted baselines.

Trains with ``conf/loss/`` (none for fitted baselines), tests by full ranking over the catalogue,
plots the learning curves and the popularity bias of the test recommendations (``train/run_plots.py``,
logged as ``plots/*.png``) and exports the plain bundle (encoder, item vectors, FAISS index).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from shopformer.data.base_datamodule import BaseDataModule
from shopformer.data.split import TRAIN
from shopformer.models.baselines import FittedBaseline
from shopformer.models.query_ranks import ARTIFACT_DIR, FILE_NAME
from shopformer.train.base_module import TrainingModule
from shopformer.train.module import RecommenderModule
from shopformer.train.resilient_logger import first_line
from shopformer.train.run_plots import next_item_plots
from shopformer.train.task import Task, lightning_module

RANKING_OPTIONS = ("ks", "eval_chunk_size")  # of lit_module, used by shopformer-eval
PLOTS = "plots"  # the run directory's folder and the MLflow artifact folder of the plots


class NextItemTask(Task):
    """Next-item (or masked-item) training, full-ranking test metrics (``hr@10``, ``ndcg@10``, ...)."""

    name = "next_item"

    def __init__(self, sweep_metric: str | None = "ndcg@10") -> None:
        super().__init__(sweep_metric)

    def prepare(self, cfg: DictConfig, model: nn.Module, dm: BaseDataModule) -> bool:
        if not isinstance(model, FittedBaseline):
            return True
        ds = dm.data
        model.fit(ds.item[ds.role == TRAIN], ds.seq[ds.role == TRAIN])
        return False

    def build_module(
        self, cfg: DictConfig, model: nn.Module, dm: BaseDataModule, trainable: bool
    ) -> TrainingModule:
        loss = instantiate(cfg.loss) if trainable else None
        return lightning_module(cfg, model, loss)

    def report(
        self, module: TrainingModule, dm: BaseDataModule, test: dict[str, float], run_dir: Path
    ) -> dict[str, Any]:
        plots = write_plots(module, dm, run_dir / PLOTS)
        test = {k: (v if k == "n" else round(v, 6)) for k, v in test.items()}
        out: dict[str, Any] = {"test": test, "plots": plots} if plots else {"test": test}
        reference = getattr(module, "popularity_val", {}).get("ndcg@10")
        if reference is not None:  # the popularity baseline on the same validation queries
            out["valid"] = {"val/popularity_ndcg_10": round(reference, 6)}
        ranks = write_query_ranks(module, "test", run_dir / ARTIFACT_DIR / FILE_NAME)
        if ranks:
            out["query_ranks"] = ranks
        return out

    def log_to_mlflow(self, logger: Any, dm: BaseDataModule, summary: dict[str, Any]) -> None:
        for path in summary.get("plots", []):
            logger.experiment.log_artifact(logger.run_id, path, PLOTS)
        if summary.get("query_ranks"):
            logger.experiment.log_artifact(logger.run_id, summary["query_ranks"], ARTIFACT_DIR)

    def evaluate_checkpoint(
        self,
        cfg: DictConfig,
        model: nn.Module,
        dm: BaseDataModule,
        trainer: L.Trainer,
        split: str,
        protocols: dict[str, bool],
        ranks_dir: Path | None = None,
    ) -> dict[str, Any]:
        options = OmegaConf.to_container(cfg.lit_module, resolve=True)
        ranking = {k: v for k, v in options.items() if k in RANKING_OPTIONS}
        results = {}
        for protocol, exclude_seen in protocols.items():
            module = RecommenderModule(model, None, **ranking, exclude_seen=exclude_seen)
            if split == "test":
                trainer.test(module, datamodule=dm, verbose=False)
            else:
                trainer.validate(module, datamodule=dm, verbose=False)
            key = "test" if split == "test" else "val"
            results[protocol] = {k: round(v, 6) for k, v in module.last_metrics[key].items()}
            if ranks_dir is not None:
                path = write_query_ranks(module, key, Path(ranks_dir) / f"{protocol}.parquet")
                if path:
                    results[protocol]["query_ranks"] = path
        return results

    def bundle_metrics(self, test: dict[str, float]) -> dict[str, float]:
        # MLflow allows no '@' in metric names: ndcg@10 is test/ndcg_10 in the manifest as in MLflow.
        return {f"test/{k.replace('@', '_')}": v for k, v in test.items() if k != "n"}


def write_query_ranks(module: TrainingModule, split: str, path: Path) -> str | None:
    """The last ``split`` evaluation's per-query ranks as ``path`` (None: nothing to write; under DDP
    each process holds only its own queries, so nothing is written)."""
    trainer = getattr(module, "_trainer", None)
    if trainer is not None and trainer.world_size > 1:
        return None
    ranks = module.query_ranks(split) if hasattr(module, "query_ranks") else None
    return str(ranks.write(path)) if ranks is not None else None


def write_plots(module: TrainingModule, dm: BaseDataModule, directory: Path) -> list[str]:
    """The run's plots (learning curves when it trained, popularity bias when it tested); a plot that
    cannot be made is said in one line and never fails the run."""
    try:
        top, targets = module.test_recommendations()
        curve = module.learning_curve
        paths = next_item_plots(directory, curve, dm.train_item_counts(), top, targets)
    except Exception as exc:  # plotting is a by-product: any failure leaves the run as it is
        print(f"plots skipped: {first_line(exc)}", file=sys.stderr, flush=True)
        return []
    return [str(p) for p in paths]
