"""Opening a notebook of the series: one call after the ``parameters`` cell.

::

    session = notebook.start("04_training", globals())
    config, dataset, run = session.config, session.dataset, session.run

:func:`start` reads the notebook's parameters, checks each against its declared type, builds the
:class:`~rfcxlib.config.RunConfig` (every parameter that is a configuration field, plus the
notebook's :data:`RULES`), creates the distribution strategy first thing in a notebook that
trains (before TensorFlow runs an operation, as several workers need), finds the data (``data_dir``, else the synthetic data set of
``profile`` / ``data_seed``, generated once and cached; on Kaggle the competition data), loads
and checks it, opens the run folder and writes ``config.json`` there (atomically, merged with
what other notebooks wrote).

The parameters are the names the ``parameters`` cell annotates (``epochs: int = 15``): Python
keeps the annotations of a namespace in its ``__annotations__``, and the values papermill injects
replace the defaults before the call. ``rfcx run --dry-run`` builds each notebook's configuration
through the same :func:`config_of`, so what it checks is what the notebook runs with.
"""
from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, MutableMapping, Optional

from rfcxlib.data import source, tables as data
from rfcxlib.config import AugmentConfig, RunConfig
from rfcxlib.errors import ParameterError, unknown_choice
from rfcxlib.runner.profiles import coerce
from rfcxlib.runner.run_dir import RunDir, open_run

#: Every notebook declares these: where the data and the run folder are.
REQUIRED = ("data_dir", "run_dir", "profile", "data_seed")


@dataclass(frozen=True)
class Rules:
    """What a notebook's configuration takes besides its parameters.

    fixed : configuration values the notebook sets itself, whatever the parameters say.
    tied : ``{configuration field: parameter}``: a field that copies another parameter.
    own : parameters named like a configuration field that mean something else here.
    trains : the notebook trains models: its distribution strategy
        (:func:`rfcxlib.training.distribute.init_strategy`) is created first, before TensorFlow runs anything.
    any_rate : recordings at another sample rate are accepted (resampled when read), when the
        configuration resamples (``AudioConfig.resample``).
    """

    fixed: Mapping[str, Any] = field(default_factory=dict)
    tied: Mapping[str, str] = field(default_factory=dict)
    own: tuple[str, ...] = ()
    trains: bool = False
    any_rate: bool = False


#: Every augmentation notebook 03 shows, switched on (frequency filtering keeps its default: it
#: drops labels, which the notebook does not show; so does the background mix, which needs a
#: training batch of crops).
EVERY_AUGMENTATION = {f.name: 1.0 for f in dataclasses.fields(AugmentConfig)
                      if f.name.startswith("p_") and f.name not in ("p_band_filter", "p_background_mix")}

RULES = {
    "01_eda": Rules(any_rate=True),
    "02_spectrograms": Rules(tied={"win_length": "n_fft"}),  # one STFT window per FFT
    "03_augmentations": Rules(fixed=EVERY_AUGMENTATION, own=("seed",)),  # seed: of the figures
    "04_training": Rules(trains=True),
    "05_noisy_labels": Rules(trains=True),
    "06_ensembling": Rules(),
    "07_field_detections": Rules(),
    "08_review": Rules(),
}


@dataclass(frozen=True)
class Session:
    """What :func:`start` opened for a notebook.

    Attributes
    ----------
    notebook : str
        The notebook's name (``"04_training"``): its section of ``config.json``.
    params : dict
        Every parameter of the notebook, checked and typed.
    config : RunConfig
    root : Path
        The data folder.
    dataset : rfcxlib.data.tables.Dataset
    run : rfcxlib.runner.run_dir.RunDir
    strategy : tf.distribute.Strategy or None
        A training notebook's distribution strategy (the one training uses); None for the others.
    """

    notebook: str
    params: dict
    config: RunConfig
    root: Path
    dataset: data.Dataset
    run: RunDir
    strategy: Optional[Any] = None

    def note(self, **values) -> Path:
        """Add ``values`` (names the notebook derived, such as a model's name) to this notebook's
        parameters in ``config.json``."""
        return self.run.write_config(self.config, extra={**self.params, **values, "notebook": self.notebook})


def _type_name(hint) -> str:
    """``int``, ``list[int]``, ...: the annotation as the notebook wrote it."""
    if isinstance(hint, str):
        return hint
    if isinstance(hint, types.GenericAlias):
        return str(hint)
    return getattr(hint, "__name__", str(hint))


