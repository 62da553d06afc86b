"""What the environment-driven RL modules share: :class:`RLModule`, and the Lightning side of their
collection: logging every N env steps (:meth:`RLModule.log_rl_metrics`), one gradient all-reduce per
update (:func:`all_reduce_gradients`) in place of DDP's reducer (:func:`disable_ddp_gradient_sync`).

The collection itself (``EnvRunner``, rollouts, replay stepping) is Lightning-free, in
:mod:`litzoo.rl.collect`.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch

from litzoo.base import LitzooModule, prepare_export_dir
from litzoo.model_card import card_metadata
from litzoo.optim import fused_adamw_step
from litzoo.rl.utils import flush_denormals
from litzoo.seeding import rank_seed


def disable_ddp_gradient_sync(trainer: L.Trainer) -> None:
    """Stop DDP's reducer from syncing gradients (the module calls :func:`all_reduce_gradients`).

    DDP expects every parameter to get a gradient in every backward (or ``find_unused_parameters``,
    a graph search per step); a TD3 step without actor update, or several backward passes per
    step, break that contract. Setting ``require_backward_grad_sync = False`` (what
    ``DDP.no_sync()`` does) for the whole run leaves the reducer idle; DDP still broadcasts rank 0's
    weights when it wraps the module. Call it in ``on_train_start`` (the module is wrapped by then).
    """
    from torch.nn.parallel import DistributedDataParallel

    model = getattr(trainer.strategy, "model", None)
    if isinstance(model, DistributedDataParallel):
        model.require_backward_grad_sync = False


def all_reduce_gradients(trainer: L.Trainer, parameters: Iterable[torch.nn.Parameter]) -> None:
    """Average the gradients of ``parameters`` over all ranks in one collective (no-op on one process).

    Every rank must call it with the same parameters having gradients (the update schedule is the
    same on every rank, since every rank serves the same number of batches).
    """
    if trainer.world_size <= 1:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    flat = trainer.strategy.reduce(flat, reduce_op="mean")
    torch._foreach_copy_(grads, [v.view_as(g) for v, g in zip(flat.split([g.numel() for g in grads]), grads)])


def _backward_is_plain(trainer: L.Trainer, module: L.LightningModule) -> bool:
    """Whether ``manual_backward`` would only call ``loss.backward()`` and ``clip_gradients`` only
    ``clip_grad_norm_``: one device, float32 or bf16-mixed (no loss scaler), and no callback or module
    hook on the backward. Then :meth:`RLModule._backward_and_step` calls them directly: Lightning's
    dispatch (hook loops, profiler contexts) cost ~120 us per PPO minibatch of ~1.1 ms on Pendulum,
    and the result is the same to the bit (tested). Anything else keeps Lightning's path."""
    from lightning.pytorch.plugins.precision import MixedPrecision, Precision
    from lightning.pytorch.strategies import SingleDeviceStrategy
    from lightning.pytorch.utilities.model_helpers import is_overridden

    plugin = trainer.precision_plugin
    plain = type(plugin) is Precision or (type(plugin) is MixedPrecision and plugin.scaler is None)
    hooks = ("on_before_backward", "on_after_backward")
    listened = any(is_overridden(h, cb, parent=L.Callback) for cb in trainer.callbacks for h in hooks)
    listened = listened or any(is_overridden(h, module, parent=L.LightningModule) for h in hooks + ("backward",))
    return plain and type(trainer.strategy) is SingleDeviceStrategy and not listened


