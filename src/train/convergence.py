"""Did the run converge? Said at the end of fitting: one line, the JSON line and an MLflow tag.

A run that early stopping ended (no improvement of the monitored metric for ``patience``
validations) converged. A run that ran out of steps or epochs converged only if its monitored metric
levelled off: the last ``tail`` of the validations brought at most ``max_tail_gain`` of the total
gain since the first validation. A metric still falling steeply when the budget ran out means the
recipe under-trained on this dataset, and the run says so instead of reporting as if converged.

Early stopping can also end a run on noise: on a sparse dataset validation is a handful of hits until
the model has learnt something, so it may never rise before patience runs out while the training loss
is still falling fast. A run that early stopping ended with its best validation among the first
``early_share`` of them, and the training loss ``min_loss_drop`` (relative) lower at the end than at
that best validation, did not converge either, and the run says to raise ``trainer.min_steps``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.trainer.states import TrainerFn

from shopformer.errors import ConfigError
from shopformer.train.resilient_logger import guarded


@dataclass(frozen=True)
class Validation:
    """One validation of the monitored metric: after ``epoch`` (0-based), at optimiser ``step``."""

    epoch: int
    step: int
    value: float


@dataclass(frozen=True)
class Verdict:
    """Whether the run converged, and why (``reason``: one sentence for people)."""

    converged: bool
    reason: str

    @property
    def line(self) -> str:
        return f"{'converged' if self.converged else 'not converged'}: {self.reason}"

    def summary(self) -> dict[str, Any]:
        """The entries of the run's JSON line."""
        return {"converged": self.converged, "convergence": self.line}


def curve_verdict(
    history: list[Validation],
    monitor: str,
    mode: str = "min",
    tail: float = 0.2,
    max_tail_gain: float = 0.1,
    ended_by: str = "trainer.max_steps",
    step: int | None = None,
) -> Verdict:
    """The verdict on a run that its step or epoch budget (``ended_by``) ended, from its curve."""
    if not history:
        return Verdict(False, f"no validation of {monitor} ran before {ended_by} ended training")
    last = history[-1]
    at = f"epoch {last.epoch} / step {step if step is not None else last.step}"
    if not math.isfinite(last.value):
        return Verdict(False, f"{monitor} is {last.value} at {at} (diverged)")
    if len(history) < 2:
        return Verdict(False, f"one validation of {monitor} only ({at}): nothing shows it stopped improving")
    sign = 1.0 if mode == "max" else -1.0
    best, best_so_far = -math.inf, []
    for v in history:  # best so far, in the improving direction (non-finite values never count)
        best = max(best, sign * v.value) if math.isfinite(v.value) else best
        best_so_far.append(best)
    k = max(1, math.ceil(tail * (len(history) - 1)))  # validations in the tail
    total = best_so_far[-1] - best_so_far[0]
    recent = best_so_far[-1] - best_so_far[-1 - k]
    if total <= 0:
        first = history[0]
        return Verdict(
            False,
            f"{monitor} never improved on its first validation ({first.value:.4f}, epoch {first.epoch}) "
            f"in {len(history)} validations when {ended_by} ended training at {at}: the model did not "
            "learn from this schedule (raise trainer.max_steps or the learning rate) or overfit at once",
        )
    share = recent / total
    epochs = max(1, last.epoch - history[-1 - k].epoch)
    window = f"the last {epochs} epoch{'s' if epochs > 1 else ''}"
    if share > max_tail_gain:
        return Verdict(
            False,
            f"{monitor} still improving ({recent / epochs:.4g} per epoch over {window}, {share:.0%} of "
            f"its total gain) when training ended at {at} ({ended_by}) — raise trainer.max_steps "
            "or trainer.max_epochs",
        )
    best_at = history[best_so_far.index(best_so_far[-1])].epoch
    return Verdict(
        True,
        f"{monitor} levelled off ({window} brought {share:.0%} of its total gain; best "
        f"{sign * best_so_far[-1]:.4f} at epoch {best_at}) when {ended_by} ended training at {at}",
    )


