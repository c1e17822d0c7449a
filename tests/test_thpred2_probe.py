"""Second mutation probe of ncsim.theory.prediction, critical, phase and the theory CLI."""

import json
import math

import mpmath as mp
import numpy as np
import pytest
from click.testing import CliRunner
from scipy.integrate import quad, solve_ivp
from scipy.optimize import brentq

from ncsim.errors import InputError
from ncsim.theory import prediction
from ncsim.theory.cli import theory
from ncsim.theory.critical import basin_threshold, critical_table
from ncsim.theory.phase import check_axes, classify, phase_diagram, plot_phase
from ncsim.theory.prediction import (
    _first_crossing_interval,
    _ModeCurves,
    basin_band,
    basin_position,
    predicted_onset,
)


def _line_curves() -> _ModeCurves:
    """Mode curves on the grid 0, 1, 2, 3 (a constant ODE: the curve below reads only t)."""
    grid = np.array([0.0, 1.0, 2.0, 3.0])
    return _ModeCurves(lambda t, y: [0.0, 0.0, 0.0], grid, np.zeros((4, 3)),
                       lambda t, s: (t, t, t), 1)


def _y0(t, states):
    """The curve y = t."""
    return np.asarray(t, dtype=float)


def test_first_crossing_interval_counts_landing_exactly_on_the_level():
    """A grid value exactly at the level ends the crossing interval (side >= 0, not > 0)."""
    assert _first_crossing_interval(np.array([-1.0, 0.0, 1.0])) == 0
    assert _first_crossing_interval(np.array([-2.0, -1.0, 0.0])) == 1
    assert _first_crossing_interval(np.array([0.0, 1.0, 2.0])) is None


def test_first_crossing_at_a_grid_point_is_that_time():
    """y = t crosses 1 upward exactly at the grid time 1 (found, not missed as inf)."""
    assert _line_curves().first_crossing(_y0, 1.0, "up") == 1.0
    assert _line_curves().first_crossing(_y0, 2.5, "up") == pytest.approx(2.5, abs=1e-9)


def test_first_crossing_of_a_curve_starting_at_the_level_is_t0():
    """A curve starting exactly at the level crosses at t = 0 in either direction."""
    assert _line_curves().first_crossing(_y0, 0.0, "up") == 0.0
    assert _line_curves().first_crossing(_y0, 0.0, "down") == 0.0
    assert math.isinf(_line_curves().first_crossing(_y0, 0.5, "down"))


# CE, regularised bias (tests/test_theory_prediction_regimes.py LEAD_CASE) at init 0.11: the
# model's fn starts above fn* = 0.5256, dips below it at t = 2.13 and rises back at 40.8
ABOVE = ("ce", "reg", 5, 12, 25, 0.0024243505439796083, 0.021689608208142742, 0.11, 0.01,
         0.6515564924079935)


def test_delta_zero_from_above_is_the_fall_through_fn_star():
    """delta = 0 with fn starting above fn*: the first fall to fn* (as delta = +1e-7), not the
    later rise (as delta = -1e-7)."""
    assert predicted_onset(*ABOVE).delta == 0.05  # fn(0) > fn*
    zero = predicted_onset(*ABOVE, delta=0.0)
    above = predicted_onset(*ABOVE, delta=1e-7)
    below = predicted_onset(*ABOVE, delta=-1e-7)
    assert zero.fn_cross_time == pytest.approx(above.fn_cross_time, rel=1e-4)
    assert 2.0 < zero.fn_cross_time < 2.3 and below.fn_cross_time > 40.0
    assert zero.lead_time == pytest.approx(zero.onset_time - zero.fn_cross_time, rel=1e-12)


