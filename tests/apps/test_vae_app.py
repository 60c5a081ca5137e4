"""The VAE application: the calibrated Gaussian decoder, the collapse diagnosis, and a VAE that learns at the demo's settings."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from kldiv.apps import tour, vae  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    """Small models on a shared 2-core machine: one thread, as the tour runs them (two spin against each other)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_gaussian_scale_is_set_to_the_batch_mse_in_training_and_the_nll_is_the_normal_density():
    torch.manual_seed(0)
    model = vae.MLPVAE(6, 2, 8, likelihood="gaussian")
    x, out = torch.rand(5, 6), torch.rand(5, 6)
    nll = model.reconstruction_nll(out, x)
    sigma = torch.sqrt(torch.mean((x - out) ** 2))
    assert float(model.log_scale) == pytest.approx(float(torch.log(sigma)), rel=1e-6)
    oracle = -torch.distributions.Normal(out, sigma).log_prob(x).sum(dim=1)
    torch.testing.assert_close(nll, oracle, rtol=1e-5, atol=1e-5)
    model.eval()  # evaluation keeps the scale found in training
    model.reconstruction_nll(out + 1.0, x)
    assert float(model.log_scale) == pytest.approx(float(torch.log(sigma)), rel=1e-6)


def test_gaussian_scale_is_saved_with_the_weights():
    model = vae.MLPVAE(6, 2, 8, likelihood="gaussian")
    assert "log_scale" in model.state_dict()


def row(kl_dims, active):
    return {"kl_per_dimension": kl_dims, "heldout_kl": math.fsum(kl_dims), "active_units": active,
            "mutual_information": 0.9 * math.fsum(kl_dims)}


def test_diagnosis_names_total_collapse_and_the_remedies():
    text = " ".join(vae.diagnose(row([0.001, 0.002], 0)))
    assert text.startswith("Posterior collapse") and "0.003 nats" in text and "--free-bits" in text


def test_diagnosis_names_a_collapsed_dimension_that_burda_still_counts_as_active():
    text = " ".join(vae.diagnose(row([0.477, 0.016], 2)))
    assert text.startswith("Partial posterior collapse") and "dimension 2 carries 0.016 nats" in text
    assert "uses 1 of its 2 dimensions" in text and "active units is 2 of 2" in text


def test_diagnosis_says_when_the_code_is_used_and_is_silent_for_an_autoencoder():
    text = " ".join(vae.diagnose(row([1.1, 0.95], 2)))
    assert text.startswith("No posterior collapse") and "0.95 to 1.10 nats each" in text
    assert vae.diagnose({"kl_per_dimension": None}) == []


def test_gaussian_vae_keeps_its_code_where_a_learned_scale_collapsed(tmp_path):
    # With σ learned by gradient from 1, this run ended at KL 0.001 nats and 0 active units.
    result = vae.train(vae.VAEConfig(likelihood="gaussian", epochs=5), tmp_path, progress=False)
    assert result["heldout_kl"] > 1.0 and result["active_units"] == 2
    assert vae.diagnose(result)[0].startswith("No posterior collapse")


@pytest.mark.slow
def test_the_demo_vae_learns_like_train_vae(tmp_path):
    config = vae.VAEConfig(epochs=tour.FULL["vae_epochs"], seed=0)
    assert config == vae.VAEConfig(seed=0)  # the demo uses `kldiv train vae`'s defaults
    result = vae.train(config, tmp_path, progress=False)
    assert result["heldout_kl"] > 1.5 and min(result["kl_per_dimension"]) > 0.5
    assert result["heldout_recon"] < 25.0 and result["mutual_information"] > 1.0
