"""hilcore.distributed on 2 and 3 CPU processes with gloo: sharded kNN, Jaccard, DBSCAN and cluster_epoch
equal the single-process calls.

The kNN equals ``hilcore.knn`` (the default, native backend on CPU) bit for bit, indices and
similarities, also on exact duplicates and near-ties at float32 rounding level: both are the exact top-k
under (dot_f32 desc, index asc), self first, checked against hilcore.ref.knn.knn_native_values (the
fixed-order float32 dot from its definition, then a full sort).

One spawn of three processes runs every case on the default group (W = 3) and
on a subgroup of global ranks 1 and 2 (W = 2): the start-up of a process
dominates the time. Workers build the same data from seeds, pass their shard (uneven
sizes, a single-row shard, a shard of pure noise) and save what they got; the
test process compares with the single-process calls and with references written
from the definitions.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import hilcore
import hilcore.distributed as H
from hilcore.distributed import knn_sharded
from hilcore.stages import jaccard as SJ

# rows per rank for each world size: uneven, a single-row shard, (W=3) an empty shard in the DBSCAN case
KNN_SHARDS = {2: [1, 96], 3: [40, 1, 56]}
DB_SHARDS = {2: [60, 40], 3: [1, 59, 40]}  # the last 40 rows are noise points
JAC_SHARDS = {2: [33, 64], 3: [50, 1, 46]}
EMPTY_SHARDS = {2: [0, 97], 3: [60, 0, 37]}
TIE_SHARDS = {2: [70, 27], 3: [1, 0, 96]}  # near-ties: a single-row shard and an empty one


def _knn_data() -> np.ndarray:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((97, 24)).astype(np.float32)
    x[50] = x[7]
    x[51] = x[7]  # exact duplicates: ties broken by the lower index
    x[60:90] = x[20]  # 31 copies: the candidates' boundary is tied, those rows are rescored in full
    return x


def _tie_data() -> np.ndarray:
    """97 rows: 20 copies of row 20, rows 81..96 row 7 with one coordinate 1-3 float32 ulps away."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((97, 40)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x[60:80] = x[20]
    for t in range(81, 97):
        x[t] = x[7]
        j = int(rng.integers(40))
        for _ in range(t % 3 + 1):
            x[t, j] = np.nextafter(x[t, j], np.float32(np.inf if t % 2 else -np.inf))
    return x


def _db_points() -> np.ndarray:
    """60 points in 6 tight 2-D blobs (some touching), then 40 isolated points on a far grid (noise)."""
    rng = np.random.default_rng(5)
    centres = np.array([[0, 0], [0.5, 0], [3, 3], [6, 0], [6, 0.45], [9, 9]], dtype=np.float64)
    blobs = centres[rng.integers(0, 6, 60)] + 0.12 * rng.standard_normal((60, 2))
    grid = 20.0 + 2.0 * np.stack(np.meshgrid(np.arange(8), np.arange(5)), -1).reshape(-1, 2)
    return np.concatenate([blobs, grid])


def _db_matrix() -> sp.csr_matrix:
    """Euclidean distances of :func:`_db_points`, stored when <= 0.8, diagonal stored as 0."""
    p = _db_points()
    full = np.sqrt(((p[:, None] - p[None]) ** 2).sum(-1)).astype(np.float32)
    keep = full <= 0.8
    r, c = np.nonzero(keep)
    return sp.csr_matrix((full[r, c], (r, c)), shape=full.shape)


def _dense_points() -> np.ndarray:
    p = _db_points()
    return np.sqrt(((p[:, None] - p[None]) ** 2).sum(-1)).astype(np.float32)


def _db_data() -> np.ndarray:
    """Features whose Jaccard distance DBSCAN clusters (the Jaccard case of the DBSCAN pipeline)."""
    rng = np.random.default_rng(5)
    centres = rng.standard_normal((6, 32))
    return (centres[rng.integers(0, 6, 100)] + 0.15 * rng.standard_normal((100, 32))).astype(np.float32)


