"""Tests for litzoo/datamodules/sampling.py."""

import pytest
import torch

from litzoo.datamodules.sampling import LengthGroupedSampler


def test_length_grouped_sampler_yields_each_index_once_in_length_sorted_batches():
    lengths = [(7 * i) % 97 + 3 for i in range(203)]
    sampler = LengthGroupedSampler(lengths, batch_size=8, group_batches=5, seed=3)
    order = list(sampler)
    assert sorted(order) == list(range(203)) and len(sampler) == 203
    batches = [order[j:j + 8] for j in range(0, 200, 8)]  # 25 full batches, then 3 leftovers
    for batch in batches:  # each batch is a run of one length-sorted window of 40
        assert [lengths[i] for i in batch] == sorted((lengths[i] for i in batch), reverse=True)
    # Padded cost sum(batch * max length) is far below a plain shuffle's (same seed and epoch).
    cost = lambda bs: sum(len(b) * max(lengths[i] for i in b) for b in bs)  # noqa: E731
    plain = torch.randperm(203, generator=torch.Generator().manual_seed(3 * 100_003)).tolist()
    assert cost(batches) < 0.75 * cost([plain[j:j + 8] for j in range(0, 200, 8)])
    assert list(LengthGroupedSampler(lengths, 8, 5, seed=3)) == order  # seeded: a resume repeats it
    sampler.set_epoch(1)
    assert list(sampler) != order


# --------------------------------------------------------------------------- DDP: shards of the seed's order
def _shards(sampler_factory, world, monkeypatch):
    from litzoo.datamodules import sampling

    shards = []
    for rank in range(world):
        monkeypatch.setattr(sampling, "_world", lambda rank=rank: (rank, world))
        sampler = sampler_factory()
        shards.append(list(sampler))
        assert len(sampler) == len(shards[-1])
    return shards


def test_each_rank_takes_its_positions_of_the_epoch_seeded_permutation(monkeypatch):
    from litzoo.datamodules.sampling import EpochShuffleSampler

    perm = list(EpochShuffleSampler(range(11), seed=4))  # one process: the whole permutation
    assert sorted(perm) == list(range(11))
    shards = _shards(lambda: EpochShuffleSampler(range(11), seed=4), 3, monkeypatch)
    padded = perm + perm[:1]  # 12 = 3 ranks x 4, padded with the first index as DistributedSampler does
    assert shards == [padded[0::3], padded[1::3], padded[2::3]]


def test_length_grouped_batches_stay_grouped_under_ddp(monkeypatch):
    lengths = [(7 * i) % 97 + 3 for i in range(203)]
    order = list(LengthGroupedSampler(lengths, batch_size=8, group_batches=5, seed=3))
    batches = [order[j:j + 8] for j in range(0, 200, 8)]  # 25 grouped batches, 3 leftovers
    shards = _shards(lambda: LengthGroupedSampler(lengths, batch_size=8, group_batches=5, seed=3), 2, monkeypatch)
    padded = batches + batches[:1]
    leftover = order[200:] + order[200:201]  # the 3 leftovers padded to 4, then shared like the batches
    assert shards[0] == [i for b in padded[0::2] for i in b] + leftover[0::2]
    assert shards[1] == [i for b in padded[1::2] for i in b] + leftover[1::2]


DDP_SCRIPT = """
import json, os, sys
import pytest
import torch
import torch.multiprocessing as mp
sys.path.insert(0, {repo!r})


def worker(rank, out):
    import lightning as L
    from torch.utils.data import TensorDataset
    from litzoo.datamodules.sampling import map_style_loader

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT={port!r}, RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2", LOCAL_WORLD_SIZE="2", NODE_RANK="0", GROUP_RANK="0")
    torch.set_num_threads(1)

    class Data(L.LightningDataModule):
        def __init__(self, seed):
            super().__init__()
            self.seed = seed

        def train_dataloader(self):
            return map_style_loader(TensorDataset(torch.arange(12)), 3, self.seed, 0, True)

    class Record(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.seen = []

        def training_step(self, batch, batch_idx):
            self.seen.append([self.current_epoch, batch[0].tolist()])
            return self.w.sum() * 0.0

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    runs = {{}}
    for name, data_seed, global_seed in [("a", 5, 123), ("b", 5, 7), ("c", 6, 123)]:
        L.seed_everything(global_seed)
        module = Record()
        L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=2, logger=False,
                  enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False).fit(
            module, Data(data_seed))
        runs[name] = module.seen
    with open(os.path.join(out, f"rank{{rank}}.json"), "w") as f:
        json.dump(runs, f)
    # A gloo group left to interpreter exit can abort the process (SIGABRT; pytorch/pytorch#190489): destroy it.
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    mp.spawn(worker, args=({out!r},), nprocs=2)
"""


@pytest.mark.slow  # three 2-process DDP fits in two fresh interpreters
def test_two_process_ddp_ranks_take_disjoint_shards_of_the_datamodule_seeds_permutation(tmp_path):
    import json
    import os
    import socket
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    from litzoo.seeding import epoch_seed

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    repo = str(Path(__file__).resolve().parents[2])
    script = tmp_path / "ddp_sampling.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT.format(repo=repo, out=str(tmp_path), port=port)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for name, seed in [("a", 5), ("b", 5), ("c", 6)]:
        for epoch in range(2):
            perm = torch.randperm(12, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch))).tolist()
            seen = [[i for e, batch in ranks[r][name] if e == epoch for i in batch] for r in range(2)]
            assert seen == [perm[0::2], perm[1::2]], (name, epoch)  # disjoint shards of (seed, epoch)'s order
    assert ranks[0]["a"] == ranks[0]["b"] and ranks[1]["a"] == ranks[1]["b"]  # the global seed does not matter
    assert ranks[0]["a"] != ranks[0]["c"]  # the datamodule's seed does
