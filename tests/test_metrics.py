"""Tests for litzoo/metrics.py: digits classifier, class accuracy, FID, 8-Gaussians coverage."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from safetensors.torch import load_file
from torch import nn

import litzoo.metrics as metrics
from litzoo.data.toy2d import EIGHT_GAUSSIANS_CENTERS, EIGHT_GAUSSIANS_STD, sample_toy2d
from litzoo.metrics import (
    DigitsClassifier,
    class_accuracy,
    digits_classifier_split,
    digits_images,
    eight_gaussians_coverage,
    evaluate,
    fid,
    load_digits_classifier,
)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """Train the classifier once into a private cache that every test in this file reads."""
    path = tmp_path_factory.mktemp("litzoo_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LITZOO_CACHE", str(path))
        load_digits_classifier()
        yield path


@pytest.fixture(scope="module")
def classifier(cache_dir):
    return load_digits_classifier()


@pytest.fixture(scope="module")
def held_out():
    _, held_out_idx = digits_classifier_split()
    return held_out_idx


@pytest.mark.parametrize("image_size", [8, 16, 32])
def test_digits_classifier_reaches_97_percent_on_held_out_digits(classifier, held_out, image_size):
    images, labels = digits_images(image_size)
    with torch.no_grad():
        predictions = classifier(images[held_out]).argmax(-1)
    assert (predictions == labels[held_out]).float().mean() >= 0.97


def test_classifier_split_is_disjoint_and_stratified(held_out):
    train, held = digits_classifier_split()
    assert len(set(train.tolist()) & set(held.tolist())) == 0
    assert len(train) + len(held) == 1797
    _, labels = digits_images(8)
    assert torch.bincount(labels[held], minlength=10).min() >= 20  # every digit is evaluated


def test_classifier_features_are_penultimate_layer(classifier):
    x, _ = digits_images(16)
    with torch.no_grad():
        features = classifier.features(x[:5])
        assert features.shape == (5, 64)
        torch.testing.assert_close(classifier.head(features), classifier(x[:5]))


def test_rgb_input_is_read_as_gray(classifier):
    x, _ = digits_images(8)
    with torch.no_grad():
        torch.testing.assert_close(classifier(x[:8].expand(-1, 3, -1, -1)), classifier(x[:8]))


def test_second_load_reads_the_cache_instead_of_training(cache_dir, classifier, monkeypatch):
    monkeypatch.setenv("LITZOO_CACHE", str(cache_dir))

    def fail(*args, **kwargs):
        raise AssertionError("retrained although a valid cache exists")

    monkeypatch.setattr(metrics, "_train_digits_classifier", fail)
    again = load_digits_classifier()
    for (name, a), b in zip(classifier.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name
    assert not again.training and not any(p.requires_grad for p in again.parameters())
    stored = load_file(str(cache_dir / metrics._CLASSIFIER_FILE))
    assert set(stored) == set(classifier.state_dict())


def test_corrupt_cache_is_retrained_and_rewritten(tmp_path, monkeypatch):
    path = tmp_path / metrics._CLASSIFIER_FILE
    path.write_bytes(b"definitely not safetensors")
    torch.manual_seed(123)
    replacement = DigitsClassifier()
    calls = []

    def fake_train(*args, **kwargs):  # stands in for the few-second training run
        calls.append(1)
        return replacement, 0.5

    monkeypatch.setattr(metrics, "_train_digits_classifier", fake_train)
    with pytest.warns(UserWarning, match="unreadable"):
        loaded = load_digits_classifier(cache_dir=tmp_path)
    assert calls == [1]
    rewritten = load_file(str(path))
    for name, value in replacement.state_dict().items():
        assert torch.equal(rewritten[name], value)
        assert torch.equal(loaded.state_dict()[name], value)
    assert not list(tmp_path.glob("*.tmp"))  # the atomic write left no temporary file


def test_class_accuracy_is_near_one_for_true_labels_and_near_zero_for_wrong_labels(cache_dir, held_out):
    images, labels = digits_images(16)
    images, labels = images[held_out], labels[held_out]
    assert class_accuracy(images, labels) >= 0.97
    assert class_accuracy(images, (labels + 1) % 10) <= 0.03


def test_class_accuracy_rejects_images_in_minus_one_to_one(classifier):
    images, labels = digits_images(8)
    with pytest.raises(ValueError, match=r"\(x \+ 1\) / 2"):
        class_accuracy(images[:10] * 2 - 1, labels[:10], classifier=classifier)


def test_fid_of_two_real_halves_is_far_below_noise_and_shuffled_pixels(cache_dir):
    images, _ = digits_images(16)
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(images), generator=generator)
    real_a, real_b = images[order[:500]], images[order[500:1000]]
    noise = torch.rand(real_b.shape, generator=generator)
    shuffled = torch.stack(
        [im.flatten()[torch.randperm(im.numel(), generator=generator)].view_as(im) for im in real_b]
    )
    fid_real = fid(real_a, real_b)
    assert fid_real >= 0.0
    assert 10 * fid_real < fid(real_a, noise)
    assert 10 * fid_real < fid(real_a, shuffled)


def test_fid_of_a_set_with_itself_is_zero(cache_dir):
    images = digits_images(8)[0][:600]
    same = fid(images, images)
    assert abs(same) < 1e-2 * fid(images, torch.rand_like(images)) and abs(same) < 0.5


class _Pixels(nn.Module):
    """Identity features: FID then has a closed form on the pixels themselves."""

    def forward(self, x):
        return x.flatten(1)


def test_fid_with_custom_features_matches_frechet_closed_form():
    generator = torch.Generator().manual_seed(0)
    real = torch.rand(400, 1, 2, 2, generator=generator)
    fake = (0.3 + 0.5 * torch.rand(300, 1, 2, 2, generator=generator)) ** 2
    r, f = real.flatten(1).double().numpy(), fake.flatten(1).double().numpy()
    mu_r, mu_f = r.mean(0), f.mean(0)
    sigma_r, sigma_f = np.cov(r, rowvar=False), np.cov(f, rowvar=False)
    covmean = scipy.linalg.sqrtm(sigma_r @ sigma_f).real
    expected = ((mu_r - mu_f) ** 2).sum() + np.trace(sigma_r + sigma_f - 2 * covmean)
    # Small batches check that the streaming update equals the one-shot statistics.
    assert fid(real, fake, feature_extractor=_Pixels(), batch_size=64) == pytest.approx(expected, rel=1e-4)


def test_fid_rejects_unknown_feature_extractor():
    x = torch.rand(4, 1, 8, 8)
    with pytest.raises(ValueError, match="feature_extractor"):
        fid(x, x, feature_extractor="inception")


def test_eight_gaussians_true_samples_cover_all_modes_with_rayleigh_quality():
    samples = sample_toy2d("8gaussians", 20000, generator=torch.Generator().manual_seed(0))
    result = eight_gaussians_coverage(samples)
    assert result["modes_covered"] == 8
    # P(|eps| <= 3 sigma) for a 2-D isotropic Gaussian is 1 - exp(-9/2) = 0.98889; SE ~ 0.0007.
    assert result["quality"] == pytest.approx(1 - math.exp(-4.5), abs=0.004)
    assert sum(result["mode_fractions"]) == pytest.approx(result["quality"], abs=1e-6)


def test_single_mode_samples_cover_one_mode():
    generator = torch.Generator().manual_seed(1)
    collapsed = EIGHT_GAUSSIANS_CENTERS[3] + EIGHT_GAUSSIANS_STD * torch.randn(5000, 2, generator=generator)
    result = eight_gaussians_coverage(collapsed)
    assert result["modes_covered"] == 1
    assert result["mode_fractions"][3] > 0.97
    # Only far tails (> 3.1 std towards a neighbour) land in another mode's 3-std disc.
    assert sum(result["mode_fractions"]) - result["mode_fractions"][3] < 0.01


def test_samples_between_modes_have_low_quality():
    # Points on the circle half-way between adjacent centres: 3.06 std from both.
    angles = (torch.arange(8) + 0.5) * math.pi / 4
    between = EIGHT_GAUSSIANS_CENTERS.norm(dim=1)[:1] * torch.stack([angles.cos(), angles.sin()], 1)
    result = eight_gaussians_coverage(between.repeat(100, 1))
    assert result["quality"] == 0.0 and result["modes_covered"] == 0


def test_evaluate_scores_real_digits_well_and_noise_badly(cache_dir, held_out):
    images, labels = digits_images(16)
    images, labels = images[held_out], labels[held_out]
    generator = torch.Generator().manual_seed(0)
    requested = []

    def real_sampler(n, y):
        requested.append(y.clone())
        # One held-out image of the requested class per label.
        picks = [torch.nonzero(labels == c).flatten() for c in y.tolist()]
        return torch.stack([images[p[torch.randint(len(p), (1,), generator=generator)]][0] for p in picks])

    def noise_sampler(n, y):
        return torch.rand(n, 1, 16, 16, generator=generator)

    good = evaluate(real_sampler, n_per_class=30, batch_size=100)
    bad = evaluate(noise_sampler, n_per_class=30)
    assert torch.equal(torch.cat(requested), torch.arange(10).repeat_interleave(30))
    assert good["class_accuracy"] >= 0.97
    assert bad["class_accuracy"] <= 0.3
    assert 10 * good["fid"] < bad["fid"]


def test_evaluate_unconditional_passes_no_labels_and_skips_accuracy(cache_dir):
    images, _ = digits_images(8)
    seen = []

    def sampler(n, y):
        seen.append(y)
        return images[:n]

    result = evaluate(sampler, n_per_class=400, num_classes=None)
    assert seen == [None]
    assert result["class_accuracy"] is None
    assert 10 * result["fid"] < fid(images, torch.rand(400, 1, 8, 8))
