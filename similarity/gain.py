"""The trained model against its starting point: the gain in validation kNN accuracy, and whether it is real.

Both models answer the same validation queries, so the comparison is paired: only the queries that one model
gets right and the other wrong tell them apart. McNemar's exact test asks whether those discordant queries split
unevenly by more than chance would (a two-sided binomial test at p = 0.5). A gain whose p-value is at least
``SIGNIFICANCE`` is reported as not significant: on this validation split, the trained model cannot be told
from its start.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.stats import binomtest

SIGNIFICANCE = 0.05


@dataclass(frozen=True)
class StartComparison:
    """Validation kNN accuracy of the start and of the kept model (fractions), the paired test, and the same
    two models on the test split where there is one (``start_test`` empty when the start is the kept model)."""

    start_val: float
    trained_val: float
    only_start: int  # validation queries the start got right and the kept model wrong
    only_trained: int
    p_value: float
    best_epoch: int
    start_test: dict[str, float] = field(default_factory=dict)
    trained_test: dict[str, float] = field(default_factory=dict)

    @property
    def gain(self) -> float:
        return self.trained_val - self.start_val

    @property
    def significant(self) -> bool:
        return self.p_value < SIGNIFICANCE

    @property
    def test_gain(self) -> float | None:
        start, trained = _knn(self.start_test), _knn(self.trained_test)
        return None if start is None or trained is None else trained - start

    @property
    def verdict(self) -> str:
        """One sentence a person can act on."""
        if self.best_epoch == 0:
            return (f"training did not beat the starting point (validation kNN {self.start_val:.2%}); the starting "
                    "point (pretrained features with a fitted head) is the model saved")
        test = "" if self.test_gain is None else f"; test kNN {self.test_gain:+.2%} ({_knn(self.start_test):.2%} -> " \
                                                 f"{_knn(self.trained_test):.2%})"
        text = (f"validation kNN {self.start_val:.2%} -> {self.trained_val:.2%} ({self.gain:+.2%}, "
                f"{self.only_trained} queries gained, {self.only_start} lost, McNemar p = {self.p_value:.3g}){test}")
        if not self.significant:
            text += ("; the gain is NOT significant on this validation split: the trained model cannot be told "
                     "from its start")
        return text

    def to_dict(self) -> dict:
        return {**asdict(self), "gain": self.gain, "significant": self.significant, "test_gain": self.test_gain,
                "verdict": self.verdict}


def compare_to_start(start_correct: np.ndarray, trained_correct: np.ndarray, *, best_epoch: int,
                     start_test: dict[str, float] | None = None,
                     trained_test: dict[str, float] | None = None) -> StartComparison:
    """Compare per-query kNN correctness (n,) bool of the start and of the kept model on the same queries."""
    start_correct = np.asarray(start_correct, dtype=bool)
    trained_correct = np.asarray(trained_correct, dtype=bool)
    if start_correct.shape != trained_correct.shape:
        raise ValueError(f"the two models answered different queries: {start_correct.shape} vs {trained_correct.shape}")
    only_start = int((start_correct & ~trained_correct).sum())
    only_trained = int((trained_correct & ~start_correct).sum())
    discordant = only_start + only_trained
    p_value = 1.0 if discordant == 0 else float(binomtest(only_trained, discordant, 0.5).pvalue)
    return StartComparison(float(start_correct.mean()), float(trained_correct.mean()), only_start, only_trained,
                           p_value, best_epoch, dict(start_test or {}), dict(trained_test or {}))


def _knn(metrics: dict[str, float]) -> float | None:
    return next((value for name, value in metrics.items() if name.startswith("knn_accuracy@")), None)


__all__ = ["SIGNIFICANCE", "StartComparison", "compare_to_start"]
