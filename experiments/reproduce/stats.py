"""Statistics for reports: mean ± sd over seeds with n, and whether a gap between two settings is
inside the seed-to-seed noise: Welch's unequal-variance t-test for independent runs, a paired
t-test where runs share seed and batch order, Holm–Bonferroni over each report's family of tests,
and "n too small for a test" below two values a side (no scipy needed)."""
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


def fmt_p(p: float) -> str:
    """``p = 0.0011`` (two significant digits), ``p < 0.001`` below that, ``p = –`` for no p."""
    if p is None or math.isnan(p):
        return "p = –"
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:#.2g}"  # 0.041, 0.0011, 0.30, 1.0: two significant digits, zeros kept


@dataclass(frozen=True)
class Gap:
    """A comparison of two settings: difference of means, the test's t, df and raw p, the
    family-wise adjusted p (Holm–Bonferroni over ``family`` tests; nan until ``holm`` ran) and
    the verdict: ``in_noise`` is None when a side has too few values for a test."""

    a: str
    b: str
    diff: float
    combined_sd: float
    t: float
    df: float
    p: float
    in_noise: bool | None
    test: str = "welch"  # "welch" (independent samples), "paired" (by seed), "none" (n too small)
    n_a: int = 0
    n_b: int = 0
    p_adj: float = float("nan")
    family: int = 1

    @property
    def p_used(self) -> float:
        """The p the verdict rests on: Holm-adjusted when adjusted, else raw."""
        return self.p if math.isnan(self.p_adj) else self.p_adj

    def sentence(self, unit: str = " points") -> str:
        """One line for a report, e.g. ``bin − bn = +0.42 points: inside the noise (...)``."""
        if self.test == "none":
            return (f"{self.a} − {self.b} = {self.diff:+.2f}{unit}: n too small for a test "
                    f"(n = {self.n_a} vs {self.n_b})")
        name = "paired t" if self.test == "paired" else "Welch t"
        why = f"{name} = {self.t:.2f}, df = {self.df:.1f}, {fmt_p(self.p)}"
        if not math.isnan(self.p_adj):
            why += f"; Holm-adjusted {fmt_p(self.p_adj)} over {self.family} tests"
        verdict = "inside the noise" if self.in_noise else "larger than the noise"
        return f"{self.a} − {self.b} = {self.diff:+.2f}{unit}: {verdict} ({why})"

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("a", "b", "diff", "combined_sd", "t", "df", "p",
                                              "p_adj", "family", "in_noise", "test", "n_a",
                                              "n_b")}


def _t_gap(name_a: str, name_b: str, diff: float, comb: float, se: float, df: float,
           alpha: float, test: str, n_a: int, n_b: int) -> Gap:
    if se == 0.0:
        t = 0.0 if diff == 0 else math.copysign(math.inf, diff)
        p = 1.0 if diff == 0 else 0.0
    else:
        t = diff / se
        p = student_t_sf2(t, df)
    return Gap(name_a, name_b, diff, comb, t, df, p, p >= alpha, test, n_a, n_b)


def _too_few(name_a: str, name_b: str, diff: float, comb: float, n_a: int, n_b: int) -> Gap:
    nan = float("nan")
    return Gap(name_a, name_b, diff, comb, nan, nan, nan, None, "none", n_a, n_b)


def welch(a: Sequence[float], b: Sequence[float], name_a: str = "A", name_b: str = "B",
          alpha: float = 0.05) -> Gap:
    """Welch's t-test of mean(a) − mean(b) (independent samples). With fewer than two values on
    a side there is no variance estimate: the gap is reported as "n too small for a test"
    (``in_noise`` None), never judged by a heuristic."""
    sa, sb = summarize(a), summarize(b)
    if sa.n == 0 or sb.n == 0:
        raise ValueError(f"cannot compare {name_a} and {name_b}: no values on one side")
    diff = sa.mean - sb.mean
    comb = math.sqrt(sa.sd ** 2 + sb.sd ** 2)
    if sa.n < 2 or sb.n < 2:
        return _too_few(name_a, name_b, diff, comb, sa.n, sb.n)
    va, vb = sa.sd ** 2 / sa.n, sb.sd ** 2 / sb.n
    se = math.sqrt(va + vb)
    df = (float(sa.n + sb.n - 2) if se == 0.0 else
          (va + vb) ** 2 / (va ** 2 / (sa.n - 1) + vb ** 2 / (sb.n - 1)))  # Welch–Satterthwaite
    return _t_gap(name_a, name_b, diff, comb, se, df, alpha, "welch", sa.n, sb.n)


def paired(a: Sequence[float], b: Sequence[float], name_a: str = "A", name_b: str = "B",
           alpha: float = 0.05) -> Gap:
    """Paired t-test of mean(a − b), ``a[i]`` and ``b[i]`` from the same seed (same data order,
    same initial batches): the seed-to-seed variation common to both cancels. Fewer than two
    pairs: "n too small for a test"."""
    if len(a) != len(b):
        raise ValueError(f"paired test of {name_a} and {name_b} needs equal lengths, got "
                         f"{len(a)} and {len(b)}")
    if not a:
        raise ValueError(f"cannot compare {name_a} and {name_b}: no values")
    d = summarize([float(x) - float(y) for x, y in zip(a, b)])
    comb = math.sqrt(summarize(a).sd ** 2 + summarize(b).sd ** 2)
    if d.n < 2:
        return _too_few(name_a, name_b, d.mean, comb, d.n, d.n)
    return _t_gap(name_a, name_b, d.mean, comb, d.sd / math.sqrt(d.n), float(d.n - 1), alpha,
                  "paired", d.n, d.n)


def holm_adjust(ps: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (Holm 1979): sort ascending, p_(i) × (m − i + 1),
    running maximum, capped at 1; controls the family-wise error rate at the level compared
    against. nan entries (no test) are left out of m and stay nan."""
    idx = [i for i, p in enumerate(ps) if p is not None and not math.isnan(p)]
    m = len(idx)
    out = [float("nan")] * len(ps)
    run = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: ps[i])):
        run = max(run, min(1.0, (m - rank) * ps[i]))
        out[i] = run
    return out


def holm(gaps: Sequence[Gap], alpha: float = 0.05) -> list[Gap]:
    """``gaps`` as one family: each with its Holm-adjusted p, the family size, and the verdict
    taken on the adjusted p."""
    from dataclasses import replace

    adj = holm_adjust([g.p for g in gaps])
    m = sum(1 for p in adj if not math.isnan(p))
    return [g if math.isnan(pa) else replace(g, p_adj=pa, family=m, in_noise=pa >= alpha)
            for g, pa in zip(gaps, adj)]


def gap_from_dict(d: dict) -> Gap:
    """A Gap back from ``to_dict`` (results.json: null for nan)."""
    nan = float("nan")
    f = {k: (nan if d.get(k) is None else d[k]) for k in ("diff", "combined_sd", "t", "df", "p",
                                                          "p_adj")}
    return Gap(d["a"], d["b"], f["diff"], f["combined_sd"], f["t"], f["df"], f["p"],
               d.get("in_noise"), d.get("test", "welch"), d.get("n_a", 0), d.get("n_b", 0),
               f["p_adj"], d.get("family", 1))