def _jac_data() -> np.ndarray:
    rng = np.random.default_rng(9)
    centres = rng.standard_normal((8, 20))
    x = (centres[rng.integers(0, 8, 97)] + 0.5 * rng.standard_normal((97, 20))).astype(np.float32)
    x[40] = x[3]  # a duplicate
    return x


EPOCH_SHARDS = {2: [1, 119], 3: [50, 30, 40]}


def _EPOCH_CFG():
    return hilcore.EpochConfig(k1=10, k2=4, backend="torch")


def _epoch_data():
    from hilcore.synthetic import reid_features

    return reid_features(20, 6, dim=64, seed=1)[0], reid_features(20, 6, dim=64, seed=2)[0]


def _shard(x, sizes, r):
    off = np.concatenate([[0], np.cumsum(sizes)])
    return x[off[r]:off[r + 1]]


def _dense(d) -> np.ndarray:
    """The dense matrix a sparse Jaccard result stands for: unstored pairs at distance 1."""
    full = np.ones(d.shape, dtype=np.float32)
    coo = d.tocoo()
    full[coo.row, coo.col] = coo.data
    return full


def _cases(world: int, rank: int, g) -> dict:
    """Every case on this rank of a ``world``-rank group ``g`` (``None``: the default group)."""
    res = {}
    xk = _knn_data()
    xs = _shard(xk, KNN_SHARDS[world], rank)
    res["knn"] = H.knn(torch.from_numpy(xs), 9, chunk_rows=16, group=g)
    st: dict = {}
    res["knn_wide"] = H.knn(torch.from_numpy(xs), 9, group=g, info=st)  # one chunk per rank
    res["knn_uncertified"] = st["uncertified"]
    res["knn_np"] = H.knn(xs.astype(np.float64), 5, group=g)  # NumPy float64 in -> NumPy out
    st = {}
    res["knn_all"] = H.knn(torch.from_numpy(xs), 97, group=g, info=st)  # k = N
    res["knn_bytes"] = st["bytes_sent"]
    xt = torch.from_numpy(_shard(_tie_data(), TIE_SHARDS[world], rank))
    res["knn_ties"] = H.knn(xt, 9, chunk_rows=13, group=g)
    res["knn_ties_wide"] = H.knn(xt, 30, group=g)
    try:  # ranks disagreeing on a parameter: a ValueError on every rank, not a hang
        H.dbscan(sp.csr_matrix((len(xs), 97), dtype=np.float32), 0.5, 3 + rank, group=g)
    except ValueError as e:
        res["mismatch"] = str(e)

    xd = _db_data()
    d = _db_matrix()
    off = np.concatenate([[0], np.cumsum(DB_SHARDS[world])])
    dl = d[off[rank]:off[rank + 1]]
    res["db"] = H.dbscan(dl, 0.3, 4, group=g)
    res["db_dense"] = H.dbscan(torch.from_numpy(_dense_points()[off[rank]:off[rank + 1]]), 0.5, 3, group=g)
    res["db_noise"] = H.dbscan(dl, 0.6, 1000, group=g)  # nothing is core

    xj = _jac_data()
    xs = torch.from_numpy(_shard(xj, JAC_SHARDS[world], rank))
    SJ.PAIR_BUDGET = 300  # several inverted-index rounds, a different number on each rank
    res["jac"] = H.jaccard_distance(xs, 12, 4, max_distance=0.6, group=g)
    SJ.PAIR_BUDGET = 1 << 24
    xe = torch.from_numpy(_shard(xj, EMPTY_SHARDS[world], rank))  # one rank holds no row
    res["jac_empty"] = H.jaccard_distance(xe, 12, 4, max_distance=0.6, group=g)
    res["knn_empty"] = H.knn(xe, 7, group=g)
    res["jac_all"] = H.jaccard_distance(xs, 20, 1, max_distance=None, group=g)
    xd_l = torch.from_numpy(_shard(xd, DB_SHARDS[world], rank))
    res["jac_db"] = H.jaccard_distance(xd_l, 12, 4, max_distance=0.6, group=g)
    res["jac_db_labels"] = H.dbscan(res["jac_db"], 0.6, 4, group=g)
    xr, xi = _epoch_data()
    sr, si = [_shard(a, EPOCH_SHARDS[world], rank) for a in (xr, xi)]
    res["epoch"] = H.cluster_epoch(torch.from_numpy(sr), torch.from_numpy(si), _EPOCH_CFG(), group=g)
    res["epoch_default"] = H.cluster_epoch(torch.from_numpy(sr), torch.from_numpy(si),
                                           hilcore.EpochConfig(k1=10, k2=4), group=g)
    return res


