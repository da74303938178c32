"""Paired comparison of two rows over the same splits: mean difference, Wilcoxon signed-rank p, wins.

Two combinations fitted in one experiment share their splits (same protocol, seed and
manifest), so their per-split metrics pair up by (dataset, protocol, split). The test is
scipy's two-sided Wilcoxon signed-rank test on the paired differences.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from iqa_store.fit.schema import HIGHER_IS_BETTER
from iqa_store.report.paper import Row
from iqa_store.report.paper_tables import rows_of

__all__ = ["PairedComparison", "compare_rows"]


@dataclass(frozen=True)
class PairedComparison:
    dataset: str
    protocol: str
    metric: str
    a: str
    b: str
    n_splits: int
    mean_a: float
    mean_b: float
    mean_difference: float  # a - b
    p_value: float  # NaN when every difference is zero (or fewer than 2 pairs)
    wins_a: int  # splits where a is better (by the metric's direction)
    wins_b: int
    ties: int

    def to_dict(self) -> dict:
        return asdict(self)

    def sentence(self) -> str:
        p = "n/a" if not math.isfinite(self.p_value) else f"{self.p_value:.4g}"
        return (f"{self.dataset} {self.metric}: {self.a} {self.mean_a:.4f} vs {self.b} {self.mean_b:.4f}, "
                f"mean difference {self.mean_difference:+.4f} over {self.n_splits} splits, Wilcoxon p = {p}; "
                f"wins {self.wins_a}-{self.wins_b} ({self.ties} ties)")


def compare_rows(results: pd.DataFrame, a: str, b: str, metric: str = "srcc",
                 regressor: str | None = None) -> list[PairedComparison]:
    """``a`` against ``b`` (combinations) on every dataset and protocol where both have the same splits."""
    from scipy import stats
    out = []
    for (dataset, protocol), _ in results.groupby(["dataset", "protocol"], sort=False):
        left = rows_of(results, Row(a, a, regressor, protocol), dataset).set_index("split")[metric]
        right = rows_of(results, Row(b, b, regressor, protocol), dataset).set_index("split")[metric]
        paired = pd.concat([left.rename("a"), right.rename("b")], axis=1, join="inner").dropna().sort_index()
        if paired.empty:
            continue
        difference = paired["a"].to_numpy() - paired["b"].to_numpy()
        sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
        p_value = float("nan")
        if len(difference) >= 2 and np.any(difference != 0):
            p_value = float(stats.wilcoxon(paired["a"], paired["b"]).pvalue)
        out.append(PairedComparison(str(dataset), str(protocol), metric, a, b, len(paired), float(paired["a"].mean()),
                                    float(paired["b"].mean()), float(difference.mean()), p_value,
                                    int(np.sum(sign * difference > 0)), int(np.sum(sign * difference < 0)),
                                    int(np.sum(difference == 0))))
    return out
