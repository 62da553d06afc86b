"""One entry point for every litzoo method (LightningCLI, subclass mode).

    python train.py fit --config configs/ddpm_digits.yaml
    python train.py fit --config configs/ddpm_digits.yaml --trainer.precision bf16-mixed
    python train.py fit --config configs/ddpm_digits.yaml --trainer.devices 2 --trainer.strategy ddp
    python train.py validate --config configs/ddpm_digits.yaml --ckpt_path PATH
    python train.py export --ckpt PATH --out DIR
"""

import sys

import lightning as L
from lightning.pytorch.cli import LightningCLI

import litzoo.callbacks  # noqa: F401  (so `class_path: EMA` etc. resolve without the package prefix)
import litzoo.datamodules  # noqa: F401
import litzoo.modules  # noqa: F401


def check_ckpt_path(argv: list[str]) -> None:
    """Raise litzoo's ``CheckpointError`` (naming the file and what to do) for an unreadable ``--ckpt_path``
    before LightningCLI reads it, which fails with torch's raw error for a truncated or corrupt file."""
    from litzoo.base import load_checkpoint

    for i, arg in enumerate(argv):
        if arg == "--ckpt_path" and i + 1 < len(argv):
            path = argv[i + 1]
        elif arg.startswith("--ckpt_path="):
            path = arg.split("=", 1)[1]
        else:
            continue
        if path and path not in ("null", "None", "last", "best", "hpc", "registry"):  # Lightning's keywords
            load_checkpoint(path)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "export":
        from litzoo.export import main as export_main

        export_main(sys.argv[2:])
        return
    check_ckpt_path(sys.argv[1:])
    LightningCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
    )


if __name__ == "__main__":
    main()