@pytest.mark.parametrize(("loss", "a"), [("ce", 1.0), ("mse", 0.2)])
def test_delta_zero_on_an_asymptotic_fn_gives_a_prediction(loss, a):
    """delta = 0 (documented: from the side fn starts on) on a fn falling onto fn* returns a
    prediction, not brentq's sign error: a finite time where fn meets fn* to the mode ODE's
    accuracy, after it passed the level (1 + 1e-9) fn*, and never below fn* (delta < 0)."""
    pred = predicted_onset(loss, "none", 4, 5, 20, 0.01, 0.01, a, delta=0.0)
    above = predicted_onset(loss, "none", 4, 5, 20, 0.01, 0.01, a, delta=1e-9)
    below = predicted_onset(loss, "none", 4, 5, 20, 0.01, 0.01, a, delta=-1e-9)
    assert pred.delta == 0.0
    assert above.fn_cross_time < pred.fn_cross_time < math.inf
    assert below.fn_cross_time == math.inf


def _deep_mse_escape(K, n, d, depth, lw, lh, a):
    """theory.md 3.1 / 4.2: the balanced per-factor flow a' = (s - a^M) a^(M-1) / N - Lam a
    from a sqrt(d/2) to half the collapsed sigma* (upper root of the per-mode stationarity
    (sigma - s)/N + Lam sigma^(2/M - 1) = 0), Lam the geometric mean decay."""
    M, s, N = depth + 1, math.sqrt(n), K * n
    lam = (lh * lw ** depth) ** (1.0 / M)
    sigma = brentq(lambda x: (x - s) / N + lam * x ** (2.0 / M - 1), 0.5 * s, s, xtol=1e-15,
                   rtol=1e-15)
    a_half = (sigma / 2) ** (1.0 / M)
    return quad(lambda x: 1.0 / ((s - x ** M) * x ** (M - 1) / N - lam * x),
                a * math.sqrt(d / 2), a_half, epsabs=0, epsrel=1e-13, limit=200)[0]


@pytest.mark.parametrize(("lw", "lh", "a"), [(0.01, 0.01, 0.1), (0.01, 0.01, 0.3),
                                             (0.008, 0.016, 0.3)])
def test_deep_onset_is_the_escape_time_to_half_sigma_star(lw, lh, a):
    """Deep MSE (K=4, n=5, d=20, L=2): onset_time = escape time of the balanced mode from
    a sqrt(d/2) to (sigma*/2)^(1/M), integrated here (1.232 at init 0.3, 27.32 at 0.1)."""
    pred = predicted_onset("mse", "none", 4, 5, 20, lw, lh, a, depth=2)
    assert pred.regime == "escape_time_only"
    assert pred.onset_time == pytest.approx(_deep_mse_escape(4, 5, 20, 2, lw, lh, a), rel=1e-9)
    assert math.isnan(pred.lead_time) and math.isnan(pred.fn_cross_time)


@pytest.mark.parametrize(("K", "n", "depth", "bracket"), [(3, 2, 2, (1.9, 2.0)),
                                                          (4, 5, 2, (3.5, 3.6)),
                                                          (3, 2, 3, (2.8, 2.9))])
def test_deep_ce_threshold_and_jump_solve_the_ray_problem(K, n, depth, bracket):
    """Deep CE: at Lambda_crit the ETF ray objective g(sigma) = log(1 + (K-1) e^(-sigma/s))
    + (K-1) M/2 Lam sigma^(2/M) has a stationary sigma_jump with g = g(0) = log K (mpmath)."""
    M, s = depth + 1, mp.sqrt(n)

    def lam_at(x):  # g'(x) = 0 solved for Lambda
        return x ** (1 - mp.mpf(2) / M) / (s * (mp.e ** (x / s) + K - 1))

    def gap(x):
        return (mp.log(1 + (K - 1) * mp.e ** (-x / s))
                + (K - 1) * mp.mpf(M) / 2 * lam_at(x) * x ** (mp.mpf(2) / M) - mp.log(K))

    with mp.workdps(30):
        sigma = mp.findroot(gap, bracket, solver="anderson")
        lam = float(lam_at(sigma))
    table = critical_table("ce", "none", K, n, depth)
    assert table["Lambda_crit"] == pytest.approx(lam, rel=1e-12)
    assert table["lambda_crit"] == table["Lambda_crit"]
    assert table["sigma_jump"] == pytest.approx(float(sigma), rel=1e-7)


