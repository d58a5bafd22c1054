"""The library entry points that the CLI and the tests call: loading a spec.

`load` and `loads` parse and check a spec, keeping its text so that errors quote it; the
passes after that, in order, are `mncompile.compiler.PIPELINE` (`compile_ensemble`), whose
first pass repeats the check on the IR it is given.

>>> from mncompile.api import load
>>> e = load("examples/mlp.mnet")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mncompile.diagnostics import MNError
from mncompile.ir import Ensemble
from mncompile.parse import parse_text, read_spec
from mncompile.passes.check import MAX_NET_PARAMS, check_ensemble
from mncompile.quiet_gc import paused_gc


def load(path: str | Path, max_params: int | None = MAX_NET_PARAMS) -> Ensemble:
    """Parse and check a `.mnet` file; raises `MNError` (with file, line and caret) on bad input.

    `max_params`: the most trainable parameters a net may have (the ensemble: ten times that);
    None lifts the limits (`--max-params none`).
    """
    # read once: a pipe or FIFO cannot be read again to quote the offending line
    text = read_spec(path)
    with paused_gc():
        e = parse_text(text, source=Path(path).name, display=str(path))
        try:
            return check_ensemble(e, max_params)
        except MNError as err:
            raise err.with_source(str(path), text) from None


def loads(text: str, source: str = "<string>", max_params: int | None = MAX_NET_PARAMS) -> Ensemble:
    """Parse and check spec text (`max_params` as in `load`)."""
    with paused_gc():
        e = parse_text(text, source=source)
        try:
            return check_ensemble(e, max_params)
        except MNError as err:
            raise err.with_source(source, text) from None


# ------------------------------------------------------------------------- the Python API


def compile(spec: str | Path, clusters: int | None = None, *, seed: int = 0, folder: str | Path | None = None,
            force: bool = False, max_params: int | None = MAX_NET_PARAMS) -> CompiledEnsemble:
    """Compile a `.mnet` file into the generated folder a run trains from (`mncompile SPEC`).

    `clusters` is g, the number of MotherNets (default: one per architecture class); `seed` the
    clustering seed. `folder` is where the generated code goes (default: a temporary folder,
    removed when the returned object is); an existing folder is replaced only as `mncompile
    compile -o` would (`force` as its --force).
    """
    e = load(spec, max_params)
    return _compiled(e, Path(spec).name, clusters, seed, folder, force, max_params, protect=[Path(spec)])


def compile_text(text: str, clusters: int | None = None, *, seed: int = 0, folder: str | Path | None = None,
                 force: bool = False, max_params: int | None = MAX_NET_PARAMS) -> CompiledEnsemble:
    """`compile` for spec text instead of a file."""
    e = loads(text, max_params=max_params)
    return _compiled(e, None, clusters, seed, folder, force, max_params, protect=[])


def _compiled(e: Ensemble, source: str | None, clusters: int | None, seed: int, folder: str | Path | None,
              force: bool, max_params: int | None, protect: list[Path]) -> CompiledEnsemble:
    import shutil
    import tempfile
    import weakref

    from mncompile.compiler import compile_ensemble
    from mncompile.writer import write_folder

    out = compile_ensemble(e, clusters=clusters, seed=seed, source_name=source, max_params=max_params)
    if folder is None:
        base = Path(tempfile.mkdtemp(prefix=f"mncompile-{e.name}-"))
        dest = base / e.name
    else:
        base, dest = None, Path(folder)
    write_folder(dest, out.files, force=force, protect=protect, ensemble=e.name,
                 options={"g": out.plan.g, "seed": seed})
    compiled = CompiledEnsemble(e, dest, out.plan.g)
    if base is not None:
        weakref.finalize(compiled, shutil.rmtree, base, True)
    return compiled


class CompiledEnsemble:
    """A compiled spec: its generated folder, ready to train (`fit`).

    >>> import mncompile
    >>> ens = mncompile.compile("examples/mlp.mnet", clusters=1)  # doctest: +SKIP
    >>> run = ens.fit(data="digits", out="runs/mlp", epochs_scale=0.1)  # doctest: +SKIP
    >>> run.results["ensemble"]["error"]  # doctest: +SKIP
    """

    def __init__(self, ensemble: Ensemble, folder: Path, g: int) -> None:
        self.spec = ensemble
        self.name = ensemble.name
        self.folder = folder
        self.g = g
        self.members = [n.name for n in ensemble.nets]

    def __repr__(self) -> str:
        return f"CompiledEnsemble({self.name!r}, members={self.members}, g={self.g}, folder='{self.folder}')"

    def fit(self, train: Any = None, test: Any = None, *, val: Any = None, data: str | None = None,
            method: str = "mothernets", out: str | Path | None = None, resume: bool = False,
            **options: Any) -> TrainedRun:
        """Train and evaluate the ensemble; what `mncompile run` does, with the same files in `out`.

        Data: `train` and `test` (and optionally `val`), each `(x, y)` tensors or arrays, a
        `torch.utils.data.Dataset` of `(x, y)` items, or a `DataLoader` (its dataset is read;
        mncompile draws the batch order); without `val`, `val_fraction` (default 0.1) holds out a
        share of `train`. Or `data`, a dataset name as `--data` takes (mnist1d, digits, ...).
        Neither: the spec's `data`, else mnist1d.

        `options` are `train.py`'s, by their long names with underscores: `lr=0.1`,
        `val_fraction=0`, `recipe="paper"`, `device="cuda"`, `quiet=True`, `shared_loss="mean"`, ...
        (`mncompile run --help` lists them). `resume=True` continues from `out`'s checkpoints.
        Returns the run; `MNError` on bad data or options, before anything trains.
        """
        from mncompile.runtime.pipeline import execute
        from mncompile.runtime.rundir import default_out
        from mncompile.runtime.userdata import user_data

        user = None
        if train is not None or test is not None or val is not None:
            if data is not None:
                raise MNError("give either data= (a dataset name) or train=/test= splits, not both")
            user = user_data(train, test, val)
        given = dict(options, method=method, resume=resume, data=data,
                     out=str(out) if out is not None else None)
        defaults = {"ensemble": self.name, "data": self.spec.data, "train": self.spec.config.model_dump()}
        args = _parse_options(defaults, given)
        doc = execute(self.folder, defaults, args, user=user)
        where = Path(args.out) if args.out is not None else default_out(self.name, method)
        return TrainedRun(where, doc)


class TrainedRun:
    """A finished run: `results` (results.json's dict), `out` (its folder), the trained `ensemble`."""

    def __init__(self, out: Path, results: dict[str, Any]) -> None:
        self.out = out
        self.results = results
        self._ensemble: Any = None

    def __repr__(self) -> str:
        e = self.results.get("ensemble") or {}
        return (f"TrainedRun(method={self.results.get('method')!r}, error={e.get('error')}, "
                f"out='{self.out}')")

    @property
    def ensemble(self) -> Any:
        """The trained ensemble (`mncompile.runtime.TrainedEnsemble`), read from `out/ensemble.pt`."""
        if self._ensemble is None:
            from mncompile.runtime.ensemble import FILE_NAME, load_ensemble

            if not (self.out / FILE_NAME).is_file():
                raise MNError(f"the {self.results.get('method')} run in '{self.out}' wrote no {FILE_NAME}, "
                              "so it cannot predict here",
                              hint="its output said why (a TreeNet's trunk and branches are not nets of the "
                              "families); results holds its test metrics")
            self._ensemble = load_ensemble(self.out / FILE_NAME)
        return self._ensemble

    def predict_proba(self, x: Any, batch_size: int = 1024) -> Any:
        """[N, classes]: the mean of the members' softmax outputs on `x` (a tensor or array)."""
        import torch

        return self.ensemble.predict_proba(torch.as_tensor(x, dtype=torch.float32), batch_size)

    def predict(self, x: Any, batch_size: int = 1024) -> Any:
        """[N]: the class of highest averaged probability."""
        return self.predict_proba(x, batch_size).argmax(1)


def _parse_options(defaults: dict[str, Any], given: dict[str, Any]) -> Any:
    """train.py's parser applied to keyword options; MNError (with a suggestion) for a bad one."""
    import argparse

    from mncompile.runtime.options import build_parser
    from mncompile.suggest import suggest

    parser = build_parser(defaults, prog="fit")

    def error(message: str) -> Any:
        raise MNError(f"fit: {message}")

    parser.error = error  # type: ignore[method-assign]
    actions = {a.dest: a for a in parser._actions if a.option_strings and a.dest != "help"}
    argv: list[str] = []
    for key, value in given.items():
        action = actions.get(key)
        if action is None:
            near = suggest(key, list(actions))
            raise MNError(f"fit: unknown option '{key}'",
                          hint=f"did you mean '{near}'?" if near else "see `mncompile run --help`")
        if value is None:
            continue
        flag = action.option_strings[-1]
        if isinstance(action, argparse._StoreTrueAction):
            if not isinstance(value, bool):
                raise MNError(f"fit: option '{key}' is True or False, got {value!r}")
            argv += [flag] if value else []
        else:
            argv += [flag, str(value)]
    return parser.parse_args(argv)
