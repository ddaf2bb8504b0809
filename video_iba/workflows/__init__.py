"""Workflows: one session per model; explain (photos and videos in the same stages), batches,
statistics, comparisons, evaluation and readout training."""

from .batch import MANIFEST, BatchCounts, explain_batch, run_batch
from .compare import Compared, Grid, compare_file, compare_grid
from .demo import DEMO_CLIP, DEMO_PHOTOS, demo_clip, demo_photo, run_demo
from .estimate import Estimated, estimate_folder, estimate_inputs, stats_paths_for
from .evaluate import Evaluation, evaluate_dataset
from .explain import (Explained, Options, assemble_clip, attribute_windows, draw_clip, draw_photo, explain_file,
                      explain_path, predict)
from .inputs import InputPlan, Range, plan_input
from .redraw import SHARED, Redraw, redraw
from .session import (DEFAULT_IMAGE_MODEL, DEFAULT_VIDEO_MODEL, Progress, Session, Sessions, Settings,
                      load_stats_files, no_progress, resolve_device)
from .train_readout import (READOUT_BETA, Schedule, Trained, TrainingData, TrainingRun, folder_data, synthetic_data,
                            synthetic_validation_data, train, train_dataset, validate)

__all__ = [
    "MANIFEST", "BatchCounts", "explain_batch", "run_batch", "Compared", "Grid", "compare_file", "compare_grid",
    "DEMO_CLIP", "DEMO_PHOTOS", "demo_clip", "demo_photo", "run_demo",
    "Estimated", "estimate_folder", "estimate_inputs", "stats_paths_for", "Evaluation", "evaluate_dataset",
    "Explained", "Options", "assemble_clip", "attribute_windows", "draw_clip", "draw_photo", "explain_file",
    "explain_path", "predict",
    "InputPlan", "Range", "plan_input", "SHARED", "Redraw", "redraw",
    "DEFAULT_IMAGE_MODEL", "DEFAULT_VIDEO_MODEL", "Progress", "Session", "Sessions", "Settings", "load_stats_files",
    "no_progress", "resolve_device",
    "READOUT_BETA", "Schedule", "Trained", "TrainingData", "TrainingRun", "folder_data", "synthetic_data",
    "synthetic_validation_data", "train", "train_dataset", "validate",
]
