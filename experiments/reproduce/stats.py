"""Statistics for reports: mean ± sd over seeds with n, and whether a gap between two settings is
inside the seed-to-seed noise (Welch's unequal-variance t-test; no scipy needed)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Summary:
    """n values summarised: mean and sample standard deviation (n − 1; 0 when n = 1)."""

    n: int
    mean: float
    sd: float

    def fmt(self, digits: int = 2) -> str:
        """``91.23 ± 0.40`` (the ± part dropped when n = 1; n is stated in table headers)."""
        if self.n == 0:
            return "–"
        m = self.mean if round(self.mean, digits) != 0 else 0.0  # no "-0.00"
        if self.n == 1:
            return f"{m:.{digits}f}"
        return f"{m:.{digits}f} ± {self.sd:.{digits}f}"

    def to_dict(self) -> dict:
        return {"n": self.n, "mean": self.mean, "sd": self.sd}


def summarize(values: Sequence[float]) -> Summary:
    """Mean and sample sd of ``values`` (NaNs dropped)."""
    v = [float(x) for x in values if x is not None and not math.isnan(float(x))]
    n = len(v)
    if n == 0:
        return Summary(0, float("nan"), float("nan"))
    m = sum(v) / n
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (n - 1)) if n > 1 else 0.0
    return Summary(n, m, sd)


def _betacf(a: float, b: float, x: float) -> float:
    # continued fraction of the incomplete beta function (modified Lentz; Numerical Recipes 6.4)
    tiny, eps = 1e-300, 3e-14
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        de = d * c
        h *= de
        if abs(de - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    front = math.exp(lbeta + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def student_t_sf2(t: float, df: float) -> float:
    """Two-sided p-value P(|T| ≥ |t|) of Student's t with ``df`` degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return betainc(df / 2.0, 0.5, df / (df + t * t))


@dataclass(frozen=True)
class Gap:
    """A comparison of two settings: difference of means, Welch's t and p, and the verdict."""

    a: str
    b: str
    diff: float
    combined_sd: float
    t: float
    df: float
    p: float
    in_noise: bool

    def sentence(self, unit: str = " points") -> str:
        """One line for a report, e.g. ``bin − bn = +0.42 points: inside the noise (...)``."""
        if math.isnan(self.p):
            why = (f"|diff| {'<' if self.in_noise else '≥'} combined sd {self.combined_sd:.2f}; "
                   "too few seeds for a t-test")
        else:
            p = "p < 0.001" if self.p < 0.001 else f"p = {self.p:.3f}"
            why = f"Welch t = {self.t:.2f}, df = {self.df:.1f}, {p}"
        verdict = "inside the noise" if self.in_noise else "larger than the noise"
        return f"{self.a} − {self.b} = {self.diff:+.2f}{unit}: {verdict} ({why})"

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("a", "b", "diff", "combined_sd", "t", "df", "p",
                                              "in_noise")}


def welch(a: Sequence[float], b: Sequence[float], name_a: str = "A", name_b: str = "B",
          alpha: float = 0.05) -> Gap:
    """Welch's t-test of mean(a) − mean(b). The gap counts as inside the noise when p ≥ ``alpha``
    or, with fewer than two values on a side (no variance estimate), when |diff| is below the
    combined sd sqrt(sd_a² + sd_b²) — or always, when that sd is unknown (n = 1 both sides)."""
    sa, sb = summarize(a), summarize(b)
    if sa.n == 0 or sb.n == 0:
        raise ValueError(f"cannot compare {name_a} and {name_b}: no values on one side")
    diff = sa.mean - sb.mean
    comb = math.sqrt(sa.sd ** 2 + sb.sd ** 2)
    if sa.n < 2 or sb.n < 2:
        in_noise = comb == 0.0 or abs(diff) < comb
        return Gap(name_a, name_b, diff, comb, float("nan"), float("nan"), float("nan"), in_noise)
    va, vb = sa.sd ** 2 / sa.n, sb.sd ** 2 / sb.n
    se = math.sqrt(va + vb)
    if se == 0.0:
        t = 0.0 if diff == 0 else math.copysign(math.inf, diff)
        df = float(sa.n + sb.n - 2)
    else:
        t = diff / se
        df = (va + vb) ** 2 / (va ** 2 / (sa.n - 1) + vb ** 2 / (sb.n - 1))  # Welch–Satterthwaite
    p = student_t_sf2(t, df) if se > 0 else (1.0 if diff == 0 else 0.0)
    return Gap(name_a, name_b, diff, comb, t, df, p, p >= alpha)
