"""inference.ascent, the one driver of CAVI/EM, MAP-EM and VB, on a tiny fake AscentProblem (pure
Python, no maths): the order of the calls, the trace semantics (n_iter + 1 entries), the stopping
rule |Δ|/N < tol, max_iter = 0, non-finite objectives, the closing E-step flag, and restarts."""

import dataclasses
import math

import pytest
import torch

from ppl_gmm.core.errors import DivergenceError
from ppl_gmm.core.rng import spawn_seeds
from ppl_gmm.inference.ascent import AscentRun, best_of_restarts, fit_ascent


class FakeProblem:
    """The state is the iteration count t. ``values[t − 1]`` is the objective after iteration t's
    M-step, ``lls[t − 1]`` the eq. 26 of iteration t's E-step (default: values + 1), ``closing`` the
    objective after the closing E-step. Every call is logged in ``calls``."""

    name = "the fake objective"

    def __init__(self, values, *, n=10, start_value=0.0, lls=None, closing=None):
        self.n = n
        self.values = list(values)
        self.lls = list(lls) if lls is not None else [v + 1.0 for v in self.values]
        self.start_value = start_value
        self.closing = closing
        self.calls = []

    def start(self, final):
        self.calls.append(("start", final))
        return 0, self.start_value

    def m_step(self, state):
        t = state + 1
        self.calls.append(("m_step", t))
        return t, torch.tensor(self.values[t - 1], dtype=torch.float64)

    def e_step(self, state, final):
        self.calls.append(("e_step", state, final))
        return state, torch.tensor(self.lls[state - 1], dtype=torch.float64)

    def finish(self, state):
        self.calls.append(("finish", state))
        value = self.closing if self.closing is not None else (self.values[state - 1] if state else self.start_value)
        return torch.tensor(value, dtype=torch.float64), torch.tensor(value + 0.5, dtype=torch.float64)

    def last_finite(self, state):
        return {"iteration": state}

    def finals(self):
        """The ``final`` flags of the E-steps, in order."""
        return [c[2] for c in self.calls if c[0] == "e_step"]


def test_call_order_and_trace_has_n_iter_plus_one_entries():
    values = [1.0, 2.0, 3.0, 4.0, 5.0]
    problem = FakeProblem(values, closing=5.25)
    run = fit_ascent(problem, max_iter=5, tol=0.0)
    assert isinstance(run, AscentRun) and run.n_iter == 5 and not run.converged and run.state == 5
    expected = [("start", False)]
    for t in range(1, 6):
        expected += [("m_step", t), ("e_step", t, t == 5)]
    assert problem.calls == [*expected, ("finish", 5)]
    assert run.elbo.dtype == run.log_likelihood.dtype == run.times.dtype == torch.float64
    assert run.elbo.tolist() == [*values, 5.25]  # entry t: after iteration t's M-step; then the closing entry
    assert run.log_likelihood.tolist() == [2.0, 3.0, 4.0, 5.0, 6.0, 5.75]  # each E-step's eq. 26, then finish's
    assert run.elbo.shape == run.log_likelihood.shape == run.times.shape == (run.n_iter + 1,)
    assert bool((run.times.diff() >= 0).all()) and float(run.times[0]) >= 0.0
    fields = run.trace_fields(torch.float32)
    assert fields["elbo"].dtype == fields["log_likelihood"].dtype == torch.float32
    assert fields["times"].dtype == torch.float64


def test_tol_zero_runs_exactly_max_iter():
    problem = FakeProblem([3.0] * 7, start_value=3.0)  # the objective never changes: |Δ| / N = 0, not < 0
    run = fit_ascent(problem, max_iter=7, tol=0.0)
    assert run.n_iter == 7 and not run.converged and run.elbo.shape == (8,)
    assert sum(c[0] == "m_step" for c in problem.calls) == 7