def _worker(rank: int, init: str, out: str):
    """Three processes: every case on the default group (W = 3), then on the group of global ranks
    1 and 2 (W = 2; group ranks differ from global ranks, rank 0 takes no part)."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=3)
    torch.save(_cases(3, rank, None), os.path.join(out, f"w3_rank{rank}.pt"))
    pair = dist.new_group([1, 2])
    if rank in (1, 2):
        torch.save(_cases(2, rank - 1, pair), os.path.join(out, f"w2_rank{rank - 1}.pt"))
    dist.barrier()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def spawned(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    mp.spawn(_worker, args=(f"file://{tmp / 'init'}", str(tmp)), nprocs=3, join=True)
    return tmp


@pytest.fixture(params=[2, 3])
def run(request, spawned):
    world = request.param
    return world, [torch.load(spawned / f"w{world}_rank{r}.pt", weights_only=False) for r in range(world)]


def _ref_knn(x: np.ndarray, k: int):
    """Reference from the definition: the fixed-order float32 dot products (hilcore.ref.knn.dot_f32) of the
    rows as the library normalises them, sorted by (similarity desc, index asc), each row first in its list."""
    from hilcore import _arrays
    from hilcore.ref.knn import knn_native_values

    xn = _arrays.features(torch.from_numpy(np.asarray(x, np.float32)), "x")[0].numpy()
    i, s = knn_native_values(xn, k)
    return torch.from_numpy(i), torch.from_numpy(s)


pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")


def test_knn_sharded_equals_single_and_reference(run):
    world, res = run
    x = _knn_data()
    idx = torch.cat([r["knn"][0] for r in res])
    sim = torch.cat([r["knn"][1] for r in res])
    single_idx, single_sim = H.knn(torch.from_numpy(x), 9)  # no process group: a world of one
    ref_idx, ref_sim = _ref_knn(x, 9)
    assert torch.equal(idx, single_idx) and torch.equal(sim, single_sim)
    assert torch.equal(idx, ref_idx) and torch.equal(sim, ref_sim)
    hk_idx, hk_sim = hilcore.knn(torch.from_numpy(x), 9)  # the default backend (native), concatenated rows
    assert torch.equal(idx, hk_idx) and torch.equal(sim, hk_sim)
    assert torch.equal(idx[:, 0], torch.arange(97))
    assert torch.equal(torch.cat([r["knn_wide"][0] for r in res]), ref_idx)
    assert torch.equal(torch.cat([r["knn_wide"][1] for r in res]), ref_sim)
    assert sum(r["knn_uncertified"] for r in res) > 0  # the exact completion of uncertified rows ran
    assert idx[7, :3].tolist() == [7, 50, 51] and idx[50, :3].tolist() == [50, 7, 51]
    # the torch backend: self first, similarities within float32 rounding of these (its ties between
    # duplicate columns depend on the GEMM; index agreement is tested on tie-free data below)
    hi, hs = hilcore.knn(x, 9, backend="torch")
    assert torch.equal(torch.as_tensor(hi)[:, :1], idx[:, :1])
    assert float((torch.as_tensor(hs) - sim).abs().max()) < 1e-6
    # NumPy float64 input comes back as NumPy; k = N holds every row
    np_idx = np.concatenate([r["knn_np"][0] for r in res])
    assert isinstance(np_idx, np.ndarray) and np.array_equal(np_idx, _ref_knn(x, 5)[0].numpy())
    assert np.array_equal(np.concatenate([r["knn_np"][1] for r in res]), hilcore.knn(x.astype(np.float64), 5)[1])
    all_idx = torch.cat([r["knn_all"][0] for r in res])
    all_sim = torch.cat([r["knn_all"][1] for r in res])
    assert torch.equal(all_idx, _ref_knn(x, 97)[0]) and torch.equal(all_sim, _ref_knn(x, 97)[1])
    assert all(r["knn_bytes"] > 0 for r in res)
    assert all("min_samples: every rank must pass the same value" in r["mismatch"] for r in res)


def test_knn_near_ties_sharded_equal_hilcore_knn(run):
    """Duplicates and rows 1-3 ulps apart: indices and similarities == hilcore.knn (default backend)."""
    world, res = run
    x = _tie_data()
    for key, k in (("knn_ties", 9), ("knn_ties_wide", 30)):
        idx = torch.cat([r[key][0] for r in res])
        sim = torch.cat([r[key][1] for r in res])
        want_i, want_s = hilcore.knn(torch.from_numpy(x), k)
        assert torch.equal(idx, want_i) and torch.equal(sim, want_s), key
        ref_i, ref_s = _ref_knn(x, k)
        assert torch.equal(idx, ref_i) and torch.equal(sim, ref_s), key
    # the data really has near-ties: consecutive list entries 1-3 ulps apart (a GEMM's rounding reorders
    # such columns: here the torch backend ranks 30 rows differently) and exact ties
    s = _ref_knn(x, 30)[1].numpy()[:, 1:]
    gap = np.diff(s, axis=1)
    assert ((gap != 0) & (np.abs(gap) <= 3 * np.spacing(np.abs(s[:, :-1])))).sum() >= 10
    assert (gap == 0).sum() >= 100


def test_knn_matches_hilcore_knn_single_process():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((150, 40)).astype(np.float32)
    i1, s1 = H.knn(x, 12, chunk_rows=37)
    i0, s0 = hilcore.knn(x, 12)  # default backend: bitwise
    assert np.array_equal(i1, i0) and np.array_equal(s1, s0)
    i2, s2 = hilcore.knn(x, 12, backend="torch")  # the torch backend: same indices on tie-free data
    assert np.array_equal(i1, i2)
    assert np.abs(s1 - s2).max() < 1e-6
    xt = _tie_data()
    for chunk in (1, 5, 96, None):
        i1, s1 = H.knn(xt, 9, chunk_rows=chunk)
        i0, s0 = hilcore.knn(xt, 9)
        assert np.array_equal(i1, i0) and np.array_equal(s1, s0), chunk
    # at the sizes where hilcore.knn takes the int8 path (N >= 4096, D >= 64): still the same bits
    from hilcore.backend.native import knn as native_knn

    big = np.random.default_rng(7).standard_normal((native_knn.INT8_MIN_ROWS + 50, 64)).astype(np.float32)
    big[100:140] = big[3]
    st: dict = {}
    i0, s0 = native_knn.knn(torch.from_numpy(_arrays_rows(big)), 12, info=st)
    i1, s1 = H.knn(big, 12, chunk_rows=1500)
    assert st["precision"] == "int8" or native_knn.int8_matmul() is None
    assert np.array_equal(i1, i0.numpy()) and np.array_equal(s1, s0.numpy())
    assert np.array_equal(i1, hilcore.knn(big, 12)[0])


def _arrays_rows(x: np.ndarray) -> np.ndarray:
    from hilcore import _arrays

    return _arrays.features(torch.from_numpy(x), "x")[0].numpy()


def test_dbscan_sharded_equals_single(run):
    world, res = run
    from sklearn.cluster import DBSCAN
    d = _db_matrix()
    want = hilcore.dbscan(d, 0.3, 4)
    assert want.max() >= 3 and (want[60:] == -1).all()  # several clusters; the last shard is all noise
    sk = DBSCAN(eps=0.3, min_samples=4, metric="precomputed").fit_predict(_dense_points())
    assert np.array_equal(want, sk)
    sk_dense = DBSCAN(eps=0.5, min_samples=3, metric="precomputed").fit_predict(_dense_points())
    for r in res:
        assert isinstance(r["db"], np.ndarray) and np.array_equal(r["db"], want)
        assert np.array_equal(r["db_noise"], np.full(100, -1))
        assert isinstance(r["db_dense"], torch.Tensor) and np.array_equal(r["db_dense"].numpy(), sk_dense)


def test_dbscan_single_process_bad_input():
    d = _db_matrix()
    with pytest.raises(ValueError, match="d_local"):
        H.dbscan(d[:10], 0.3, 4)  # 10 rows of a 100-column matrix without a group: N mismatch
    with pytest.raises(ValueError, match="eps"):
        H.dbscan(d, -1.0, 4)
    with pytest.raises(ValueError, match="negative"):
        H.dbscan(-d, 0.3, 4)
    assert np.array_equal(H.dbscan(d, 0.3, 4), hilcore.dbscan(d, 0.3, 4))


def _stages(x: np.ndarray, k1: int, k2: int, md):
    """The single-process torch stages on the concatenated rows with hilcore.knn's (default) ranking."""
    from hilcore import _arrays
    from hilcore.backend.torch.jaccard import jaccard as torch_stages

    xn = _arrays.features(torch.from_numpy(x), "x")[0]
    rank, _ = hilcore.knn(xn, k1)
    assert torch.equal(rank, _ref_knn(x, k1)[0])
    ip, ix, d = torch_stages(xn, rank, k1, k2, float("inf") if md is None else md)
    return sp.csr_matrix((d.numpy(), ix.numpy(), ip.numpy()), shape=(x.shape[0], x.shape[0]))


