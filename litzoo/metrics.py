"""Sample-quality metrics for the small generative benchmarks: digits and the 2-D toys.

Nothing here imports Lightning; every function takes plain tensors (images in ``[0, 1]``,
shape ``(N, C, H, W)``) and can be used outside a Trainer.

* **Class accuracy** of class-conditional samples: a :class:`DigitsClassifier` trained on
  scikit-learn's bundled 8x8 digits labels each sample; the score is the fraction labelled as
  the class it was generated for (the "classifier accuracy" check of conditional generators).
* **FID** (Heusel et al., 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a
  Local Nash Equilibrium", arXiv:1706.08500). With features ``f`` of real and generated images
  summarised as Gaussians ``N(mu_r, Sigma_r)`` and ``N(mu_g, Sigma_g)``::

      FID = ||mu_r - mu_g||^2 + Tr(Sigma_r + Sigma_g - 2 (Sigma_r Sigma_g)^{1/2})

  computed by torchmetrics' ``FrechetInceptionDistance``. Inception-v3 features are meaningless
  on 8x8 digits (and need torch-fidelity plus a weights download), so the default features are
  the digits classifier's 64-d penultimate layer — the usual "domain FID" for MNIST-like data.
  Numbers are therefore comparable only between runs that use the same feature extractor.
* **8-Gaussians coverage** (the mode-collapse check of Srivastava et al., 2017, VEEGAN,
  arXiv:1705.07761): how many of the 8 modes receive samples, and the fraction of samples
  within 3 std of some mode ("high-quality samples").

The classifier is trained on first use (a few seconds on CPU, fixed seed) and cached as
safetensors under ``$LITZOO_CACHE`` or ``~/.cache/litzoo``.
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from litzoo.data.digits import DIGITS_IMAGE_SIZES, digits_images

__all__ = [
    "DigitsClassifier",
    "digits_images",
    "digits_classifier_split",
    "load_digits_classifier",
    "class_accuracy",
    "fid",
    "eight_gaussians_coverage",
    "evaluate",
]

# Bump when the architecture or the training recipe changes: old caches are then ignored.
_CLASSIFIER_VERSION = 1
_CLASSIFIER_FILE = f"digits_classifier_v{_CLASSIFIER_VERSION}.safetensors"
_HELD_OUT_FRACTION = 0.15
_SPLIT_SEED = 0
def digits_classifier_split() -> tuple[Tensor, Tensor]:
    """Indices ``(train, held_out)`` of the digits the classifier is trained / evaluated on.

    Stratified by class with a fixed seed, so the held-out accuracy is reproducible.
    """
    from sklearn.model_selection import train_test_split

    _, labels = digits_images(8)
    train_idx, held_out_idx = train_test_split(
        torch.arange(len(labels)).numpy(),
        test_size=_HELD_OUT_FRACTION,
        stratify=labels.numpy(),
        random_state=_SPLIT_SEED,
    )
    return torch.as_tensor(train_idx), torch.as_tensor(held_out_idx)


# ---------------------------------------------------------------------------------------------
# Classifier
# ---------------------------------------------------------------------------------------------
class DigitsClassifier(nn.Module):
    """A small CNN for the 8x8 digits that accepts images of any size.

    Inputs are ``(N, C, H, W)`` in ``[0, 1]`` with ``C`` 1 or 3 (RGB is averaged to gray); they are
    resized to ``16x16`` internally (bilinear, antialiased when shrinking), so 8-, 16- and
    32-pixel samples all go through the same network.
    """

    input_size: int = 16

    def __init__(self, num_classes: int = 10, feature_dim: int = 64) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.feature_dim = feature_dim
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 16 -> 8
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 8 -> 4
            nn.Flatten(),
            nn.Linear(64 * 4 * 4, feature_dim),
            nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, num_classes)

    def _prepare(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(
                f"DigitsClassifier expects images of shape (N, 1 or 3, H, W) in [0, 1]; got shape "
                f"{tuple(x.shape)}. Add a channel dimension with x.unsqueeze(1) if needed."
            )
        if x.shape[1] == 3:
            x = x.mean(dim=1, keepdim=True)
        x = x.float()
        if x.shape[-2:] != (self.input_size, self.input_size):
            size = (self.input_size, self.input_size)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        # Centre the [0, 1] input; the network was trained on this scaling.
        return x * 2.0 - 1.0

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features, shape ``(N, feature_dim)`` — the FID embedding."""
        return self.body(self._prepare(x))

    def forward(self, x: Tensor) -> Tensor:
        """Class logits, shape ``(N, num_classes)``."""
        return self.head(self.features(x))


