"""The convergence verdict: a budget that ran out on a rising curve, and early stopping on noise."""

from __future__ import annotations

from shopformer.train.convergence import (
    ConvergenceCheck,
    Validation,
    Verdict,
    below_popularity,
    curve_verdict,
    stopped_on_noise,
)

# GRU4Rec on the Taobao slice with a 540-step floor (2026-12-07): validation NDCG@10 per epoch, a few
# hits of ~1,200 sessions, and the training loss still falling when early stopping ended the run.
NOISY = [
    0.0003,
    0.0011,
    0.0020,
    0.0000,
    0.0008,
    0.0008,
    0.0000,
    0.0011,
    0.0011,
    0.0011,
    0.0005,
    0.0019,
    0.0015,
]
LOSSES = [11.34, 11.00, 10.5954, 10.13, 10.00, 9.82, 9.55, 9.52, 9.23, 9.08, 8.96, 8.94, 8.88]
STOPPED = Verdict(True, "early stopping: val/ndcg_10 best 0.0020, no improvement in the last 10 validations")


def history(values: list[float]) -> list[Validation]:
    return [Validation(epoch, 70 * (epoch + 1), value) for epoch, value in enumerate(values)]


def losses(values: list[float]) -> list[tuple[int, float]]:
    return list(enumerate(values))


def test_early_stopping_on_a_curve_that_never_rose_while_the_loss_fell_is_not_convergence():
    verdict = stopped_on_noise(STOPPED, history(NOISY), losses(LOSSES), "max")
    assert not verdict.converged
    assert "best validation came at epoch 2 (0.0020, validation 3 of 13)" in verdict.reason
    assert "training loss fell 16%" in verdict.reason and "raise trainer.min_steps" in verdict.reason


def test_early_stopping_after_a_late_best_or_a_flat_loss_stays_converged():
    rising = [0.001 * i for i in range(10)] + [0.0089, 0.0088, 0.0087]  # best late: a real peak
    assert stopped_on_noise(STOPPED, history(rising), losses(LOSSES), "max") == STOPPED
    flat = [10.0 - 0.01 * i for i in range(13)]  # best early, but the loss has settled (1 % lower)
    assert stopped_on_noise(STOPPED, history(NOISY), losses(flat), "max") == STOPPED
    assert stopped_on_noise(STOPPED, history(NOISY), [], "max") == STOPPED  # no loss logged: no claim
    not_converged = Verdict(False, "diverged")
    assert stopped_on_noise(not_converged, history(NOISY), losses(LOSSES), "max") == not_converged


def test_a_monitored_loss_counts_its_lowest_value_as_best():
    val_loss = [5.0, 4.0, 4.1, 4.2, 4.3, 4.2, 4.4, 4.5]  # best at validation 2 of 8 (mode min)
    verdict = stopped_on_noise(STOPPED, history(val_loss), losses(LOSSES[:8]), "min")
    assert not verdict.converged and "epoch 1 (4.0000, validation 2 of 8)" in verdict.reason


def test_a_budget_that_ran_out_on_a_rising_curve_is_not_convergence():
    still_rising = curve_verdict(history([0.01 * i for i in range(10)]), "val/ndcg_10", "max")
    assert not still_rising.converged and "still improving" in still_rising.reason
    levelled = curve_verdict(history([0.1, 0.15, 0.17, 0.18] + [0.18] * 8), "val/ndcg_10", "max")
    assert levelled.converged and "levelled off" in levelled.reason
    flat = curve_verdict(history([0.0, 0.0, 0.0]), "val/ndcg_10", "max")  # nothing learnt: not "levelled"
    assert not flat.converged and "never improved on its first validation (0.0000, epoch 0)" in flat.reason
    worse = curve_verdict(history([3.0, 3.2, 3.1]), "val/loss", "min")
    assert not worse.converged and "never improved" in worse.reason


def test_the_loss_curve_travels_in_the_checkpoint():
    check = ConvergenceCheck("val/ndcg_10", "max")
    check.history, check.losses = history(NOISY[:3]), losses(LOSSES[:3])
    again = ConvergenceCheck("val/ndcg_10", "max")
    again.load_state_dict(check.state_dict())
    assert again.history == check.history and again.losses == check.losses


def test_bad_thresholds_are_refused_in_one_line():
    import pytest

    from shopformer.errors import ConfigError

    with pytest.raises(ConfigError, match="early_share"):
        ConvergenceCheck("val/ndcg_10", "max", early_share=1.5)


def test_a_model_no_better_than_popularity_on_validation_did_not_converge():
    levelled = curve_verdict(history([0.001, 0.003, 0.004, 0.004, 0.004]), "val/ndcg_10", "max")
    assert levelled.converged
    verdict = below_popularity(levelled, history([0.001, 0.003, 0.004, 0.004, 0.004]), "val/ndcg_10", 0.0045)
    assert not verdict.converged
    assert "(0.0040) is no better than the popularity baseline's (0.0045)" in verdict.reason
    assert below_popularity(levelled, history([0.01, 0.02]), "val/ndcg_10", 0.0045) == levelled
    diverged = Verdict(False, "diverged")
    assert below_popularity(diverged, history([0.0, 0.0]), "val/ndcg_10", 0.0045) == diverged


def test_a_few_hits_above_popularity_on_a_small_validation_set_is_noise():
    """The 14-epoch BERT4Rec probe on Taobao (2026-12-07): best 0.0025 against popularity's 0.0022 on
    1,286 sessions, the loss still falling: "levelled off" there is noise, not convergence."""
    curve = history([0.0003, 0.0010, 0.0009, 0.0019, 0.0025, 0.0017, 0.0013, 0.0012, 0.0010, 0.0006, 0.0002])
    levelled = curve_verdict(curve, "val/ndcg_10", "max")
    assert levelled.converged
    noise = below_popularity(levelled, curve, "val/ndcg_10", 0.0022, queries=1286)
    assert not noise.converged
    assert (
        "(0.0025) is within noise of the popularity baseline's (0.0022; two standard errors, 1,286"
        in noise.reason
    )
    assert below_popularity(levelled, curve, "val/ndcg_10", 0.0022, queries=10**7).converged  # a big set
    # GRU4Rec's Taobao cell: best 0.0167 against 0.0022 on 1,286 sessions is well clear of the noise.
    clear = history([0.002, 0.009, 0.0167, 0.015])
    assert below_popularity(levelled, clear, "val/ndcg_10", 0.0022, queries=1286) == levelled


def test_the_check_compares_the_best_validation_with_the_modules_popularity_reference(capsys):
    from types import SimpleNamespace

    check = ConvergenceCheck("val/ndcg_10", "max")
    check.history = history([0.001, 0.003, 0.004, 0.004, 0.004, 0.004])
    trainer = SimpleNamespace(
        early_stopping_callback=None, max_steps=60, max_epochs=-1, global_step=60, current_epoch=5,
        min_steps=None, should_stop=False, is_global_zero=True, logger=None,
    )  # fmt: skip
    check.on_train_end(trainer, SimpleNamespace(popularity_val={"ndcg@10": 0.0045}))
    assert not check.verdict.converged and "popularity baseline's (0.0045)" in capsys.readouterr().out
    check.on_train_end(trainer, SimpleNamespace(popularity_val={"ndcg@10": 0.001}))
    assert check.verdict.converged and "levelled off" in check.verdict.reason