def _same_csr(a, b) -> bool:
    return (a.shape == b.shape and np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices)
            and np.array_equal(a.data, b.data))  # bitwise: float32 equality of every stored distance


def test_jaccard_sharded_equals_single(run):
    world, res = run
    x = _jac_data()
    for key, k1, k2, md in (("jac", 12, 4, 0.6), ("jac_all", 20, 1, None)):
        parts = [r[key] for r in res]
        assert [p.shape for p in parts] == [(s, 97) for s in JAC_SHARDS[world]]
        got = sp.vstack(parts, format="csr")
        assert _same_csr(got, _stages(x, k1, k2, md))
        # and the public single-process call: its kNN ranks these rows the same way
        ref = hilcore.jaccard_distance(x, k1, k2, max_distance=md, backend="torch")
        assert np.array_equal(hilcore.knn(x, k1, backend="torch")[0], hilcore.knn(x, k1)[0])
        assert _same_csr(got, ref)
        assert np.array_equal(got.diagonal(), np.zeros(97, np.float32))
    empty = [r["jac_empty"] for r in res]
    assert [p.shape[0] for p in empty] == EMPTY_SHARDS[world]
    assert _same_csr(sp.vstack(empty, format="csr"), _stages(x, 12, 4, 0.6))
    assert torch.equal(torch.cat([r["knn_empty"][0] for r in res]), _ref_knn(x, 7)[0])
    assert torch.equal(torch.cat([r["knn_empty"][1] for r in res]), hilcore.knn(torch.from_numpy(x), 7)[1])
    # the whole pipeline: sharded Jaccard -> sharded DBSCAN == single-process Jaccard -> DBSCAN
    xd = _db_data()
    single = hilcore.jaccard_distance(xd, 12, 4, max_distance=0.6, backend="torch")
    assert _same_csr(sp.vstack([r["jac_db"] for r in res], format="csr"), single)
    want = hilcore.dbscan(single, 0.6, 4)
    assert want.max() >= 2
    for r in res:
        assert np.array_equal(r["jac_db_labels"], want)


