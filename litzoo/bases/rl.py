"""What the environment-driven RL modules share: :class:`RLModule`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from litzoo.base import LitzooModule


class RLModule(LitzooModule):
    """Bookkeeping shared by the environment-driven RL modules (DDPG/TD3, ActorCritic, TRPO, DQN, ...).

    * **Networks from the env.** Subclasses implement ``_build(obs_spec, act_spec)`` (setting ``self.policy``, a
      :class:`litzoo.rl.policy.Policy`); :meth:`setup` calls it with the ``GymDataModule``'s spaces, or checks
      that a module built from ``observation_space=``/``action_space=`` matches them.
    * **Env steps, not optimizer steps** (manual optimisation makes ``global_step`` count optimizer steps):
      ``env_steps`` and ``num_updates`` are counted by the subclass and saved in checkpoints.
    * **Randomness:** one ``torch.Generator`` per rank (``seed``, offset by rank) for exploration and sampling,
      saved in checkpoints so that a resumed run continues the same random stream.
    * **DDP:** gradients are averaged by the modules with :func:`litzoo.datamodules.gym.all_reduce_gradients`
      (one all-reduce per update); DDP's reducer is switched off at every step (Lightning switches it back on
      after each manual-optimisation step).
    * **Export:** the policy folder of :mod:`litzoo.rl.policy` (``litzoo.load_policy(dir).predict(obs)``).

    With the hyperparameter ``save_replay_buffer=True`` the replay buffer ``self._buffer`` is saved too; after
    loading it waits in ``self._pending["replay_buffer"]`` for the subclass to restore when collection starts.
    Under DDP every rank's random stream and replay buffer are gathered into the checkpoint (each rank
    explores its own envs, so their streams and buffers differ), and a resume on as many ranks gives every
    rank its own back; on a different number of ranks each rank takes the buffer of rank ``r mod n`` and a
    fresh random stream.
    """

    #: the action-space types the method handles (``()``: any) and what to use instead for the others
    ACTION_SPACES: tuple[str, ...] = ()
    ACTION_SPACE_HINT: str = ""

    def _init_rl_state(self, observation_space: Any = None, action_space: Any = None) -> None:
        """Call in ``__init__`` after ``save_hyperparameters()``; builds the networks when both spaces are given
        (else in :meth:`setup` from the datamodule) and rejects an unsupported action space right away."""
        from litzoo.rl.policy import as_spec

        self.automatic_optimization = False
        self.env_steps = 0  # env steps taken by this process (all its envs); saved in checkpoints
        self.num_updates = 0
        self.policy = None
        self._generator: torch.Generator | None = None
        self._env = None  # the EnvRunner while collecting
        self._pending: dict[str, Any] = {}
        self._clock: dict[str, float] = {}
        self._logged_at = 0
        if action_space is not None:
            self._check_action_space(as_spec(action_space))
            if observation_space is not None:
                self._build_networks(as_spec(observation_space), as_spec(action_space))

    @classmethod
    def _check_action_space(cls, spec: dict[str, Any]) -> None:
        from litzoo.rl.policy import describe_spec

        if cls.ACTION_SPACES and spec["type"] not in cls.ACTION_SPACES:
            wanted = " or ".join("continuous Box" if t == "Box" else t for t in cls.ACTION_SPACES)
            raise ValueError(f"{cls.__name__} needs a {wanted} action space, but the env's "
                             f"action space is {describe_spec(spec)}. {cls.ACTION_SPACE_HINT}".rstrip())

    def _build_networks(self, obs_spec: dict[str, Any], act_spec: dict[str, Any]) -> None:
        self._check_action_space(act_spec)
        # Saved in the hyperparameters, so that load_from_checkpoint rebuilds the same networks.
        self.hparams.observation_space, self.hparams.action_space = obs_spec, act_spec
        self._build(obs_spec, act_spec)

    def _build(self, obs_spec: dict[str, Any], act_spec: dict[str, Any]) -> None:
        """Create ``self.policy`` (a :class:`litzoo.rl.policy.Policy`) and the other networks."""
        raise NotImplementedError

    @property
    def algorithm(self) -> str:
        """The name written into exported policy folders."""
        return type(self).__name__

    def setup(self, stage: str) -> None:
        from litzoo.rl.policy import check_space

        datamodule = getattr(self.trainer, "datamodule", None)
        specs = datamodule.space_specs() if hasattr(datamodule, "space_specs") else None
        if self.policy is None:
            if specs is None:
                raise ValueError(
                    f"{type(self).__name__} builds its networks from the environment's spaces: train it with a "
                    "GymDataModule, or pass observation_space= and action_space= when creating it."
                )
            self._build_networks(*specs)
        elif specs is not None:
            check_space("observation space", self.hparams.observation_space, specs[0])
            check_space("action space", self.hparams.action_space, specs[1])

    def _init_generator(self) -> None:
        # Called when collection starts, i.e. after any checkpoint was restored (whatever the strategy).
        seed = self.hparams.seed * 1_000_003 + self.global_rank
        world_size = self._trainer.world_size if self._trainer is not None else 1
        ranks = self._pending.pop("ranks", None)
        if ranks is not None:  # a DDP checkpoint: every rank's stream and buffer
            self._pending.update(ranks[self.global_rank % len(ranks)])
            own_stream = len(ranks) == world_size
        else:  # one stream: this process's own only if one process saved it and one resumes it
            own_stream = self._pending.pop("generator_world_size", 1) == 1 and world_size == 1
        state = self._pending.pop("generator", None)
        same_device = self._pending.pop("generator_device", "cpu") == self.device.type
        if state is not None and not own_stream:
            # Another number of ranks (or an older checkpoint with rank 0's stream only): handing one saved
            # stream to every rank would make all ranks draw the same noise and minibatches. Fresh per-rank
            # streams, distinct from the first run's.
            seed += 7919 * self.env_steps
        self._generator = torch.Generator(device=self.device).manual_seed(seed)
        if state is not None and own_stream and same_device:
            self._generator.set_state(state.cpu())  # resume the random stream exactly

    def on_train_start(self) -> None:
        from litzoo.datamodules.gym import disable_ddp_gradient_sync

        disable_ddp_gradient_sync(self.trainer)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Lightning's DDP forward redirection turns the reducer's sync back on after every manual-optimisation
        # step; our updates all-reduce their own gradients (and may leave networks unused, which DDP rejects).
        from litzoo.datamodules.gym import disable_ddp_gradient_sync

        disable_ddp_gradient_sync(self.trainer)

    def _parameters_list(self) -> list[torch.nn.Parameter]:
        if not hasattr(self, "_params_cache"):
            self._params_cache = [p for p in self.parameters() if p.requires_grad]
        return self._params_cache

    def _rank_state(self) -> dict[str, Any]:
        """This process's random stream and (with ``save_replay_buffer``) replay buffer, on the CPU."""
        state: dict[str, Any] = {}
        if self._generator is not None:
            state["generator"], state["generator_device"] = self._generator.get_state(), self._generator.device.type
        if self.hparams.get("save_replay_buffer") and getattr(self, "_buffer", None) is not None:
            state["replay_buffer"] = {k: v.cpu() if torch.is_tensor(v) else v for k, v in self._buffer.state_dict().items()}
        return state

    def _gather_rank_states(self, state: dict[str, Any]) -> list[dict[str, Any]] | None:
        """Every rank's :meth:`_rank_state` in rank order on rank 0 (which writes the checkpoint), ``None`` on
        the others. Lightning dumps a checkpoint on every rank, so every rank reaches this collective."""
        import torch.distributed as dist

        gathered: list[Any] | None = [None] * self.trainer.world_size if self.global_rank == 0 else None
        dist.gather_object(state, gathered, dst=0)
        return gathered

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        import torch.distributed as dist

        super().on_save_checkpoint(checkpoint)
        state: dict[str, Any] = {"env_steps": int(self.env_steps), "num_updates": int(self.num_updates)}
        local = self._rank_state()
        world_size = self.trainer.world_size if self._trainer is not None else 1
        # Not after an exception: Lightning then saves on the failing rank alone, and a collective would hang.
        if world_size > 1 and dist.is_available() and dist.is_initialized() and not self.trainer.interrupted:
            state["ranks"] = self._gather_rank_states(local)
        else:
            state.update(local)
            if "generator" in local:
                state["generator_world_size"] = world_size
        checkpoint["litzoo_rl"] = state

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("litzoo_rl", {})
        self.env_steps = int(state.get("env_steps", 0))
        self.num_updates = int(state.get("num_updates", 0))
        self._logged_at = self.env_steps
        self._pending = {k: state[k] for k in ("generator", "generator_device", "generator_world_size", "replay_buffer",
                                               "ranks") if k in state}

    def export(self, out_dir: str | os.PathLike) -> Path:
        """The policy folder of :mod:`litzoo.rl.policy` (``litzoo.load_policy(out_dir).predict(obs)``)."""
        if self.policy is None:
            raise ValueError(f"{type(self).__name__} has no networks yet: train it (or pass the spaces) before export.")
        metadata = {"algorithm": self.algorithm, "env_steps": int(self.env_steps),
                    "hyperparameters": {k: v for k, v in self.hparams.items()}}
        return self.policy.save(out_dir, metadata)
