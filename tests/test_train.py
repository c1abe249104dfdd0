"""fit(): metrics, checkpoints, exact resume (also after SIGKILL), NaN guard."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from ppl_dgm.guides import GaussianEncoder
from ppl_dgm.models import VAE

from ppl_dgm.checkpoints import apply_checkpoint, latest_checkpoint, load_checkpoint
from ppl_dgm.data import load_digits
from ppl_dgm.errors import CheckpointError, NonFiniteLossError
from ppl_dgm.estimators import ELBO, IWAE
from ppl_dgm.estimators.base import LossParts
from ppl_dgm.train import fit


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def _build(seed=0):
    torch.manual_seed(seed)
    model = VAE(64, 4, hidden=(32,))
    return model, GaussianEncoder.from_model(model, hidden=(32,))


def _state(*modules):
    return {f"{i}.{k}": v.clone() for i, m in enumerate(modules) for k, v in m.state_dict().items()}


def test_fit_improves_the_bound_and_writes_metrics(digits, tmp_path):
    model, guide = _build()
    res = fit(model, guide, ELBO(), digits, steps=300, batch_size=50, lr=3e-3, log_every=50,
              eval_every=100, run_dir=tmp_path, checkpoint_every=100)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [50, 100, 150, 200, 250, 300]
    assert rows == res.history
    assert rows[-1]["elbo"] > rows[0]["elbo"] + 5 * 50  # > 5 nats per point better
    assert "heldout_bound_k1" in rows[1]
    assert latest_checkpoint(tmp_path).name == "step-00000300"


def test_resume_matches_uninterrupted_run(digits, tmp_path):
    kw = dict(batch_size=64, lr=3e-3, log_every=25, checkpoint_every=50, seed=5)
    model, guide = _build()
    fit(model, guide, IWAE(num_particles=3), digits, steps=200, run_dir=tmp_path / "a", **kw)
    ref = _state(model, guide)

    model, guide = _build()
    fit(model, guide, IWAE(num_particles=3), digits, steps=150, run_dir=tmp_path / "b", **kw)
    model, guide = _build(seed=123)  # a fresh process would start from other weights
    res = fit(model, guide, IWAE(num_particles=3), digits, steps=200, run_dir=tmp_path / "b",
              resume=True, **kw)
    assert res.resumed_from == 150
    got = _state(model, guide)
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    rows = [json.loads(line)["step"] for line in
            (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert rows == list(range(25, 201, 25))


_SCRIPT = """
import sys, torch
from ppl_dgm.data import load_digits
from ppl_dgm.estimators import ELBO
from ppl_dgm.guides import GaussianEncoder
from ppl_dgm.models import VAE
from ppl_dgm.train import fit
torch.set_num_threads(1)
torch.manual_seed(0)
model = VAE(64, 4, hidden=(32,))
guide = GaussianEncoder.from_model(model, hidden=(32,))
fit(model, guide, ELBO(), load_digits(), steps=int(sys.argv[2]), batch_size=50, lr=3e-3,
    log_every=20, checkpoint_every=100, run_dir=sys.argv[1], resume=True, seed=1)
torch.save({k: v for m in (model, guide) for k, v in
            ((f"{type(m).__name__}.{n}", t) for n, t in m.state_dict().items())},
           sys.argv[1] + "/final.pt")