def parameters(namespace: MutableMapping[str, Any], notebook: str = "notebook") -> dict:
    """The parameters of ``namespace`` (the names its ``__annotations__`` hold), each checked
    against its annotation as ``rfcx run`` checks injected values (:func:`rfcxlib.runner.profiles.coerce`:
    an int for a float becomes a float, a single value for a list a one-item list). The checked
    values replace those of ``namespace``.

    Raises
    ------
    ParameterError
        When nothing is annotated (the parameters cell did not run), a declared name has no value,
        a value does not fit its type, or one of :data:`REQUIRED` is missing.
    """
    annotations = namespace.get("__annotations__") or {}
    if not annotations:
        raise ParameterError(f"{notebook}: no typed parameters found; run the parameters cell "
                             "(lines such as 'epochs: int = 15') before notebook.start")
    missing = [name for name in REQUIRED if name not in annotations]
    if missing:
        raise ParameterError(f"{notebook}: the parameters cell lacks {', '.join(missing)}; every "
                             f"notebook declares {', '.join(REQUIRED)}")
    out = {}
    for name, hint in annotations.items():
        if name not in namespace:
            raise ParameterError(f"{notebook}: parameter {name!r} is declared without a value")
        out[name] = coerce(namespace[name], {"name": name, "inferred_type_name": _type_name(hint)},
                           f"notebook {notebook}")
    namespace.update(out)
    return out


def rules_for(notebook: str) -> Rules:
    """The :data:`RULES` of ``notebook``; a notebook outside the series has none."""
    return RULES.get(notebook, Rules())


def config_of(notebook: str, params: Mapping[str, Any], rules: Optional[Rules] = None) -> RunConfig:
    """The configuration ``notebook`` runs with: its parameters that are configuration fields
    (:meth:`RunConfig.from_notebook`) and its :data:`RULES`. With ``backbone="birdnet"`` the
    embedding head's parameters are checked too, and ``cnn_method`` and the ``soft_*`` settings
    wherever they are given."""
    rules = rules or rules_for(notebook)
    fields = set(RunConfig.param_names())
    values = {k: v for k, v in params.items() if k in fields and k not in rules.own}
    values.update({name: params[source] for name, source in rules.tied.items() if source in params})
    values.update(rules.fixed)
    config = RunConfig.from_notebook(values)
    if config.model.backbone == "birdnet":
        from rfcxlib.embeddings import head_config  # only for a notebook that asks for it

        head_config.head_from_params(params)
    if "cnn_method" in params or any(name.startswith("soft_") for name in params):
        from rfcxlib.noisy import soft_labels  # NumPy only

        soft_labels.cnn_method_from_params(params)
    return config


def find_data(config: RunConfig) -> Path:
    """``data_dir``, else (inside a Kaggle kernel) the competition data, else the synthetic data
    set of ``profile`` / ``data_seed``, generated on first use and cached
    (:func:`rfcxlib.data.source.find_data`)."""
    d = config.data
    return source.find_data(d.data_dir, profile=d.profile, seed=d.data_seed)


def training_strategy():
    """The process's distribution strategy, created now: several workers need it before
    TensorFlow runs its first operation. Imports TensorFlow, so only a training notebook asks."""
    from rfcxlib.training import distribute

    return distribute.init_strategy()


def start(notebook: str, namespace: MutableMapping[str, Any], *, rules: Optional[Rules] = None) -> Session:
    """Open ``notebook``: parameters, configuration, distribution strategy (a training notebook),
    data, run folder, ``config.json``.

    Parameters
    ----------
    notebook : str
        The notebook's name, one of :data:`RULES` (``"04_training"``).
    namespace : dict
        The notebook's ``globals()`` after its ``parameters`` cell; its parameters are replaced by
        their checked values.
    rules : Rules, optional
        For a notebook outside the series: what its configuration takes besides its parameters.

    Returns
    -------
    Session

    Raises
    ------
    ParameterError
        An unknown notebook, a parameter of the wrong type, an invalid configuration (each names
        the parameter, its value and what was expected).
    ClusterError
        Several workers (``TF_CONFIG``) whose strategy cannot be created (see :mod:`rfcxlib.training.distribute`).
    DataError
        A data folder that does not fit the RFCx layout (naming the file, the line, the value).
    """
    if rules is None and notebook not in RULES:
        raise unknown_choice("notebook", notebook, RULES)
    rules = rules or RULES[notebook]
    params = parameters(namespace, notebook)
    config = config_of(notebook, params, rules)
    strategy = training_strategy() if rules.trains else None
    root = find_data(config)
    sr = None if rules.any_rate and config.audio.resample else config.audio.sr
    dataset = data.load_dataset(root, sr=sr, extra_labels=params.get("extra_labels") or None)
    run = open_run(params["run_dir"])
    session = Session(notebook, params, config, root, dataset, run, strategy)
    session.note()
    print(f"data: {root}\nrun:  {run.path}\n{dataset}")
    return session