def test_jaccard_sharded_equals_default_backend(run):
    """The sharded Jaccard == hilcore.jaccard_distance with the default backend (native kNN + native stages)."""
    world, res = run
    x = _jac_data()
    for key, k1, k2, md in (("jac", 12, 4, 0.6), ("jac_all", 20, 1, None)):
        got = sp.vstack([r[key] for r in res], format="csr")
        assert _same_csr(got, hilcore.jaccard_distance(x, k1, k2, max_distance=md))
    single = hilcore.jaccard_distance(_db_data(), 12, 4, max_distance=0.6)
    assert _same_csr(sp.vstack([r["jac_db"] for r in res], format="csr"), single)


def test_jaccard_single_process_and_bad_input():
    x = _jac_data()
    assert _same_csr(H.jaccard_distance(x, 12, 4, max_distance=0.6), _stages(x, 12, 4, 0.6))
    assert _same_csr(H.jaccard_distance(x[:5], 30, 6), _stages(x[:5], 5, 5, None))  # k1 clamped to N
    with pytest.raises(ValueError, match="max_distance"):
        H.jaccard_distance(x, 12, 4, max_distance=-1.0)
    with pytest.raises(ValueError, match="k1"):
        H.jaccard_distance(x, 0, 4)
    with pytest.raises(ValueError, match="x_local"):
        H.jaccard_distance(x[0], 12, 4)
    with pytest.raises(ValueError, match="k"):
        H.knn(x, 98)