def _augment(x8: Tensor, generator: torch.Generator) -> Tensor:
    """Light augmentation so the classifier tolerates imperfect generated digits.

    Random output size (8/16/32, as produced by the datamodule), small affine jitter (rotation
    +-10 deg, scale 0.9-1.1, shift +-1 px at 8x8) and a little pixel noise.
    """
    n = x8.shape[0]
    size = DIGITS_IMAGE_SIZES[int(torch.randint(len(DIGITS_IMAGE_SIZES), (1,), generator=generator))]
    x = F.interpolate(x8, size=(size, size), mode="bilinear", align_corners=False) if size != 8 else x8
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(10)
    scale = 0.9 + 0.2 * torch.rand(n, generator=generator)
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (2.0 / 8.0)  # normalised units: +-1 px
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )  # (n, 2, 3) affine maps from output to input coordinates
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    noise_std = 0.05 * torch.rand(n, 1, 1, 1, generator=generator)
    return (x + noise_std * torch.randn(x.shape, generator=generator)).clamp(0.0, 1.0)


def _fit_epochs(
    model: DigitsClassifier,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    x_train: Tensor,
    y_train: Tensor,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
) -> None:
    """Plain minibatch cross-entropy on augmented digits."""
    steps_per_epoch = len(x_train) // batch_size
    for _ in range(epochs):
        order = torch.randperm(len(x_train), generator=generator)
        for step in range(steps_per_epoch):
            batch = order[step * batch_size : (step + 1) * batch_size]
            loss = F.cross_entropy(model(_augment(x_train[batch], generator)), y_train[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()


def _train_digits_classifier(
    epochs: int = 15, batch_size: int = 64, seed: int = 0
) -> tuple[DigitsClassifier, float]:
    """Train on the classifier's train split; return ``(model, held-out accuracy)``."""
    images, labels = digits_images(8)
    train_idx, held_out_idx = digits_classifier_split()
    x_train, y_train = images[train_idx], labels[train_idx]
    generator = torch.Generator().manual_seed(seed)
    # Initialise from a private seed without disturbing the caller's global RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DigitsClassifier()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=3e-3, total_steps=epochs * (len(x_train) // batch_size)
    )

    model.train()
    threads = torch.get_num_threads()
    # One thread: this tiny model gains nothing from intra-op parallelism, and on a busy
    # machine oversubscribed threads made training ~5x slower.
    torch.set_num_threads(1)
    try:
        with torch.enable_grad():  # callers such as fid() run under no_grad
            _fit_epochs(model, optimizer, scheduler, x_train, y_train, epochs, batch_size, generator)
    finally:
        torch.set_num_threads(threads)
    model.eval()
    with torch.no_grad():
        accuracy = (model(images[held_out_idx]).argmax(-1) == labels[held_out_idx]).float().mean().item()
    return model, accuracy


def _cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("LITZOO_CACHE"):
        return Path(os.environ["LITZOO_CACHE"])
    return Path.home() / ".cache" / "litzoo"


def load_digits_classifier(cache_dir: str | os.PathLike | None = None) -> DigitsClassifier:
    """The digits classifier in eval mode with frozen weights (CPU).

    Loads ``digits_classifier_v1.safetensors`` from ``cache_dir`` (default ``$LITZOO_CACHE``, else
    ``~/.cache/litzoo``). If the file is missing or unreadable it trains one (fixed seed, a few
    seconds on CPU, >= 0.97 held-out accuracy) and writes it atomically, so concurrent callers
    never read a half-written file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    path = _cache_dir(cache_dir) / _CLASSIFIER_FILE
    model = DigitsClassifier()
    if path.exists():
        try:
            model.load_state_dict(load_file(str(path)))
            return model.eval().requires_grad_(False)
        except (SafetensorError, RuntimeError, OSError, ValueError) as err:
            warnings.warn(f"digits classifier cache {path} is unreadable ({err}); retraining it.", stacklevel=2)

    model, accuracy = _train_digits_classifier()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        metadata = {"held_out_accuracy": f"{accuracy:.4f}", "version": str(_CLASSIFIER_VERSION)}
        save_file(state, tmp, metadata=metadata)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache may be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return model.eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------
def _check_images_01(images: Tensor, name: str) -> Tensor:
    if images.dim() == 3:  # (N, H, W) grayscale
        images = images.unsqueeze(1)
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"{name} must have shape (N, 1 or 3, H, W); got {tuple(images.shape)}.")
    if not torch.isfinite(images).all():
        raise ValueError(f"{name} contains NaN or infinite values; the sampler diverged.")
    if images.numel() and (images.min() < -0.5 or images.max() > 1.5):
        raise ValueError(
            f"{name} must be images in [0, 1]; got values in [{images.min().item():.2f}, "
            f"{images.max().item():.2f}]. If they are in [-1, 1], pass (x + 1) / 2."
        )
    # Generated samples overshoot [0, 1] a little; the metrics read clipped pixels.
    return images.float().clamp(0.0, 1.0)


@torch.no_grad()
def class_accuracy(
    images_01: Tensor, labels: Tensor, classifier: nn.Module | None = None, batch_size: int = 512
) -> float:
    """Fraction of ``images_01`` that ``classifier`` (default: the digits classifier) labels as ``labels``."""
    images_01 = _check_images_01(images_01, "images_01")
    labels = torch.as_tensor(labels).reshape(-1)
    if labels.shape[0] != images_01.shape[0]:
        raise ValueError(f"labels has {labels.shape[0]} entries but images_01 has {images_01.shape[0]} images.")
    classifier = load_digits_classifier() if classifier is None else classifier
    device = next(classifier.parameters()).device
    correct = 0
    for start in range(0, len(labels), batch_size):
        logits = classifier(images_01[start : start + batch_size].to(device))
        correct += (logits.argmax(-1).cpu() == labels[start : start + batch_size].cpu()).sum().item()
    return correct / max(len(labels), 1)


class _Features(nn.Module):
    """Adapter torchmetrics' FID calls: ``images in [0, 1] -> features`` with ``num_features`` set.

    Setting ``num_features`` stops torchmetrics probing the module with a dummy 3x299x299 image.
    """

    def __init__(self, extract: Callable[[Tensor], Tensor], num_features: int, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self._extract = extract
        self.num_features = num_features

    def forward(self, x: Tensor) -> Tensor:
        return self._extract(x).flatten(1)


@torch.no_grad()
def fid(
    real_01: Tensor,
    fake_01: Tensor,
    feature_extractor: nn.Module | int | None = None,
    batch_size: int = 256,
) -> float:
    """Fréchet distance between feature Gaussians of ``real_01`` and ``fake_01`` (both in [0, 1]).

    ``feature_extractor``:

    * ``None`` (default): the digits classifier's 64-d penultimate features. Use at least a few
      hundred images per side so the 64x64 covariances are well estimated; compare numbers only
      at equal sample counts (FID is biased upward at small N).
    * a :class:`DigitsClassifier`: its penultimate features.
    * any other ``nn.Module``: called on float ``(B, C, H, W)`` batches in ``[0, 1]`` (torchmetrics passes
      custom modules their input unchanged, i.e. ``normalize`` does not apply), returning
      ``(B, D)`` features. Put it in eval mode first (``fid`` does not change its mode).
    * an ``int`` in ``(64, 192, 768, 2048)``: torchmetrics' Inception-v3 at that layer — the
      standard FID on real photos; ``2048`` is the usual one. Requires ``pip install
      torch-fidelity`` (and its weights download on first use); grayscale is repeated to RGB and
      images are converted to uint8 by torchmetrics (``normalize=True``).

    Features are computed on the device of a given module (else of ``real_01``): for Inception on
    a GPU, pass ``real_01.cuda()`` and ``fake_01.cuda()``.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    real_01 = _check_images_01(real_01, "real_01")
    fake_01 = _check_images_01(fake_01, "fake_01")
    if len(real_01) < 2 or len(fake_01) < 2:
        raise ValueError(f"fid needs at least 2 images per side; got {len(real_01)} real and {len(fake_01)} fake.")
    if isinstance(feature_extractor, bool) or not (
        feature_extractor is None or isinstance(feature_extractor, (int, nn.Module))
    ):
        raise ValueError(
            "feature_extractor must be None, an nn.Module or an int in (64, 192, 768, 2048); "
            f"got {feature_extractor!r}."
        )

    device = real_01.device
    if isinstance(feature_extractor, int):
        metric = FrechetInceptionDistance(feature=feature_extractor, normalize=True)

        def to_input(x: Tensor) -> Tensor:
            return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
    else:
        if feature_extractor is None:
            module = load_digits_classifier().to(device)
        else:
            module = feature_extractor
            # Run where the caller's module lives rather than moving it.
            device = next(iter(module.parameters()), real_01).device
        extract = module.features if isinstance(module, DigitsClassifier) else module
        num_features = extract(real_01[:2].to(device)).flatten(1).shape[1]
        metric = FrechetInceptionDistance(feature=_Features(extract, num_features, module))

        def to_input(x: Tensor) -> Tensor:
            return x

    metric = metric.to(device)
    for images, real in ((real_01, True), (fake_01, False)):
        for start in range(0, len(images), batch_size):
            metric.update(to_input(images[start : start + batch_size].to(device)), real=real)
    return float(metric.compute())


EIGHT_GAUSSIANS_MIN_MODE_FRACTION = 0.025  # a fifth of a mode's fair share (1/8)


def eight_gaussians_coverage(
    samples: Tensor,
    n_std: float = 3.0,
    min_mode_fraction: float = EIGHT_GAUSSIANS_MIN_MODE_FRACTION,
    centers: Tensor | None = None,
    std: float | None = None,
) -> dict[str, float | int | list[float]]:
    """Mode coverage and sample quality on the ``8gaussians`` toy.

    ``centers`` (K, 2) and ``std`` default to ``litzoo.data.toy2d.EIGHT_GAUSSIANS_CENTERS`` / ``_STD``; pass
    others to score any isotropic Gaussian mixture.

    Each sample is assigned to its nearest centre; it is *high quality* if it lies within
    ``n_std`` standard deviations of it. A mode is *covered* if its high-quality samples are at
    least ``min_mode_fraction`` of all samples. For exact samples ``quality`` is
    ``1 - exp(-n_std^2 / 2)`` (0.989 at 3 std: the radius of a 2-D isotropic Gaussian is Rayleigh).

    Returns ``dict(modes_covered: int, quality: float, mode_fractions: list[float])``.
    """
    if centers is None or std is None:
        from litzoo.data.toy2d import EIGHT_GAUSSIANS_CENTERS, EIGHT_GAUSSIANS_STD

        centers = EIGHT_GAUSSIANS_CENTERS if centers is None else centers
        std = EIGHT_GAUSSIANS_STD if std is None else std
    if samples.dim() != 2 or samples.shape[1] != 2 or len(samples) == 0:
        raise ValueError(f"samples must have shape (N, 2) with N > 0; got {tuple(samples.shape)}.")
    samples = samples.detach().float().cpu()
    centers = torch.as_tensor(centers, dtype=torch.float32)
    nearest_distance, nearest = torch.cdist(samples, centers).min(dim=1)  # (N,)
    close = nearest_distance <= n_std * std
    counts = torch.bincount(nearest[close], minlength=len(centers)).float()
    mode_fractions = counts / len(samples)
    return {
        "modes_covered": int((mode_fractions >= min_mode_fraction).sum()),
        "quality": close.float().mean().item(),
        "mode_fractions": mode_fractions.tolist(),
    }


@torch.no_grad()
def evaluate(
    sample_fn: Callable[[int, Tensor | None], Tensor],
    n_per_class: int = 100,
    num_classes: int | None = 10,
    real_images: Tensor | None = None,
    classifier: nn.Module | None = None,
    feature_extractor: nn.Module | int | None = None,
    batch_size: int | None = None,
) -> dict[str, float | None]:
    """Sample ``n_per_class`` images per class and score them: ``dict(class_accuracy, fid)``.

    ``sample_fn(n, y)`` must return ``n`` images in ``[0, 1]`` shaped ``(n, C, H, W)`` for the
    class labels ``y`` (a CPU LongTensor of length ``n``), e.g. ``lambda n, y: ddpm.sample(n, y=y)``.
    With ``num_classes=None`` the model is treated as unconditional: ``sample_fn(n, None)`` draws
    ``n_per_class`` images and ``class_accuracy`` is ``None``. ``batch_size`` (default: all at
    once) splits the sampling into several calls to bound memory.

    ``real_images`` (in ``[0, 1]``) default to all 1797 digits resampled to the generated size,
    so real and fake pass the same resampling. ``classifier`` and ``feature_extractor`` default to
    the digits classifier; see :func:`fid` for Inception. Seed the sampler yourself
    (``torch.manual_seed``) for reproducible numbers.
    """
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1; got {n_per_class}.")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be None (one call) or >= 1; got {batch_size}.")
    if num_classes is None:
        y: Tensor | None = None
        n = n_per_class
    else:
        y = torch.arange(num_classes).repeat_interleave(n_per_class)
        n = len(y)
    chunk = n if batch_size is None else batch_size
    parts = []
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        parts.append(sample_fn(size, None if y is None else y[start : start + size]).detach().float())
    fake = _check_images_01(torch.cat(parts), "sample_fn output")
    if len(fake) != n:
        raise ValueError(f"sample_fn returned {len(fake)} images in total; expected {n}.")

    if real_images is None:
        size = fake.shape[-1]
        real_images, _ = digits_images(size if size in DIGITS_IMAGE_SIZES else 8)
        if real_images.shape[-1] != size:
            real_images = F.interpolate(
                real_images, size=tuple(fake.shape[-2:]), mode="bilinear", align_corners=False
            )
        if fake.shape[1] == 3:
            real_images = real_images.expand(-1, 3, -1, -1)
    if classifier is None and (y is not None or feature_extractor is None):
        classifier = load_digits_classifier()
    accuracy = None if y is None else class_accuracy(fake, y, classifier=classifier)
    if feature_extractor is None:
        # Reuse the (already loaded) classifier's penultimate features; a custom non-digits
        # classifier still gets the standard digits features so FIDs stay comparable.
        feature_extractor = classifier if isinstance(classifier, DigitsClassifier) else None
    fid_value = fid(real_images.to(fake.device), fake, feature_extractor=feature_extractor)
    return {"class_accuracy": accuracy, "fid": fid_value}
