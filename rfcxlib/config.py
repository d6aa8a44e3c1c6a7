"""Run configuration: frozen dataclasses that validate on creation and convert to and from dicts.

A papermill notebook receives flat parameters (``backbone="densenet121"``, ``crop_s=7.0``, ...).
:meth:`RunConfig.from_params` sorts each flat name into its section; every name belongs to
exactly one section, and an unknown name raises :class:`ParameterError` listing the valid ones.

The defaults are the default model of the series, the one notebook 04's ``parameters`` cell
declares: a small attention CNN on 3 s crops of 48 mel bands (hop 2048), frequency filtering in
training (``p_band_filter`` 0.5) with per-band inference (``band_mode``), the last epoch of each
fold. ``RunConfig()``, ``rfcx train`` without parameters and notebook 04 build the same model;
notebooks and profiles only override (``tests/test_config.py`` holds the two equal).

Each section is owned by the module that consumes it (``AudioConfig`` by ``rfcxlib.audio.decode``,
``ModelConfig`` by ``rfcxlib.models``, ...). Add a field to a section with its default and its
check in ``__post_init__``; nothing else needs to change.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from rfcxlib.atomic import write_text_atomic
from rfcxlib.errors import ParameterError, unknown_choice
from rfcxlib.layout import SAMPLE_RATE


# The names a run may choose; the modules that implement them (rfcxlib.models, rfcxlib.training.losses)
# register exactly these (tests/test_config.py checks it), so a typo fails here, at creation.
BACKBONES = ("small_cnn", "densenet121", "densenet169", "densenet201", "resnet50", "efficientnetb0",
             "birdnet")  # birdnet: a head on pretrained embeddings (rfcxlib.embeddings.head_folds), not a CNN
ATTENTIONS = ("cbam", "time", "parallel", "parallel_time", "none")
HEADS = ("attention_v1", "attention_v2", "sed")
LOSSES = ("masked_bce", "naive_bce", "lsoft_unknown", "lsoft_tp", "sed")


def check(ok: bool, name: str, value: Any, expected: str) -> None:
    """Raise :class:`ParameterError` naming ``name`` and ``value`` unless ``ok``."""
    if not ok:
        raise ParameterError(f"parameter {name!r} = {value!r}: expected {expected}")


def check_choice(name: str, value: Any, choices) -> None:
    if value not in choices:
        raise unknown_choice(f"value for {name!r}:", value, choices)


@dataclass(frozen=True)
class DataConfig:
    """Where the data comes from. ``data_dir=""`` means the embedded synthetic data set."""

    data_dir: str = ""
    profile: str = "mini"  # synthetic profile used when data_dir is empty
    data_seed: int = 0  # seed of the synthetic data set
    # what the folds group by: "auto" (the data folder's sites.csv when it has one, else each
    # recording), "recording", or the path of a CSV recording_id,site (rfcxlib.data.tables.fold_groups)
    fold_groups: str = "auto"

    def __post_init__(self):
        check(isinstance(self.fold_groups, str) and bool(self.fold_groups), "fold_groups", self.fold_groups,
              "'auto', 'recording' or the path of a CSV file recording_id,site")
        check_choice("profile", self.profile, ("tiny", "mini", "field", "full"))
        check(isinstance(self.data_seed, int) and self.data_seed >= 0, "data_seed", self.data_seed,
              "an integer >= 0")


@dataclass(frozen=True)
class AudioConfig:
    """Decoding and cropping. ``sr`` is the rate every recording is brought to."""

    sr: int = SAMPLE_RATE
    resample: bool = True  # recordings at another rate are resampled; False -> DataError
    crop_s: float = 3.0  # training / inference window length in seconds
    audio_backend: str = "soundfile"  # decoder: "soundfile" (libsndfile), "tfio", "tf" (WAV only)
    audio_cache: str = "auto"  # decoded audio: "memory", "disk" (int16 under $RFCX_CACHE_DIR), "none", "auto"

    def __post_init__(self):
        check_choice("audio_backend", self.audio_backend, ("soundfile", "tfio", "tf"))
        check_choice("audio_cache", self.audio_cache, ("auto", "memory", "disk", "none"))
        check(isinstance(self.sr, int) and 8000 <= self.sr <= 192000, "sr", self.sr,
              "an integer sample rate in Hz between 8000 and 192000")
        check(0.5 <= float(self.crop_s) <= 60.0, "crop_s", self.crop_s, "seconds in [0.5, 60]")


@dataclass(frozen=True)
class FeatureConfig:
    """Log-mel features: STFT 2048 with a hop of 2048 samples (43 ms) and 48 mel bands (the seed's
    were hop 512 and 128 mels), over a mel range that covers every RFCx species band, 94 Hz to
    13.7 kHz."""

    n_fft: int = 2048
    win_length: int = 2048
    hop_length: int = 2048
    n_mels: int = 48
    fmin: float = 40.0
    fmax: float = 15000.0
    power: float = 2.0
    # "pcen" (rfcxlib.features.pcen; test LWLRAP 0.747 against 0.629 for log_eps on field, 0.921
    # against 0.912 on mini), "log_eps": log(M + 1e-4), "log1p": log(1 + M)
    log: str = "pcen"
    image_height: int = 0  # 0: keep n_mels rows
    image_width: int = 0  # 0: keep one column per STFT frame
    channels: int = 1  # 3 for ImageNet weights
    mel_scale: str = "htk"  # "htk" (tf.signal's, unnormalised) or "slaney" (librosa's default)
    normalize: str = "standardize"  # per image: "standardize" (mean 0, std 1), "minmax", "none"
    # one more image channel: the row's mel-bin index scaled to [0, 1], constant over time
    # (rfcxlib.features.image_channels); image masks and augmentations leave it intact
    freq_channel: bool = False
    # log="pcen": time constant of PCEN's smoother over time, seconds (rfcxlib.features.pcen)
    pcen_time_s: float = 0.4

    def __post_init__(self):
        check(self.n_fft > 0 and self.n_fft & (self.n_fft - 1) == 0, "n_fft", self.n_fft,
              "a positive power of two")
        check(0 < self.win_length <= self.n_fft, "win_length", self.win_length, "in (0, n_fft]")
        check(self.hop_length > 0, "hop_length", self.hop_length, "a positive integer")
        check(self.n_mels > 0, "n_mels", self.n_mels, "a positive integer")
        check(0 <= self.fmin < self.fmax, "fmin", self.fmin, f"0 <= fmin < fmax ({self.fmax})")
        check(self.power in (1.0, 2.0), "power", self.power, "1.0 (magnitude) or 2.0 (power)")
        check_choice("log", self.log, ("log1p", "log_eps", "pcen"))
        check(self.image_height >= 0 and self.image_width >= 0, "image_height/image_width",
              (self.image_height, self.image_width), "sizes >= 0 (0 keeps the native size)")
        check(self.channels in (1, 3), "channels", self.channels, "1 or 3")
        check_choice("mel_scale", self.mel_scale, ("htk", "slaney"))
        check_choice("normalize", self.normalize, ("standardize", "minmax", "none"))
        check(isinstance(self.freq_channel, bool), "freq_channel", self.freq_channel, "True or False")
        check(isinstance(self.pcen_time_s, (int, float)) and 0 < self.pcen_time_s < float("inf"),
              "pcen_time_s", self.pcen_time_s, "a time constant in seconds > 0")


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation. Each transform has a probability; ``augment=False`` switches all off."""

    augment: bool = True
    # waveform
    p_gain: float = 0.0
    gain_db: float = 6.0
    p_wave_noise: float = 0.0
    snr_db_min: float = 10.0
    snr_db_max: float = 30.0
    p_shift: float = 0.0
    shift_s: float = 0.5
    wave_noise: str = "pink"  # colour of the added noise: "pink" (1/f) or "white"
    # spectrogram
    p_time_mask: float = 0.5
    time_mask: int = 8  # frames
    p_freq_mask: float = 0.5
    freq_mask: int = 6  # mel bins
    mask_impl: str = "tf"  # "tf": seeded, reproducible masks; "tfio": tensorflow-io's (falls back to "tf")
    p_resize_crop: float = 0.0
    crop_scale_min: float = 0.8
    p_noise: float = 0.0
    noise_std: float = 0.05
    p_brightness: float = 0.0
    brightness: float = 0.1
    p_flip_time: float = 0.0
    p_flip_freq: float = 0.0
    # frequency filtering (the seed's): a training crop keeps only the mel rows of its row's species
    # band (zero elsewhere, as band_mode inference does) and only that species' label
    p_band_filter: float = 0.5
    # batch
    p_mixup: float = 0.0
    mixup_alpha: float = 0.4
    # another crop of the batch added to the waveform at an SNR (dB) drawn from background_snr_db
    # (rfcxlib.features.background_mix); training only
    p_background_mix: float = 0.0
    background_snr_db: tuple = (0.0, 10.0)

    def __post_init__(self):
        snr = self.background_snr_db
        ok = isinstance(snr, (tuple, list)) and len(snr) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in snr)
        check(ok and float(snr[0]) <= float(snr[1]), "background_snr_db", snr,
              "two SNRs in dB [low, high] with low <= high")
        object.__setattr__(self, "background_snr_db", (float(snr[0]), float(snr[1])))
        for f in dataclasses.fields(self):
            if f.name.startswith("p_"):
                value = getattr(self, f.name)
                check(0.0 <= value <= 1.0, f.name, value, "a probability in [0, 1]")
        check(0.0 < self.crop_scale_min <= 1.0, "crop_scale_min", self.crop_scale_min, "in (0, 1]")
        check(self.mixup_alpha > 0, "mixup_alpha", self.mixup_alpha, "> 0")
        check(self.time_mask >= 1 and self.freq_mask >= 1, "time_mask/freq_mask",
              (self.time_mask, self.freq_mask), "mask widths >= 1 (frames / mel bins)")
        check(self.gain_db >= 0 and self.shift_s >= 0, "gain_db/shift_s", (self.gain_db, self.shift_s),
              "values >= 0")
        check(self.noise_std >= 0 and self.brightness >= 0, "noise_std/brightness",
              (self.noise_std, self.brightness), "values >= 0")
        check_choice("wave_noise", self.wave_noise, ("pink", "white"))
        check_choice("mask_impl", self.mask_impl, ("tf", "tfio"))
        check(self.snr_db_min <= self.snr_db_max, "snr_db_min", self.snr_db_min,
              f"<= snr_db_max ({self.snr_db_max})")


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "small_cnn"
    weights: Optional[str] = None  # None, "imagenet" or a path to a weights file
    freeze_to: int = 0  # freeze the first N backbone layers (0: train all)
    # "cbam" (sequential), "time" (time-axis spatial), "parallel", "parallel_time" (the seed's:
    # time-axis spatial attention in parallel with channel attention), "none"
    attention: str = "parallel"
    head: str = "attention_v1"  # "attention_v1", "attention_v2", "sed"
    dropout: float = 0.4
    base_units: int = 64  # the v2 head's dense layer has 2 * base_units units

    def __post_init__(self):
        check_choice("backbone", self.backbone, BACKBONES)
        check_choice("attention", self.attention, ATTENTIONS)
        check_choice("head", self.head, HEADS)
        check(self.weights is None or isinstance(self.weights, str), "weights", self.weights,
              "None, 'imagenet' or the path of a weights file")
        check(0.0 <= self.dropout < 1.0, "dropout", self.dropout, "in [0, 1)")
        check(self.freeze_to >= 0, "freeze_to", self.freeze_to, "an integer >= 0")
        check(self.base_units > 0, "base_units", self.base_units, "a positive integer")