def test_default_horizon_uses_the_growth_rate_when_it_is_the_slowest():
    """Near the threshold mu (theory.md 1.2) is below both decays: horizon = 40 / mu."""
    K, n, lam = 2, 5, 0.2
    mu = -lam + math.sqrt(1 / (K * K * n))  # 0.02361, lambda_W = lambda_H
    got = prediction._horizon("mse", "none", K, n, 10, lam, lam, 0.1, 0.01)
    assert got == pytest.approx(40 / mu, rel=1e-12)
    assert 1e3 < got < 1e8


def test_default_horizon_is_capped_at_1e8():
    """Tiny decays (40 / lambda = 4e9) are capped to the 1e8 horizon."""
    assert prediction._horizon("ce", "free", 3, 4, 10, 1e-8, 1e-8, 0.1, 0.01) == 1e8


# --- the ncsim theory command line -------------------------------------------------------


def _cli(*args):
    return CliRunner().invoke(theory, list(args))


def test_threshold_text_lines_by_hand():
    """--format text, one point (no '# point' header): key padded to the longest key, values
    to 10 significant digits; MSE, K=2, n=4, lw=0.01, lh=0.04 by theory.md 1.1 / 1.2."""
    res = _cli("threshold", "--loss", "mse", "-K", "2", "-n", "4", "--lambda-w", "0.01",
               "--lambda-h", "0.04", "--format", "text")
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert not any(line.startswith("#") for line in lines)
    width = len("class_mean_norm_centred")
    r, alpha = math.sqrt(4 * 0.01 * 0.04), 1 - 2 * math.sqrt(4 * 0.01 * 0.04)  # 0.04, 0.92
    mu = -0.025 + math.sqrt(0.015 ** 2 + 1 / 16)
    want = {"fn_star": math.sqrt(math.sqrt(0.01 / (4 * 0.04)) * alpha),
            "w_norm_star": math.sqrt(math.sqrt(4 * 0.04 / 0.01) * alpha),
            "sigma": 2 * alpha, "objective_star": 2 * (r - r * r), "lambda_crit": 0.125,
            "Lambda_crit": 0.25, "growth_rate": mu, "nc1_rate_early": 2 * (0.04 + mu),
            "nc1_rate_late": 0.08, "ratio": 4.0}
    for key, value in want.items():
        assert f"{key:<{width}}  {value:.10g}" in lines, key
    for line in (f"{'K':<{width}}  2", f"{'onset_regime':<{width}}  --",
                 f"{'collapsed':<{width}}  True", f"{'onset_time':<{width}}  nan"):
        assert line in lines


def test_text_grid_numbers_each_point():
    """Two points print '# point 1/2' and '# point 2/2' headers."""
    res = _cli("threshold", "-K", "3,4", "--format", "text")
    assert res.exit_code == 0, res.output
    heads = [line for line in res.output.splitlines() if line.startswith("#")]
    assert heads == ["# point 1/2", "# point 2/2"]


def test_ratio_defaults_to_one_when_a_decay_is_zero():
    """lambda_H = 0: the ratio is 1, so lambda_crit = Lambda_crit = 1/(K sqrt n)."""
    res = _cli("threshold", "--loss", "mse", "-K", "2", "-n", "4", "--lambda-h", "0")
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.output)["results"]
    assert row["ratio"] == 1.0 and row["lambda_crit"] == 0.25


def test_deep_rows_have_no_one_layer_nc1_rates():
    """Depth 2 and 3: nc1_rate_early / late are null (NaN); depth 1 has 2(lh + mu), 2 lh."""
    res = _cli("onset", "--loss", "mse", "-K", "2", "-n", "4", "--depth", "1,2,3",
               "--lambda-w", "0.01", "--lambda-h", "0.04")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)["results"]
    assert rows[0]["nc1_rate_late"] == 0.08
    for row in rows[1:]:
        assert row["nc1_rate_early"] is None and row["nc1_rate_late"] is None


