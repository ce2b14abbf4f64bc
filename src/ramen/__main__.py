"""`python -m ramen`: datasets, training, evaluation and search from the command line."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # ramen never downloads models
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

DATA_HELP = ("a dataset: 'synthetic' (the built-in default, size small), 'synthetic:tiny|small|medium|paper', "
             "'wikispeedia:SNAP_DIR', 'foldoc' or 'foldoc:PATH' (the Free On-line Dictionary of Computing; "
             "default /usr/share/dictd/foldoc.dict.dz from `apt-get install dict-foldoc`), a directory in "
             "the Extreme Classification Repository layout, or a .npz dataset file (`ramen data synth --out X.npz`)")
BUILT_IN = ("synthetic", "wikispeedia", "foldoc")  # --data names that are not paths (before their ':')


def load_dataset(spec: str, where: str = "--data", blank: str = "leave it out for the built-in synthetic benchmark"):
    """The Dataset named by a --data spec (see DATA_HELP); errors name `where` the spec came from (a
    flag, a positional, a run's run.json) and say `blank` of an empty one."""
    from ramen import datasets as data

    if not spec.strip():
        raise SystemExit(f"{where}: empty ({blank})")
    if spec.startswith("wikispeedia:") and not spec.partition(":")[2].strip():  # it read the current directory
        raise SystemExit(f"{where} {spec!r}: nothing after the ':' (expected wikispeedia:SNAP_DIR)")
    if spec == "synthetic" or spec.startswith("synthetic:"):
        from ramen.datasets.synthetic import PRESETS, synthetic

        size = spec.partition(":")[2] or "small"
        if size not in PRESETS:  # synthetic() would name its own argument, size, which no flag is called
            raise SystemExit(f"{where} {spec!r}: unknown synthetic size {size!r}; choose one of "
                             f"{', '.join('synthetic:' + name for name in PRESETS)}")
        return synthetic(size)
    if spec.startswith("wikispeedia:"):
        return data.wikispeedia(spec.partition(":")[2])
    if spec == "foldoc" or spec.startswith("foldoc:"):
        try:
            return data.foldoc(spec.partition(":")[2] or None)
        except FileNotFoundError as exc:
            raise SystemExit(f"{where} {spec!r}: {exc}") from None
    path = Path(spec)
    if not path.is_dir() and not (path.is_file() and path.suffix == ".npz"):
        raise SystemExit(f"{where} {spec!r}: no such directory or .npz file (expected {DATA_HELP})")
    return data.load_xc(path)


def absolute_spec(spec: str) -> str:
    """A --data spec with its path made absolute, so that run.json names the data from any directory."""
    name, sep, rest = spec.partition(":")
    if not spec.strip():
        return spec  # load_dataset names the mistake
    if name in BUILT_IN and (sep or spec == name):
        return spec if name == "synthetic" or not rest.strip() else f"{name}:{os.path.abspath(rest)}"
    return os.path.abspath(spec)


# ---------------------------------------------------------------- train flags from TrainConfig


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One --flag per TrainConfig field (defaults suppressed so a config file can set them)."""
    from ramen.config import RETIRED, TrainConfig

    group = parser.add_argument_group("training settings (TrainConfig fields; see the README)")
    helps = TrainConfig.field_help()
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        text = f"{helps.get(f.name, '')} (default: {getattr(defaults, f.name)})".strip()
        flag = "--" + f.name.replace("_", "-")
        kind = str(f.type)
        base = kind.replace(" | None", "").strip()
        if f.name in ("encoder",):
            continue  # a top-level option
        if base == "bool":
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                               help=text)
        elif base.startswith("list["):
            item = int if "int" in base else str
            group.add_argument(flag, dest=f.name, nargs="*", type=item, default=argparse.SUPPRESS, metavar="X",
                               help=text)
        elif base.startswith("dict["):
            group.add_argument(flag, dest=f.name, nargs="*", default=argparse.SUPPRESS, metavar="SET=LX,LZ",
                               help=text + "; e.g. hyperlink=1,0.5")
        else:
            caster = {"int": int, "float": float, "str": str}[base]
            optional = "None" in kind

            def parse(text: str, caster=caster, optional=optional) -> Any:
                return None if optional and text.lower() == "none" else caster(text)

            group.add_argument(flag, dest=f.name, type=parse, default=argparse.SUPPRESS, metavar=base.upper(),
                               help=text)
    for name in RETIRED:  # hidden: given, they stop with the commit that still runs them
        group.add_argument("--" + name.replace("_", "-"), dest=f"retired:{name}", nargs="?", const=True,
                           default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _config_from_args(args: argparse.Namespace):
    from ramen.config import TrainConfig

    try:
        return TrainConfig.from_dict(_given_settings(args))
    except ValueError as exc:
        raise SystemExit(_with_flag(str(exc))) from None


def _with_flag(message: str) -> str:
    """A TrainConfig error with the flag of the field it starts with, as the command line spells it:
    'TrainConfig: epochs must be >= 1' said nothing of --epochs."""
    from ramen.config import TrainConfig

    name = message.removeprefix("TrainConfig: ").split(" ", 1)[0]
    if not message.startswith("TrainConfig: ") or name not in {f.name for f in dataclasses.fields(TrainConfig)}:
        return message
    return message.replace(name, f"{name} (--{name.replace('_', '-')})", 1)


def _given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields this command line sets: its recipe, then its config file, then its flags."""
    from ramen.config import TrainConfig, without_retired
    from ramen.recipes import resolve

    values: dict[str, Any] = {}
    if args.config:
        try:
            values.update(TrainConfig.read_fields(args.config))
        except (OSError, ValueError) as exc:
            raise SystemExit(f"--config: {exc}") from None
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    for name in names - {"encoder"}:  # --encoder is a top-level option
        if hasattr(args, name):
            values[name] = getattr(args, name)
    if isinstance(values.get("lambdas"), list):
        parsed = {}
        for item in values["lambdas"]:
            key, _, pair = item.partition("=")
            try:
                lx, lz = (float(v) for v in pair.split(","))
            except ValueError:
                raise SystemExit(f"--lambdas {item!r}: expected SET=LAMBDA_X,LAMBDA_Z") from None
            parsed[key] = [lx, lz]
        values["lambdas"] = parsed
    if args.encoder:
        values["encoder"] = args.encoder
    retired = {k.removeprefix("retired:"): v for k, v in vars(args).items() if k.startswith("retired:")}
    try:
        without_retired(retired, "--")
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    return resolve(args.recipe, values) if args.recipe else values


def _read_run_file(run_file: Path, what: str) -> dict:
    """run.json of a run directory: a JSON table with the --data spec it trained on (and its config)."""
    try:
        run = json.loads(run_file.read_text(encoding="utf-8"))
        if not isinstance(run, dict) or not isinstance(run.get("data"), str):
            raise ValueError("no 'data' entry naming the dataset")
    except (OSError, ValueError, RecursionError) as exc:
        raise SystemExit(f"{what}: {run_file} is not a readable run record ({exc})") from None
    return run


def _write_run_file(run_file: Path, content: dict | bytes) -> None:
    """run.json written under a temporary name, then renamed: a reader finds the old record or the new."""
    from ramen.files import replace_file

    replace_file(run_file, content if isinstance(content, bytes) else json.dumps(content, indent=1).encode())


def _record_data(run_file: Path, data_spec: str) -> None:
    """run.json naming `data_spec` as the run's data (a resume found it moved there)."""
    run = _read_run_file(run_file, "--resume")
    if run["data"] != data_spec:
        _write_run_file(run_file, {**run, "data": data_spec})


def _resumed_run(args: argparse.Namespace, run_file: Path):
    """(data spec, TrainConfig) of the run to resume: its own, from run.json; settings given on the
    command line must agree with them (a run cannot change its settings halfway)."""
    from ramen.config import TrainConfig

    if not run_file.is_file():
        raise SystemExit(f"--resume: {run_file} not found: {run_file.parent} holds no run to continue")
    run = _read_run_file(run_file, "--resume")
    try:
        saved = TrainConfig.from_dict(run["config"])
    except (ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"--resume: {run_file} is not a readable run record ({exc})") from None
    data_spec = run["data"]
    if args.data and absolute_spec(args.data) != absolute_spec(data_spec):  # the data moved: the checkpoint's
        data_spec = absolute_spec(args.data)  # fingerprint of the data it trained on says whether it is the same
    given = _given_settings(args)
    try:
        given_cfg = TrainConfig.from_dict({**saved.to_dict(), **given}).to_dict()
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    changed = sorted(k for k in given if k != "device" and given_cfg[k] != saved.to_dict()[k])
    if changed:
        raise SystemExit("--resume continues a run with its own settings; these differ from them: "
                         + ", ".join(f"{k} (run: {saved.to_dict()[k]!r}, given: {given_cfg[k]!r})" for k in changed))
    return data_spec, TrainConfig.from_dict(given_cfg)


# ---------------------------------------------------------------- commands


def cmd_data_describe(args: argparse.Namespace) -> int:
    from ramen.datasets import describe

    ds = load_dataset(args.data, "data describe: DATA", "name a dataset")
    stats = describe(ds)
    print(stats)
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    from ramen.datasets import save_xc
    from ramen.datasets.synthetic import synthetic

    ds = synthetic(args.size, seed=args.seed)
    save_xc(ds, args.out, overwrite=args.overwrite)
    print(f"wrote the synthetic dataset (size {args.size}, seed {args.seed}) to {args.out}")
    return 0


def cmd_data_wikispeedia(args: argparse.Namespace) -> int:
    from ramen.datasets import save_xc, wikispeedia

    ds = wikispeedia(args.src, seed=args.seed)
    save_xc(ds, args.out, overwrite=args.overwrite)
    print(f"wrote the Wikispeedia task to {args.out}")
    return 0


def cmd_data_foldoc(args: argparse.Namespace) -> int:
    from ramen.datasets import foldoc, save_xc

    try:
        ds = foldoc(args.src, seed=args.seed)
    except FileNotFoundError as exc:
        raise SystemExit(str(exc)) from None
    save_xc(ds, args.out, overwrite=args.overwrite)
    print(f"wrote the FOLDOC task to {args.out}")
    return 0


def _checked_selection_weights(weights: list[float] | None) -> list[float] | None:
    """--select-graph-weight's weights (its defaults where it is given bare), checked; None without it."""
    if weights is None:
        return None
    from ramen.selection import DEFAULT_WEIGHTS, checked_weights

    try:
        return checked_weights(weights or DEFAULT_WEIGHTS)
    except ValueError as exc:
        raise SystemExit(f"--select-graph-weight: {exc}") from None


def _resumed_weights(args: argparse.Namespace, run_file: Path) -> list[float] | None:
    """The weights a resumed run selects among: its own (None: a plain training), or those given
    again with --select-graph-weight, which may add candidates to a selection (run.json is updated)
    but cannot make a plain training one."""
    run = json.loads(run_file.read_text())
    weights, given = run.get("select_graph_weight"), _checked_selection_weights(args.select_graph_weight)
    if given is None or given == weights:
        return weights
    if weights is None:
        raise SystemExit(f"--resume continues the run in {run_file.parent} with its own settings: it trained "
                         "without --select-graph-weight, so it cannot become a selection; start one in another --out")
    if os.environ.get("RANK", "0") == "0":
        _write_run_file(run_file, {**run, "select_graph_weight": given})
    return given


# TrainConfig.idle_fields' "what reads it", in flags
_NEEDS_FLAGS = {"graph=True": "--graph (or --recipe light-graph)", "cluster_batching=True": "--cluster-batching",
                "aug_gt=True": "--aug-gt", "aug_gt=False": "--aug-gt off", "graph=True and aug_gt=False":
                "--graph and --aug-gt off", "graph=True or aug_gt=True": "--graph or --aug-gt"}


def _as_trained(cfg, selecting: bool):
    """The config whose settings the run reads: under --select-graph-weight, its graph candidates'."""
    from ramen.selection import weight_config

    return weight_config(cfg, 1.0) if selecting else cfg


def _refuse_idle_flags(args: argparse.Namespace, cfg, selecting: bool) -> None:
    """Settings this run would ignore are an error, not a silent no-op: graph settings on a plain run or
    under --aug-gt, the cluster schedule without --cluster-batching (as flags, or from --config or
    --recipe), and the graph's weight itself under --select-graph-weight (which sets it per candidate)."""
    from ramen.selection import WEIGHT_SETTINGS

    if selecting:
        given = ["--" + name.replace("_", "-") for name in WEIGHT_SETTINGS if hasattr(args, name)]
        if given:
            raise SystemExit(f"train: --select-graph-weight sets the graph's weight of each candidate; "
                             f"drop {', '.join(given)}")
    if selecting and cfg.aug_gt:
        raise SystemExit("train: --select-graph-weight chooses the regulariser's weight, and --aug-gt trains "
                         "without the regulariser (it adds labels through the graph); drop one")
    probe = _as_trained(cfg, selecting)
    idle = probe.idle_fields()
    given = ["--" + name.replace("_", "-") for name in idle if hasattr(args, name)
             and not (name == "graph" and not probe.graph)]  # --no-graph beside --aug-gt changes nothing
    if given:
        raise SystemExit(f"train: {probe.idle_refusal(given, _NEEDS_FLAGS.__getitem__, 'this run')}: change that, or drop "
                         f"{'it' if len(given) == 1 else 'them'}")
    settings = probe.idle_settings()
    if settings:
        one = len(settings) == 1
        where = "it comes" if one else "they come"
        raise SystemExit(f"train: {probe.idle_refusal(settings, _NEEDS_FLAGS.__getitem__, 'this run')} ({where} "
                         f"from --config or --recipe): change that, or leave {'it' if one else 'them'} at the default")


def _refuse_graph_without_anchors(dataset, cfg, selecting: bool) -> None:
    """--graph (or a selection's graph candidates) with no anchor set to regularise with, because the
    dataset has none or a bare --anchor-sets named none, trained the plain encoder without a word."""
    probe = _as_trained(cfg, selecting)
    if not probe.graph or probe.aug_gt:
        return
    needs = "--select-graph-weight" if selecting else "--graph"
    if not dataset.anchor_sets:
        raise SystemExit(f"train: {needs} regularises with the dataset's anchor sets, and {dataset.name!r} has "
                         "none (no <set>_trn_X_Y.txt files): it would train the plain encoder; drop " + needs)
    if probe.anchor_sets == []:
        raise SystemExit(f"train: --anchor-sets names no anchor set, so {needs} would train the plain encoder; name "
                         f"some of {sorted(dataset.anchor_sets)}, or leave --anchor-sets out for all of them")


def cmd_train(args: argparse.Namespace) -> int:
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun rank 0 alone prints and writes run.json
    if not args.out and not (args.print_config and not args.resume):
        raise SystemExit("train: --out is required (the run directory)")
    out = Path(args.out or ".")
    run_file = out / "run.json"
    if args.print_config:  # the settings it would train with (with --resume the run's own); nothing written
        if args.resume:
            cfg = _resumed_run(args, run_file)[1]
        else:
            cfg = _config_from_args(args)
            _refuse_idle_flags(args, cfg, selecting=_checked_selection_weights(args.select_graph_weight) is not None)
        if main_rank:
            print(json.dumps(cfg.to_dict(), indent=1))
        return 0
    from ramen.interrupts import remembering

    hint = {"device": getattr(args, "device", None) or "auto"}  # the run's device once known (torchrun's backend)
    with remembering(), _set_up_together(lambda: hint["device"]) as ready:  # no Ctrl-C lost before the set-up
        return _train_command(args, out, run_file, main_rank, hint, ready)


def _train_command(args: argparse.Namespace, out: Path, run_file: Path, main_rank: bool, hint: dict[str, str],
                   ready: Callable[[], None]) -> int:
    """cmd_train past --print-config: sets the run up (`hint` gets its device), calls `ready`, trains."""
    from ramen import distributed, run_dir
    from ramen.selection import PLAN_JSON
    from ramen.train import CHECKPOINT, NonFiniteLoss, train

    if args.resume and args.overwrite:
        raise SystemExit("train: --resume continues the run in --out, --overwrite starts it over: give one")
    if not args.resume:  # the command line is checked before the directory is made
        cfg = _config_from_args(args)
        data_spec = absolute_spec(args.data) if args.data is not None else "synthetic"
        weights = _checked_selection_weights(args.select_graph_weight)
        _refuse_idle_flags(args, cfg, selecting=weights is not None)
        _refuse_dataset_dir(out)
    reached = {"set up": args.resume or not main_rank}  # whether what `out` holds is this run's
    set_up = None
    try:
        # rank 0 holds the directory (another training there is an error) to the end inside the claim: a
        # command that failed to claim the directory (another training holds it) removes nothing, and the
        # removal happens under the lock
        made = main_rank and not args.resume and not out.exists()
        with run_dir.claimed(out, fresh=not args.resume, main=main_rank), \
                _undone_if_refused(out, made=made, fresh=main_rank and not args.resume):
            if args.resume:
                data_spec, cfg = _resumed_run(args, run_file)
                weights = _resumed_weights(args, run_file)
            else:
                _refuse_unfinished(out, args.overwrite)
                out.mkdir(parents=True, exist_ok=True)
            # a new run's run.json is written once it is set up, when the earlier run's model is gone: a
            # kill before leaves the earlier run's record beside its model, never the new one's
            if not args.resume and main_rank:
                set_up = functools.partial(_set_up_run, out, {"data": data_spec, "config": cfg.to_dict(),
                                                              "select_graph_weight": weights}, reached)
            dataset = load_dataset(data_spec) if not args.resume or args.data else load_dataset(
                data_spec, f"--resume: the data {run_file} names (the run's own; put it back, or give its new "
                "place with --data):", "give its new place with --data")
            if not args.resume:
                _refuse_graph_without_anchors(dataset, cfg, selecting=weights is not None)
            hint["device"] = cfg.device
            ready()  # under torchrun: every rank is set up, or every rank stops here
            if weights is None:
                train(dataset, cfg, out_dir=out, resume=args.resume, _on_set_up=set_up)
            else:
                _select(dataset, cfg, weights, out, args.resume, report=main_rank, on_set_up=set_up)
            if args.resume and main_rank:  # it went on with --data: the same data (its fingerprint said so), moved
                _record_data(run_file, data_spec)
    except NonFiniteLoss as exc:  # every rank stops at the same step
        distributed.close()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if not reached["set up"]:  # a checkpoint there is an earlier run's: --resume would continue that one
            print(f"\ninterrupted before the new run was set up: nothing to resume in {out}; run the same command "
                  "again to start over", file=sys.stderr)
        elif (out / CHECKPOINT).exists() or (out / PLAN_JSON).exists():  # a selection checkpoints in weight-<w>/
            print(f"\ninterrupted; continue with: python -m ramen train --out {_shell(out)} --resume",
                  file=sys.stderr)
        else:
            print(f"\ninterrupted before the first checkpoint: nothing to resume in {out}; run the same command "
                  "again to start over", file=sys.stderr)
        return 130
    distributed.close()  # every rank's collectives are over: rank 0 evaluates alone, the others are done
    if not main_rank:
        return 0
    try:  # the queries the run evaluated (eval_max_queries: a seeded subset, as a paper-scale run on a CPU needs)
        return _print_evaluation(out / "model", dataset, exact=True, k=cfg.eval_k, max_queries=cfg.eval_max_queries,
                                 seed=cfg.seed)
    except KeyboardInterrupt:  # the run is done and saved: only this printout was cut short
        print(f"\ninterrupted in the final evaluation: the trained model is saved in {out / 'model'}; "
              f"`python -m ramen evaluate {_shell(out)} --exact` evaluates it again", file=sys.stderr)
        return 130


@contextlib.contextmanager
def _set_up_together(device: Callable[[], str]) -> Iterator[Callable[[], None]]:
    """Under torchrun, the ranks' setup (each reads the command line's files, the run directory and the
    data on its own host) ends together: a rank that stops in it joins the process group to say so,
    and the others stop with it, where they used to wait for it until the timeout (across hosts;
    on one host torchrun ends them). Yields `ready`, which every rank calls once it is set up."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield lambda: None
        return
    from ramen import distributed

    joined = []

    def ready() -> None:
        joined.append(True)  # from here on a failure is the group's to report (a failed join is not retried)
        d = distributed.setup(device())
        if distributed.any_rank(False, d):
            raise SystemExit(f"train: rank {d.rank}: another rank stopped before training (its own output, on its "
                             "host, says why); this one stops with it")

    try:
        yield ready
    except (Exception, SystemExit):  # not Ctrl-C: torchrun stops every rank of a signal
        if not joined:  # stopped in setup: tell the others, which wait in ready()
            with contextlib.suppress(Exception):
                distributed.any_rank(True, distributed.setup(device()))
        raise


SETUP_NAMES = frozenset({"run.json", "cache", ".ramen.lock"})  # what a fresh run has written before it trains


def _only_setup(out: Path) -> bool:
    """Whether `out` holds only what a fresh run writes before it trains: SETUP_NAMES, and for a
    selection its plan and candidate directories holding only those."""
    from ramen.selection import PLAN_JSON

    return all(p.name in SETUP_NAMES or p.name == PLAN_JSON or _setup_candidate(p) for p in out.iterdir())


def _setup_candidate(p: Path) -> bool:
    """Whether `p` is a selection's candidate directory holding only what its setup wrote."""
    return p.name.startswith("weight-") and p.is_dir() and not p.is_symlink() and _only_setup(p)


@contextlib.contextmanager
def _undone_if_refused(out: Path, *, made: bool, fresh: bool) -> Iterator[None]:
    """Undoes a new (`fresh`) run's setup when it stops with an error before it trains (bad data, an
    encoder or device that is not there, anchor sets the data lacks): removes the run directory this
    command `made`; in one that existed, removes the setup files it added (run.json is written only at
    the set-up, after which the new run's log is there). Ctrl-C there does the same. Once the new run
    has written its log, a checkpoint or a candidate, what it wrote is its own and stays."""
    if not fresh or not out.is_dir():
        yield
        return
    had, had_cache = _stamps(out), (out / "cache").exists()
    try:
        yield
    except BaseException:  # an error, an error message (a missing --data: SystemExit), or Ctrl-C
        if made and out.is_dir() and not out.is_symlink() and _only_setup(out):
            shutil.rmtree(out, ignore_errors=True)
        elif not made and out.is_dir() and _stamps(out) == had:  # the new run wrote nothing of its own
            if not had_cache and (out / "cache").is_dir() and not any((out / "cache").iterdir()):
                (out / "cache").rmdir()
            for p in out.iterdir():  # a refused selection's first candidate, set up
                if p.name not in had and _setup_candidate(p):
                    shutil.rmtree(p, ignore_errors=True)
        raise


def _stamps(out: Path) -> dict[str, tuple[int, int, int]]:
    """(inode, size, mtime) of each entry of a run directory but the setup's own (run.json, the lock, the
    cache): what changes once a run writes its log, a checkpoint or a selection's candidates."""
    stamps = {}
    for p in out.iterdir():
        if p.name not in SETUP_NAMES and not _setup_candidate(p):
            st = p.lstat()
            stamps[p.name] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return stamps


def _shell(path: Path) -> str:
    """`path` as a shell command line needs it, for the commands errors suggest: a run directory with a
    space in its name was printed bare, so the suggested --resume named another directory."""
    return shlex.quote(str(path))


def _refuse_dataset_dir(out: Path) -> None:
    """--out naming a dataset directory (XC layout) mixed the run's files into it, and a later
    `data synth|wikispeedia|foldoc --out` there with --overwrite deleted the trained model with them."""
    from ramen.datasets.xc import _looks_like_dataset

    if out.is_dir() and _looks_like_dataset(out):
        raise SystemExit(f"train: --out {out} holds a dataset (trn_X_Y.txt or ramen.json): a run directory of its "
                         "own keeps the two apart; choose another --out")


def _refuse_unfinished(out: Path, overwrite: bool) -> None:
    """A new run would discard the unfinished one in `out` (its checkpoint is overwritten after an
    epoch): that needs --overwrite, so that a forgotten --resume does not lose hours of training."""
    from ramen.selection import PLAN_JSON
    from ramen.train import CHECKPOINT

    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun rank 0 decides (another rank could see the plan rank 0 just wrote)
    started = (out / CHECKPOINT).exists() or (out / PLAN_JSON).exists()
    if started and not (out / "model").is_dir() and not overwrite:
        raise SystemExit(f"{out} holds an unfinished run: continue it with `python -m ramen train --out "
                         f"{_shell(out)} --resume`, start it over with --overwrite, or choose another --out")


def _set_up_run(out: Path, record: dict[str, Any], reached: dict[str, bool]) -> None:
    """At a new run's set-up (rank 0): writes its run.json, and for a plain training removes what a
    selection there left beside the run it replaces (`evaluate` would read its choice as this run's)."""
    from ramen.selection import discard_selection

    reached["set up"] = True
    if record["select_graph_weight"] is None:
        discard_selection(out)
    _write_run_file(out / "run.json", record)


def _select(dataset, cfg, weights: list[float], out: Path, resume: bool, *, report: bool = True,
            on_set_up: Callable[[], None] | None = None) -> None:
    """--select-graph-weight: trains each weight, prints (if `report`) the held-out table and the choice."""
    from ramen.selection import select_graph_weight

    _, sel = select_graph_weight(dataset, cfg, weights=weights, out_dir=out, resume=resume, _on_set_up=on_set_up)
    if not report:
        return
    print(f"\ngraph weight chosen on {sel.held_out_queries:,} held-out training queries: {sel.chosen:g}"
          f"{' (the plain encoder)' if sel.chosen == 0 else ''}")
    for w in sel.weights:
        m = sel.held_out[f"{w:g}"]
        print(f"  weight {w:g}: held-out P@1 {100 * m['P@1']:.2f}, PSP@1 {100 * m['PSP@1']:.2f}")


def _print_evaluation(model_dir: Path, dataset, *, exact: bool, k: int, max_queries: int | None = None,
                      seed: int = 0) -> int:
    from ramen import metrics
    from ramen.model import Model

    if dataset.num_test == 0:
        print(f"\nthe dataset has no test queries: nothing to evaluate (the model is in {model_dir})")
        return 0
    k = min(k, len(dataset.label_texts))  # as evaluate takes it: no more predictions than labels
    model = Model.load(model_dir)
    saved = model.index
    result = model.evaluate(dataset, k=k, exact=exact, deciles=True, max_queries=max_queries, seed=seed)
    deciles = result.pop("deciles")
    search = "exact search" if exact else _index_used(saved, model.index)
    n = len(dataset.test_texts) if max_queries is None else min(max_queries, len(dataset.test_texts))
    subset = "" if n == len(dataset.test_texts) else f" (a seeded subset of {len(dataset.test_texts):,})"
    print(f"\ntest metrics (%), {n:,} queries{subset}, {search}:")
    print(metrics.format_table(result))
    print("\nby label-frequency decile (head to tail; P and PSP are each decile's contribution):")
    print(metrics.format_table(deciles, ks=sorted({1, k})))
    return 0


def _index_used(saved, used) -> str:
    """The approximate index an evaluation searched, for its table's header: the saved one only
    when it was used; else the one `Model.evaluate` built (untuned) and why the saved one was not."""
    if used is saved:
        return "the saved approximate label index"
    why = ("the model has none saved" if saved is None else "the saved one is exact" if saved.exact
           else "the saved one indexes the model's labels, not the dataset's")
    return f"an approximate label index built now, untuned ({why})"


def _model_and_run_file(path: Path) -> tuple[Path, Path | None]:
    """(model directory, its run's run.json or None) of a run directory or of the model directory
    inside it, as search and export take either (evaluate took only the run directory)."""
    if (path / "model").exists():
        return path / "model", path / "run.json"
    if (path / "model.json").is_file():  # a run's model/ (its run.json beside it), or a model saved alone
        return path, path.parent / "run.json" if path.name == "model" else None
    unfinished = (path / "checkpoint.safetensors").exists() or (path / "selection-plan.json").exists()
    raise SystemExit(f"{path}: no trained model (expected {path / 'model'})" + (
        f": its training has not finished; continue it with `python -m ramen train --out {_shell(path)} "
        "--resume`"
        if unfinished else ""))


def cmd_evaluate(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    model_dir, run_file = _model_and_run_file(run_dir)
    if args.data is not None:
        dataset = load_dataset(args.data, blank="leave it out for the data the run trained on")
    elif run_file is not None and run_file.exists():  # the run's own data, which may have moved since
        spec = _read_run_file(run_file, "evaluate")["data"]
        dataset = load_dataset(spec, f"evaluate: the data {run_file} names (pass --data where it moved):",
                               "pass --data")
    else:
        raise SystemExit(f"{run_dir} does not say which data it was trained on: pass --data")
    return _print_evaluation(model_dir, dataset, exact=args.exact, k=args.k)


def _load_model(run_dir: str):
    """The Model saved in RUN_DIR/model, or in RUN_DIR itself; where neither holds one, the error
    evaluate gives (search and export said 'not a saved ramen Model (no model.json)' of a missing path)."""
    from ramen.model import Model

    return Model.load(_model_and_run_file(Path(run_dir))[0])


def cmd_export(args: argparse.Namespace) -> int:
    out = _load_model(args.run_dir).export(args.out, tower=args.tower)
    print(f"wrote the {args.tower} tower as a sentence-transformers model to {out} "
          f"(SentenceTransformer({str(out)!r}).encode(texts))")
    return 0


def _checked_query(query: str) -> str:
    """The query as text: bytes that are not UTF-8 reach Python as lone surrogates, which the tokenizer
    rejected with a TypeError traceback."""
    try:
        query.encode("utf-8")
    except UnicodeEncodeError:
        shown = query.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise SystemExit(f"query '{shown}': not UTF-8 text (check the shell's or the terminal's encoding)") from None
    return query


def cmd_search(args: argparse.Namespace) -> int:
    if (args.query is None) == (args.queries is None):
        raise SystemExit("search: give a query or --queries FILE (a query a line; - for stdin), one of the two")
    if args.queries is not None:
        return _search_many(args)
    _checked_query(args.query)
    model = _load_model(args.run_dir)
    ids, scores = model.predict(args.query, k=args.k)  # a blank query gets no label (-1)
    if ids[0, 0] < 0 and model.encoder.blank(model.encoder.tokenize([args.query], progress=False))[0]:
        raise SystemExit(f"query {args.query!r}: empty, or only whitespace or characters the encoder's tokenizer "
                         "drops: nothing to search for")
    for rank, (i, s) in enumerate(zip(ids[0], scores[0]), 1):
        if i < 0:
            break
        print(f"{rank:>3}  {s:.4f}  {model.label_texts[i]}")
    return 0


SEARCH_CHUNK = 4096  # queries encoded and searched at a time by search --queries: memory stays flat


def _read_queries(source: str) -> list[str]:
    """The lines of `source` (a file, or - for stdin) as queries, each checked to be UTF-8: a bad one
    stops the command before any output, naming its line."""
    name = "stdin" if source == "-" else source
    try:
        raw = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        raise SystemExit(f"search: --queries {name}: {exc.strerror or exc}") from None
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the file's last line break
    queries = []
    for number, line in enumerate(lines, 1):
        try:
            queries.append(line.removesuffix(b"\r").decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise SystemExit(f"search: --queries {name}, line {number}: not UTF-8 text ({exc.reason} at byte "
                             f"{exc.start})") from None
    return queries


def _search_many(args: argparse.Namespace) -> int:
    """search --queries: one JSON line per query, in the input's order, so that output line i answers
    input line i. A blank query (empty, whitespace, or only characters the tokenizer drops) gets no
    labels, and the count of them is said on stderr."""
    from ramen.progress import bar as progress_bar

    queries = _read_queries(args.queries)
    model = _load_model(args.run_dir)
    blank = 0
    with progress_bar(total=len(queries), unit="query", disable=None, file=sys.stderr) as bar:
        for start in range(0, len(queries), SEARCH_CHUNK):
            chunk = queries[start:start + SEARCH_CHUNK]
            ids, scores = model.predict(chunk, k=args.k)
            lines = []
            for query, row, row_scores in zip(chunk, ids, scores):
                found = row >= 0
                blank += int(not found.any())
                lines.append(json.dumps({"query": query, "ids": row[found].tolist(),
                                         "scores": [round(float(x), 6) for x in row_scores[found]],
                                         "labels": [model.label_texts[i] for i in row[found]]}, ensure_ascii=False))
            print("\n".join(lines), flush=True)
            bar.update(len(chunk))
    if blank:
        print(f"search: {blank:,} of {len(queries):,} queries are blank (empty, whitespace or only characters the "
              "encoder's tokenizer drops): their lines have no labels", file=sys.stderr)
    return 0


def _k(text: str) -> int:
    """-k as argparse reads it: a positive integer, checked before a model is loaded or a split
    encoded (evaluate -k 0 encoded every test query before it said that k must be positive)."""
    try:
        k = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 1 <= k <= 2**31 - 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (at most 2147483647), got {k}")
    return k


OUT_HELP = "where to write the dataset: a directory in the XC repository layout, or a .npz file"
RUN_DIR_HELP = "a training run's directory (--out of train), or the model directory inside it"


def build_parser() -> argparse.ArgumentParser:
    from ramen.recipes import RECIPE_HELP, RECIPES

    parser = argparse.ArgumentParser(prog="python -m ramen", description="RAMEN: graph-regularised dual encoders "
                                     "for extreme classification.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="describe, generate or convert datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    p = data_sub.add_parser("describe", help="dataset statistics (the paper's Table 9)")
    p.add_argument("data", help=DATA_HELP.replace("'synthetic' (the built-in default, size small)",
                                                  "'synthetic' (size small)"))
    p.set_defaults(func=cmd_data_describe)
    p = data_sub.add_parser("synth", help="write the synthetic benchmark in the XC repository layout")
    p.add_argument("--out", required=True, help=OUT_HELP)
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    p.add_argument("--size", default="small", choices=["tiny", "small", "medium", "paper"],
                   help="the preset (README, Datasets; default: small)")
    p.add_argument("--seed", type=int, default=0, help="the generator's seed (default: 0)")
    p.set_defaults(func=cmd_data_synth)
    p = data_sub.add_parser("wikispeedia", help="build the Wikispeedia task from the SNAP files")
    p.add_argument("src", help="folder with articles.tsv(.gz), links.tsv(.gz), categories.tsv(.gz)")
    p.add_argument("--out", required=True, help=OUT_HELP)
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    p.add_argument("--seed", type=int, default=0, help="the seed of the 80/20 train/test split (default: 0)")
    p.set_defaults(func=cmd_data_wikispeedia)
    p = data_sub.add_parser("foldoc", help="build the FOLDOC task from the dictd dictionary (dict-foldoc)")
    p.add_argument("src", nargs="?", help="foldoc.dict.dz (foldoc.index beside it) or a folder holding both "
                   "(default /usr/share/dictd/foldoc.dict.dz)")
    p.add_argument("--out", required=True, help=OUT_HELP)
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    p.add_argument("--seed", type=int, default=0, help="the seed of the 80/20 train/test split (default: 0)")
    p.set_defaults(func=cmd_data_foldoc)

    p = sub.add_parser("train", help="train an encoder and print the test metrics")
    p.add_argument("--data", help=DATA_HELP + " (default: synthetic)")
    p.add_argument("--encoder", help="all-MiniLM-L6-v2 (default), distilbert-base-uncased, tiny, or a local path")
    p.add_argument("--out", help="run directory: log, checkpoints, model, curves (required unless --print-config)")
    p.add_argument("--print-config", action="store_true",
                   help="print the settings this command line gives (recipe, config file and flags, as JSON that "
                        "--config reads) and exit without training")
    p.add_argument("--recipe", choices=list(RECIPES), help="a named preset of settings (config file and flags "
                   "override it): " + "; ".join(f"{k}: {v}" for k, v in RECIPE_HELP.items()))
    p.add_argument("--config", help="a .toml or .json file of TrainConfig fields (flags override it)")
    p.add_argument("--resume", action="store_true",
                   help="continue RUN_DIR from its checkpoint, with the settings it was started with")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run in RUN_DIR even though it holds an unfinished one (discarding it)")
    p.add_argument("--select-graph-weight", nargs="*", type=float, default=None, metavar="W",
                   help="choose the graph's weight (lambda_x = lambda_z; 0: plain) on 10%% of the training "
                        "queries held out: train each weight on the rest, then the best on all "
                        "(len(W) + 1 runs; default W: 0 0.03 0.1)")
    _add_config_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="search the test split and print the metric table")
    p.add_argument("run_dir", help=RUN_DIR_HELP)
    p.add_argument("--data", help="dataset (default: the one the run trained on)")
    p.add_argument("--exact", action="store_true",
                   help="exact search (matmul) instead of the approximate label index that serving uses")
    p.add_argument("-k", type=_k, default=5, help="metrics at 1..k (at most the number of labels; default: 5)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("search", help="print the top labels for a query, or for each line of a file")
    p.add_argument("run_dir", help=RUN_DIR_HELP)
    p.add_argument("query", nargs="?", help="the query text (quote it; put -- before one that starts with -)")
    p.add_argument("--queries", metavar="FILE", help="search every line of FILE (UTF-8; - for stdin) instead of one "
                   "query, printing a JSON line per query in order: query, ids, scores, labels")
    p.add_argument("-k", type=_k, default=10, help="how many labels to print, best first (default: 10)")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("export", help="write the trained encoder as a sentence-transformers model directory")
    p.add_argument("run_dir", help=RUN_DIR_HELP)
    p.add_argument("out", help="the directory to write (a new one, or one an earlier export wrote)")
    p.add_argument("--tower", choices=("query", "label"), default="query",
                   help="which tower (the same unless trained with --label-tower)")
    p.set_defaults(func=cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = None
    try:
        args = build_parser().parse_args(argv)  # Ctrl-C here (numpy, torch loading) is an interrupt, not a traceback
        code = args.func(args)
        sys.stdout.flush()  # here, not at exit: a closed pipe is found inside this try
        return code
    except BrokenPipeError:  # the reader of stdout left (`| head`), and a write went round sys.stdout
        _silence_stdout()
        return 141  # as a command ended by SIGPIPE
    except (ValueError, OSError, EOFError) as exc:  # bad input, a missing or cut file: a message, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # train says how to resume; the others have nothing to keep
        print(f"\ninterrupted: {args.command if args else 'ramen'} stopped before it finished", file=sys.stderr)
        return 130


def _silence_stdout() -> None:
    """Points stdout's file descriptor at /dev/null, so that later writes and Python's flush at exit
    do not fail on a closed pipe again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.__stdout__.fileno())
    except (OSError, ValueError, AttributeError):  # no file descriptor behind stdout
        pass


class _PipeSafeStdout:
    """sys.stdout for the command line: when its reader leaves (`train ... | head`), the output goes to
    /dev/null from then on and the command goes on, where a training used to die at its next line."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            _silence_stdout()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            _silence_stdout()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def cli(argv: list[str] | None = None) -> int:
    """The command line (`python -m ramen`, the `ramen` script): an error that stops a command with a
    message is printed as 'error: MESSAGE' and exits 2, as the others do (it printed the bare message
    and exited 1, so that a script could not tell usage errors from a run that failed). Output whose
    reader left (`| head`) goes to /dev/null from then on (_PipeSafeStdout)."""
    stdout, sys.stdout = sys.stdout, _PipeSafeStdout(sys.stdout)
    try:
        return main(argv)
    except SystemExit as exc:
        if not isinstance(exc.code, str):
            raise
        print(f"error: {exc.code}", file=sys.stderr)
        return 2
    finally:
        sys.stdout = stdout


if __name__ == "__main__":
    sys.exit(cli())