def test_cluster_epoch_sharded_equals_single(run):
    world, res = run
    xr, xi = _epoch_data()
    want = hilcore.cluster_epoch(torch.from_numpy(xr), torch.from_numpy(xi), _EPOCH_CFG())
    assert want.counts["clusters_rgb"] >= 5 and want.counts["matched_pairs"] >= 1
    for r in res:
        got = r["epoch"]
        assert got.counts == want.counts
        for k, v in vars(want).items():
            if isinstance(v, torch.Tensor):
                assert torch.equal(getattr(got, k), v), k
        assert got.timings["bytes_sent"] > 0


def test_cluster_epoch_sharded_equals_default_backend(run):
    """EpochConfig's default backend (native on CPU): the same clusters, centres and memories."""
    world, res = run
    xr, xi = _epoch_data()
    want = hilcore.cluster_epoch(torch.from_numpy(xr), torch.from_numpy(xi), hilcore.EpochConfig(k1=10, k2=4))
    for r in res:
        got = r["epoch_default"]
        assert got.counts == want.counts
        for k, v in vars(want).items():
            if isinstance(v, torch.Tensor):
                assert torch.equal(getattr(got, k), v), k


def test_driver_switch():
    from hilcore.train import distributed as D
    from hilcore.train.config import from_dict

    assert not D.sharded_clustering(from_dict({}))  # auto, single process: rank 0 path
    assert D.sharded_clustering(from_dict({"cluster": {"distributed": "on"}}))
    assert not D.sharded_clustering(from_dict({"cluster": {"distributed": "off"}}))
    with pytest.raises(ValueError, match="cluster.distributed"):
        from_dict({"cluster": {"distributed": "sometimes"}})
    assert "distributed" not in vars(from_dict({}).epoch_config())
    assert not D.sharded_clustering(from_dict({"cluster": {"transfer": "rgb_to_ir_all"}}))  # the release's step
    with pytest.raises(ValueError, match="cluster.distributed=on"):
        D.sharded_clustering(from_dict({"cluster": {"distributed": "on", "memory_features": "raw_heads"}}))


def test_driver_cluster_all_ranks_cam_center_single_process():
    """cluster.distributed=on, one process: the driver's sharded path equals its rank-0 path (torch backend)."""
    from hilcore.train import distributed as D
    from hilcore.train.config import from_dict
    from hilcore.train.loop import camera_centre

    xr, xi = _epoch_data()
    feats = {"rgb": torch.from_numpy(xr), "ir": torch.from_numpy(xi)}
    rng = np.random.default_rng(1)
    cams = {"rgb": rng.integers(0, 2, len(xr)), "ir": rng.integers(3, 5, len(xi))}
    cfg = from_dict({"cluster": {"k1": 10, "k2": 4, "backend": "torch", "cam_center": True, "distributed": "on"}})
    got = D.cluster_all_ranks(feats, cams, cfg, camera_centre)
    ec = cfg.epoch_config()
    x = {m: camera_centre(feats[m], cams[m]) for m in feats}
    want = hilcore.cluster_epoch(x["rgb"], x["ir"], ec, memory_feats_rgb=feats["rgb"], memory_feats_ir=feats["ir"])
    assert not torch.equal(want.centers_rgb, hilcore.cluster_epoch(x["rgb"], x["ir"], ec).centers_rgb)
    for k, v in vars(want).items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(getattr(got, k), v), k
    with pytest.raises(RuntimeError, match="clustering failed"):
        bad = from_dict({"cluster": {"k1": 10, "eps": 0.0, "min_samples": 50, "distributed": "on"}})
        D.cluster_all_ranks(feats, cams, bad)


