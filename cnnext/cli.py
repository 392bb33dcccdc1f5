"""The ``cnnext`` command (also ``python -m cnnext``): ``train``, ``bench``, ``tune``, ``info``,
``convert``.

Exit status: 0 on success, 2 for a usage error (reported by argparse), 1 for
a runtime error, reported in one line on stderr (with the traceback only
under ``--debug``), 130 when interrupted.
"""

import argparse
import functools
import itertools
import os
import sys
import time

import numpy as np

from . import (
    __version__,
    _backup,
    _validation,
    datasets,
    get_num_threads,
    models,
    optim,
    set_num_threads,
    show_config,
)
from ._checkpoint import check_destination
from .datasets import _home, _mnist, _sample

DATASET_CHOICES = ("mnist", "fashion-mnist", "sample")
# Each optimiser's own default learning rate: the notebook's for SGD, Adam's usual one.
DEFAULT_LR = {"sgd": 0.005, "adam": 0.001}
# What --model names, in words a newcomer can follow.
MODEL_WORDS = {
    "seed": "seed network (the notebook's Conv 8x3x3 -> MaxPool 2 -> Dense 10)",
    "lenet5": "LeNet-5",
}


def main(argv=None, prog="cnnext"):
    """main(argv=None, prog="cnnext")

    Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit status.
    """
    parser = build_parser(prog)
    argv = sys.argv[1:] if argv is None else list(argv)
    # The benchmark suite parses its own options (see run_bench): what follows
    # the command name `bench` is passed on untouched.
    n_debug = len(list(itertools.takewhile(lambda arg: arg == "--debug", argv)))
    rest = []
    if argv[n_debug:n_debug + 1] == ["bench"]:
        argv, rest = argv[:n_debug + 1], argv[n_debug + 1:]
    args = parser.parse_args(argv)
    try:
        return args.handler(args, rest)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if getattr(args, "debug", False):
            raise
        message = " ".join(str(exc).split()) or "(no message)"
        print(f"{prog} {args.command}: error: {type(exc).__name__}: {message}", file=sys.stderr)
        return 1