def test_stopping_rule_is_abs_change_over_n_below_tol():
    # n = 10, changes / N: 1.0 (from the start value), 0.5, 0.1 (= tol: not below it), −0.04 (a drop)
    problem = FakeProblem([10.0, 15.0, 16.0, 15.6, 15.61, 15.62], n=10, start_value=0.0)
    run = fit_ascent(problem, max_iter=100, tol=0.1)
    assert run.converged and run.n_iter == 4 and run.elbo.tolist()[:4] == [10.0, 15.0, 16.0, 15.6]
    assert run.elbo.shape == (5,) and problem.finals() == [False, False, False, True]
    # the first change is measured from start()'s value
    problem = FakeProblem([5.0 + 1e-3, 7.0], n=10, start_value=5.0)
    run = fit_ascent(problem, max_iter=100, tol=1e-3)
    assert run.converged and run.n_iter == 1
    # max_iter reached before the rule holds: not converged
    problem = FakeProblem([1.0, 2.0, 3.0], n=1, start_value=0.0)
    run = fit_ascent(problem, max_iter=3, tol=0.5)
    assert not run.converged and run.n_iter == 3


def test_max_iter_zero_is_start_final_then_finish():
    problem = FakeProblem([], start_value=-2.5)
    run = fit_ascent(problem, max_iter=0, tol=1e-8)
    assert problem.calls == [("start", True), ("finish", 0)]
    assert run.n_iter == 0 and not run.converged and run.state == 0
    assert run.elbo.tolist() == [-2.5] and run.log_likelihood.tolist() == [-2.0] and run.times.shape == (1,)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_objective_raises_divergence_naming_the_iteration(bad):
    problem = FakeProblem([1.0, 2.0, bad, 4.0])
    with pytest.raises(DivergenceError, match=r"the fake objective became NaN/inf at iteration 3 ") as err:
        fit_ascent(problem, max_iter=10, tol=0.0)
    assert err.value.step == 3 and err.value.last_finite == {"iteration": 2}  # the state before the bad M-step
    assert problem.calls[-1] == ("m_step", 3)  # nothing after it
    # eq. 26 of an E-step
    problem = FakeProblem([1.0, 2.0, 3.0], lls=[1.0, bad, 3.0])
    with pytest.raises(DivergenceError, match=r"eq\. 26 became NaN/inf at iteration 2 ") as err:
        fit_ascent(problem, max_iter=10, tol=0.0)
    assert err.value.step == 2 and err.value.last_finite == {"iteration": 2}
    # the objective at the start
    problem = FakeProblem([1.0], start_value=bad)
    with pytest.raises(DivergenceError, match="the fake objective at the initial parameters is not finite") as err:
        fit_ascent(problem, max_iter=10, tol=0.0)
    assert err.value.step == 0 and err.value.last_finite == {"iteration": 0} and problem.calls == [("start", False)]


@pytest.mark.parametrize("max_iter, tol, n_iter", [(1, 0.0, 1), (6, 0.0, 6), (50, 1e-3, 4)])
def test_final_is_passed_exactly_once_on_the_last_e_step(max_iter, tol, n_iter):
    values = [1.0, 1.5, 1.7, 1.70001] + [1.70001] * 50  # |Δ| / N below 1e-3 at iteration 4
    problem = FakeProblem(values, n=1)
    run = fit_ascent(problem, max_iter=max_iter, tol=tol)
    assert run.n_iter == n_iter
    finals = problem.finals()
    assert len(finals) == n_iter and finals.count(True) == 1 and finals[-1] is True
    assert problem.calls[0] == ("start", False) and problem.calls[-2:] == [("e_step", n_iter, True), ("finish", n_iter)]


def test_progress_bar(capsys):
    fit_ascent(FakeProblem([1.0, 2.0]), max_iter=2, tol=0.0, progress=True, desc="FakeEM")
    assert "FakeEM" in capsys.readouterr().err


@dataclasses.dataclass(frozen=True)
class FakeFit:
    elbo: torch.Tensor
    seed: int
    info: dict = dataclasses.field(default_factory=dict)


def test_best_of_restarts_keeps_the_best_and_records_its_seed():
    children = spawn_seeds(11, 4)
    scores = dict(zip(children, [-3.0, 5.0, 1.0, 5.0]))  # a tie: the first of the best wins
    seen = []

    def run(s):
        seen.append(s)
        return FakeFit(torch.tensor([-10.0, scores[s]]), s, {"kept": True})

    best = best_of_restarts(run, 11, 4)
    assert seen == children
    assert float(best.elbo[-1]) == 5.0 and best.seed == 11
    assert best.info == {"kept": True, "restart_seed": children[1]}
    # one run: the seed itself, returned as it is
    seen.clear()
    single = best_of_restarts(lambda s: FakeFit(torch.tensor([float(s)]), s), 11, 1)
    assert single.seed == 11 and single.info == {} and len(seen) == 0