def early_stopping_verdict(stopper: EarlyStopping | None) -> Verdict | None:
    """The verdict when early stopping ended the run; None when it did not."""
    if stopper is None:
        return None
    reason = stopper.stopping_reason
    monitor = stopper.monitor
    if reason in (EarlyStoppingReason.NON_FINITE_METRIC, EarlyStoppingReason.DIVERGENCE_THRESHOLD):
        return Verdict(
            False,
            f"early stopping ended training at epoch {stopper.stopped_epoch}: "
            f"{monitor} diverged ({stopper.stopping_reason_message})",
        )
    if reason == EarlyStoppingReason.STOPPING_THRESHOLD:
        return Verdict(True, f"{monitor} reached early stopping's threshold at epoch {stopper.stopped_epoch}")
    # With trainer.min_steps the run goes on after early stopping asked to stop; it ended by early
    # stopping only if the metric still had not improved for `patience` validations at the end.
    if reason == EarlyStoppingReason.PATIENCE_EXHAUSTED and stopper.wait_count >= stopper.patience:
        return Verdict(
            True,
            f"early stopping: {monitor} best {float(stopper.best_score):.4f}, no improvement in the "
            f"last {stopper.wait_count} validations",
        )
    return None


def stopped_on_noise(
    verdict: Verdict,
    history: list[Validation],
    losses: list[tuple[int, float]],
    mode: str,
    early_share: float = 0.25,
    min_loss_drop: float = 0.1,
) -> Verdict:
    """``verdict`` (early stopping's), or a not-converged one when early stopping ended the run on a
    validation curve that never rose past its first ``early_share`` while the training loss (epoch,
    value) fell by ``min_loss_drop`` or more since the best validation."""
    if not verdict.converged or len(history) < 4 or not losses:
        return verdict
    sign = 1.0 if mode == "max" else -1.0
    scores = [sign * v.value if math.isfinite(v.value) else -math.inf for v in history]
    best_index = scores.index(max(scores))
    if best_index >= early_share * len(history):
        return verdict
    best = history[best_index]
    at_best = [loss for epoch, loss in losses if epoch <= best.epoch]
    start, end = (at_best[-1] if at_best else losses[0][1]), losses[-1][1]
    drop = (start - end) / abs(start) if start else 0.0
    if drop < min_loss_drop:
        return verdict
    return Verdict(
        False,
        f"early stopping ended training at epoch {history[-1].epoch}, but the best validation came at epoch "
        f"{best.epoch} ({best.value:.4f}, validation {best_index + 1} of {len(history)}) while the training "
        f"loss fell {drop:.0%} since ({start:.4f} -> {end:.4f}): validation may still be noise at this "
        "stage — raise trainer.min_steps",
    )


def below_popularity(
    verdict: Verdict, history: list[Validation], monitor: str, reference: float, queries: int | None = None
) -> Verdict:
    """``verdict``, or a not-converged one when the best validation NDCG@10 is no better than the
    popularity baseline's ``reference`` on the same validation queries (the model learnt nothing more).

    With ``queries`` (how many validation queries both were scored on), a best score within two standard
    errors of the reference counts as no better either: the standard error of the difference of two means
    of per-query NDCG in [0, 1] is at most ``sqrt((best + reference) / queries)``, a bound that needs no
    per-query data. On a small validation set a "levelled off" curve a few hits above popularity is noise.
    """
    values = [v.value for v in history if math.isfinite(v.value)]
    if not verdict.converged or not values:
        return verdict
    best = max(values)
    if best <= reference:
        why = f"is no better than the popularity baseline's ({reference:.4f})"
    elif queries and best <= reference + 2.0 * math.sqrt((best + reference) / queries):
        band = f"{reference:.4f}; two standard errors, {queries:,} queries"
        why = f"is within noise of the popularity baseline's ({band})"
    else:
        return verdict
    return Verdict(
        False,
        f"the best {monitor} ({best:.4f}) {why} on the same validation sessions: the model "
        "has not shown it learnt more than item popularity yet — raise trainer.min_steps / trainer.max_steps "
        "or check the learning rate",
    )


def ended_by(trainer: L.Trainer) -> str:
    """Which limit ended fitting (the setting to raise when the run did not converge)."""
    if trainer.max_steps not in (None, -1) and trainer.global_step >= trainer.max_steps:
        return "trainer.max_steps"
    if trainer.max_epochs not in (None, -1) and trainer.current_epoch >= trainer.max_epochs:
        return "trainer.max_epochs"
    if trainer.min_steps and trainer.should_stop and trainer.global_step >= trainer.min_steps:
        return "trainer.min_steps (early stopping had asked to stop before it)"
    return "a stop request (trainer.max_time or a callback)"