def debug_option():
    """A parent parser adding --debug (a new one for each parser: parents share actions).

    The default is SUPPRESS so that --debug before the command name is not reset
    by the command's own parser.
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback of an error")
    return common


def build_parser(prog):
    parser = argparse.ArgumentParser(
        prog=prog, parents=[debug_option()],
        description="cnnext: small, fast convolutional networks on NumPy.",
    )
    parser.add_argument("--version", action="version", version=f"{prog} {__version__}")
    parser.set_defaults(prog=prog)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train", parents=[debug_option()],
        help="train a network on MNIST, Fashion-MNIST or the sample",
        description="Train a network and report its speed and test accuracy. The defaults "
        "reproduce the notebook cnnext grew from (a NumPy 'CNN from scratch' on MNIST): "
        "its network, called the seed network here, per-image SGD, lr 0.005, 3 epochs.",
    )
    train.add_argument("--dataset", choices=DATASET_CHOICES,
                       help="default: MNIST when it is cached or can be downloaded, "
                       "otherwise the sample bundled with cnnext")
    train.add_argument("--model", choices=("seed", "lenet5"), default="seed",
                       help="seed: the notebook's Conv(8, 3x3) -> MaxPool(2) -> Dense(10) "
                       "(default); lenet5: LeNet-5")
    train.add_argument("--epochs", type=positive_int, default=3, help="default: 3")
    train.add_argument("--batch-size", type=positive_int, default=1,
                       help="default: 1 (per-image SGD, as the notebook)")
    train.add_argument("--lr", type=positive_float,
                       help="learning rate (default: 0.005 for sgd, as the notebook; 0.001 "
                       "for adam)")
    train.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd",
                       help="default: sgd")
    train.add_argument("--threads", type=positive_int,
                       help="threads for the kernels (default: one per core)")
    train.add_argument("--seed", type=seed_int,
                       help="seed of the initial weights and the shuffling (default: drawn "
                       "at random and printed)")
    train.add_argument("--save", metavar="PATH", help="save the trained model to PATH (.npz)")
    train.add_argument("--limit", type=positive_int, metavar="N",
                       help="train on the first N training images only")
    train.add_argument("--plot", metavar="PATH",
                       help="draw the training curves (loss and accuracy per epoch) to PATH "
                       "(.png, .svg or .pdf; needs matplotlib)")
    train.add_argument("--backup-dir", metavar="DIR",
                       help="back training up in DIR (created if needed) at every epoch's end "
                       "and every --backup-seconds; if the run is killed, the same command "
                       "resumes it where the last backup left it; removed when training "
                       "completes")
    train.add_argument("--backup-seconds", type=positive_float, default=60.0, metavar="S",
                       help="seconds between backups within an epoch (default: 60)")
    train.add_argument("--backup-steps", type=positive_int, metavar="N",
                       help="also back up every N steps within an epoch")
    train.set_defaults(handler=run_train)

    bench = commands.add_parser(
        "bench", add_help=False, help="benchmark cnnext against PyTorch and NumPy "
        "(`cnnext bench --help` for its options)",
    )
    bench.set_defaults(handler=run_bench)

    tune = commands.add_parser(
        "tune", parents=[debug_option()],
        help="time the convolution algorithms of a network on this CPU and keep the fastest",
        description="Time every convolution algorithm the kernels have for each convolution "
        "of the network (forward and backward) on this CPU, one thread, and keep the fastest "
        "in the tuning cache, where every later run on this kind of CPU finds it. The first "
        "call of each shape does the same when CNNEXT_TUNE is 'on' (the default); 'cached' "
        "uses what is kept without timing, 'off' the built-in choices only.",
    )
    tune.add_argument("--model", choices=("seed", "lenet5"), default="seed",
                      help="default: seed")
    tune.add_argument("--batch-size", type=positive_int, default=64,
                      help="the batch size to tune for (each is its own shape; default: 64)")
    tune.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                      help="default: float32")
    tune.add_argument("--retune", action="store_true",
                      help="time again the shapes already kept, replacing them")
    tune.set_defaults(handler=run_tune)

    info = commands.add_parser(
        "info", parents=[debug_option()], help="show the build configuration and the data cache",
        description="Print cnnext's build and runtime configuration, where datasets are "
        "kept and what is there.",
    )
    info.set_defaults(handler=run_info)

    convert = commands.add_parser(
        "convert", parents=[debug_option()],
        help="convert a model between ONNX (.onnx) and cnnext (.npz)",
        description="Convert MODEL.onnx to a cnnext model file (.npz), or a cnnext model "
        "file to ONNX. Needs the onnx package (pip install \"cnnext[onnx]\"); running the "
        "converted model needs only cnnext.",
    )
    convert.add_argument("source", metavar="SOURCE", help="MODEL.onnx or MODEL.npz")
    convert.add_argument("destination", metavar="DEST", help="OUT.npz or OUT.onnx")
    convert.add_argument("--input-shape", type=shape_tuple, metavar="C,H,W",
                         help="one example's shape, where the model leaves it open (e.g. "
                         "1,28,28)")
    convert.add_argument("--output", choices=("logits", "probabilities", "log_probabilities"),
                         help="to ONNX: what the ONNX model returns (default: the raw outputs, "
                         "or the softmax the model was imported with)")
    convert.add_argument("--opset", type=positive_int,
                         help="to ONNX: the operator set (default: 17, or what the model "
                         "needs)")
    convert.set_defaults(handler=run_convert, parser=convert)
    return parser


def shape_tuple(text):
    """1,28,28 or 1x28x28 as (1, 28, 28); ValueError (argparse reports it) otherwise."""
    parts = text.strip().replace("x", ",").split(",")
    if not all(part.strip().isdigit() for part in parts):
        raise ValueError(text)
    try:
        return tuple(_validation.positive_int("cnnext", "--input-shape", int(part))
                     for part in parts)
    except ValueError:
        raise ValueError(text) from None


shape_tuple.__name__ = "shape"  # argparse's message: "invalid shape value: '1,0,28'"


def option_type(label, parse, rule, expected):
    """An argparse ``type=`` that parses the text and applies a rule of
    cnnext._validation: text that does not parse is argparse's "invalid <label>
    value", a value the rule refuses is "expected <expected>, got <text>"."""
    def convert(text):
        value = parse(text)
        try:
            return rule("cnnext", "the value", value)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}") from None

    # argparse names the type in its message ("invalid positive integer value: 'x'").
    convert.__name__ = label
    return convert