def test_inputs_any_layout_dtype_and_grad():
    x = _jac_data()
    want_i, want_s = H.knn(x, 6)
    t = torch.from_numpy(np.asfortranarray(x))  # column-major strides
    t.requires_grad_(True)
    i, s = H.knn(t, 6)
    assert torch.equal(i, torch.from_numpy(want_i)) and torch.equal(s, torch.from_numpy(want_s))
    big = x.astype(">f4")  # big-endian bytes
    assert np.array_equal(H.knn(big.astype(np.float32), 6)[0], want_i)
    h = torch.from_numpy(x).half()  # float16 rows: normalised in float32 after the cast, as hilcore.knn does
    hi, hs = H.knn(h, 6)
    assert torch.equal(hi, hilcore.knn(h, 6)[0]) and torch.equal(hs, hilcore.knn(h, 6)[1])
    assert torch.equal(hi, _ref_knn(h.float().numpy(), 6)[0])
    d = H.jaccard_distance(t, 12, 4, max_distance=0.6)
    assert _same_csr(d, _stages(x, 12, 4, 0.6))
    with pytest.raises(TypeError, match="x_local"):
        H.knn(torch.arange(12).view(3, 4), 2)
    with pytest.raises(ValueError, match="x_local"):
        H.knn(np.full((3, 4), np.nan, np.float32), 2)


def test_knn_exact_under_reduced_matmul_precision():
    """With TF32/bfloat16 GEMM allowed: still the exact answer (the GEMM runs in IEEE float32 inside)."""
    x = _knn_data()
    want = _ref_knn(x, 9)
    old = torch.get_float32_matmul_precision()
    try:
        for mode in ("high", "medium"):
            torch.set_float32_matmul_precision(mode)
            i, s = H.knn(torch.from_numpy(x), 9)
            assert torch.equal(i, want[0]) and torch.equal(s, want[1])
            hi, hs = hilcore.knn(torch.from_numpy(x), 9)
            assert torch.equal(hi, want[0]) and torch.equal(hs, want[1])
    finally:
        torch.set_float32_matmul_precision(old)


def _canonical_knn(x: np.ndarray, k: int):
    """Reference of the canonical path: float64 sums of the float32 products of the normalised rows, sorted
    by (similarity desc, index asc) with each row first in its own list."""
    from hilcore import _arrays

    xn = _arrays.features(torch.from_numpy(np.asarray(x, np.float32)), "x")[0]
    c = (xn.double().unsqueeze(1) * xn.double().unsqueeze(0)).sum(-1).float()
    key = c.clone()
    key.fill_diagonal_(float("inf"))
    order = torch.sort(key, dim=1, descending=True, stable=True).indices[:, :k]
    return order, c.gather(1, order)


def test_canonical_path_where_the_default_knn_is_not_native(monkeypatch):
    """CUDA input (or a CPU without the native kNN) takes the canonical path: exact, the same for any chunking,
    also with TF32 / bfloat16 GEMMs allowed (its margin widens)."""
    monkeypatch.setattr(knn_sharded, "_native_rows", lambda dev: None)
    for x in (_knn_data(), _tie_data()):
        want = _canonical_knn(x, 9)
        for chunk in (1, 16, None):
            st: dict = {}
            i, s = H.knn(torch.from_numpy(x), 9, chunk_rows=chunk, info=st)
            assert torch.equal(i, want[0]) and torch.equal(s, want[1]), chunk
        assert st["uncertified"] > 0  # duplicates: the rows rescored against the whole chunk
        old = torch.get_float32_matmul_precision()
        try:
            for mode in ("high", "medium"):
                torch.set_float32_matmul_precision(mode)
                i, s = H.knn(torch.from_numpy(x), 9, chunk_rows=40)
                assert torch.equal(i, want[0]) and torch.equal(s, want[1]), mode
        finally:
            torch.set_float32_matmul_precision(old)