def check_updates_per_batch(trainer: L.Trainer, module: L.LightningModule) -> None:
    """With ``updates_per_batch = k > 1`` (:meth:`RLModule.batches_of_step`) ``global_step`` moves by ``k`` per batch:
    refuse what would then silently change, naming the fix -- callbacks acting every ``n`` steps with ``n`` not a
    multiple of ``k`` (they would fire only at multiples of both, or never), and batch-transfer hooks (the extra
    batches do not pass through them)."""
    from lightning.pytorch.callbacks import ModelCheckpoint, WeightAveraging
    from lightning.pytorch.utilities.model_helpers import is_overridden

    k = int(module.hparams.get("updates_per_batch", 1))
    if k == 1:
        return
    from litzoo.callbacks.ema import EMA

    for cb in trainer.callbacks:  # (NaNGuard's every_n_steps counts batches: not affected)
        if isinstance(cb, WeightAveraging) and not isinstance(cb, EMA):
            raise ValueError(f"{type(cb).__name__} decides once per batch from global_step, which moves by {k} per batch "
                             f"with updates_per_batch={k}: it would see every {k}-th step only. Use litzoo.callbacks.EMA "
                             "(it counts the steps a batch ran) or updates_per_batch=1.")
        n = (cb._every_n_train_steps if isinstance(cb, ModelCheckpoint)
             else cb.every_n_steps if isinstance(cb, EMA) else None)
        if isinstance(n, int) and n > 0 and n % k:
            what = "every_n_train_steps" if isinstance(cb, ModelCheckpoint) else "every_n_steps"
            raise ValueError(
                f"{type(cb).__name__}({what}={n}) with updates_per_batch={k}: global_step moves by {k} per batch, so it "
                f"would act only every {math.lcm(n, k)} steps (or never). Use a multiple of {k} for {what} (or "
                "updates_per_batch=1).")
    for hook in ("on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer"):
        if is_overridden(hook, module, parent=L.LightningModule):
            raise ValueError(f"{type(module).__name__} overrides {hook}, which the extra batches of updates_per_batch={k} "
                             "would skip; use updates_per_batch=1.")


def _listens_to_step(trainer: L.Trainer, module: L.LightningModule) -> bool:
    """Whether a callback or the module listens to ``on_before_optimizer_step``. If not, and the backward is plain
    (:func:`_backward_is_plain`), a manual-optimisation ``LightningOptimizer.step()`` only steps the wrapped
    optimizer between the manual loop's step counting, and :meth:`RLModule._backward_and_step` does just that (and
    zeroes the gradients itself): Lightning's path (precision plugin, closure, hook loops, profiler contexts) and
    ``zero_grad``'s wrappers cost ~0.3 ms of a ~6 ms bf16 TD3 update on CPU; the weights and ``global_step`` are
    the same (tested)."""
    from lightning.pytorch.utilities.model_helpers import is_overridden

    hook = "on_before_optimizer_step"
    return (any(is_overridden(hook, cb, parent=L.Callback) for cb in trainer.callbacks)
            or is_overridden(hook, module, parent=L.LightningModule))


def check_replay_sizes(batch_size: int, buffer_size: int, learning_starts: int) -> None:
    """An off-policy module's replay sizes (after each is checked alone): a minibatch must fit the buffer, and the
    warm-up transitions collected before the first update must too (else the first ones are overwritten unused)."""
    if buffer_size < batch_size:
        raise ValueError(f"buffer_size={buffer_size} is smaller than batch_size={batch_size}: a minibatch cannot be larger "
                         f"than the replay buffer. Use buffer_size >= {batch_size} (or a smaller batch_size).")
    if learning_starts > buffer_size:
        raise ValueError(f"learning_starts={learning_starts} exceeds buffer_size={buffer_size}: the first "
                         f"{learning_starts - buffer_size} warm-up transitions would be overwritten before the first "
                         f"update. Use buffer_size >= {learning_starts} (or a smaller learning_starts).")