@dataclass(frozen=True)
class TrainConfig:
    loss: str = "masked_bce"
    epochs: int = 15
    batch_size: int = 32
    learning_rate: float = 3e-3
    lr_schedule: str = "cosine"  # "cosine", "constant"
    folds: int = 5
    train_folds: tuple = (0,)  # which folds to train (all: tuple(range(folds)))
    seed: int = 0
    patience: int = 0  # early stopping patience in epochs (0: off)
    steps_per_epoch: int = 60  # batches per epoch (0: one pass over the training crops)
    mixed_precision: bool = False
    xla: bool = False
    checkpoint: str = "last"  # weights kept per fold: "last" epoch or "best" (validation LWLRAP)

    def __post_init__(self):
        object.__setattr__(self, "train_folds", tuple(int(f) for f in self.train_folds))
        check_choice("loss", self.loss, LOSSES)
        check_choice("checkpoint", self.checkpoint, ("best", "last"))
        check(self.epochs >= 1, "epochs", self.epochs, "an integer >= 1")
        check(self.batch_size >= 1, "batch_size", self.batch_size, "an integer >= 1")
        check(self.learning_rate > 0, "learning_rate", self.learning_rate, "> 0")
        check_choice("lr_schedule", self.lr_schedule, ("cosine", "constant"))
        check(self.folds >= 2, "folds", self.folds, "an integer >= 2")
        check(len(self.train_folds) > 0 and all(0 <= f < self.folds for f in self.train_folds),
              "train_folds", self.train_folds, f"a non-empty list of folds in [0, {self.folds})")
        check(self.patience >= 0, "patience", self.patience, "an integer >= 0")


