"""The command line: ``python -m segkit {synth,prepare,train,test,predict,export,plan,bench,figures} …``."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence

from segkit import layout
from segkit.io import DataError, check_frame_size, describe_os_error, parse_size


def _size(text: str) -> tuple[int, int]:
    try:
        return check_frame_size(parse_size(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _duration(text: str) -> float:
    from segkit.budget import parse_duration

    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _whole(minimum: int):
    """An argparse type for a whole number of at least ``minimum`` (a count, so that ``-n 0`` is
    refused naming ``-n``, not the settings a config checks later)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number of at least {minimum}, "
                                             f"got {text!r}")
        return value
    return parse


def _batch_size(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return _whole(1)(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a whole number of frames or auto, got {text!r}"
                                         ) from None


def _seed(text: str) -> int:
    from segkit.runtime import check_seed

    try:
        return check_seed(int(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error) if text.lstrip("-").isdigit()
                                         else f"expected a whole number, got {text!r}") from None


def _gib(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected the GiB of a GPU's memory, a number above 0, "
                                         f"got {text!r}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}")
    return value


def _selection(values: Sequence[str] | None) -> dict[str, list[str]] | None:
    """``["train=hamburg,bremen", "val=frankfurt"]`` -> ``{"train": [...], "val": [...]}``."""
    if not values:
        return None
    selection: dict[str, list[str]] = {}
    for value in values:
        split, sep, cities = value.partition("=")
        if not sep or split not in layout.SPLITS or not cities:
            raise argparse.ArgumentTypeError(
                f"expected SPLIT=CITY[,CITY…] with SPLIT in {', '.join(layout.SPLITS)}, "
                f"got {value!r}")
        selection.setdefault(split, []).extend(c for c in cities.split(",") if c)
    return selection


def _add_synth(commands) -> None:
    parser = commands.add_parser(
        "synth", help="generate the synthetic Cityscapes-like dataset (official layout)",
        description="Generate procedural street scenes in the official Cityscapes layout, "
                    "file names and label ids; optionally also the two official zip files.")
    parser.add_argument("--out", default="data/synthetic", help="output folder (default: %(default)s)")
    parser.add_argument("--size", type=_size, default=(2048, 1024), metavar="WxH",
                        help="frame size, width x height (default: 2048x1024, like the real data)")
    parser.add_argument("--frames", type=_whole(1), default=20, metavar="N",
                        help="frames per split (default: %(default)s)")
    parser.add_argument("--seed", type=_seed, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--cities", nargs="+", metavar="SPLIT=CITY[,CITY]",
                        help="cities per split (default: train=hamburg val=frankfurt test=berlin)")
    parser.add_argument("--zips", action="store_true",
                        help=f"also write {layout.LABELS_ZIP} and {layout.IMAGES_ZIP} into --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=_run_synth)


def _run_synth(args) -> int:
    from segkit.synthetic import generate

    summary = generate(args.out, size=args.size, frames=args.frames, seed=args.seed,
                       cities=_selection(args.cities), zips=args.zips, progress=not args.quiet)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _add_prepare(commands) -> None:
    parser = commands.add_parser(
        "prepare", help="prepare a training copy from the official zips or folders",
        description="Select splits and cities from the official zips (read in place) or an "
                    "extracted root, convert labels to trainIds, optionally resize, and write a "
                    "prepared copy with a manifest. Safe to re-run: it resumes and never "
                    "overwrites other data.")
    parser.add_argument("--source", required=True,
                        help="folder holding the two official zips, or an extracted root")
    parser.add_argument("--out", required=True, help="output folder (new, empty or a resumed run)")
    parser.add_argument("--subset", choices=sorted(layout.SUBSETS), default="small",
                        help="small: train hamburg + val frankfurt (the original study); "
                             "full: every city (default: %(default)s)")
    parser.add_argument("--select", nargs="+", metavar="SPLIT=CITY[,CITY]",
                        help="explicit splits and cities, e.g. train=hamburg,bremen val=frankfurt "
                             "(overrides --subset)")
    parser.add_argument("--size", type=_size, metavar="WxH",
                        help="resize to this training resolution (images filtered, labels nearest)")
    parser.add_argument("--resample", choices=("bilinear", "area"), default="bilinear",
                        help="image filter when resizing (default: %(default)s)")
    parser.add_argument("--workers", type=_whole(0), default=min(4, os.cpu_count() or 1),
                        help="parallel processes (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=_run_prepare)


def _run_prepare(args) -> int:
    from segkit.prepare import prepare

    result = prepare(args.source, args.out, subset=args.subset, select=_selection(args.select),
                     size=args.size, resample=args.resample, workers=args.workers,
                     progress=not args.quiet)
    redone = (f", {result['redone']} of them redone: their files were missing or had changed size"
              if result["redone"] else "")
    print(f"prepared {sum(map(sum, (c.values() for c in result['counts'].values())))} frames "
          f"into {args.out} ({result['prepared_now']} converted now{redone}, "
          f"{result['seconds']:.1f} s): {json.dumps(result['counts'])}")
    return 0


def _add_bench(commands) -> None:
    parser = commands.add_parser("bench", help="benchmarks that print measured figures",
                                 description="Benchmarks; every figure is measured in this run.")
    targets = parser.add_subparsers(dest="target", required=True, metavar="TARGET")
    data = targets.add_parser("data", help="data pipeline: prepared cache vs raw files",
                              description="Training samples/s from the prepared cache vs raw "
                                          "2048x1024 files resized per sample; generation and "
                                          "preparation frames/s.")
    data.add_argument("--data", help="an official-layout root with full-size frames to measure "
                                     "(default: synthesise them in a temporary folder)")
    data.add_argument("--frames", type=_whole(1), default=24,
                      help="frames to synthesise and load (default: %(default)s)")
    data.add_argument("--size", type=_size, default=(512, 256), metavar="WxH",
                      help="training resolution (default: 512x256)")
    data.add_argument("--raw-size", type=_size, default=(2048, 1024), metavar="WxH",
                      help="size of the synthesised raw frames (default: 2048x1024, the real size)")
    data.add_argument("--batch-size", type=_whole(1), default=8, help="default: %(default)s")
    data.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    data.set_defaults(run=_run_bench_data)
    synth = targets.add_parser("synth", help="synthetic data: generation rate and realism",
                               description="Frames/s of synthetic generation at --size, and the "
                                           "realism measures of a set like the cpu course's "
                                           "(grain, flat areas, saturation, class colours, "
                                           "objects per frame) beside real Cityscapes figures.")
    synth.add_argument("--frames", type=_whole(1), default=8,
                       help="frames generated for the rate (default: %(default)s)")
    synth.add_argument("--size", type=_size, default=(2048, 1024), metavar="WxH",
                       help="size of the frames timed (default: 2048x1024, the real size)")
    synth.add_argument("--measure-frames", type=_whole(1), default=48,
                       help="train and as many val frames measured (default: %(default)s)")
    synth.add_argument("--seed", type=_seed, default=0, help="default: %(default)s")
    synth.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    synth.set_defaults(run=_run_bench_synth)
    train = targets.add_parser("train", help="training-step speed and memory per model",
                               description="Forward+backward img/s and peak memory per model at "
                                           "each size (fp32, channels_last, bf16 on CPU / AMP on "
                                           "CUDA), and the confusion matrix against a one-hot "
                                           "reference.")
    train.add_argument("--models", nargs="+", help="default: every model")
    train.add_argument("--sizes", nargs="+", type=_size, default=[(256, 128), (512, 256)],
                       metavar="WxH")
    train.add_argument("--batch-size", type=_whole(1), default=8)
    train.add_argument("--repeats", type=_whole(1), default=1, help="timed steps per figure (best is kept)")
    train.add_argument("--device", default="auto")
    train.add_argument("--full", action="store_true",
                       help="on the CPU, also DeepLabV3+ at the larger sizes (slow)")
    train.add_argument("--bf16", action="store_true", default=None,
                       help="on the CPU, measure bf16 autocast even without native bf16 (very slow)")
    train.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    train.set_defaults(run=_run_bench_train)
    gpu = targets.add_parser("gpu", help="CUDA: the laptop profile under a memory cap",
                             description="Per model in the laptop profile under a --gpu-memory cap: "
                                         "training img/s, peak memory measured against segkit plan's "
                                         "estimate, and loader samples/s against the step rate. "
                                         "Without CUDA it says so in one line and measures nothing.")
    gpu.add_argument("--models", nargs="+", help="default: every model")
    gpu.add_argument("--profile", default="laptop", help="default: %(default)s")
    gpu.add_argument("--gpu-memory", type=_gib, default=6.0, metavar="GIB",
                     help="the card to imitate, its CUDA context included (default: %(default)s, the "
                          "original study's 6 GB card)")
    gpu.add_argument("--steps", type=_whole(1), default=5,
                     help="timed steps per model (default: %(default)s)")
    gpu.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    gpu.set_defaults(run=_run_bench_gpu)


def _run_bench_data(args) -> int:
    from segkit.bench import bench_data

    figures = bench_data(data=args.data, frames=args.frames, size=args.size,
                         raw_size=args.raw_size, batch_size=args.batch_size)
    if args.json:
        print(json.dumps(figures))
    return 0


def _run_bench_synth(args) -> int:
    from segkit.bench import bench_synth

    figures = bench_synth(frames=args.frames, size=args.size, measure_frames=args.measure_frames,
                          seed=args.seed)
    if args.json:
        print(json.dumps(figures))
    return 0


def _run_bench_train(args) -> int:
    from segkit.bench import bench_train

    figures = bench_train(models=args.models, sizes=args.sizes, batch_size=args.batch_size,
                          repeats=args.repeats, device=args.device, full=args.full, bf16=args.bf16)
    if args.json:
        print(json.dumps(figures))
    return 0


def _run_bench_gpu(args) -> int:
    import torch

    from segkit.bench import bench_gpu

    figures = bench_gpu(models=args.models, profile=args.profile, cap_gib=args.gpu_memory,
                        steps=args.steps)
    if figures is None:
        reason = f"CUDA is absent (torch {torch.__version__} sees no GPU): nothing measured"
        print(json.dumps({"cuda": False, "reason": reason}) if args.json else f"segkit bench gpu: {reason}")
        return 0
    if args.json:
        print(json.dumps(figures))
    return 0


def _add_plan(commands) -> None:
    from segkit.config import PROFILES
    from segkit.planner import PRECISIONS

    parser = commands.add_parser(
        "plan", help="what fits a GPU's memory, estimated without a GPU",
        description="Estimate the peak memory of a training step (weights, gradients, optimizer "
                    "state, activations saved for backward, backward's temporaries, plus an allowance "
                    "for the CUDA context and workspace) and of scoring one 2048x1024 frame, measured "
                    "on this CPU at small sizes and scaled by pixels. Marks what fits --gpu-memory.")
    parser.add_argument("--profile", choices=["auto", *PROFILES],
                        help="plan this profile's own settings for each model")
    parser.add_argument("-m", "--model", help="plan one configuration of this model")
    parser.add_argument("--backbone", help="DeepLab backbone (default: resnet101)")
    parser.add_argument("--batch-size", type=_whole(1), nargs="+", metavar="N", help="default: 2 4 8")
    parser.add_argument("--size", type=_size, nargs="+", metavar="WxH",
                        help="training crops (default: 512x256 768x384 1024x512)")
    parser.add_argument("--amp", choices=("off", *PRECISIONS[1:]), nargs="+",
                        help="precision: off (fp32), fp16 or bf16 (default: off fp16)")
    parser.add_argument("--checkpointing", action="store_true",
                        help="with -m: activation checkpointing on (the table shows both)")
    parser.add_argument("--gpu-memory", type=_gib, metavar="GIB",
                        help="the card to plan for (default: the visible GPU's memory, else 6)")
    parser.add_argument("--json", action="store_true", help="one line: a JSON list of rows")
    parser.set_defaults(run=_run_plan)


def _run_plan(args) -> int:
    from segkit import planner

    memory = args.gpu_memory or planner.default_gpu_gib()
    if args.profile:
        from segkit.config import profile_name

        plans = planner.profile_plans(profile_name(args.profile))
    else:
        from segkit.models.registry import list_models, model_info

        models = [args.model] if args.model else list_models()
        precisions = ["fp32" if amp == "off" else amp for amp in (args.amp or ["off", "fp16"])]
        options = {model: {"backbone": args.backbone} for model in models
                   if args.backbone and model_info(model).backbone}
        plans = planner.grid_plans(models, batches=args.batch_size or [2, 4, 8],
                                   sizes=args.size or [(512, 256), (768, 384), (1024, 512)],
                                   precisions=precisions,
                                   checkpointing=[True] if args.checkpointing else (
                                       [False] if args.model else [False, True]),
                                   options=options)
    if args.json:
        print(json.dumps([plan.row(memory) for plan in plans]))
    else:
        print(planner.format_plans(plans, memory))
    return 0


def _add_train(commands) -> None:
    parser = commands.add_parser(
        "train", help="train a model (the engine the notebooks use)",
        description="Train my_fcn, unet or deeplab on a prepared or official root, or on the "
                    "synthetic set (generated first when --data is not given). Writes last.pt and "
                    "best.pt into --out and TensorBoard logs into --log_dir.")
    add_train_arguments(parser)
    parser.set_defaults(run=_run_train)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``train`` flags (also used by ``python -m segkit.train``, the original command)."""
    from segkit.config import AMP_MODES, OPTIMIZERS, PROFILES, SCHEDULERS
    from segkit.models import list_models

    models = list_models(include_aliases=True)
    parser.add_argument("-m", "--model", required=True, choices=models, metavar="MODEL",
                        help=f"one of {', '.join(models)}")
    parser.add_argument("--profile", choices=["auto", *PROFILES],
                        help="auto | ci | cpu | laptop | gpu: data and training strength (default: "
                             "$SEGKIT_PROFILE, else auto: cpu, laptop under 16 GiB of GPU memory, gpu)")
    parser.add_argument("--data", help="prepared or official Cityscapes root "
                                       "(default: the profile's synthetic set, made if missing)")
    parser.add_argument("--out", help="checkpoint folder (default: checkpoints/MODEL)")
    parser.add_argument("--log_dir", "--log-dir", dest="log_dir",
                        help="TensorBoard folder (default: OUT/tensorboard, one log per run)")
    parser.add_argument("-n", "--num_epoch", "--epochs", dest="epochs", type=_whole(1),
                        help="epochs (default: the profile's; drops a profile's --time-budget)")
    parser.add_argument("--time-budget", type=_duration, metavar="TIME",
                        help="train for this long instead of for epochs, e.g. 90s, 4m or 1h: the "
                             "learning rate decays to zero over the budget, validation counts "
                             "against it (default: the cpu profile's, 2.5 minutes a model)")
    parser.add_argument("-lr", "--lr", dest="lr", type=float, help="learning rate (default: 1e-3)")
    parser.add_argument("--backbone-lr", type=float, metavar="FACTOR",
                        help="a pretrained backbone learns at --lr x FACTOR (default: 0.1; 1: the same)")
    parser.add_argument("-c", "--continue_training", "--resume", dest="resume", action="store_true",
                        help="continue from OUT/last.pt exactly where it stopped")
    parser.add_argument("--size", type=_size, metavar="WxH", help="training crop, e.g. 512x256")
    parser.add_argument("--base-height", type=_whole(1),
                        help="frame height at scale 1 before the random crop (default: crop height)")
    parser.add_argument("--val-size", type=_size, metavar="WxH",
                        help="validation resolution (default: --size)")
    parser.add_argument("--batch-size", type=_batch_size, metavar="N|auto",
                        help="frames per batch, per process under torchrun (default: the profile's); "
                             "auto: the largest that segkit plan says fits, confirmed on CUDA")
    parser.add_argument("--accumulate", type=_whole(1), help="gradient accumulation steps")
    parser.add_argument("--optimizer", choices=OPTIMIZERS)
    parser.add_argument("--scheduler", choices=SCHEDULERS)
    parser.add_argument("--warmup-iters", type=_whole(0))
    parser.add_argument("--loss", choices=("ce", "focal"))
    parser.add_argument("--gamma", type=float, help="focal loss gamma (with --loss focal)")
    parser.add_argument("--class-weights", action="store_true",
                        help="weight classes by the training label histogram")
    parser.add_argument("--amp", choices=AMP_MODES, help="mixed precision (default: auto)")
    parser.add_argument("--channels-last", nargs="?", const="on", choices=("on", "off", "auto"),
                        help="memory layout: on, off, or auto (time a few steps both ways, keep the "
                             "faster); bare: on (default: the profile's)")
    parser.add_argument("--sync-bn", action="store_true",
                        help="under torchrun on GPUs: BatchNorm statistics over the global batch")
    parser.add_argument("--device", help="auto | cpu | cuda | cuda:N | mps")
    parser.add_argument("--gpu-memory", type=_gib, metavar="GIB",
                        help="imitate a card of this many GiB on a larger GPU: torch's CUDA allocator "
                             "gets this less the CUDA context measured; --batch-size auto plans for it")
    parser.add_argument("--deterministic", action="store_true", default=None,
                        help="deterministic kernels: repeatable on the CPU, slower on GPUs "
                             "(default: off, cuDNN autotuning on; the ci profile turns it on)")
    parser.add_argument("--log-every", type=_whole(1), metavar="N",
                        help="batches between loss read-backs (default: 20; each waits for the GPU)")
    parser.add_argument("--workers", dest="num_workers", type=_whole(0), help="DataLoader workers")
    parser.add_argument("--seed", type=_seed)
    parser.add_argument("--max-iters", type=_whole(1), help="cap on iterations per epoch")
    parser.add_argument("--oom", choices=("fail", "retry"),
                        help="on CUDA out-of-memory: stop with advice, or retry in smaller chunks")
    parser.add_argument("--label-scheme", choices=("cityscapes19", "original20"))
    parser.add_argument("--backbone", help="DeepLab backbone: resnet101 | resnet50 | mobilenet_v3_large")
    parser.add_argument("--output-stride", type=int, choices=(8, 16), help="DeepLab output stride")
    parser.add_argument("--pretrained-backbone", metavar="imagenet|FILE",
                        help="DeepLab: ImageNet weights from torchvision (cache or download) or a file")
    parser.add_argument("--allow-random-init", action="store_true",
                        help="DeepLab: continue from random weights if pretrained ones are unavailable")
    parser.add_argument("--checkpointing", "--checkpoint-backbone", dest="checkpointing",
                        action="store_true",
                        help="activation checkpointing: recompute blocks in backward for less memory "
                             "(DeepLab: the backbone stages)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _model_options(args) -> dict:
    """The model options the train flags give, as the model declares them in the registry: the
    backbone flags for a model that takes a backbone, ``--checkpointing`` as its own option."""
    from segkit.models.registry import list_models, model_info

    info = model_info(args.model)
    backbone_flags = {"--backbone": args.backbone, "--output-stride": args.output_stride,
                      "--pretrained-backbone": args.pretrained_backbone,
                      "--allow-random-init": args.allow_random_init or None}
    given = [flag for flag, value in backbone_flags.items() if value is not None]
    if given and not info.backbone:
        takers = ", ".join(name for name in list_models() if model_info(name).backbone)
        raise DataError(f"{', '.join(given)}: {'options' if len(given) > 1 else 'an option'} of "
                        f"models with a backbone ({takers}), not of {args.model}; drop "
                        f"{'them' if len(given) > 1 else 'it'}")
    if args.checkpointing and info.checkpoint_option is None:
        raise DataError(f"--checkpointing: {args.model} has no activation checkpointing; drop it")
    options = {"backbone": args.backbone, "output_stride": args.output_stride,
               "allow_random_init": args.allow_random_init or None,
               "pretrained_backbone": (True if args.pretrained_backbone == "imagenet"
                                       else args.pretrained_backbone)}
    if args.checkpointing:
        options[info.checkpoint_option] = True
    return {k: v for k, v in options.items() if v is not None}


def _run_train(args) -> int:
    from segkit.training import train

    fields = ("epochs", "lr", "backbone_lr", "size", "base_height", "val_size", "batch_size", "accumulate",
              "optimizer", "scheduler", "warmup_iters", "loss", "gamma", "amp", "device",
              "num_workers", "seed", "max_iters", "oom", "label_scheme", "gpu_memory",
              "deterministic", "log_every", "time_budget")
    changes = {name: getattr(args, name) for name in fields if getattr(args, name) is not None}
    if args.class_weights:
        changes["class_weights"] = True
    if args.channels_last is not None:
        changes["channels_last"] = {"on": True, "off": False, "auto": "auto"}[args.channels_last]
    if args.sync_bn:
        changes["sync_bn"] = True
    state = train(args.model, profile=args.profile, data=args.data, out=args.out,
                  log_dir=args.log_dir, resume=args.resume, model_options=_model_options(args),
                  progress=not args.quiet, **changes)
    return 1 if state.stop else 0


def _add_test(commands) -> None:
    parser = commands.add_parser(
        "test", help="score a checkpoint on a labelled split",
        description="Print global accuracy, mean accuracy, mIoU, the per-class and per-category IoU "
                    "tables, time and peak memory per frame of a checkpoint on a split with labels "
                    "(val; the test split has none). Labels keep their resolution: predictions are "
                    "resized to them. --save-labelids also writes the predictions in the official "
                    "benchmark format (on the test split, only that).")
    parser.add_argument("-m", "--model", help="expected model name (checked against the checkpoint)")
    parser.add_argument("--checkpoint", required=True, help="a last.pt or best.pt")
    parser.add_argument("--data", help="prepared or official root (default: the checkpoint's)")
    parser.add_argument("--split", default="val", choices=layout.SPLITS)
    _add_inference_arguments(
        parser, size_help="whole: resize frames to this size (default: the checkpoint's validation "
                          "size); slide: resize frames to this before sliding (default: full "
                          "resolution). Labels are never resized")
    parser.add_argument("--save-labelids", metavar="DIR",
                        help="also write {city}_{seq}_{frame}_gtFine_labelIds.png predictions "
                             "(official label ids, label resolution) into this new or empty folder")
    parser.add_argument("--batch-size", type=_whole(1), default=4)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=_whole(0), default=0)
    parser.set_defaults(run=_run_test)


def _add_inference_arguments(parser: argparse.ArgumentParser, size_help: str) -> None:
    """How the model sees a frame (``segkit.inference.Inference``), shared by test and predict."""
    from segkit.inference import DEFAULT_SCALES, MODES, TTA

    parser.add_argument("--mode", choices=MODES, default="whole",
                        help="whole: the whole frame in one pass (fast); slide: windows over the "
                             "frame at full resolution, overlaps averaged (the official protocol) "
                             "(default: %(default)s)")
    parser.add_argument("--size", type=_size, metavar="WxH", help=size_help)
    parser.add_argument("--window", type=_size, metavar="WxH",
                        help="slide: window size (default: the training crop size)")
    parser.add_argument("--stride", type=_size, metavar="WxH",
                        help="slide: step between windows (default: 2/3 of the window)")
    parser.add_argument("--tta", type=_choices(TTA), default=[], metavar="flip,ms",
                        help="test-time augmentation: flip (also the mirrored frame), ms "
                             "(multi-scale) or both; probabilities are averaged")
    parser.add_argument("--scales", type=_floats, metavar="S,S,…",
                        help="with --tta ms: frame scale factors (default: "
                             f"{','.join(map(str, DEFAULT_SCALES))}; the DeepLab papers use "
                             "0.5,0.75,1.0,1.25,1.5,1.75)")


def _choices(allowed: Sequence[str]):
    """An argparse type for a comma-separated list of ``allowed`` words."""
    def parse(text: str) -> list[str]:
        words = [word for word in text.split(",") if word]
        unknown = [word for word in words if word not in allowed]
        if unknown or not words:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of "
                                             f"{', '.join(allowed)}, got {text!r}")
        return words
    return parse


def _floats(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas (e.g. 0.75,1,1.25), "
                                         f"got {text!r}") from None


def _inference_options(args) -> dict:
    return {"mode": args.mode, "size": args.size, "window": args.window, "stride": args.stride,
            "tta": args.tta, "scales": args.scales}


def _run_test(args) -> int:
    from segkit.training import test

    test(args.checkpoint, model=args.model, data=args.data, split=args.split,
         save_labelids=args.save_labelids, batch_size=args.batch_size, device=args.device,
         num_workers=args.workers, **_inference_options(args))
    return 0


def _add_predict(commands) -> None:
    parser = commands.add_parser(
        "predict", help="segment your own images with a checkpoint",
        description="Segment image files (PNG, JPEG, … of any size; greyscale and RGBA are "
                    "converted) or folders of them, searched recursively. Writes three PNGs per "
                    "image into --out, at the image's size: NAME_color.png (class colours), "
                    "NAME_overlay.png (colours over the image) and NAME_trainIds.png (class "
                    "indices). Unreadable files are named and skipped, and the exit status is 1.")
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER")
    parser.add_argument("-m", "--model",
                        help="expected model name (default: the one the checkpoint records)")
    parser.add_argument("--checkpoint", required=True, help="a last.pt or best.pt")
    parser.add_argument("--out", required=True, help="output folder (new, empty or an earlier run)")
    _add_inference_arguments(
        parser, size_help="whole: fit each image inside this size, keeping its aspect ratio "
                          "(default: the checkpoint's validation size); slide: likewise before "
                          "sliding (default: the image's own size)")
    parser.add_argument("--alpha", type=_fraction, default=0.5,
                        help="opacity of the class colours in the overlay (default: %(default)s)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=_run_predict)


def _run_predict(args) -> int:
    from segkit.checkpoints import model_from_checkpoint
    from segkit.config import TrainConfig
    from segkit.inference import OUTPUT_SUFFIXES, Inference, predict_files
    from segkit.runtime import resolve_device

    net, saved = model_from_checkpoint(args.checkpoint, expected=args.model)
    config = TrainConfig.from_dict(saved["config"])
    inference = Inference.for_checkpoint(config, keep_ratio=True, **_inference_options(args))
    device = resolve_device(args.device)
    report = predict_files(net.to(device), args.inputs, args.out, inference=inference,
                           scheme=config.label_scheme, alpha=args.alpha, device=device,
                           progress=not args.quiet,
                           options={"checkpoint": str(args.checkpoint), "model": saved["model_name"]})
    print(f"{saved['model_name']} ({inference.describe()}): {len(report.written)} images segmented "
          f"into {args.out} (NAME{', NAME'.join(OUTPUT_SUFFIXES.values())})")
    for _path, reason in report.failed:
        print(f"segkit predict: skipped {reason}", file=sys.stderr)
    if report.failed:
        print(f"segkit predict: {len(report.failed)} of {len(report.failed) + len(report.written)} "
              "inputs could not be read", file=sys.stderr)
    return 1 if report.failed else 0


def _add_export(commands) -> None:
    parser = commands.add_parser(
        "export", help="export a checkpoint to ONNX, checked against PyTorch",
        description="Write the checkpoint's model as ONNX (input 'image' (N, 3, H, W) normalised "
                    "with the ImageNet mean and std, output 'logits' (N, C, H, W); batch, height "
                    "and width dynamic), then run it with ONNX Runtime against PyTorch on random "
                    "inputs: the exit status is 1 if fewer than 99.9 %% of the argmax classes "
                    "agree. Needs the optional packages: pip install 'segkit[export]'.")
    parser.add_argument("-m", "--model",
                        help="expected model name (default: the one the checkpoint records)")
    parser.add_argument("--checkpoint", required=True, help="a last.pt or best.pt")
    parser.add_argument("--out", required=True, help="the .onnx file to write")
    parser.add_argument("--size", type=_size, metavar="WxH",
                        help="example input size (default: the checkpoint's validation size)")
    parser.add_argument("--opset", type=int, help="ONNX opset version (default: the exporter's)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.set_defaults(run=_run_export)


def _run_export(args) -> int:
    from segkit.checkpoints import model_from_checkpoint
    from segkit.config import TrainConfig
    from segkit.export import EXTRA, check_parity, export_onnx, missing_packages

    net, saved = model_from_checkpoint(args.checkpoint, expected=args.model)
    config = TrainConfig.from_dict(saved["config"])
    size = args.size or config.val_size or config.size
    path = export_onnx(net, args.out, size=size, opset=args.opset, overwrite=args.overwrite,
                       metadata={"segkit_model": saved["model_name"],
                                 "segkit_options": json.dumps(saved["model_options"]),
                                 "label_scheme": config.label_scheme})
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MB): {saved['model_name']}, input "
          "'image' (N, 3, H, W) float normalised with the ImageNet mean and std, output 'logits' "
          "(N, C, H, W); batch, height and width dynamic")
    if missing_packages("onnxruntime"):
        print(f"parity not checked: onnxruntime is not installed ({EXTRA})")
        return 0
    results = check_parity(net, path, size=size)
    for result in results:
        print(f"parity {result}")
    if not all(result.ok for result in results):
        print("segkit export: the ONNX model disagrees with PyTorch (argmax agreement below "
              "99.9 %)", file=sys.stderr)
        return 1
    return 0


def _add_figures(commands) -> None:
    parser = commands.add_parser(
        "figures", help="regenerate the README figures",
        description="Write the README's figures from the profile's data and, where they exist, "
                    "the course runs of notebooks 04-06.")
    parser.add_argument("--out", default="pics", help="output folder (default: %(default)s)")
    parser.add_argument("--profile", help="ci | cpu | gpu (default: $SEGKIT_PROFILE or cpu)")
    parser.set_defaults(run=_run_figures)


def _run_figures(args) -> int:
    from segkit.course import setup, write_figures

    for path in write_figures(setup(args.profile), args.out):
        print(path)
    return 0


_RESUMABLE = "the frames written are kept: run the same command again to continue"
#: How to go on after Ctrl-C, where a command does not say it itself (``segkit train`` does).
AFTER_INTERRUPT = {"synth": _RESUMABLE, "prepare": _RESUMABLE}


def build_parser() -> argparse.ArgumentParser:
    """The ``segkit`` argument parser with all sub-commands."""
    parser = argparse.ArgumentParser(prog="segkit", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_synth, _add_prepare, _add_train, _add_test, _add_predict, _add_export,
                _add_plan, _add_bench, _add_figures):
        add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; bad input ends with a one-line reason and exit status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from segkit.models.deeplabv3plus import PretrainedWeightsUnavailable

    try:
        return args.run(args)
    except (DataError, KeyError, ValueError, PretrainedWeightsUnavailable, OSError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        if isinstance(error, PretrainedWeightsUnavailable):
            message = (f"{message} On the command line: --pretrained-backbone FILE, or "
                       "--allow-random-init to go on from random weights.")
        if isinstance(error, OSError):  # the machine's: permissions, a full disk, a path in the way
            message = describe_os_error(error)
        print(f"segkit {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as error:
        then = str(error) or AFTER_INTERRUPT.get(
            args.command, "nothing was left half-written: run the same command again")
        print(f"segkit {args.command}: interrupted (Ctrl-C); {then}", file=sys.stderr)
        return 130  # the shells' status for a command ended by SIGINT
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))
        return 2