def test_latex_single_depth_has_no_depth_comment_and_dashes_for_text():
    """One depth: no '% depth' line; a non-numeric cell (onset_regime) is not a row, and a
    key numeric in one column only prints '--' in the other."""
    res = _cli("threshold", "--loss", "mse", "-K", "2", "-n", "4", "--format", "latex")
    assert res.exit_code == 0, res.output
    assert "% depth" not in res.output
    assert "\\texttt{onset\\_regime}" not in res.output
    res = _cli("equilibrium", "--loss", "ce", "-K", "3", "-n", "2", "--depth", "1,2",
               "--lambda-w", "0.14455", "--lambda-h", "0.14455", "--check-lower-rank",
               "--format", "latex")
    assert res.exit_code == 0, res.output
    line = next(x for x in res.output.splitlines() if x.startswith("\\texttt{lower\\_rank} &"))
    assert line == "\\texttt{lower\\_rank} & -- & 1 \\\\"


PHASE = ["phase-diagram", "--loss", "mse", "-K", "2", "-n", "4", "-d", "4", "--x", "lambda",
         "--xs", "0.0123457,0.3", "--y", "init_scale", "--ys", "0.1"]
LAM = 0.0123457
FN = math.sqrt(math.sqrt(LAM / (4 * LAM)) * (1 - 2 * math.sqrt(4 * LAM * LAM)))  # 0.689426


def test_phase_diagram_text_lines_exact():
    """Text table: four right-aligned 12-wide columns, 6 significant digits; fn* by hand."""
    res = _cli(*PHASE, "--format", "text")
    assert res.exit_code == 0, res.output
    assert res.output.splitlines() == [
        f"{'lambda':>12} {'init_scale':>12} {'phase':>12} {'fn_star':>12}",
        f"{LAM:>12.6g} {0.1:>12.6g} {'collapse':>12} {FN:>12.6g}",
        f"{0.3:>12.6g} {0.1:>12.6g} {'vanishing':>12} {0.0:>12.6g}"]
    assert res.output.splitlines()[1].split() == ["0.0123457", "0.1", "collapse", "0.689426"]


def test_phase_diagram_latex_lines_exact():
    """LaTeX table: rrlr columns, escaped names, 6 significant digits."""
    res = _cli(*PHASE, "--format", "latex")
    assert res.exit_code == 0, res.output
    assert res.output.splitlines() == [
        "\\begin{tabular}{rrlr}",
        "\\texttt{lambda} & \\texttt{init\\_scale} & \\texttt{phase} & \\texttt{fn\\_star} \\\\",
        "0.0123457 & 0.1 & collapse & 0.689426 \\\\",
        "0.3 & 0.1 & vanishing & 0 \\\\",
        "\\end{tabular}"]


