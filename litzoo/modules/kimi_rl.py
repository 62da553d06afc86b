r"""Kimi k1.5 reinforcement learning of a causal LM on problems with verifiable answers.

Kimi Team, "Kimi k1.5: Scaling Reinforcement Learning with LLMs", arXiv:2501.12599, Sec. 2.3.
For each prompt ``x`` sample ``k`` responses ``y_j ~ pi_theta`` (``generate`` with KV cache at
temperature ``T``), score them with the task's verifier ``r(x, y_j, y*) in {0, 1}`` and minimise

    L(theta) = (1/k) sum_j [ -(r_j - r_bar) log pi_theta(y_j|x) + (tau/2) (log pi_theta(y_j|x) - log pi_ref(y_j|x))^2 ],

``r_bar`` the mean reward of the ``k`` samples (the baseline -- no value network, no MCTS, no
process reward model) and ``pi_ref`` the policy at the start of the current iteration: the
paper's online mirror descent, an iteration being ``iteration_steps`` optimizer steps after
which ``pi_ref <- pi_theta`` and (``reset_optimizer``, as in the paper) the AdamW moments are
cleared. The loss pieces are in :mod:`litzoo.reasoning.losses`.

* Length penalty (Sec. 2.3.3): ``r_j += w * len_reward_j`` with
  ``lambda = 0.5 - (len - min_len) / (max_len - min_len)``, ``+lambda`` if correct,
  ``+min(0, lambda)`` if wrong, 0 if all lengths are equal; off for the first
  ``length_penalty_warmup_steps`` steps (it slows early learning otherwise, as the paper notes).
* Overlong punishment (DAPO, Yu et al. 2025, eq. 13), an option beside it: with ``overlong_buffer``
  ``= L_cache`` set, ``r_j += overlong_penalty * R_length(y_j)``, ``R_length = 0`` up to
  ``L_max - L_cache`` tokens (``L_max = max_new_tokens``), then falling linearly to -1 at ``L_max``
  (:func:`~litzoo.reasoning.losses.soft_overlong_punishment`); before the baseline ``r_bar``.
* Uniform groups skipped (``skip_uniform_groups``, an option): a group whose ``k`` rewards are all equal has
  ``r_j - r_bar = 0``, no policy gradient, yet costs a forward and backward pass (and one of ``pi_ref``) like
  any other. Skipping them gives the same policy-gradient step (the loss is still divided by all the step's
  groups) for the informative groups' compute; their ``tau`` term is dropped with them. DAPO's dynamic sampling
  filters the same groups (it then samples more to refill the batch; this does not).
* Sampling strategies (Sec. 2.3.4): curriculum and prioritised sampling live in
  :class:`~litzoo.datamodules.ReasoningDataModule` (``mode="rl"``); this module reports every
  problem's verifier results back to it.
* Partial rollouts (Sec. 2.6.2): with ``segment_tokens`` set, each step generates at most that
  many tokens per response; unfinished responses wait in a buffer (saved in checkpoints) and are
  continued in later steps; a group is trained on when its ``k`` responses are done, each with
  gradient on its newest segment only. Ranks then finish different numbers of groups in a step: each
  rank's loss is scaled so that the averaged gradient is the mean over all ranks' finished groups.

Manual optimisation, because one training step is "roll out, score, one policy update" with
the iteration bookkeeping (reference refresh, optimizer reset, steps without finished groups)
between them -- an automatic-optimisation ``training_step`` would hide the generation in the
loss closure and could not skip a step. Each DDP rank generates its own rollouts (its own seed
and problems, the same count); gradients are averaged by DDP as usual.

Practical notes. Sampling at ``temperature < 1`` (0.5 in the configs) and ``lr ~ 1e-4`` suit
small models: at ``T = 1`` most samples of a half-trained model are wrong and the gradient is
mostly noise. ``pi_ref`` is a full frozen copy of the policy (skipped when ``tau = 0``; with LoRA
the base with the adapters off, no copy). For models that do not fit one device,
``ModelParallelStrategy`` (FSDP2) shards the policy and ``pi_ref`` alike (``configure_model``);
rollouts and validation answers run with the policy's parameters gathered
(:func:`litzoo.sharding.gathered`: each rank stops generating at its own length).
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Optional

import torch
import torch.distributed as dist

from litzoo.bases.causal_lm import CausalLMModule
from litzoo.checks import check_non_negative, check_non_negative_int, check_positive, check_positive_int
from litzoo.reasoning.generation import SAMPLERS, generate, token_log_probs
from litzoo.reasoning.losses import kimi_policy_loss, length_penalty, masked_sum, soft_overlong_punishment
from litzoo.reasoning.meters import level_key
from litzoo.reasoning.partial_rollout import PartialResponse, PartialRolloutBuffer, RolloutGroup, pack_groups
from litzoo.reasoning.rewards import score
from litzoo.seeding import step_seed
from litzoo.sharding import full_state_dict, gathered, is_sharded, load_full_state_dict


class KimiRL(CausalLMModule):
    """k1.5 policy optimisation (module docstring) for any Hugging Face causal LM.

    Args:
        model_config, pretrained_path, extra_chars: the policy, as in :class:`~litzoo.modules.CoTSFT`;
            continue an SFT warm-up with ``pretrained_path=<its export folder>``.
        k: responses sampled per prompt (>= 2: the mean-reward baseline needs company).
        temperature: sampling temperature (also used in ``log pi``: the sampled distribution).
        max_new_tokens: longest response (tokens, incl. ``eos``); a longer one is cut and scored as is.
        segment_tokens: per-iteration token budget of partial rollouts (``None``: off).
        tau: weight of the squared log-ratio to ``pi_ref``.
        iteration_steps: optimizer steps per mirror-descent iteration (``pi_ref`` refresh period).
        reset_optimizer: clear the AdamW state at each iteration start (the paper's choice). Off by
            default: Adam's first step after a reset moves every weight by ``lr`` in the sign of
            its (noisy) gradient, which on small models costs more than the stale moments do.
        length_penalty_weight: ``w`` above (0 = off; 1 = the paper's).
        length_penalty_warmup_steps: optimizer steps before the length penalty switches on.
        overlong_buffer: DAPO's ``L_cache`` (tokens below ``max_new_tokens`` where the overlong punishment ramps
            from 0 to -1; in ``[1, max_new_tokens]``); ``None`` (default): off.
        overlong_penalty: weight of the overlong punishment (1 = DAPO's).
        skip_uniform_groups: leave groups whose ``k`` rewards are all equal out of the loss (module docstring).
        lr, weight_decay, adam_betas, warmup_steps, total_steps, min_lr_ratio: AdamW + schedule
            (``min_lr_ratio=1``: constant after warm-up).
        max_grad_norm: gradient clipping (0 = off).
        eval_k, eval_temperature: pass@k at validation (``eval_k=0``: greedy pass@1 only).
        seed: rollout seeds derive from it, the rank and the rollout count (resumes repeat exactly). ``None`` (default): the global
            seed (``seed_everything`` / ``--seed_everything``, else 0), saved once taken.
        lora_rank, lora_alpha, lora_dropout, lora_target_modules: LoRA adapters (peft) on the policy, only they
            train (``lora_rank=0``: off, the whole policy trains; ``lora_alpha=None``: the rank; targets default
            :data:`litzoo.nets.lora.CAUSAL_LM_LORA_TARGETS`, the attention and MLP projections). ``export`` then
            writes a peft adapter folder (``export(..., merge_lora=True)``: the merged model).
            With LoRA ``pi_ref`` is the frozen base: the policy with its adapters switched off (peft's
            ``disable_adapter``, as TRL does), no second model copy and no refresh per iteration.
        gradient_checkpointing, fsdp_blocks: recompute block activations in backward (same gradients, less memory);
            the block classes FSDP shards one by one (default: the library's; see ``LitzooModule.configure_model``).
        sampler: how rollouts are drawn: ``"litzoo"`` (default; :func:`litzoo.reasoning.generation.sample`: each
            prompt prefilled once for its ``k`` samples, finished rows leave the batch; 2.0-5.3x the tokens per
            CPU-second on the benchmark tasks, BENCHMARKS.md) or ``"transformers"`` (``model.generate``). Same
            distribution, other random stream: a seed gives different samples under the two.
    """

    def __init__(
        self,
        model_config: Optional[dict[str, Any]] = None,
        pretrained_path: Optional[str] = None,
        extra_chars: str = "",
        k: int = 8,
        temperature: float = 1.0,
        max_new_tokens: int = 128,
        segment_tokens: Optional[int] = None,
        tau: float = 0.1,
        iteration_steps: int = 8,
        reset_optimizer: bool = False,
        length_penalty_weight: float = 0.0,
        length_penalty_warmup_steps: int = 0,
        overlong_buffer: Optional[int] = None,
        overlong_penalty: float = 1.0,
        skip_uniform_groups: bool = False,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        adam_betas: tuple[float, float] = (0.9, 0.99),
        warmup_steps: int = 0,
        total_steps: int = 0,
        min_lr_ratio: float = 1.0,
        max_grad_norm: float = 1.0,
        eval_k: int = 8,
        eval_temperature: float = 1.0,
        seed: Optional[int] = None,
        lora_rank: int = 0,
        lora_alpha: Optional[float] = None,
        lora_dropout: float = 0.0,
        lora_target_modules: Optional[list[str]] = None,
        gradient_checkpointing: bool = False,
        fsdp_blocks: Optional[list[str]] = None,
        sampler: str = "litzoo",
    ) -> None:
        super().__init__()
        if k < 2:
            raise ValueError(f"k={k}: need >= 2 samples per prompt (with one, r - r_bar is always 0).")
        for name, value in [("temperature", temperature), ("lr", lr), ("eval_temperature", eval_temperature)]:
            check_positive(name, value)
        check_positive_int("max_new_tokens", max_new_tokens)
        check_positive_int("iteration_steps", iteration_steps)
        if segment_tokens is not None and not 1 <= segment_tokens <= max_new_tokens:
            raise ValueError(
                f"segment_tokens={segment_tokens} must be in [1, max_new_tokens={max_new_tokens}] or None (no partial rollouts)."
            )
        if overlong_buffer is not None and not 1 <= overlong_buffer <= max_new_tokens:
            raise ValueError(f"overlong_buffer={overlong_buffer} must be in [1, max_new_tokens={max_new_tokens}] "
                             "(DAPO's L_cache: the tokens below the budget where the punishment ramps) or None (off).")
        for name, value in [("tau", tau), ("length_penalty_weight", length_penalty_weight),
                            ("overlong_penalty", overlong_penalty), ("max_grad_norm", max_grad_norm)]:
            check_non_negative(name, value)
        for name, value in [("length_penalty_warmup_steps", length_penalty_warmup_steps), ("eval_k", eval_k),
                            ("warmup_steps", warmup_steps), ("total_steps", total_steps)]:
            check_non_negative_int(name, value)
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler={sampler!r} must be one of {SAMPLERS} (litzoo's decoding loop or "
                             "transformers' generate).")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.init_policy(("pass@1", f"pass@{eval_k}", "response_length") if eval_k else ("pass@1", "response_length"))
        self.buffer = PartialRolloutBuffer()
        self._ref: Optional[torch.nn.Module] = None  # pi_ref: a frozen copy, deliberately not a submodule
        self._ref_step = -1  # global step at which pi_ref was last refreshed
        self._rollouts = 0  # generate calls so far: part of the rollout seed
        self._pending_ref: dict[str, torch.Tensor] | None = None  # a checkpoint's pi_ref, loaded when pi_ref is made
        self.last_groups: list[RolloutGroup] = []  # the last step's finished groups (for inspection)
        self.last_seed: Optional[int] = None  # the seed of the last rollout (differs per rank)

    @property
    def answer_max_new_tokens(self) -> int:
        return self.hparams.max_new_tokens

    # ----------------------------------------------------------------- reference policy
    @property
    def ref_policy(self) -> torch.nn.Module:
        if self._ref is None:
            ref = copy.deepcopy(self.policy).eval().requires_grad_(False)
            if self._pending_ref is not None:  # restored from a checkpoint, into a copy of the restored architecture
                ref.load_state_dict(self._pending_ref)
                self._pending_ref = None
            object.__setattr__(self, "_ref", ref)  # keep it out of state_dict, DDP and the optimizer
        return self._ref

    def extra_sharded_modules(self) -> list[torch.nn.Module]:
        # pi_ref copied whole, then sharded like the policy (none with LoRA: the base is pi_ref)
        return [self.ref_policy] if self.hparams.tau > 0 and not self.lora_rank else []

    def rebuild_policy(self, spec: dict[str, Any]) -> None:
        super().rebuild_policy(spec)
        object.__setattr__(self, "_ref", None)  # a copy of the old policy: made again from the new one

    def _apply(self, fn, recurse: bool = True):
        # pi_ref is no submodule, so .to()/.cpu()/.double() would leave it behind (Lightning's move back to the
        # CPU after fit left it holding GPU memory): apply every device/dtype move to it too.
        super()._apply(fn, recurse)
        if getattr(self, "_ref", None) is not None:
            self._ref._apply(fn, recurse)
        return self

    @contextlib.contextmanager
    def reference(self):
        """``pi_ref`` to compute log-probs with: the frozen copy, or with LoRA the policy with its adapters off."""
        if self.lora_rank:
            with self.policy.disable_adapter():
                yield self.policy
        else:
            yield self.ref_policy

    def on_fit_start(self) -> None:
        if not self.lora_rank:
            self.ref_policy.to(self.device)

    def start_iteration(self) -> None:
        """``pi_ref <- pi_theta`` (not with LoRA: pi_ref is the base); optionally clear the optimizer moments
        (paper, Sec. 2.3)."""
        if not self.lora_rank:
            self.ref_policy.load_state_dict(self.policy.state_dict())
        self._ref_step = self.global_step
        if self.hparams.reset_optimizer:
            self.optimizers().optimizer.state.clear()

    # ----------------------------------------------------------------- training
    def _rollout_seed(self) -> int:
        seed = step_seed(self.seed, self._rollouts, self.global_rank)
        self._rollouts += 1
        self.last_seed = seed
        return seed

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        h = self.hparams
        if "problems" not in batch or "labels" in batch:
            raise ValueError("KimiRL needs prompt batches; use ReasoningDataModule(mode='rl').")
        opt, sch = self.optimizers(), self.lr_schedulers()
        if self.global_step % h.iteration_steps == 0 and self._ref_step != self.global_step:
            self.start_iteration()

        # 1. Rollouts: k fresh responses per prompt, plus the continuation of unfinished ones.
        problems = batch["problems"]
        self.buffer.add(
            RolloutGroup(p, int(i), [PartialResponse(list(ids)) for _ in range(h.k)])
            for p, i, ids in zip(problems.problems, batch["problem_ids"].tolist(), problems.prompt_ids)
        )
        with gathered(self.policy):  # sharded: each rank stops at its own length (see litzoo.sharding.gathered)
            rollout = self.buffer.step(
                self.policy, self.tokenizer, segment_tokens=h.segment_tokens or h.max_new_tokens,
                max_response_tokens=h.max_new_tokens, temperature=h.temperature, seed=self._rollout_seed(),
                sampler=h.sampler,
            )
        groups = self.last_groups = self.buffer.pop_finished()

        # 2. Rewards of the finished groups: verifier (+ length reward after its warm-up, + overlong punishment).
        flat_problems = [g.problem for g in groups for _ in g.samples]
        correct = score(flat_problems, [s.text for g in groups for s in g.samples]).view(len(groups), h.k).to(self.device)
        packed = pack_groups(groups, self.tokenizer.pad_token_id, self.device)
        lengths = packed["lengths"].view(len(groups), h.k)
        rewards = correct.clone()
        if h.length_penalty_weight > 0 and self.global_step >= h.length_penalty_warmup_steps and groups:
            rewards = rewards + h.length_penalty_weight * length_penalty(lengths, correct)
        if h.overlong_buffer is not None:
            overlong = soft_overlong_punishment(lengths, h.max_new_tokens, h.overlong_buffer)
            rewards = rewards + h.overlong_penalty * overlong

        # 3. The k1.5 loss on the newest segment of every finished response (skip_uniform_groups: of the groups
        #    whose rewards differ, still divided by all groups: the same policy gradient), scaled so that the
        #    ranks' averaged gradients are the mean over all ranks' finished groups (partial rollouts finish
        #    unevenly). Sharded (FSDP) ranks must all join the forward/backward collectives whenever any rank
        #    trains: a rank whose groups are all uniform runs one of them, a sharded rank with no finished group
        #    one of its pending groups, weighted 0.
        uniform = (rewards == rewards[:, :1]).all(-1)  # (P,) r_j - r_bar = 0 for every j: no policy gradient
        informative = (~uniform).tolist() if h.skip_uniform_groups else [True] * len(groups)
        trained = [i for i, keep in enumerate(informative) if keep] or list(range(min(1, len(groups))))
        total, world = self._finished_groups_total(len(groups))  # total 0: no rank has a finished group, no step
        loss, parts, share = torch.zeros((), device=self.device), {}, 1.0
        if total and not trained and not is_sharded(self.policy):  # DDP: zero gradients need no forward
            loss = sum(p.sum() for p in self.policy.parameters() if p.requires_grad) * 0.0
        elif total:
            rows = [groups[i] for i in trained] if trained else self.buffer.groups[:1]
            if len(rows) != len(groups):  # some skipped, or a pending group: pack what the forward sees
                packed = pack_groups(rows, self.tokenizer.pad_token_id, self.device)
            start = packed["prompt_width"]
            log_probs = masked_sum(
                token_log_probs(self.policy, packed["input_ids"], packed["attention_mask"], start, h.temperature),
                packed["grad_mask"],
            ).view(len(rows), h.k)
            if h.tau > 0:
                with torch.no_grad(), self.reference() as ref:
                    ref_log_probs = masked_sum(
                        token_log_probs(ref, packed["input_ids"], packed["attention_mask"], start, h.temperature),
                        packed["grad_mask"],
                    ).view(len(rows), h.k)
            else:
                ref_log_probs = log_probs.detach()
            row_rewards = rewards[trained] if trained else rewards.new_zeros(1, h.k)
            loss, parts = kimi_policy_loss(log_probs, ref_log_probs, row_rewards, h.tau)
            weight = sum(informative) / max(len(groups), 1)  # skipped groups' pg is 0: the same step as without
            share = len(groups) * world / total  # this rank's part of the mean over all ranks' groups (1: even)
            loss, parts["pg"] = loss * weight, parts["pg"] * weight  # (logged as this rank's own)
            parts["uniform_groups"] = uniform.float().mean()

        # 4. One optimizer step, unless no rank has a finished group.
        self._report_results(groups, correct)
        if total:
            opt.zero_grad(set_to_none=True)
            self.manual_backward(loss * share)
            if h.max_grad_norm > 0:
                self.clip_gradients(opt, gradient_clip_val=h.max_grad_norm, gradient_clip_algorithm="norm")
            opt.step()
            sch.step()

        # 5. Logs: rank-local values, written by Lightning every trainer.log_every_n_steps steps.
        if groups:
            self._log_train(loss, parts, correct, rewards, lengths, groups, rollout)

    def _finished_groups_total(self, n: int) -> tuple[int, int]:
        """All ranks' finished groups this step (``n`` here) and the number of ranks."""
        if self.trainer.world_size == 1 or not dist.is_available() or not dist.is_initialized():
            return n, 1
        count = torch.tensor([float(n)], device=self.device)
        dist.all_reduce(count)
        return int(count.item()), self.trainer.world_size

    def _report_results(self, groups: list[RolloutGroup], correct: torch.Tensor) -> None:
        """Verifier results of all ranks -> the datamodule's prioritised sampler (same on every rank)."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if not hasattr(datamodule, "record_results"):
            return
        ids = torch.tensor([g.problem_id for g in groups for _ in g.samples], dtype=torch.long, device=self.device)
        success = correct.flatten().to(torch.float32)
        if self.trainer.world_size > 1:
            width = torch.tensor([float(ids.numel())], device=self.device)
            dist.all_reduce(width, op=dist.ReduceOp.MAX)
            pad = int(width.item()) - ids.numel()
            ids = torch.cat([ids, ids.new_full((pad,), -1)])
            success = torch.cat([success, success.new_zeros(pad)])
            ids, success = self.all_gather(ids).flatten(), self.all_gather(success).flatten()
            keep = ids >= 0
            ids, success = ids[keep], success[keep]
        datamodule.record_results(ids.cpu(), success.cpu())

    def _log_train(self, loss, parts, correct, rewards, lengths, groups, rollout) -> None:
        metrics = {
            "train/loss": loss.detach(),
            "train/reward": correct.mean(),
            "train/total_reward": rewards.mean(),
            "train/pass@k": (correct.max(-1).values > 0).float().mean(),
            "train/response_length": lengths.float().mean(),
            "train/pg": parts["pg"],
            "train/log_ratio_sq": parts["log_ratio_sq"],  # skip_uniform_groups: over the groups whose forward ran
            "train/uniform_groups": parts["uniform_groups"],
            "train/pending_groups": float(len(self.buffer)),
        }
        if rollout is not None and rollout.seconds > 0:
            metrics["train/gen_tokens_per_s"] = rollout.num_tokens / rollout.seconds
        if rollout is not None and rollout.cpu_seconds > 0:
            metrics["train/gen_tokens_per_cpu_s"] = rollout.num_tokens / rollout.cpu_seconds
        n = len(groups)
        self.log_dict(metrics, prog_bar=False, on_step=True, on_epoch=False, batch_size=n)
        self.log("reward", correct.mean(), prog_bar=True, on_step=True, on_epoch=False, logger=False, batch_size=n)
        per_level: dict[str, list[float]] = {}
        for g, row in zip(groups, correct):
            per_level.setdefault(level_key(g.problem), []).extend(row.tolist())
        for key, values in per_level.items():
            self.log(f"train/reward/{key}", sum(values) / len(values), on_step=True, on_epoch=False, batch_size=n)

    # ----------------------------------------------------------------- validation
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        h = self.hparams
        problems = batch["problems"]
        values = self.greedy_scores(problems)
        if h.eval_k > 0:
            with gathered(self.policy):
                sampled = generate(
                    self.policy, self.tokenizer, problems.prompt_ids, num_samples=h.eval_k,
                    temperature=h.eval_temperature, max_new_tokens=h.max_new_tokens,
                    seed=(self.seed + 7919 * batch_idx) * 1024 + self.global_rank, sampler=h.sampler,
                )
            flat = [p for p in problems.problems for _ in range(h.eval_k)]
            values[f"pass@{h.eval_k}"] = score(flat, sampled.texts).view(len(problems), h.eval_k).max(-1).values
        self.meter.add([level_key(p) for p in problems.problems], **values)

    # ----------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["kimi_rl"] = {
            "ref_state": None if self.lora_rank else  # with LoRA pi_ref is the base, held in the state dict
            full_state_dict(self.ref_policy),  # sharded: gathered (a collective; rank 0 writes it)
            "ref_step": self._ref_step,
            "rollouts": self._rollouts,
            "buffer": self.buffer.state_dict(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("kimi_rl")
        if state is None:
            return
        self._rollouts = int(state["rollouts"])
        self.buffer.load_state_dict(state["buffer"])
        if self._ref is not None and is_sharded(self._ref):  # sharded already (configure_model): load into the shards
            load_full_state_dict(self._ref, state["ref_state"])
        else:  # pi_ref is made from the policy once its weights are loaded (after this hook), then gets the saved ones
            object.__setattr__(self, "_ref", None)
            self._pending_ref = state["ref_state"]
        self._ref_step = int(state["ref_step"])
