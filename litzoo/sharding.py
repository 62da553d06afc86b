"""Sharded training helpers (FSDP2 ``fully_shard``), free of Lightning: :meth:`litzoo.base.LitzooModule.configure_model`
applies them when the Trainer's strategy gives a device mesh (``ModelParallelStrategy``), and the export reads the
distributed-checkpoint folder such a run saves.

FSDP2 keeps each rank's 1/N slice of every parameter (a ``DTensor``) and all-gathers a *block* (a transformer or
decoder layer, a UNet block) just before it runs, freeing it after: the block classes are the unit of memory. The
default blocks are what the library itself declares indivisible (``model._no_split_modules``: transformers' decoder
layers, SD3's ``JointTransformerBlock``, the autoencoder's ``ResnetBlock2D``), else the network's ``ModuleList``
entries' classes (a diffusers UNet's down/up blocks). Parameters outside blocks form one more unit per root.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import torch
from torch import nn

#: the name of the file that marks a distributed-checkpoint (DCP) folder
DCP_METADATA = ".metadata"


def block_classes(model: nn.Module, names: Optional[Sequence[str]] = None) -> tuple[type, ...]:
    """The classes of ``model``'s submodules sharded as one unit each: ``names`` (class names) when given, else
    ``model._no_split_modules``, else the classes of the entries of its own ``ModuleList`` s (a UNet's down and up
    blocks)."""
    present = {type(m).__name__: type(m) for m in model.modules() if m is not model}
    if names is not None:
        missing = [n for n in names if n not in present]
        if missing:
            raise ValueError(f"fsdp_blocks={list(names)}: no submodule of {type(model).__name__} is a {missing}; "
                             f"its classes are {sorted(present)}.")
        return tuple(present[n] for n in names)
    declared = getattr(model, "_no_split_modules", None) or []
    if declared:
        return tuple(present[n] for n in declared if n in present)
    return tuple({type(c) for m in model.children() if isinstance(m, nn.ModuleList) for c in m})


def _is_library_model(module: nn.Module) -> bool:
    return hasattr(type(module), "_no_split_modules")  # transformers' PreTrainedModel, diffusers' ModelMixin


def default_roots(module: nn.Module) -> list[nn.Module]:
    """What a LightningModule shards: its children that hold trainable parameters (a frozen child, e.g. the latent
    VAE of a latent generator, stays whole on every rank), each preceded by the library models nested in it (a text
    encoder inside the conditioning: called through its own ``forward``, so it must gather itself)."""
    roots: list[nn.Module] = []
    for child in module.children():
        if not any(p.requires_grad for p in child.parameters()):
            continue
        if not _is_library_model(child):
            nested = [m for m in child.modules() if m is not child and _is_library_model(m)]
            roots += [m for m in nested if not any(m is not o and m in o.modules() for o in nested)]
        roots.append(child)
    return roots


def data_parallel_mesh(mesh: Any) -> Any:
    """The data-parallel dimension of a Lightning ``ModelParallelStrategy`` mesh; tensor parallelism is refused."""
    names = getattr(mesh, "mesh_dim_names", None) or ()
    if "tensor_parallel" in names and mesh["tensor_parallel"].size() > 1:
        raise ValueError("litzoo modules shard with FSDP2 only (data parallel): use ModelParallelStrategy("
                         "data_parallel_size=<devices>, tensor_parallel_size=1).")
    return mesh["data_parallel"] if "data_parallel" in names else mesh


def is_sharded(module: nn.Module) -> bool:
    """Whether FSDP (FSDP2 ``fully_shard`` or FSDP1) manages any part of ``module``."""
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel

    return any(isinstance(m, (FSDPModule, FullyShardedDataParallel)) for m in module.modules())


def mixed_precision_policy(precision: Any) -> Optional[Any]:
    """FSDP2's bf16 policy for a Trainer ``precision`` of ``"bf16-mixed"``: blocks gather and compute in bf16, the
    sharded fp32 weights stay the optimizer's, and gradients are reduced in fp32 (a sum of N bf16 gradients loses
    bits). ``None`` (full precision, or ``"bf16-true"``: the weights themselves are bf16 already) otherwise."""
    if str(precision) != "bf16-mixed":
        return None
    from torch.distributed.fsdp import MixedPrecisionPolicy

    return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)


def shard(roots: Sequence[nn.Module], mesh: Any, block_names: Optional[Sequence[str]] = None,
          mp_policy: Optional[Any] = None) -> None:
    """``fully_shard`` every block of every root (:func:`block_classes`), then the roots themselves (innermost
    first: a root inside another is its own unit). A root is gathered by its ``forward``: a model used through other
    methods (``AutoencoderKL.encode``) is sharded by its parts instead (``VAE.sharded_roots``)."""
    from torch.distributed.fsdp import fully_shard

    kwargs = {"mesh": mesh, **({"mp_policy": mp_policy} if mp_policy is not None else {})}
    named = block_classes(nn.ModuleList(roots), block_names) if block_names is not None else None
    for root in roots:
        classes = named or block_classes(root)
        for module in list(root.modules()):
            if module is not root and isinstance(module, classes):
                fully_shard(module, **kwargs)
    for root in roots:
        fully_shard(root, **kwargs)


def check_trainable_sharded(module: nn.Module) -> None:
    """Refuse trainable parameters left outside every sharded root: FSDP does not synchronise their gradients, so
    the ranks' copies would drift apart silently."""
    from torch.distributed.tensor import DTensor

    loose = [n for n, p in module.named_parameters() if p.requires_grad and not isinstance(p, DTensor)]
    if loose:
        raise RuntimeError(f"{type(module).__name__}: trainable parameters outside the sharded modules would not be "
                           f"synchronised across ranks: {loose[:5]}{' ...' if len(loose) > 5 else ''}.")