positive_int = option_type("positive integer", int, _validation.positive_int,
                           "an integer >= 1")
# The range of the seeds the command draws itself, so a run is repeated with the seed it printed.
seed_int = option_type("seed", int, functools.partial(_validation.int_at_least, minimum=0,
                                                      below=2**32),
                       "an integer in [0, 2**32)")
positive_float = option_type("positive number", float, _validation.positive_number,
                             "a finite number > 0")


# ------------------------------------------------------------------- train


def run_train(args, rest):
    if args.plot is not None:
        check_plotting()
    if args.lr is None:
        args.lr = DEFAULT_LR[args.optimizer]
    if args.threads is not None:
        warn_if_oversubscribed(args.threads)
        set_num_threads(args.threads)
    # Where results go is checked before the data is loaded and the model
    # trained: a destination that cannot be written fails now, not after.
    for option, path in (("--save", args.save), ("--plot", args.plot)):
        if path is not None:
            check_destination(option, path)
    resumed = None
    if args.backup_dir is not None:
        _backup.check_directory("--backup-dir", args.backup_dir)
        resumed = _backup.peek(args.backup_dir)
    (x_train, y_train), (x_test, y_test), source = load_data(args.dataset)
    if args.limit is not None:
        x_train, y_train = x_train[: args.limit], y_train[: args.limit]
    print(f"data: {source}: {len(x_train):,} training and {len(x_test):,} test images")
    seed = args.seed
    recorded = None if resumed is None else resumed["fingerprint"]["arguments"].get("seed")
    if seed is None and type(recorded) is int:
        seed = recorded  # the seed the interrupted run drew: resuming needs the same
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % 2**32)
    if resumed is not None:
        print(f"resuming: the backup in {args.backup_dir} (epoch {resumed['epoch'] + 1}, "
              f"{plural(resumed['step'], 'step')} into it)")
    model, optimizer = build_model(args, seed)
    print(f"training: {MODEL_WORDS[args.model]}, {plural(args.epochs, 'epoch')}, batch size "
          f"{args.batch_size}, {args.optimizer} lr {args.lr:g}, "
          f"{plural(get_num_threads(), 'thread')}, seed {seed}")
    # fit's progress bar (on stderr) ends each epoch with its loss, accuracy and
    # images per second: live on a terminal, one line per epoch in a log.
    sys.stdout.flush()
    start = time.perf_counter()
    history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                        optimizer=optimizer, seed=seed, progress=True,
                        backup_dir=args.backup_dir, backup_seconds=args.backup_seconds,
                        backup_steps=args.backup_steps)
    test_loss, test_accuracy = model.evaluate(x_test, y_test)
    print(f"test accuracy: {test_accuracy:.2%} (loss {test_loss:.4f}, {len(x_test):,} images)")
    print(f"total time: {time.perf_counter() - start:.1f} s")
    if args.save is not None:
        model.save(args.save)
        print(f"saved: {args.save}")
    if args.plot is not None:
        history.plot(args.plot, title=f"{MODEL_WORDS[args.model]} on {source.split(' (')[0]}")
        print(f"training curves: {args.plot}")
    return 0


