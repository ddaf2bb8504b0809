"""Models: the registry (specs, builders, weights, labels), layers, preprocessing and pathways."""

from .hf import HFClassifier, HFImageClassifier, HFVideoClassifier, hf_cache
from .layers import LayerInfo, auto_layer, cam_layer_of, layer_table
from .layouts import TokenLayout, layouts_for
from .pathways import Pack, PackedModel, input_packer, one_input, packed, pathways, slow_and_fast
from .preprocess import (COVERAGES, CropPlan, Geometry, Tile, crop_input, plan_crops, preprocess_clip,
                         preprocess_image, resize_crop_normalize, resized_size, tile_weights)
from .registry import (MAX_FRAMES, MAX_SAMPLING_RATE, ModelSpec, check_frames, check_sampling_rate, describe_models,
                       get_spec, imagenet_labels, kinetics400_labels, labels_for, layers, list_models, load_model,
                       model_spec, weights_digest, with_frames, with_sampling_rate, wrap_hf)
from .targets import class_names, resolve_target

__all__ = [
    "HFClassifier", "HFImageClassifier", "HFVideoClassifier", "hf_cache",
    "LayerInfo", "auto_layer", "cam_layer_of", "layer_table", "TokenLayout", "layouts_for",
    "Pack", "PackedModel", "input_packer", "one_input", "packed", "pathways", "slow_and_fast",
    "COVERAGES", "CropPlan", "Geometry", "Tile", "crop_input", "plan_crops", "preprocess_clip", "preprocess_image",
    "resize_crop_normalize", "resized_size", "tile_weights",
    "ModelSpec", "describe_models", "get_spec", "imagenet_labels", "kinetics400_labels", "labels_for", "layers",
    "list_models", "load_model", "model_spec", "weights_digest", "wrap_hf", "MAX_SAMPLING_RATE", "check_sampling_rate",
    "with_sampling_rate", "MAX_FRAMES", "check_frames", "with_frames",
    "class_names", "resolve_target",
]
