"""Evaluation: the paper's metrics for photos and clips, the synthetic benchmark, the harness and its plots."""

from .datasets import Item, folder_items, read_annotations, synthetic_items
from .harness import (METRICS, TUBE_FRAMES, base_method, check_label, check_metrics, evaluate, iba_label, label_beta,
                      summarise)
from .metrics import (DegradationResult, Estimate, RandomisationResult, SensitivityResult, bootstrap_ci, box_mask,
                      degradation, hit_ratio, map_ssim, parameter_randomisation, randomisation_stages, sensitivity_n,
                      stages_reaching, temporal_share, tile_labels)
from .synthetic import (SYNTHETIC_LAYER, SYNTHETIC_MODELS, SYNTHETIC_STATS_SEEDS, TEST_SEEDS, TRAIN_SEEDS,
                        TUBEVIT_CAM_LAYER, TUBEVIT_LAYER, TUBEVIT_LAYOUT, VALIDATION_SEEDS, TubeNet, TubeViT,
                        load_tubenet, load_tubenet_readout, load_tubevit, load_tubevit_readout, make_batch, make_clip,
                        statistics_batches, tubevit_layout)

__all__ = [
    "Item", "folder_items", "read_annotations", "synthetic_items",
    "METRICS", "TUBE_FRAMES", "base_method", "check_label", "check_metrics", "evaluate", "iba_label", "label_beta",
    "summarise",
    "DegradationResult", "Estimate", "RandomisationResult", "SensitivityResult", "bootstrap_ci", "box_mask",
    "degradation", "hit_ratio", "map_ssim", "parameter_randomisation", "randomisation_stages", "sensitivity_n",
    "stages_reaching", "temporal_share", "tile_labels",
    "SYNTHETIC_LAYER", "SYNTHETIC_MODELS", "SYNTHETIC_STATS_SEEDS", "TEST_SEEDS", "TRAIN_SEEDS", "TUBEVIT_CAM_LAYER", "TUBEVIT_LAYER",
    "TUBEVIT_LAYOUT", "VALIDATION_SEEDS",
    "TubeNet", "TubeViT", "load_tubenet", "load_tubenet_readout", "load_tubevit", "load_tubevit_readout",
    "make_batch", "make_clip", "statistics_batches", "tubevit_layout",
]