@dataclass(frozen=True)
class InferenceConfig:
    hop_s: float = 1.5  # sliding-window hop over whole recordings
    aggregate: str = "max"  # "max" or "mean" over windows
    tta: int = 0  # number of extra test-time-augmented passes
    band_mode: bool = True  # the seed's per-species frequency-band scoring

    def __post_init__(self):
        check(self.hop_s > 0, "hop_s", self.hop_s, "seconds > 0")
        check_choice("aggregate", self.aggregate, ("max", "mean"))
        check(isinstance(self.tta, int) and self.tta >= 0, "tta", self.tta, "an integer >= 0")


SECTIONS = {
    "data": DataConfig,
    "audio": AudioConfig,
    "features": FeatureConfig,
    "augment": AugmentConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "inference": InferenceConfig,
}


def _coerce(cls, name: str, value: Any) -> Any:
    """Bring a JSON / papermill value to the field's declared type (int -> float, list -> tuple)."""
    hint = typing.get_type_hints(cls)[name]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is tuple and isinstance(value, (list, tuple)):
        return tuple(value)
    if hint is tuple and isinstance(value, int):
        return (value,)
    if hint in (int, float, bool, str) and not isinstance(value, hint):
        raise ParameterError(f"parameter {name!r} = {value!r}: expected a value of type "
                             f"{hint.__name__}")
    return value