def check_plotting():
    """Refuse --plot before training rather than after it, when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise RuntimeError("--plot needs matplotlib, which is not installed "
                           "(pip install matplotlib)") from None


def available_cores():
    """The cores this process may run on (its CPU affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def warn_if_oversubscribed(threads):
    """One line on stderr when asked for more threads than cores (it slows the kernels)."""
    cores = available_cores()
    if threads > cores:
        print(f"warning: --threads {threads} is more than the {plural(cores, 'core')} this "
              f"process can use; the extra threads wait for a core and slow training down",
              file=sys.stderr)


def load_data(name):
    """((x_train, y_train), (x_test, y_test), one-line description) of --dataset ``name``."""
    if name == "sample":
        return (*datasets.load_sample(), "the MNIST sample bundled with cnnext")
    if name == "fashion-mnist":
        return (*datasets.load_fashion_mnist(), "Fashion-MNIST")
    try:
        return (*datasets.load_mnist(), "MNIST")
    except datasets.DownloadError:
        if name == "mnist":
            raise
    except FileNotFoundError as exc:  # no data home at all
        if name == "mnist":
            raise
        return (*datasets.load_sample(), f"the MNIST sample bundled with cnnext ({exc})")
    directory = datasets.get_data_home() / "mnist"
    return (*datasets.load_sample(), f"the MNIST sample bundled with cnnext (MNIST is not in "
            f"{directory} and could not be downloaded; --dataset mnist says why)")


def build_model(args, seed):
    model = {"seed": models.seed_cnn, "lenet5": models.lenet5}[args.model](seed=seed)
    optimizer = {"sgd": optim.SGD, "adam": optim.Adam}[args.optimizer](lr=args.lr)
    return model, optimizer


def plural(count, noun):
    return f"{count} {noun}{'' if count == 1 else 's'}"


# ------------------------------------------------------------------- bench


def run_bench(args, rest):
    # Imported on demand: the suite is optional and heavier than the rest.
    try:
        from ._bench import add_arguments, run
    except ImportError as exc:
        raise RuntimeError(
            f"the benchmark suite is not available in this installation ({exc})"
        ) from None
    parser = argparse.ArgumentParser(
        prog=f"{args.prog} bench", parents=[debug_option()],
        description="Time cnnext's kernels and training steps side by side with PyTorch "
        "and a NumPy baseline.",
    )
    add_arguments(parser)
    bench_args = parser.parse_args(rest)
    if getattr(bench_args, "debug", False):
        args.debug = True
    return run(bench_args)


# -------------------------------------------------------------------- info


def run_tune(args, rest):
    from . import _tuning

    build = {"seed": models.seed_cnn, "lenet5": models.lenet5}[args.model]
    model = build(dtype=args.dtype, seed=0)
    shape = (args.batch_size, *model.input_shape)
    print(f"tuning {MODEL_WORDS[args.model]} for batches of {shape} {args.dtype}; "
          f"mode {_tuning.mode()} ({_tuning.ENV_MODE}), cache {_tuning.cache_dir()}")
    for found in _tuning.tune(model, shape, args.dtype, retune=args.retune):
        geometry = (f"x {found['x']} w {found['w']} stride {found['stride']} "
                    f"padding {found['padding']} dilation {found['dilation']}")
        chosen = found["choices"]
        words = (f"forward {_words(chosen['forward'], chosen['forward_vectors'])}, "
                 f"input gradient {chosen['data']}"
                 + (f" ({_words(chosen['data_forward'], chosen['data_vectors'])})"
                    if chosen["data"] == "conv" else "")
                 + f", weight gradient {chosen['filter']}")
        print(f"  {geometry}: {words} [{found['source']}]")
    return 0


def _words(algorithm, vectors):
    return f"{algorithm} x{vectors}" if algorithm == "filters" else algorithm


def run_info(args, rest):
    show_config()
    print("data:")
    for line in data_lines():
        print(f"  {line}")
    return 0


def data_lines():
    try:
        home = _home.get_data_home()
    except FileNotFoundError as exc:
        return [f"{'home':<18} none: {exc}"]
    origin = {"default": "the user cache directory; set CNNEXT_DATA to change it",
              "CNNEXT_DATA": "from CNNEXT_DATA"}[_home.data_home_origin()]
    lines = [f"{'home':<18} {home} ({origin})"]
    for dataset in _mnist.DATASETS.values():
        found = {f.name: _mnist.find_file(dataset, f) for f in dataset.files.values()}
        present = [path for path in found.values() if path is not None]
        where = sorted({str(path.parent) for path in present})
        size = sum(path.stat().st_size for path in present)
        state = (f"{len(present)}/{len(found)} files in {', '.join(where)} ({mib(size)})"
                 if present else "not downloaded")
        lines.append(f"{dataset.key:<18} {state}")
    sample = _sample.SAMPLE_PATH
    lines.append(f"{'sample':<18} bundled, {sample} ({mib(sample.stat().st_size)})")
    return lines


def mib(nbytes):
    return f"{nbytes / 2**20:.1f} MiB"


# ----------------------------------------------------------------- convert


def run_convert(args, rest):
    from .interop import _convert

    try:
        lines = _convert.convert(args.source, args.destination, input_shape=args.input_shape,
                                 output=args.output, opset=args.opset)
    except _convert.UsageError as exc:
        args.parser.error(str(exc))
    for line in lines:
        print(line)
    return 0