"""


def test_sigkill_then_resume_is_exact(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(_SCRIPT)
    steps = 3000
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    ref = tmp_path / "ref"
    subprocess.run([sys.executable, str(script), str(ref), str(steps)], check=True, env=env,
                   timeout=600)

    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(script), str(run), str(steps)], env=env)
    deadline = time.time() + 300
    while time.time() < deadline and latest_checkpoint(run) is None:
        time.sleep(0.05)
    time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    killed_at = load_checkpoint(run).step
    assert 0 < killed_at < steps
    subprocess.run([sys.executable, str(script), str(run), str(steps)], check=True, env=env,
                   timeout=600)
    a = torch.load(ref / "final.pt", weights_only=True)
    b = torch.load(run / "final.pt", weights_only=True)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


class _NaNAfter(ELBO):
    """An ELBO whose loss turns NaN after a number of calls (a diverging run)."""

    def __init__(self, after):
        super().__init__()
        self.after, self.calls = after, 0

    def surrogate(self, model, guide, x):
        parts = super().surrogate(model, guide, x)
        self.calls += 1
        if self.calls > self.after:
            bad = parts.parts["elbo"] * float("nan")
            return LossParts({"elbo": bad}, {"objective": bad.detach()})
        return parts


def test_nan_loss_stops_with_last_good_state(digits, tmp_path):
    model, guide = _build()
    with pytest.raises(NonFiniteLossError) as e:
        fit(model, guide, _NaNAfter(130), digits, steps=300, batch_size=50, log_every=20,
            checkpoint_every=40, run_dir=tmp_path)
    assert e.value.step == 140
    assert "restored to the state at step 120" in str(e.value)
    assert all(torch.isfinite(p).all() for m in (model, guide) for p in m.parameters())
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.step == 120 and e.value.checkpoint.endswith("step-00000120")
    # the in-memory state is the state of the last good read-back (step 120)
    model2, guide2 = _build()
    apply_checkpoint(ckpt, {"model": model2, "guide": guide2, "estimator": ELBO()})
    assert all(torch.equal(a, b) for a, b in zip(_state(model).values(), _state(model2).values()))


def test_corrupt_or_truncated_checkpoint_is_refused_and_nothing_loaded(digits, tmp_path):
    model, guide = _build()
    fit(model, guide, ELBO(), digits, steps=40, batch_size=50, log_every=20, run_dir=tmp_path)
    path = latest_checkpoint(tmp_path)
    weights = path / "weights.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(tmp_path)
    fresh, fresh_guide = _build(seed=9)
    before = _state(fresh, fresh_guide)
    with pytest.raises(CheckpointError):
        fit(fresh, fresh_guide, ELBO(), digits, steps=80, batch_size=50, log_every=20,
            run_dir=tmp_path, resume=True)
    assert all(torch.equal(before[k], v) for k, v in _state(fresh, fresh_guide).items())


def test_checkpoint_of_other_architecture_is_refused_untouched(digits, tmp_path):
    model, guide = _build()
    fit(model, guide, ELBO(), digits, steps=20, batch_size=50, log_every=20, run_dir=tmp_path)
    other = VAE(64, 4, hidden=(16,))
    other_guide = GaussianEncoder.from_model(other, hidden=(32,))
    before = _state(other, other_guide)
    with pytest.raises(CheckpointError, match="shape"):
        apply_checkpoint(load_checkpoint(tmp_path),
                         {"model": other, "guide": other_guide, "estimator": ELBO()})
    assert all(torch.equal(before[k], v) for k, v in _state(other, other_guide).items())


def test_checkpoint_files_are_not_pickles(digits, tmp_path):
    model, guide = _build()
    fit(model, guide, ELBO(), digits, steps=20, batch_size=50, log_every=20, run_dir=tmp_path)
    files = sorted(p.name for p in latest_checkpoint(tmp_path).iterdir())
    assert files == ["meta.json", "optimizer.safetensors", "rng.safetensors",
                     "weights.safetensors"]


def test_missing_meta_means_incomplete(tmp_path):
    (tmp_path / "checkpoints" / "step-00000010").mkdir(parents=True)
    assert latest_checkpoint(tmp_path) is None
    with pytest.raises(CheckpointError, match="meta.json is missing"):
        load_checkpoint(tmp_path / "checkpoints" / "step-00000010")


def test_lr_groups_and_unknown_group(digits):
    model, guide = _build()
    with pytest.raises(ValueError, match="lr_groups"):
        fit(model, guide, ELBO(), digits, steps=5, lr_groups={"decoder": 1e-3})
    before = _state(model)
    fit(model, guide, ELBO(), digits, steps=20, batch_size=50, lr_groups={"model": 0.0},
        log_every=10)
    assert all(torch.equal(before[k], v) for k, v in _state(model).items())


def test_svi_accepts_an_estimator(digits):
    import pyro
    from pyro.infer import SVI

    model, guide = _build()
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 3e-3}), IWAE(num_particles=2))
    x = digits.train[:200]
    first = sum(svi.step(x) for _ in range(5))
    for _ in range(150):
        svi.step(x)
    last = sum(svi.step(x) for _ in range(5))
    assert last < first - 5 * 200 * 5  # > 5 nats per point lower loss


def test_failing_callback_or_heldout_bound_keeps_the_trained_state(digits, tmp_path):
    """A failure after the loss check (held-out bound, the user's callback) saves the
    state it trained before the error propagates: nothing trained is lost."""
    model, guide = _build()

    def callback(step, row):
        if step == 60:
            raise RuntimeError("the user's callback failed")

    with pytest.raises(RuntimeError, match="callback failed"):
        fit(model, guide, ELBO(), digits, steps=100, batch_size=50, log_every=20,
            run_dir=tmp_path, callback=callback)
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.step == 60
    model2, guide2 = _build(seed=1)
    apply_checkpoint(ckpt, {"model": model2, "guide": guide2, "estimator": ELBO()})
    assert all(torch.equal(a, b) for a, b in zip(_state(model).values(), _state(model2).values()))


def test_heldout_bound_of_a_batch_sized_guide_says_why(digits, tmp_path):
    """A guide with one parameter per training point (AutoNormal over local latents)
    cannot score held-out points: the error says so and the run's state is kept."""
    import pyro
    import pyro.distributions as dist
    from pyro.infer.autoguide import AutoNormal

    def model(x):
        w = pyro.param("w_dec", 0.1 * torch.randn(64, 2))
        with pyro.plate("points", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("obs", dist.Bernoulli(logits=z @ w.T).to_event(1), obs=x)

    pyro.clear_param_store()
    with pytest.raises(ValueError, match="sized by the training batch"):
        fit(model, AutoNormal(model), ELBO(), digits, steps=20, batch_size=50, log_every=10,
            eval_every=20, run_dir=tmp_path)
    assert load_checkpoint(tmp_path).step == 20
    pyro.clear_param_store()
