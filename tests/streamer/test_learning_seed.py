"""Pixel-level learning on the seed study's real LiCoO2 attribute maps (skips without the data).

The seed study mapped six attributes per pixel for three real particles and clustered them with
k-means (4 clusters, weights edge 1, white-line energy 1, white-line height 1, R^2 0.1, noise 0.1,
edge jump off). Its labels (``authors_kmeans_labels.mat``): 0 the majority (edge ~7721.9 eV,
height ~0.54), 1 a low-edge minority (edge ~7718.9 eV), 2 a very-low-edge, flat white-line
minority (edge ~7717.5 eV, height ~0.03; mostly particle 1), 3 the high-white-line minority
(height ~1.0). Inspected shapes: 444x458, 519x426, 446x388; 127 454 labelled pixels.

Here the three particles are streamed through :class:`CampaignModel` as three fields of view
(in the order 1, 2, 3; each fed in 4096-pixel mini-batches), then every labelled pixel is
assigned with the final model. Valid pixels: the authors' labelled pixels, minus the zeros that
mark "outside the particle" in the maps; the model itself rejects edges outside 7692-7752 eV, white
lines outside 7699-7759 eV and edges at or above the white line (17 % of the labelled pixels
carry such sentinel or failed-fit values).

Measured (seed 0): adjusted Rand index 0.634 against the authors' labels (0.598 for the maps as
they were when each field ended); Hungarian-matched recall majority 0.82, low edge 0.95, very
low edge 0.77, high white line 0.97; 5 clusters (one spawned in particle 2). Welford mean/sd
scaling instead of the robust sketch: ARI 0.64 on these pixels, but 0.44 (robust: 0.61) when the
zero sentinels are left in. Other stream orders give ARI 0.30-0.50: the first field fixes the
first 4 centres and populations that only later fields show become new clusters instead.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, confusion_matrix

from streamer.learning import CampaignModel

log = logging.getLogger(__name__)

SEED_MAPS = {
    "edgejumpmap": "edge_jump",
    "edgeposition_stack": "e0_half",
    "peak_stack": "white_line_energy",
    "peakheight_stack": "white_line_height",
    "noisemap_stack": "pre_edge_noise",
    "R_squares_stack": "r_squared",
}
AUTHORS = {0: "majority", 1: "low edge", 2: "very low edge", 3: "high white line"}


def load_particle(root, index):
    from scipy.io import loadmat

    folder = root / "seed-licoo2-maps" / f"particle{index}"
    labels = loadmat(folder / "authors_kmeans_labels.mat")["labels"].ravel()
    attrs = {
        ours: loadmat(folder / f"{theirs}.mat")[theirs].ravel().astype(np.float32)
        for theirs, ours in SEED_MAPS.items()
    }
    valid = np.isfinite(labels)
    for name in ("edge_jump", "pre_edge_noise", "r_squared"):
        valid &= attrs[name] != 0  # zeros mark pixels outside the particle
    return attrs, valid, labels


@pytest.mark.shared_data
def test_seed_maps_majority_and_both_minorities_are_separated(shared_data):
    particles = [load_particle(shared_data, i) for i in (1, 2, 3)]
    assert [int(np.isfinite(p[2]).sum()) for p in particles] == [32904, 61855, 32695]
    model = CampaignModel(seed=0)
    live = [
        model.observe_field(f"particle{i}", a, v).cluster_map
        for i, (a, v, _) in zip((1, 2, 3), particles, strict=True)
    ]

    ours, theirs, at_the_time = [], [], []
    for (attrs, valid, labels), live_map in zip(particles, live, strict=True):
        final = model.observe_field("check", attrs, valid, learn=False).cluster_map
        used = final >= 0
        ours.append(final[used])
        theirs.append(labels[used].astype(int))
        at_the_time.append(live_map[used])
    ours, theirs, at_the_time = map(np.concatenate, (ours, theirs, at_the_time))
    kept = ours.size / sum(int(np.isfinite(p[2]).sum()) for p in particles)

    ari = adjusted_rand_score(theirs, ours)
    ari_live = adjusted_rand_score(theirs, at_the_time)
    counts = confusion_matrix(theirs, ours, labels=range(max(4, ours.max() + 1)))[:4]
    rows, cols = linear_sum_assignment(-counts)
    recall = {
        AUTHORS[r]: float(counts[r, c] / counts[r].sum()) for r, c in zip(rows, cols, strict=True)
    }
    log.info(
        "seed maps: ARI %.3f (live %.3f), %d clusters, %.1f %% of labelled pixels used, "
        "Hungarian recall %s, new clusters %s",
        ari,
        ari_live,
        model.clusters.centers_.shape[0],
        100 * kept,
        {k: round(v, 3) for k, v in recall.items()},
        [(e.fov_key, e.cluster_id, e.n_pixels) for e in model.new_cluster_events_],
    )

    assert kept > 0.8
    assert ari > 0.55, f"ARI {ari:.3f}"
    assert ari_live > 0.5, f"ARI of the live maps {ari_live:.3f}"
    assert recall["majority"] > 0.75, recall
    assert recall["low edge"] > 0.85, recall
    assert recall["very low edge"] > 0.6, recall
    assert recall["high white line"] > 0.85, recall
    # the matched clusters of the two minorities sit where the study says they are
    centers = model.cluster_centers()
    matched = dict(zip(rows, cols, strict=True))
    majority = centers[matched[0]]
    assert centers[matched[1]]["e0_half"] < majority["e0_half"] - 2.0
    assert centers[matched[3]]["white_line_height"] > majority["white_line_height"] + 0.3