def enable_gradient_checkpointing(models: Sequence[nn.Module]) -> None:
    """Activation checkpointing (blocks recompute their activations in backward) through the libraries' own switch
    on every library model among ``models``: transformers' ``gradient_checkpointing_enable`` (non-reentrant, as
    FSDP needs) or diffusers' ``enable_gradient_checkpointing``; a ``ValueError`` if none has one."""
    done = False
    for model in models:
        for m in model.modules():
            if hasattr(m, "gradient_checkpointing_enable") and getattr(m, "supports_gradient_checkpointing", False):
                if hasattr(m, "activation_checkpointing_enable"):  # transformers >= 5.x's name
                    m.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
                else:
                    m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
                done = True
                break
            if getattr(m, "_supports_gradient_checkpointing", False) and hasattr(m, "enable_gradient_checkpointing"):
                m.enable_gradient_checkpointing()
                done = True
                break
    if not done:
        raise ValueError(f"gradient_checkpointing=True: none of {[type(m).__name__ for m in models]} has activation "
                         "checkpointing (a transformers or diffusers model has); set gradient_checkpointing=False.")


@contextlib.contextmanager
def gathered(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` with its full parameters gathered on every rank for the duration (FSDP2: unsharded and kept so
    across forwards; FSDP1: ``summon_full_params``): generation runs a different number of forwards on each rank
    (each stops when its own responses end), which per-forward all-gathers would deadlock. A no-op unsharded."""
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel

    fsdp2 = [m for m in module.modules() if isinstance(m, FSDPModule)]
    if fsdp2:
        before = [_reshards_after_forward(m) for m in fsdp2]
        for m in fsdp2:  # the same order on every rank: the all-gathers pair up
            m.unshard()
            m.set_reshard_after_forward(False, recurse=False)
        try:
            yield module
        finally:
            for m, reshard in zip(fsdp2, before):
                m.reshard()
                m.set_reshard_after_forward(reshard, recurse=False)
        return
    if any(isinstance(m, FullyShardedDataParallel) for m in module.modules()):
        with FullyShardedDataParallel.summon_full_params(module, writeback=False):
            yield module
        return
    yield module


def _reshards_after_forward(module: nn.Module) -> bool:
    """Whether an FSDP2 module frees its gathered weights after forward (a root keeps them: FSDP2 sets that at its
    first forward); read from FSDP2's state (no public getter), ``True`` (its default) if that moved."""
    try:
        state = module._get_fsdp_state()
        groups = getattr(state, "_fsdp_param_groups", None) or [state._fsdp_param_group]
        return any(g._reshard_after_forward for g in groups if g is not None)
    except AttributeError:
        return True


def full_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module``'s whole state dict on the CPU (gathered from the shards: a collective, every rank calls it)."""
    if not is_sharded(module):
        return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}  # a copy, not the live weights
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v.clone() for k, v in state.items()}  # unsharded buffers come back as the module's own tensors


def load_full_state_dict(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a whole (unsharded) state dict into ``module``, sharded or not (every rank holds ``state``)."""
    if not is_sharded(module):
        module.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(module, state, options=StateDictOptions(full_state_dict=True))


# ----------------------------------------------------------------- distributed-checkpoint folders
def is_dcp_folder(path: str | os.PathLike) -> bool:
    return Path(path).is_dir() and (Path(path) / DCP_METADATA).is_file()


def load_dcp_folder(path: str | os.PathLike) -> dict[str, Any]:
    """A distributed-checkpoint folder read whole into one process (no process group): its tensors, unsharded,
    as nested dicts (``{"state_dict": {...}, "optimizer_0": {...}}``) on the CPU."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.default_planner import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    state: dict[str, Any] = {}
    _load_state_dict(state, storage_reader=FileSystemReader(str(path)), planner=_EmptyStateDictLoadPlanner(),
                     no_dist=True)
    return state
