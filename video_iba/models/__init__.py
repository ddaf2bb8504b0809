"""Model registry: specs, builders, weights and preprocessing."""

from .layers import LayerInfo, auto_layer, layer_table
from .preprocess import Geometry, preprocess_clip, preprocess_image, resize_crop_normalize
from .registry import (ModelSpec, describe_models, get_spec, imagenet_labels, kinetics400_labels, labels_for, layers,
                       list_models, load_model, pathways)

__all__ = [
    "LayerInfo", "auto_layer", "layer_table", "Geometry", "preprocess_clip", "preprocess_image", "resize_crop_normalize", "ModelSpec", "describe_models", "get_spec",
    "imagenet_labels", "kinetics400_labels", "labels_for", "pathways", "layers", "list_models", "load_model",
]