def _owner_of() -> dict[str, str]:
    owners: dict[str, str] = {}
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            assert f.name not in owners, f"parameter {f.name} is declared in two sections"
            owners[f.name] = section
    return owners


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)

    def __post_init__(self):
        """Checks across sections."""
        if self.train.loss == "sed" and self.model.head != "sed":
            raise ParameterError(f"parameter 'loss' = 'sed' trains the SED head's 'frame_logits': "
                                 f"expected head='sed', got head={self.model.head!r}")
        check(not (self.features.freq_channel and self.model.weights == "imagenet"), "freq_channel",
              True, "False with weights='imagenet' (ImageNet weights need 3 channels; the frequency "
              "channel adds one)")
        height, n_mels = self.features.image_height, self.features.n_mels
        for name, value in (("p_band_filter", self.augment.p_band_filter),
                            ("band_mode", self.inference.band_mode)):
            check(not value or height in (0, n_mels), name, value,
                  f"0 / False with image_height={height}: frequency bands need one image row "
                  f"per mel band (image_height 0 or n_mels={n_mels})")

    @staticmethod
    def param_names() -> list[str]:
        """Every flat parameter name, in section order."""
        return list(_owner_of())

    @classmethod
    def from_params(cls, params: dict[str, Any], ignore=()) -> "RunConfig":
        """Build a configuration from flat parameters; names in ``ignore`` are skipped."""
        owners = _owner_of()
        by_section: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
        for name, value in params.items():
            if name in ignore:
                continue
            if name not in owners:
                raise unknown_choice("parameter", name, owners)
            section = owners[name]
            by_section[section][name] = _coerce(SECTIONS[section], name, value)
        return cls(**{s: SECTIONS[s](**kw) for s, kw in by_section.items()})

    @classmethod
    def from_notebook(cls, namespace: dict[str, Any]) -> "RunConfig":
        """The configuration of a notebook's parameters: every name of ``namespace`` (e.g. the
        notebook's ``globals()`` right after its ``parameters`` cell) that is a configuration
        field; the others are left out. ``weights=""`` means None (no pretrained weights).
        ``rfcx run --dry-run`` builds each notebook's configuration the same way."""
        names = set(_owner_of())
        params = {k: v for k, v in namespace.items() if k in names}
        if params.get("weights") in ("", "none"):
            params["weights"] = None
        return cls.from_params(params)

    @classmethod
    def from_dict(cls, nested: dict[str, dict[str, Any]]) -> "RunConfig":
        """Inverse of :meth:`to_dict`."""
        flat = {}
        for section, values in nested.items():
            if section not in SECTIONS:
                raise unknown_choice("configuration section", section, SECTIONS)
            flat.update(values)
        return cls.from_params(flat)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {s: dataclasses.asdict(getattr(self, s)) for s in SECTIONS}

    def flat(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for values in self.to_dict().values():
            out.update(values)
        return out

    def replace(self, **params) -> "RunConfig":
        """A copy with some flat parameters changed."""
        merged = self.flat()
        merged.update(params)
        return RunConfig.from_params(merged)

    def save(self, path) -> Path:
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=2, sort_keys=False))

    @classmethod
    def load(cls, path) -> "RunConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))