class RLModule(LitzooModule):
    """Bookkeeping shared by the environment-driven RL modules (DDPG/TD3, ActorCritic, TRPO, DQN, ...).

    * **Networks from the env.** Subclasses implement ``_build(obs_spec, act_spec)`` (setting ``self.policy``, a
      :class:`litzoo.rl.policy.Policy`); :meth:`setup` calls it with the ``GymDataModule``'s spaces, or checks
      that a module built from ``observation_space=``/``action_space=`` matches them.
    * **Env steps, not optimizer steps** (manual optimisation makes ``global_step`` count optimizer steps):
      ``env_steps`` and ``num_updates`` are counted by the subclass and saved in checkpoints.
    * **Randomness:** one ``torch.Generator`` per rank (``seed``, offset by rank) for exploration and sampling,
      saved in checkpoints so that a resumed run continues the same random stream.
    * **Logging every N env steps:** :meth:`_log_if_due` logs a module's metrics and the episode statistics
      (:meth:`log_rl_metrics`) once ``log_every_n_env_steps`` env steps have passed since the last log.
    * **DDP:** gradients are averaged by the modules with :func:`all_reduce_gradients` (one all-reduce per
      update); DDP's reducer is switched off at every step (Lightning switches it back on after each
      manual-optimisation step).
    * **Export:** the policy folder of :mod:`litzoo.rl.policy` (``litzoo.load_policy(dir).predict(obs)``).

    With the hyperparameter ``save_replay_buffer=True`` the replay buffer ``self._buffer`` is saved too; after
    loading it waits in ``self._pending["replay_buffer"]`` until :meth:`_replay_buffer` makes the buffer when
    collection starts.
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
        (else from the datamodule's, in :meth:`configure_model` or :meth:`setup`, whichever a fit calls first) and
        rejects an unsupported action space right away."""
        from litzoo.rl.policy import as_spec

        self.automatic_optimization = False
        self.env_steps = 0  # env steps taken by this process (all its envs); saved in checkpoints
        self.num_updates = 0
        self.policy = None
        self._generator: torch.Generator | None = None
        self._env = None  # the EnvRunner while collecting
        self._buffer = None  # the off-policy modules' ReplayBuffer (see _replay_buffer)
        self._batch_stream = None  # GymDataModule's stream of this fit's batches (batches_of_step pulls from it)
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
    def _world_size(self) -> int:
        """The number of processes; 1 also outside a Trainer (``generate_batches`` and checkpoints work without one)."""
        return self._trainer.world_size if self._trainer is not None else 1

    @property
    def algorithm(self) -> str:
        """The name written into exported policy folders."""
        return type(self).__name__

    #: the module calls its optimizer's step itself (several steps per batch: PPO, TRPO), past Lightning's fp16
    #: gradient scaler, which would then neither unscale, clip nor skip those steps
    steps_optimizer_itself: bool = False

    def setup(self, stage: str) -> None:
        super().setup(stage)
        self._batch_stream = None  # a fit on other data must not pull from an earlier fit's env stream
        if self.steps_optimizer_itself and getattr(self.trainer.precision_plugin, "scaler", None) is not None:
            raise ValueError(f"{type(self).__name__} steps its optimizer itself, which fp16 loss scaling cannot follow "
                             f"(precision={self.trainer.precision!r}): use --trainer.precision bf16-mixed (same "
                             "speed-up, no scaling needed) or 32-true.")
        self._build_from_trainer()

    def configure_model(self) -> None:
        # Lightning's WeightAveraging (litzoo's EMA) copies the module in its own setup, which runs before ours,
        # and calls this hook first: the networks must exist by then. Not without a Trainer (load_from_checkpoint:
        # the networks came from the saved spaces), once built, nor for a subclass without networks to _build.
        from lightning.pytorch.utilities.model_helpers import is_overridden

        if self._trainer is not None and not self._networks_built() and is_overridden("_build", self, RLModule):
            self._build_from_trainer()
        super().configure_model()

    def _networks_built(self) -> bool:
        return self.policy is not None

    def _build_from_trainer(self) -> None:
        """Build the networks from the datamodule's spaces (once), or check that those of the module match."""
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
        seed = rank_seed(self.seed, self.global_rank)
        world_size = self._world_size
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
        disable_ddp_gradient_sync(self.trainer)
        self._direct_backward = _backward_is_plain(self.trainer, self)
        self._direct_step = self._direct_backward and not _listens_to_step(self.trainer, self)
        check_updates_per_batch(self.trainer, self)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Lightning's DDP forward redirection turns the reducer's sync back on after every manual-optimisation
        # step; our updates all-reduce their own gradients (and may leave networks unused, which DDP rejects).
        disable_ddp_gradient_sync(self.trainer)

    # ----------------------------------------------------------------- logging every N env steps
    def _log_if_due(self, metrics: Callable[[], dict[str, Any]]) -> bool:
        """Log ``metrics()`` with the episode statistics (:meth:`log_rl_metrics`) when ``log_every_n_env_steps``
        env steps have passed since the last log, and say whether it did. ``metrics`` is called only then, so
        the diagnostics cost nothing in between. Call it at the end of ``training_step`` (on every rank)."""
        if self._env is None or self.env_steps - self._logged_at < self.hparams.log_every_n_env_steps:
            return False
        self._logged_at = self.env_steps
        self.log_rl_metrics(metrics())
        return True

    def log_rl_metrics(self, metrics: dict[str, Any]) -> None:
        """Log ``metrics`` and the episode statistics since the last call (averaged over all ranks).

        Keys: ``rollout/ep_return``, ``rollout/ep_length``, ``rollout/episodes``, ``time/env_steps``
        (all ranks), ``time/env_steps_per_s``; ``metrics`` as given. They go to the loggers with the
        env-step count as x-axis, and to ``trainer.callback_metrics`` / the progress bar
        (``ep_return`` and ``env_steps``) through ``self.log``. Every rank must call it (it reduces).
        """
        trainer = self.trainer
        returns, lengths = self._env.pop_episodes()
        stats = torch.tensor([sum(returns), sum(lengths), len(returns)], dtype=torch.float64)
        if trainer.world_size > 1:
            stats = trainer.strategy.reduce(stats.to(self.device), reduce_op="sum").cpu()
        total_steps = int(self.env_steps) * trainer.world_size
        now = time.perf_counter()
        clock = self._clock  # the last call's time and step count
        last_time, last_steps = clock.get("time", now), clock.get("steps", total_steps)
        clock.update(time=now, steps=total_steps)
        out: dict[str, float] = {k: float(v) for k, v in metrics.items()}
        out["time/env_steps"] = float(total_steps)
        if now > last_time:
            out["time/env_steps_per_s"] = (total_steps - last_steps) / (now - last_time)
        if stats[2] > 0:
            out["rollout/ep_return"] = float(stats[0] / stats[2])
            out["rollout/ep_length"] = float(stats[1] / stats[2])
            out["rollout/episodes"] = float(stats[2])
        for key, val in out.items():
            self.log(key, val, logger=False, prog_bar=key in ("rollout/ep_return", "time/env_steps"))
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(out, step=total_steps)
                # CSVLogger writes only when (step + 1) is a multiple of its flush interval, which env-step
                # counts never are: without this a killed run leaves no metrics.csv at all.
                logger.save()

    def _replay_buffer(self, num_envs: int, action_shape: tuple[int, ...],
                       action_dtype: torch.dtype = torch.float32) -> Any:
        """``self._buffer``, a :class:`~litzoo.rl.buffers.ReplayBuffer` of ``buffer_size`` transitions made at the
        first call, holding the checkpoint's replay buffer if one was loaded (``save_replay_buffer=True``)."""
        from litzoo.rl.buffers import ReplayBuffer, spec_storage

        if self._buffer is None:
            obs_shape, obs_dtype = spec_storage(self.hparams.observation_space)
            self._buffer = ReplayBuffer(self.hparams.buffer_size, obs_shape, action_shape, num_envs, device=self.device,
                                        obs_dtype=obs_dtype, action_dtype=action_dtype)
            state = self._pending.pop("replay_buffer", None)
            if state is not None:
                self._buffer.load_state_dict(state)
        return self._buffer

    def _backward_and_step(self, optimizer: Any, loss: torch.Tensor, params: Any = None, raw: bool = False) -> None:
        """One manual-optimisation update: zero the gradients, backward, average them across ranks
        (:func:`all_reduce_gradients`; ``params`` default: the trainable ones), clip their norm to the
        ``max_grad_norm`` hyperparameter when it is set, step (with denormals flushed to zero when the
        ``flush_denormals`` hyperparameter is true, :func:`~litzoo.rl.utils.flush_denormals`). ``raw``: step the
        wrapped optimizer, which Lightning does not count as a trainer step (several updates per batch)."""
        direct = getattr(self, "_direct_backward", False) and self._fabric is None  # (a Trainer decided it)
        direct_step = direct and getattr(self, "_direct_step", False)
        if direct_step:  # zero_grad(set_to_none=True) without its wrappers
            for group in optimizer.param_groups:
                for p in group["params"]:
                    p.grad = None
        else:
            optimizer.zero_grad(set_to_none=True)
        if direct:  # what manual_backward amounts to here (see _backward_is_plain), minus ~70 us of dispatch
            loss.backward()
        else:
            self.manual_backward(loss)
        all_reduce_gradients(self.trainer, self._parameters_list() if params is None else params)
        max_grad_norm = self.hparams.get("max_grad_norm")
        if max_grad_norm is not None:
            if direct:  # the precision plugin's clip_grad_by_norm: the same call on the optimizer's parameters
                torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], max_grad_norm)
            else:
                self.clip_gradients(optimizer, gradient_clip_val=max_grad_norm, gradient_clip_algorithm="norm")
        # What LightningOptimizer.step() amounts to here (see _listens_to_step): the wrapped step between the manual
        # loop's step counting (global_step). ``raw``: not counted at all. The wrapped step itself is torch's minus
        # its per-step Python (fused_adamw_step: the same to the bit, ~20-30 us less per update for a fused AdamW).
        counted = not raw and direct_step
        step = partial(fused_adamw_step, optimizer.optimizer) if raw or counted else optimizer.step
        if counted:
            optimizer._on_before_step()
        if self.hparams.get("flush_denormals", False):
            with flush_denormals():
                step()
        else:
            step()
        if counted:
            optimizer._on_after_step()

    def batches_of_step(self, batch: Any) -> Iterator[Any]:
        """``batch``, then (hyperparameter ``updates_per_batch`` > 1) the next batches of the env stream, up to
        ``updates_per_batch`` in all and never past ``trainer.max_steps``: one Lightning batch runs several env
        steps and updates in the order one batch each would (the stream acts with the latest weights, outside
        autocast as Lightning's fetch does), so training is the same to the bit (tested) without Lightning's
        per-batch loop for each update (~0.4 ms of a ~6 ms bf16 TD3 update on CPU). ``trainer.should_stop``
        and every per-batch hook or counter (callbacks, ``batches_per_epoch``, ``val_check_interval``) then
        act once per ``updates_per_batch`` updates."""
        trainer = self.trainer
        k = int(self.hparams.get("updates_per_batch", 1))
        extra = k - 1 - trainer.global_step % k  # each batch ends on a multiple of k, also after a resume elsewhere
        yield batch
        for _ in range(extra):
            if 0 <= trainer.max_steps <= trainer.global_step or trainer.should_stop:
                return
            if self._batch_stream is None:
                raise ValueError(f"updates_per_batch={k} pulls more batches from the env "
                                 "stream within a step, and this fit has none: train with a GymDataModule (or leave "
                                 "updates_per_batch=1).")
            with torch.autocast(self.device.type, enabled=False):
                nxt = next(self._batch_stream)
            yield nxt

    def _learning_started(self, env_steps: int) -> bool:
        """Updates start after ``learning_starts`` env steps (this rank's) *and* once the replay buffer holds as many
        transitions (at least one). The two agree in a fresh run; a run resumed without its buffer
        (``save_replay_buffer=False``: the step count comes back, the buffer does not) refills ``learning_starts``
        transitions first instead of training on the first few."""
        starts = self.hparams.learning_starts
        return env_steps >= starts and len(self._buffer) >= max(starts, 1)

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
        world_size = self._world_size
        # Not after an exception: Lightning then saves on the failing rank alone, and a collective would hang.
        if world_size > 1 and dist.is_available() and dist.is_initialized() and not self.trainer.interrupted:
            state["ranks"] = self._gather_rank_states(local)
        else:
            state.update(local)
            if "generator" in local:
                state["generator_world_size"] = world_size
        checkpoint["litzoo_rl"] = state

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("litzoo_rl", {})
        self.env_steps = int(state.get("env_steps", 0))
        self.num_updates = int(state.get("num_updates", 0))
        self._logged_at = self.env_steps
        self._pending = {k: state[k] for k in ("generator", "generator_device", "generator_world_size", "replay_buffer",
                                               "ranks") if k in state}

    def export(self, out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
        """The policy folder of :mod:`litzoo.rl.policy` (``litzoo.load_policy(out_dir).predict(obs)``)."""
        if self.policy is None:
            raise ValueError(f"{type(self).__name__} has no networks yet: train it (or pass the spaces) before export.")
        metadata = {"algorithm": self.algorithm, "env_steps": int(self.env_steps),
                    "hyperparameters": {k: v for k, v in self.hparams.items()}, **card_metadata(self)}
        return self.policy.save(prepare_export_dir(out_dir, overwrite), metadata)


class OnPolicyModule(RLModule):
    """What the on-policy modules share (ActorCritic, TRPO, PPO): a stochastic policy and one rollout per batch.

    * ``_build_policy`` makes ``self.policy`` with :func:`litzoo.rl.policy.make_stochastic_policy` from the
      hyperparameters ``hidden_sizes``, ``activation``, ``orthogonal_init``, ``log_std_init``,
      ``normalize_observations`` (categorical for ``Discrete`` actions, diagonal Gaussian for ``Box``).
    * :meth:`generate_batches` collects ``n_steps`` steps of every env with the current policy
      (:func:`litzoo.rl.collect.collect_rollout`), computes returns and GAE advantages with ``gamma`` and
      ``gae_lambda``, and yields the whole rollout. Subclasses give the bootstrap value ``_value(obs)`` and may
      change the stored rewards or step values through :meth:`_rollout_hooks`.
    * ``normalize_rewards``: :meth:`_make_return_normalizer` (in ``_build``) and :meth:`_reward_scaling` (the
      rollout's ``reward_transform``) scale rewards by the running std of the discounted return.
    """

    def _build_policy(self, obs_spec: dict[str, Any], act_spec: dict[str, Any]) -> int:
        """Set ``self.policy``, ``self.discrete``, ``self.act_dim``; return the size of the encoded features."""
        from litzoo.rl.policy import make_stochastic_policy

        h = self.hparams
        self.policy = make_stochastic_policy(obs_spec, act_spec, h.hidden_sizes, h.activation, h.orthogonal_init,
                                             h.log_std_init, h.normalize_observations)
        self.discrete = self.policy.kind == "categorical"
        self.act_dim = self.policy.actor.act_dim
        return self.policy.encoder.features_dim

    def _sample_actions(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.policy.sample_for_rollout(obs, self._generator)

    def _value(self, obs: torch.Tensor) -> torch.Tensor:
        """The bootstrap value of observations (at the rollout's end and where an episode was truncated)."""
        raise NotImplementedError

    def _make_return_normalizer(self) -> Any:
        """A :class:`~litzoo.rl.normalization.ReturnNormalizer` when the ``normalize_rewards`` hyperparameter is set
        (call in ``_build``: its statistics are then part of the state dict and the checkpoint), else ``None``."""
        from litzoo.rl.normalization import ReturnNormalizer

        return ReturnNormalizer(1, self.hparams.gamma) if self.hparams.get("normalize_rewards") else None

    def _reward_scaling(self, num_envs: int) -> Callable | None:
        """The ``reward_transform`` of :func:`~litzoo.rl.collect.collect_rollout` for ``self.return_normalizer``
        (rewards divided by the running std of the discounted return), or ``None`` without one."""
        from litzoo.rl.normalization import ReturnNormalizer

        if getattr(self, "return_normalizer", None) is None:
            return None
        if self.return_normalizer.num_envs != num_envs:  # the running returns are per env; the statistics carry over
            fresh = ReturnNormalizer(num_envs, self.hparams.gamma).to(self.device)
            fresh.rms.load_state_dict(self.return_normalizer.rms.state_dict())
            self.return_normalizer = fresh

        def scale(rewards: torch.Tensor, dones: torch.Tensor) -> torch.Tensor:
            self.return_normalizer.update(rewards, dones)
            return self.return_normalizer(rewards)

        return scale

    def _rollout_hooks(self, num_envs: int) -> tuple[Callable | None, Callable | None]:
        """``(reward_transform, step_values)`` for :func:`~litzoo.rl.collect.collect_rollout`; none by default."""
        return None, None

    def generate_batches(self, env: Any) -> Iterator[Any]:
        """Collect ``n_steps`` steps of every env with the current policy; yield the whole rollout."""
        from litzoo.rl.buffers import RolloutBuffer, spec_storage
        from litzoo.rl.collect import collect_rollout

        h = self.hparams
        self._env = env
        self._init_generator()
        obs_shape, obs_dtype = spec_storage(h.observation_space)
        act_shape, act_dtype = ((), torch.long) if self.discrete else ((self.act_dim,), torch.float32)
        buffer = RolloutBuffer(h.n_steps, env.num_envs, obs_shape, act_shape, device=self.device, obs_dtype=obs_dtype,
                               action_dtype=act_dtype)
        reward_transform, step_values = self._rollout_hooks(env.num_envs)
        while True:
            last_values = collect_rollout(env, buffer, self._sample_actions, self._value, reward_transform, step_values)
            buffer.compute_returns_and_advantages(last_values, h.gamma, h.gae_lambda)
            self.env_steps += h.n_steps * env.num_envs
            # Views of the buffer's storage: the batch is used before the next rollout overwrites it.
            yield next(buffer.get())