class ConvergenceCheck(L.Callback):
    """Watches ``monitor`` (``mode`` min / max: the checkpoint's metric) at every validation of
    fitting; when fitting ends, ``verdict`` says whether the run converged (see the module). The
    verdict is printed in one line and, with an MLflow logger, tagged ``converged`` on the run."""

    def __init__(
        self,
        monitor: str = "val/loss",
        mode: str = "min",
        tail: float = 0.2,
        max_tail_gain: float = 0.1,
        early_share: float = 0.25,
        min_loss_drop: float = 0.1,
    ) -> None:
        if mode not in ("min", "max"):
            raise ConfigError(f"callbacks.convergence.mode must be min or max, got {mode!r}")
        shares = {
            "tail": tail,
            "max_tail_gain": max_tail_gain,
            "early_share": early_share,
            "min_loss_drop": min_loss_drop,
        }
        outside = {k: v for k, v in shares.items() if not 0.0 < v < 1.0}
        if outside:
            raise ConfigError(f"callbacks.convergence: {outside} must be in (0, 1)")
        self.monitor, self.mode, self.tail, self.max_tail_gain = monitor, mode, tail, max_tail_gain
        self.early_share, self.min_loss_drop = early_share, min_loss_drop
        self.history: list[Validation] = []
        self.losses: list[tuple[int, float]] = []  # (epoch, training loss of that epoch)
        self.verdict: Verdict | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Only the validations of fitting (not the sanity check, not trainer.validate afterwards).
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        if self.monitor in trainer.callback_metrics:
            value = float(trainer.callback_metrics[self.monitor])
            self.history.append(Validation(trainer.current_epoch, trainer.global_step, value))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loss = trainer.callback_metrics.get("train/loss")
        if loss is not None and math.isfinite(float(loss)):
            self.losses.append((trainer.current_epoch, float(loss)))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        stopped = early_stopping_verdict(trainer.early_stopping_callback)
        if stopped is not None:
            stopped = stopped_on_noise(
                stopped, self.history, self.losses, self.mode, self.early_share, self.min_loss_drop
            )
        self.verdict = stopped or curve_verdict(
            self.history,
            self.monitor,
            self.mode,
            self.tail,
            self.max_tail_gain,
            ended_by(trainer),
            trainer.global_step,
        )
        popularity = getattr(pl_module, "popularity_val", {})
        reference, queries = popularity.get("ndcg@10"), popularity.get("n")
        if self.monitor.endswith("ndcg_10") and self.mode == "max" and reference is not None:
            self.verdict = below_popularity(self.verdict, self.history, self.monitor, reference, queries)
        if trainer.is_global_zero:
            print(self.verdict.line, flush=True)
            tag_run(trainer.logger, self.verdict)

    def state_dict(self) -> dict[str, Any]:
        # Plain lists: a resumed run's checkpoint loads with torch.load(weights_only=True).
        return {
            "history": [[v.epoch, v.step, v.value] for v in self.history],
            "losses": [[e, x] for e, x in self.losses],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [Validation(int(e), int(s), float(x)) for e, s, x in state_dict.get("history", [])]
        self.losses = [(int(e), float(x)) for e, x in state_dict.get("losses", [])]


def tag_run(logger: Any, verdict: Verdict) -> None:
    """MLflow tags ``converged`` (true / false) and ``convergence`` (the reason) on the run."""
    if not isinstance(logger, MLFlowLogger):
        return

    def tag() -> None:
        logger.experiment.set_tag(logger.run_id, "converged", str(verdict.converged).lower())
        logger.experiment.set_tag(logger.run_id, "convergence", verdict.line[:4000])

    guarded(logger, "tagging the run's convergence", tag)


def convergence_summary(trainer: L.Trainer) -> dict[str, Any]:
    """``converged`` and ``convergence`` for the run's JSON line (empty when nothing was checked)."""
    for callback in trainer.callbacks:
        if isinstance(callback, ConvergenceCheck) and callback.verdict is not None:
            return callback.verdict.summary()
    return {}
