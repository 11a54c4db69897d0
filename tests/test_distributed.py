"""Two CPU processes with gloo: sharded extraction gathers to the single-process result; DDP keeps ranks equal."""
from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hilcore.train import distributed as D
from test_train import make_tiny_dataset, tiny_config


def test_shard_range_covers_in_order():
    for n in (0, 1, 5, 7, 10):
        for w in (1, 2, 3):
            parts = [D.shard_range(n, r, w) for r in range(w)]
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
            sizes = [b - a for a, b in parts]
            assert max(sizes) - min(sizes) <= 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_config(root, out) -> dict:
    """The tiny run of both the 2-rank and the 1-rank training (global batch P x K = 3 x 2 per modality)."""
    # SGD: its step is linear in the gradient, so a wrong scale of the ranks' gradients shows (Adam hides it)
    return tiny_config(root, out, optim={"epochs": 1, "iters": 2, "name": "sgd", "lr": 0.05}, eval={"trials": 1},
                       cluster={"backend": "torch"})        # the backend the sharded step equals


def _worker(rank: int, world: int, port: int, root: str, out: str, result_dir: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from hilcore.train.config import from_dict
    from hilcore.train.evaluation import extract_features
    from hilcore.train.loop import Trainer

    cfg = from_dict(_train_config(root, out))
    tr = Trainer(cfg)                                 # joins the gloo group (RANK/WORLD_SIZE set)
    assert dist.is_initialized() and dist.get_world_size() == world
    feats = extract_features(tr.net, tr.data.train["ir"], "ir", tr.device, batch_size=5)
    rows = torch.arange(rank * 3, rank * 3 + 2 + rank, dtype=torch.float32)[:, None].repeat(1, 2)
    gathered_rows = D.all_gather_rows(rows)           # uneven shards: 2 rows on rank 0, 3 on rank 1
    init = {k: v.clone() for k, v in tr.model.state_dict().items()}
    tr.fit()
    both = tr.extract_train()                         # the features after training, on every rank
    assert D.sharded_clustering(tr.cfg)               # cluster.distributed = auto and world 2
    cl = tr.cluster(both)                             # every rank clusters its shard (hilcore.distributed)
    torch.save({"feats": feats, "rows": gathered_rows, "init": init, "final": tr.model.state_dict(),
                "history": tr.history, "both": both, "labels": (cl.labels_rgb, cl.labels_ir),
                "shared": (cl.shared_labels_rgb, cl.shared_labels_ir), "centers": cl.shared_centers},
               os.path.join(result_dir, f"rank{rank}.pt"))
    D.cleanup()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_process_gloo_training(tmp_path):
    root = make_tiny_dataset(tmp_path / "sysu")
    res = tmp_path / "res"
    res.mkdir()
    mp.spawn(_worker, args=(2, _free_port(), str(root), str(tmp_path / "run"), str(res)), nprocs=2, join=True)
    r0, r1 = (torch.load(res / f"rank{r}.pt", weights_only=False) for r in range(2))

    # padded all_gather: rank order, uneven sizes trimmed
    assert torch.equal(r0["rows"], torch.tensor([[0., 0.], [1., 1.], [3., 3.], [4., 4.], [5., 5.]]))
    assert torch.equal(r0["rows"], r1["rows"])

    # sharded + gathered extraction == single-process extraction of the same (initial) model
    from hilcore.train.config import from_dict
    from hilcore.train.data import build_data
    from hilcore.train.evaluation import extract_features
    from hilcore.train.loop import build_reid_model

    cfg = from_dict(tiny_config(root, tmp_path / "single"))
    model = build_reid_model(cfg)
    model.load_state_dict(r0["init"])
    for k in r0["init"]:
        assert torch.equal(r0["init"][k], r1["init"][k]), k       # DDP started both ranks from rank 0's weights
    data = build_data(cfg)
    n_ir = len(data.train["ir"])
    single = extract_features(model, data.train["ir"], "ir", torch.device("cpu"), batch_size=7)
    assert r0["feats"].shape == single.shape == (n_ir, model.feat_dim)
    assert torch.allclose(r0["feats"], single, atol=1e-5)
    assert torch.equal(r0["feats"], r1["feats"])

    # after one epoch of DDP training both ranks hold identical parameters and buffers, and they moved
    moved = False
    for k, v in r0["final"].items():
        assert torch.equal(v, r1["final"][k]), k
        moved |= not torch.equal(v, r0["init"][k])
    assert moved
    assert [h["epoch"] for h in r0["history"]] == [1]
    assert r0["history"][0]["loss"] == pytest.approx(r1["history"][0]["loss"])   # losses are all-reduced
    assert np.isfinite(r0["history"][0]["mAP"])

    # clustering ran on both ranks and equals the single-process step on the same features
    import hilcore

    ec = cfg.epoch_config()
    ec.backend = "torch"                  # the sharded Jaccard runs the torch stages
    want = hilcore.cluster_epoch(r0["both"]["rgb"], r0["both"]["ir"], ec)
    for r in (r0, r1):
        assert torch.equal(r["both"]["rgb"], r0["both"]["rgb"])
        assert torch.equal(r["labels"][0], want.labels_rgb) and torch.equal(r["labels"][1], want.labels_ir)
        assert torch.equal(r["shared"][0], want.shared_labels_rgb) and torch.equal(r["shared"][1], want.shared_labels_ir)
        assert torch.equal(r["centers"], want.shared_centers)

    # ... and the 2-rank run trained as one process with the same seed: the same global batches (each rank a
    # slice), augmentation drawn by position in the global batch, BatchNorm over the global batch (run.sync_bn),
    # the loss of the gathered batch and DDP's average of the ranks' slice gradients.
    from hilcore.train.loop import Trainer

    one = Trainer(from_dict(_train_config(root, tmp_path / "one")))
    for k, v in one.model.state_dict().items():
        assert torch.equal(v, r0["init"][k]), k                   # same seed, same initial model
    one.fit()
    # tolerance: only the summation order differs (convolutions over a slice vs the whole batch, BatchNorm
    # sums all-reduced across ranks, gradients summed by DDP): float32 rounding, ~1e-7 relative per op, through
    # 2 SGD steps of lr 0.05 on weights and gradients of order 1 stays far below 1e-4; per-rank BatchNorm
    # (run.sync_bn false) moves weights by ~1e-2 and an unscaled loss halves the steps
    final = one.model.state_dict()
    worst = max(float((v.double() - r0["final"][k].double()).abs().max()) for k, v in final.items()
                if v.is_floating_point())
    assert worst < 1e-4, worst
    assert all(torch.equal(v, r0["final"][k]) for k, v in final.items() if not v.is_floating_point())
    h1, h2 = one.history[0], r0["history"][0]
    for k in ("loss", "loss_cc", "loss_shared", "loss_mccl", "loss_nc"):
        assert h2[k] == pytest.approx(h1[k], rel=1e-4, abs=1e-5), k
    assert h2["mAP"] == pytest.approx(h1["mAP"], abs=1e-4)
