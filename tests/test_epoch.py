"""cluster_epoch: every stage equals the public op it calls; clear errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import hilcore
from hilcore.brst import bidirectional_match
from hilcore.centers import cluster_centers, subcluster
from hilcore.epoch import EpochClusters, EpochConfig, cluster_epoch
from hilcore.synthetic import reid_features


def _modalities(n_ids=40, ir_ids=None):
    # same seed: the identity centres are shared by the two modalities (different images and cameras);
    # ir_ids: keep only the IR images of the first ir_ids identities (the rest are RGB-only clusters)
    xr, _, _ = reid_features(n_ids, 16, dim=64, seed=7, noise=0.4)
    xi, ids_i, _ = reid_features(n_ids, 9, dim=64, seed=7, noise=0.4, camera_bias=0.4)
    if ir_ids is not None:
        xi = xi[ids_i < ir_ids]
    return xr, xi


@pytest.mark.parametrize("mode", ["both", "rgb_to_ir"])
def test_epoch_stages_match_the_ops(mode):
    xr, xi = _modalities(ir_ids=30)
    cfg = EpochConfig(k1=15, k2=4, n_sub=3, match_mode=mode)
    out = cluster_epoch(xr, xi, cfg)
    assert isinstance(out, EpochClusters)
    for name, x, lab, cen, multi in (("rgb", xr, out.labels_rgb, out.centers_rgb, out.multi_rgb),
                                     ("ir", xi, out.labels_ir, out.centers_ir, out.multi_ir)):
        d = hilcore.jaccard_distance(x, cfg.k1, cfg.k2, max_distance=cfg.eps)
        want = hilcore.dbscan(d, cfg.eps, cfg.min_samples)
        np.testing.assert_array_equal(lab, want)
        np.testing.assert_allclose(cen, cluster_centers(x, want), atol=1e-6)
        np.testing.assert_allclose(multi, subcluster(x, want, cfg.n_sub, cfg.weight, seed=cfg.seed), atol=1e-6)
        assert out.counts[f"clusters_{name}"] == int(want.max()) + 1 == cen.shape[0]
        assert out.counts[f"outliers_{name}"] == int((want < 0).sum())
    m = bidirectional_match(xr, out.labels_rgb, xi, out.labels_ir, cfg.ratio, mode)
    np.testing.assert_array_equal(out.shared_labels_rgb, m.labels_rgb)
    np.testing.assert_array_equal(out.shared_labels_ir, m.labels_ir)
    np.testing.assert_array_equal(out.pairs, m.pairs)
    assert out.counts["matched_pairs"] == len(m.pairs) and out.counts["shared_clusters"] == m.n_shared
    xs = np.concatenate([xr, xi])
    ls = np.concatenate([m.labels_rgb, m.labels_ir])
    assert out.shared_centers.shape == (m.n_shared, xr.shape[1])
    assert out.shared_multi.shape == (m.n_shared, 1 + cfg.n_sub, xr.shape[1])
    np.testing.assert_allclose(out.shared_centers, cluster_centers(xs, ls), atol=1e-6)
    # a shared cluster made of exactly one modality cluster (unmatched) reuses that cluster's memory, bit for
    # bit; every other shared cluster is subcluster() of both modalities' rows with the shared labels
    full = subcluster(xs, ls, cfg.n_sub, cfg.weight, seed=cfg.seed)
    reused = np.zeros(m.n_shared, dtype=bool)
    for lab_m, lab_s, multi in ((out.labels_rgb, out.shared_labels_rgb, out.multi_rgb),
                                (out.labels_ir, out.shared_labels_ir, out.multi_ir)):
        other = out.shared_labels_ir if lab_s is out.shared_labels_rgb else out.shared_labels_rgb
        for c in range(multi.shape[0]):
            s = np.unique(lab_s[lab_m == c])
            if len(s) == 1 and s[0] >= 0 and np.array_equal(np.flatnonzero(lab_s == s[0]), np.flatnonzero(lab_m == c)) \
                    and not np.any(other == s[0]):
                assert np.array_equal(out.shared_multi[s[0]], multi[c])
                assert np.array_equal(out.shared_centers[s[0]], out.centers_rgb[c] if multi is out.multi_rgb
                                      else out.centers_ir[c])
                reused[s[0]] = True
    assert not reused.all() and (reused.any() or mode != "both")  # "both": the RGB-only identities are reused
    np.testing.assert_allclose(out.shared_multi[~reused], full[~reused], atol=1e-6)
    for key in ("jaccard_rgb", "dbscan_rgb", "centers_rgb", "subcluster_rgb", "jaccard_ir", "dbscan_ir",
                "centers_ir", "subcluster_ir", "match", "shared", "total"):
        assert out.timings[key] >= 0
    assert out.counts["matched_pairs"] > 0  # shared identities do match


def test_epoch_torch_input_and_backend():
    xr, xi = _modalities(20)
    out = cluster_epoch(torch.from_numpy(xr), torch.from_numpy(xi),
                        EpochConfig(k1=15, k2=4, n_sub=3, backend="torch"))
    assert isinstance(out.labels_rgb, torch.Tensor) and isinstance(out.shared_multi, torch.Tensor)
    ref = cluster_epoch(xr, xi, EpochConfig(k1=15, k2=4, n_sub=3))
    np.testing.assert_array_equal(out.labels_rgb.numpy(), ref.labels_rgb)
    np.testing.assert_array_equal(out.shared_labels_ir.numpy(), ref.shared_labels_ir)


def test_all_noise_modality_is_named():
    xr, xi = _modalities(20)
    with pytest.raises(ValueError, match="IR modality ended all-noise"):
        cluster_epoch(xr, xi[:3], EpochConfig(k1=15, k2=4))
    with pytest.raises(ValueError, match="RGB modality ended all-noise"):
        cluster_epoch(xr[:3], xi, EpochConfig(k1=15, k2=4))


def test_config_and_input_validation():
    xr, xi = _modalities(10)
    with pytest.raises(ValueError, match="match_mode"):
        cluster_epoch(xr, xi, EpochConfig(match_mode="sideways"))
    with pytest.raises(TypeError, match="config"):
        cluster_epoch(xr, xi, {"k1": 30})
    with pytest.raises(ValueError, match="feats_ir: expected 64 columns"):
        cluster_epoch(xr, xi[:, :32], EpochConfig(k1=15))
