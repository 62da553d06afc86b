"""``seed=None`` for datamodules: follow the global seed, taken once and kept by checkpoints and resumes."""

from __future__ import annotations

from typing import Any, Optional

from litzoo.seeding import global_seed


class DataSeed:
    """Mixin (before ``LightningDataModule``) of the datamodules with a ``seed`` argument.

    * ``seed=None`` follows the global seed: :attr:`seed` takes :func:`global_seed` at its first use (in
      ``setup`` or the first batch), once, and writes it into the saved hyperparameters.
    * The logger sees it as ``data_seed``: Lightning merges the module's and the datamodule's hyperparameters
      into one table and refuses one key with two values, so a model seed and a data seed that differ would
      stop ``fit`` (the checkpoint keeps ``seed`` under ``datamodule_hyper_parameters``, unchanged).
    """

    _seed: Optional[int] = None
    _seed_from_global: bool = False

    @property
    def seed(self) -> int:
        if self._seed is None:
            self._seed, self._seed_from_global = global_seed(), True
            if "seed" in self.hparams:  # type: ignore[attr-defined]
                self.hparams["seed"] = self._seed  # type: ignore[attr-defined]
        return self._seed

    @seed.setter
    def seed(self, value: Optional[int]) -> None:
        self._seed, self._seed_from_global = (None if value is None else int(value)), False

    @property
    def hparams_initial(self) -> Any:
        hparams = super().hparams_initial  # type: ignore[misc]
        if "seed" in hparams:
            del hparams["seed"]
            hparams["data_seed"] = self.seed
        return hparams

    def seed_state_dict(self) -> dict[str, Any]:
        """For ``state_dict``: the seed taken from the global one, so that a resume keeps the first run's."""
        return {"seed": self.seed} if self._seed_from_global or self._seed is None else {}

    def load_seed_state_dict(self, state: dict[str, Any]) -> None:
        """For ``load_state_dict``: a seed given explicitly wins; one that followed the global seed takes the saved one."""
        if "seed" in state and (self._seed is None or self._seed_from_global):
            self._seed, self._seed_from_global = int(state["seed"]), True
            if "seed" in self.hparams:  # type: ignore[attr-defined]
                self.hparams["seed"] = self._seed  # type: ignore[attr-defined]
