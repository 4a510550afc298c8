"""``shopformer-train``: the one training pipeline of every task, and its command line.

data -> model -> LightningModule -> fit -> best checkpoint -> test -> report -> MLflow -> bundle ->
registry. What differs between tasks (next-item recommendation, journey models) is asked of the task
object of ``cfg.task`` (:class:`shopformer.train.task.Task`). The run ends by printing one JSON line.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from shopformer.errors import ConfigError, exit_on_user_error
from shopformer.provenance import git_commit
from shopformer.serve.index import check_index_spec
from shopformer.train.base_module import TrainingModule
from shopformer.train.callbacks import detach_weight_averaging
from shopformer.train.checkpoint import load_checkpoint
from shopformer.train.config import CONF_DIR, build_datamodule, build_model, build_task, flat
from shopformer.train.convergence import convergence_summary
from shopformer.train.export import export_and_publish
from shopformer.train.precision import AUTO as AUTO_PRECISION
from shopformer.train.precision import FP32, PrecisionChoice, resolve_precision
from shopformer.train.quiet import quiet_libraries
from shopformer.train.resilient_logger import active, guarded
from shopformer.train.resume import AUTO, FINISHED, checkpoint_to_resume, comparable, differences, mode
from shopformer.train.task import Task
from shopformer.train.tracking import environment, log_run_facts


def run(cfg: DictConfig) -> dict[str, Any] | None:
    """Train and test as ``cfg`` says; returns the summary for the final JSON line (None off rank 0)."""
    commit = git_commit()  # now: the tree may change while a long run trains
    task: Task = build_task(cfg)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    task.check(cfg)
    dm = build_datamodule(cfg)
    dm.setup()  # builds the processed dataset, or loads it from the cache
    # Again: building the dataset draws random numbers that loading it from the cache does not, and a
    # run must give the same numbers either way.
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model = build_model(cfg, dm)
    export = bool(cfg.get("export", True))
    if export and not getattr(model, "exportable", True):
        print(f"export: no bundle for {type(model).__name__}: {model.not_exportable_because}", flush=True)
        export = False
    if export:  # a bad index spec fails now, not after training
        check_index_spec(cfg.index.factory, cfg.index.params, model.dim, dm.n_items)
    trainable = task.prepare(cfg, model, dm)
    if cfg.get("compile") and trainable:
        model = torch.compile(model)
    module = task.build_module(cfg, model, dm, trainable)
    module.shopformer_config = OmegaConf.to_container(cfg, resolve=True)
    module.shopformer_git_commit = commit
    resume = resume_point(cfg, module.shopformer_config) if trainable else None

    configured_logger = instantiate(cfg.logger) if cfg.get("logger") else False
    logger = active(configured_logger)  # False when the tracking store failed at start (said once)
    precision = _precision(cfg, module, dm, trainable, resume)
    module.shopformer_precision = precision.chosen
    trainer = _trainer(cfg, logger, trainable, precision.chosen)
    if logger:
        logger.log_hyperparams({**flat(module.shopformer_config), "precision_chosen": precision.chosen})
    if trainable:
        try:
            trainer.fit(module, datamodule=dm, ckpt_path=resume.path if resume else None, weights_only=True)
        except SIGTERMException:  # Lightning's is a SystemExit with status 0: a scheduler would see success
            raise SystemExit(_stopped_by_sigterm(trainer)) from None
        detach_weight_averaging(trainer)
    ckpt = best_checkpoint(trainer) if trainable else None
    test = task.evaluate(trainer, module, dm, ckpt) if cfg.get("test_after_fit", True) else {}
    if not trainer.is_global_zero:
        return None  # rank 0 reports for the whole DDP job
    if not ckpt:
        ckpt = f"{trainer.default_root_dir}/checkpoints/last.ckpt"
        # weights_only=False: the whole checkpoint (Lightning asks, and says so in a log line, when it
        # is not given). It is about what is saved; loading is always weights_only=True (checkpoint.py).
        trainer.save_checkpoint(ckpt, weights_only=False)
    run_dir = Path(trainer.default_root_dir)
    summary = {
        "run_id": getattr(logger, "run_id", None) if logger else None,
        **task.report(module, dm, test, run_dir),
        "checkpoint": ckpt,
        "epochs": trainer.current_epoch,
        **convergence_summary(trainer),  # "converged": false when the budget ran out while still improving
        "precision": precision.chosen,
        "dataset": {"name": dm.data.meta["name"], "hash": dm.data.meta["config_hash"]},
    }
    # The best checkpoint's monitored validation score, beside what the task reports of validation.
    summary["valid"] = {**best_validation(trainer), **summary.get("valid", {})}
    guarded(logger, "logging the run's tags and artifacts", log_run_facts, logger, cfg, dm, ckpt, commit)
    guarded(logger, "logging the task's artifacts", task.log_to_mlflow, logger, dm, summary)
    if export:
        summary.update(
            export_and_publish(cfg, dm, ckpt, run_dir, active(logger), commit, task.bundle_metrics(test))
        )
    if getattr(configured_logger, "failed", None):
        summary["tracking"] = f"failed: {configured_logger.failed}"
    record = {**summary, "git_commit": commit, "environment": environment()}
    (run_dir / FINISHED).write_text(json.dumps(record, indent=1))  # also: this run is not to be resumed
    return summary


class ResumePoint:
    """The checkpoint a run continues from, with what it saved about itself."""

    def __init__(self, path: Path, checkpoint: dict[str, Any]) -> None:
        self.path = path
        self.epoch = int(checkpoint.get("epoch", 0))
        self.precision = checkpoint.get("shopformer_precision")


def resume_point(cfg: DictConfig, config: dict[str, Any]) -> ResumePoint | None:
    """Where this run continues from (``resume``, see ``train/resume.py``); None: a fresh start.

    The checkpoint is read here without pickle, so a foreign or tampered one is refused in one line
    before Lightning touches it. ``resume=auto`` continues only a run with the very same config."""
    path = checkpoint_to_resume(cfg)
    if path is None:
        return None
    checkpoint = load_checkpoint(path)
    if mode(cfg.get("resume")) == AUTO:
        changed = differences(comparable(checkpoint["shopformer_config"]), comparable(config))
        if changed:
            raise ConfigError(
                f"{path.parent.parent}: an interrupted run of the same command with another config "
                f"({', '.join(changed[:5])}); resume=last continues it anyway, resume=null starts a new run"
            )
    point = ResumePoint(path, checkpoint)
    print(f"resuming {path} (after epoch {point.epoch}; resume=null starts afresh)", flush=True)
    return point


def _precision(
    cfg: DictConfig, module: TrainingModule, dm: Any, trainable: bool, resume: ResumePoint | None
) -> PrecisionChoice:
    """``trainer.precision``, with ``auto`` (the CPU default) resolved by timing a few steps (or as
    the interrupted run chose, when resuming)."""
    configured = str(cfg.trainer.get("precision", FP32))
    if configured != AUTO_PRECISION:
        return PrecisionChoice(configured, reason="as configured")
    if not trainable:
        return PrecisionChoice(FP32, reason="nothing to train")
    if resume and resume.precision:
        return PrecisionChoice(resume.precision, reason="as the interrupted run chose")
    module.attach_data(dm)
    processes = int(cfg.trainer.get("devices") or 1) * int(cfg.trainer.get("num_nodes") or 1)
    choice = resolve_precision(
        AUTO_PRECISION, str(cfg.trainer.accelerator), module, dm.train_dataloader(), processes
    )
    print(f"precision auto: {choice.chosen} ({choice.reason})", flush=True)
    return choice


def _trainer(cfg: DictConfig, logger: Any, trainable: bool, precision: str) -> L.Trainer:
    """``cfg.trainer`` with ``cfg.callbacks`` (none for a model that does not train)."""
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()] if trainable else []
    if not logger:  # nothing to monitor the learning rate into
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    return instantiate(cfg.trainer, logger=logger, callbacks=callbacks, precision=precision)


def best_validation(trainer: L.Trainer) -> dict[str, float]:
    """The monitored validation metric of the best checkpoint (``{"val/ndcg_10": ...}``); {} without one."""
    callback = _monitored_checkpoint(trainer)
    score = getattr(callback, "best_model_score", None)
    if score is None or not getattr(callback, "monitor", None):
        return {}
    return {callback.monitor: round(float(score), 6)}


def best_checkpoint(trainer: L.Trainer) -> str | None:
    """The best checkpoint ModelCheckpoint kept, if any."""
    return getattr(_monitored_checkpoint(trainer), "best_model_path", None) or None


def _monitored_checkpoint(trainer: L.Trainer) -> Any:
    """The ModelCheckpoint that keeps the best checkpoint (the other one only keeps last.ckpt)."""
    savers = trainer.checkpoint_callbacks
    return next((c for c in savers if getattr(c, "monitor", None)), savers[0] if savers else None)


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float | None:
    with exit_on_user_error():
        summary = run(cfg)
    if summary is None:
        return None
    print(json.dumps(summary), flush=True)
    if HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return build_task(cfg).sweep_value(summary)  # the objective of hparams_search sweeps


def _stopped_by_sigterm(trainer: L.Trainer) -> int:
    """Say that a SIGTERM stopped the run and how it resumes; the exit status a shell gives SIGTERM."""
    saver = trainer.checkpoint_callback
    folder = getattr(saver, "dirpath", None) or Path(trainer.default_root_dir) / "checkpoints"
    last = Path(folder) / "last.ckpt"
    resumes = f"from {last}" if last.is_file() else "from the start (no checkpoint was written yet)"
    print(
        f"training stopped by SIGTERM in epoch {trainer.current_epoch}: no test, no JSON line; "
        f"the same command resumes it {resumes}",
        file=sys.stderr,
        flush=True,
    )
    return 128 + signal.SIGTERM


def main() -> None:
    quiet_libraries()
    _hydra_main()


if __name__ == "__main__":
    main()