def test_phase_diagram_json_names_the_axes_and_no_figure():
    """json: x and y name the axes as given, figure null without --out."""
    res = _cli(*PHASE, "--format", "json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert (data["x"], data["y"], data["figure"]) == ("lambda", "init_scale", None)
    assert [r["phase"] for r in data["results"]] == ["collapse", "vanishing"]
    assert data["results"][0]["fn_star"] == pytest.approx(FN, rel=1e-14)


@pytest.mark.parametrize("kwargs", [{"threshold": True}, {"delta": False}, {"t_max": True},
                                    {"init_scale": True}])
def test_predicted_onset_refuses_booleans_as_numbers(kwargs):
    """A boolean is not a number: refused with the one-parameter-point message."""
    args = {"loss": "mse", "bias": "none", "K": 2, "n": 2, "d": 10, "lambda_w": 0.05,
            "lambda_h": 0.05, "init_scale": 0.3, **kwargs}
    (name, value), = kwargs.items()
    with pytest.raises(InputError, match=rf"^{name} must be a number \(predicted_onset takes "
                                         rf"one parameter point; call it once per point\), "
                                         rf"got {value}$"):
        predicted_onset(**args)


# --- phase -------------------------------------------------------------------------------


def test_classify_zero_decays():
    """lambda_H = 0 is no_collapse (also deep, where no basin is looked up); lambda_W = 0 with
    lambda_H > 0 is collapse (one layer: r = 0 < 1/K)."""
    assert classify("mse", "none", 4, 5, 20, 2, 0.01, 0.0, 0.0, 0.1)["phase"] == "no_collapse"
    assert classify("mse", "none", 4, 5, 20, 1, 0.0, 0.01, 0.0, 0.1)["phase"] == "collapse"
    assert classify("mse", "none", 4, 5, 20, 1, 0.01, 0.0, 0.0, 0.1)["phase"] == "no_collapse"


@pytest.mark.parametrize("scale", [0.0, -0.1, math.inf])
def test_classify_refuses_a_bad_init_scale(scale):
    """init_scale must be finite and > 0 (0 is refused)."""
    with pytest.raises(InputError, match=r"^init_scale must be a finite number > 0, got "):
        classify("mse", "none", 4, 5, 20, 1, 0.01, 0.01, 0.0, scale)


BASE = {"loss": "mse", "bias": "none", "K": 2, "n": 4, "d": 4, "depth": 1, "lambda_b": 0.0}


def test_phase_diagram_base_keys():
    """Axis lambda supplies lambda_w and lambda_h; a missing or unknown base key is named."""
    rows = phase_diagram("lambda", [LAM], "init_scale", [0.1], BASE)
    assert rows[0]["fn_star"] == pytest.approx(FN, rel=1e-14)
    with pytest.raises(InputError, match=r"^phase diagram base parameters missing: init_scale "):
        phase_diagram("lambda", [0.01], "K", [2], {k: v for k, v in BASE.items() if k != "K"})
    with pytest.raises(InputError, match=r"^unknown phase diagram base parameters: speed; "):
        phase_diagram("lambda", [0.01], "init_scale", [0.1], {**BASE, "speed": 1})
    with pytest.raises(InputError, match=r"^phase axes must be two of: "):
        check_axes("lambda_w", "speed", "none")


def test_phase_figure_uses_linear_axes_for_integers(monkeypatch, tmp_path):
    """plot_phase: an integer axis (K) is linear, a positive decay axis is logarithmic."""
    import ncsim.plots

    seen = {}
    monkeypatch.setattr(ncsim.plots, "save_figure",
                        lambda fig, path: seen.update(x=fig.axes[0].get_xscale(),
                                                      y=fig.axes[0].get_yscale()))
    rows = [{"K": k, "lambda_w": lw, "phase": "collapse"} for lw in (1e-3, 1e-2) for k in (2, 3)]
    plot_phase(rows, "K", "lambda_w", str(tmp_path / "p.png"))
    assert seen == {"x": "linear", "y": "log"}


@pytest.mark.parametrize("d", [3, 20])
def test_reg_bias_energies_match_an_independent_solve(d):
    """MSE, regularised bias, equal decays (e_+- = (1, +-1)/sqrt 2): between, within and
    mean energies of the onset model (module docstring) solved here; the mean mode's decaying
    part has rate -lambda - g lb/(1+lb), and the mean direction keeps within-class energy only
    when d > K - 1."""
    K, n, lam, lb, a = 4, 5, 0.01, 0.5, 0.1
    s, N = math.sqrt(n), K * n
    g, c = 1 / (K * s), lb / (1 + lb)

    def rhs(t, y):
        w, h, _, w0, h0, _, beta = y
        r = s - w0 * h0 - math.sqrt(N) * beta
        return [(s - w * h) * h / N - lam * w, (s - w * h) * w / N - lam * h, w * w / N,
                r * h0 / N - lam * w0, r * w0 / N - lam * h0, w0 * w0 / N,
                r / math.sqrt(N) - lb * beta]

    amp = math.sqrt(d) * a / math.sqrt(2)
    times = np.array([0.0, 1.0, 10.0, 50.0, 200.0])
    sol = solve_ivp(rhs, (0, 200), [amp, amp, 0, amp, amp, 0, 0], method="DOP853",
                    t_eval=times, rtol=1e-12, atol=1e-15)
    w_, h, i_w, _, h0, i_0, _ = sol.y
    r_w, r_0 = min(K - 1, d), 1 if d > K - 1 else 0
    between = (K - 1) * (h * h + d * a * a / 2 * np.exp(-2 * (lam + g) * times))
    kept = ((d - r_w - r_0) / d + r_w / d * np.exp(-2 * i_w) + r_0 / d * np.exp(-2 * i_0))
    within = a * a * d * (N - K) * np.exp(-2 * lam * times) * kept
    mean = h0 * h0 + d * a * a / 2 * np.exp(-2 * (lam + g * c) * times)
    curves = prediction._curves("mse", "reg", K, n, d, lam, lam, a, times, lb)
    *scaled, unit = curves.energies(times, curves.states)  # energies in units of unit^2
    got = [e * unit ** 2 for e in scaled]
    for name, mine, theirs in zip(("between", "within", "mean"), (between, within, mean), got,
                                  strict=True):
        np.testing.assert_allclose(theirs, mine, rtol=1e-7, err_msg=name)


def test_basin_position_band_edges_belong_to_the_band():
    """a0 exactly at low a_u or high a_u is within the band (below: a0 < low a_u; above:
    a0 > high a_u), printed as a multiple of a_u to 3 digits."""
    decays, d = (0.01, 0.01, 0.01), 16  # high = 1 + 0.6 / 4 = 1.15
    a_u = float(basin_threshold("mse", 4, 5, 0.01, 2))
    low, high = basin_band(d)
    assert basin_position("mse", 4, 5, low * a_u, decays, d) == "= 0.4 a_u"
    assert basin_position("mse", 4, 5, high * a_u, decays, d) == "= 1.15 a_u"
    assert basin_position("mse", 4, 5, 0.3 * a_u, decays, d) == "below"
    assert basin_position("mse", 4, 5, 1.2 * a_u, decays, d) == "above"
    assert basin_position("mse", 4, 5, 0.7234 * a_u, decays, d) == "= 0.723 a_u"


def test_unequal_decay_band_position_prints_the_amplitude():
    """Unequal decays (a_u = 0.1089, band 0.4 .. 1.21 a_u at d = 8): inside, the amplitude a0
    itself to 3 digits; 0.3 is above."""
    decays = (0.005, 0.005, 0.04)
    assert basin_position("mse", 4, 5, 0.061234, decays, 8) == "= 0.0612"
    assert basin_position("mse", 4, 5, 0.3, decays, 8) == "above"


def test_no_crossing_within_the_horizon_is_no_onset():
    """t_max = 1: nc1_trace stays above the threshold: onset inf, regime no_onset, lead NaN."""
    pred = predicted_onset("mse", "none", 4, 5, 20, 0.01, 0.01, 1e-3, t_max=1.0)
    assert pred.regime == "no_onset" and math.isinf(pred.onset_time)
    assert math.isnan(pred.lead_time)


def test_latex_formulas_are_those_of_the_command():
    """threshold --format latex lists the threshold formulas only (Lambda crit, not the
    growth rate that onset lists)."""
    res = _cli("threshold", "--loss", "mse", "--format", "latex")
    assert res.exit_code == 0, res.output
    assert "\\text{Lambda crit} &: \\quad \\frac{1}{K \\sqrt{n}} \\\\" in res.output
    assert "\\text{growth rate}" not in res.output and "\\text{sigma star}" not in res.output
    res = _cli("onset", "--loss", "mse", "--format", "latex")
    assert "\\text{growth rate}" in res.output and "\\text{Lambda crit}" not in res.output


def test_phase_diagram_out_without_a_suffix_writes_a_png(tmp_path):
    """--out with no suffix is accepted: the figure is written there as PNG."""
    out = tmp_path / "phase"
    res = _cli(*PHASE, "--format", "json", "--out", str(out))
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["figure"] == str(out)
    assert out.read_bytes().startswith(b"\x89PNG")
