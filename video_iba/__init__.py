"""video-iba: Information Bottleneck Attribution for image and video classifiers, in bits.

The public API: everything a notebook needs is importable from here.

* models and inputs: :func:`load_model`, :func:`wrap_hf` (a Hugging Face video or image
  classifier in memory), :func:`list_models`, :func:`get_spec`, :func:`read_image`,
  :func:`read_clip`, :func:`preprocess_image`, :func:`preprocess_clip`;
* methods: :func:`explain` (per-sample IBA), :func:`estimate` (its statistics),
  :func:`explain_readout` and :func:`load_readout` (a trained readout), :func:`attribute` (any
  method of :data:`METHODS`, baselines included);
* results: :class:`Attribution` (a photo or one model input), :class:`ClipAttribution` (a video),
  :class:`Comparison` (every panel of a comparison),
  :class:`Unit`, :func:`load` (any ``.npz`` the command line writes), :func:`draw` (a map over
  its input, as an array, PNG or MP4);
* metrics: :func:`degradation`, :func:`hit_ratio`, :func:`box_mask`, :func:`temporal_share`,
  :func:`sensitivity_n`, :func:`parameter_randomisation`, :func:`bootstrap_ci`;
* files: :func:`explain_file` (a photo or video file explained and rendered as ``explain`` does),
  :func:`explain_batch` (a folder or list file, resumable, as ``explain FOLDER``) and
  :func:`compare_file` (one panel per method, as ``compare``) and :func:`compare_grid` (several
  photos, a row each), with :class:`Session` (also for
  a model of your own, :meth:`Session.for_model`) and :class:`Settings`; :func:`redraw` (an
  explanation drawn again from its ``.npz`` with :class:`Redraw`'s scale, layout or keyframes, as
  ``redraw``).

Multi-pathway networks (SlowFast) take the clip ``(1, 3, T, S, S)`` like every other video model;
registry models build their pathways themselves, a network of your own gets ``pack=``.
"""

from ._version import __version__
from .allocator import keep_freed_memory
from .bottleneck.estimator import Statistics
from .config import IBAConfig
from .errors import UserInputError
from .evaluation.metrics import (bootstrap_ci, box_mask, degradation, hit_ratio, parameter_randomisation,
                                 sensitivity_n, temporal_share)
from .io.clips import read_clip
from .io.image import read_image
from .methods.attribute import METHODS, attribute
from .methods.iba import estimate, explain
from .methods.readout import Readout, explain_readout, load_checkpoint, load_readout
from .models.layouts import TokenLayout
from .models.pathways import pathways
from .models.preprocess import Geometry, preprocess_clip, preprocess_image
from .models.registry import ModelSpec, get_spec, list_models, load_model, wrap_hf
from .render.draw import draw
from .results import Attribution, ClipAttribution, Comparison, Panel, Unit, load
from .workflows.batch import BatchCounts, explain_batch
from .workflows.compare import Compared, Grid, compare_file, compare_grid
from .workflows.explain import Explained, Options, explain_file
from .workflows.inputs import Range
from .workflows.redraw import Redraw, redraw
from .workflows.session import Session, Settings

__all__ = [
    "__version__", "explain", "estimate", "attribute", "METHODS", "explain_readout", "load_readout", "load_checkpoint",
    "Readout", "Attribution", "ClipAttribution", "Comparison", "Panel", "Unit", "load", "Statistics", "IBAConfig", "UserInputError",
    "load_model", "wrap_hf", "list_models", "get_spec", "ModelSpec", "pathways", "TokenLayout", "read_image", "read_clip", "preprocess_image",
    "preprocess_clip", "Geometry", "degradation", "hit_ratio", "box_mask", "temporal_share", "sensitivity_n",
    "parameter_randomisation", "bootstrap_ci", "explain_file", "Explained", "Options", "Range", "Session", "Settings",
    "compare_file", "Compared", "compare_grid", "Grid", "explain_batch", "BatchCounts", "keep_freed_memory", "draw",
    "redraw", "Redraw",
]
