"""Experiment configs: YAML files checked against typed dataclasses, plus ``key=value`` overrides.

A config file holds the sections of :class:`Config`. ``_base_: other.yaml`` (a path relative to the
file, or a list of them) makes a file start from another one, so a teacher or ADD config only
states what differs from the baseline. Any key that is not in the schema, or a value of the wrong
type, is an :class:`add3d.errors.Add3dError` naming the file (or command-line override) and the key.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from add3d.data.config import DataConfig
from add3d.data.mono_dataset import validate_classes
from add3d.distill.config import DistillConfig, TeacherConfig
from add3d.engine.precision import AMP_MODES, LEGACY_AMP
from add3d.errors import Add3dError, DataFormatError
from add3d.models import DETECTORS, detector_entry
from add3d.models.config import ModelConfig

BASE_KEY = "_base_"


@dataclass
class OptimConfig:
    name: str = "adam"  # adam | adamw | sgd
    lr: float = 1.25e-3
    weight_decay: float = 1e-5
    momentum: float = 0.9  # sgd only


@dataclass
class ScheduleConfig:
    """Warm-up then step decay, in epochs (MonoDLE: 5-epoch cosine warm-up from 1e-5, x0.1 at 90/120)."""

    warmup_epochs: float = 5.0
    warmup_start_lr: float = 1e-5
    milestones: list[int] = field(default_factory=lambda: [90, 120])
    gamma: float = 0.1
    # MonoDLE changes the learning rate once per epoch; per-iteration makes the warm-up smooth, which
    # matters for short runs of few epochs.
    per_iteration: bool = False


@dataclass
class TrainConfig:
    epochs: int = 140
    batch_size: int = 16  # GLOBAL batch, split evenly over DDP processes
    workers: int = 4  # data-loader processes per training process (persistent, 1 BLAS/OpenCV thread each)
    prefetch_factor: int = 2  # batches each worker prepares ahead
    seed: int = 444
    # Mixed precision: auto (bf16 on CUDA GPUs that support it, else fp16; off on CPU) | off | fp16 |
    # bf16. Losses always run in float32. Old configs' true / false read as auto / off.
    amp: str = "auto"
    accumulate_steps: int = 1  # split each step's batch into N micro-batches (same result, 1/N memory)
    channels_last: bool = False  # NHWC memory format for the network (faster convs on tensor-core GPUs)
    compile: bool = False  # torch.compile the detectors' forward (the loss stays eager)
    compile_backend: str = "inductor"  # torch.compile backend (e.g. aot_eager: graph capture without codegen)
    grad_clip: float | None = None  # max gradient L2 norm; null = no clipping
    # Validate and save an exponential moving average of the weights (e.g. 0.998: ~500 steps); null = off.
    # Checkpoints then hold the average as `model` (what eval / predict / a teacher load) and the
    # trained weights as `training_model` (to resume).
    ema_decay: float | None = None
    eval_every: int = 10  # validate every N epochs and after the last; 0 = only after the last; -1 = never
    checkpoint_every_steps: int = 0  # also write `last` every N steps inside an epoch (0 = per epoch only)
    out_dir: str = "runs/monodle_kitti"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # CPU threads for torch (null = PyTorch's default). On a busy or small CPU, 1 thread per process
    # is often several times faster than oversubscribed intra-op threads.
    threads: int | None = None
    sync_batchnorm: bool = False  # DDP: synchronise BatchNorm statistics across processes
    find_unused_parameters: bool = False  # DDP option for modules with parameters unused in some steps
    max_bad_steps: int = 20  # abort after this many consecutive non-finite losses (each one is skipped)
    log_every: int = 10  # one train_log / TensorBoard / progress record (means of the steps) every N steps
    eval_overlap: str = "default"  # KITTI overlaps: default (0.7/0.5/0.5) | loose (0.5/0.25/0.25)
    # Multiply 2D boxes before evaluating so KITTI's pixel-height difficulties act on down-scaled
    # frames as on full-size ones (4.0 for `add3d synth --scale 0.25`); 1.0 = the official protocol.
    eval_box2d_scale: float = 1.0
    best_metric: str = "Car/3d/R40/moderate"  # CLASS/KIND/R11|R40/easy|moderate|hard, higher is better
    init_checkpoint: str | None = None  # detector weights to start from (3-channel weights widen for teachers)

    def __post_init__(self) -> None:
        self.amp = LEGACY_AMP.get(str(self.amp), self.amp)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    distill: DistillConfig | None = None  # present = train an ADD student against teacher.checkpoint


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise Add3dError(f"{path}: config file not found")
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise DataFormatError(path, f"invalid YAML: {getattr(error, 'problem', error)}", line) from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise DataFormatError(path, f"a config must be a mapping of sections, found {type(content).__name__}")
    return content


def read_config_chain(path: str | Path, _seen: tuple[Path, ...] = ()) -> list[tuple[str, dict]]:
    """The (file name, content) pairs to merge, bases first, following ``_base_`` recursively."""
    path = Path(path).resolve()
    if path in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, path))
        raise Add3dError(f"{path}: circular {BASE_KEY} inheritance ({chain})")
    content = _read_yaml(path)
    bases = content.pop(BASE_KEY, None)
    if bases is None:
        bases = []
    elif isinstance(bases, str):
        bases = [bases]
    elif not (isinstance(bases, list) and all(isinstance(b, str) for b in bases)):
        raise DataFormatError(path, f"{BASE_KEY} must be a path or a list of paths")
    chain: list[tuple[str, dict]] = []
    for base in bases:
        chain += read_config_chain(path.parent / base, (*_seen, path))
    chain.append((str(path), content))
    return chain


def _merge(schema, content: dict, source: str):
    try:
        return OmegaConf.merge(schema, content)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None) or "?"
        message = str(error).splitlines()[0]
        raise Add3dError(f"{source}: bad config key '{key}': {message}") from None


def parse_override(text: str) -> dict:
    """``a.b=value`` -> {"a": {"b": value}} with the value read as YAML (numbers, lists, null, ...)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part.isidentifier() for part in key.split(".")):
        raise Add3dError(f"override '{text}' must look like section.key=value")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as error:
        raise Add3dError(f"override '{text}': value is not valid YAML ({error})") from None
    nested: dict = parsed
    for part in reversed(key.split(".")):
        nested = {part: nested}
    return nested


def load_config(path: str | Path | None, overrides: list[str] = (), training: bool = True,
                teacher_required: bool = True) -> Config:
    """Read, merge, override and validate a config. ``path=None`` starts from the defaults.

    ``training=False`` (eval / predict) drops the ``distill`` section: an ADD student is evaluated as
    the plain detector it is, without needing its teacher. ``teacher_required=False`` keeps the
    section but accepts it without ``teacher.checkpoint`` (``add3d model-info`` counts the adapters
    from the architecture alone).
    """
    schema = OmegaConf.structured(Config)
    source = "<defaults>"
    if path is not None:
        for source, content in read_config_chain(path):
            schema = _merge(schema, without_removed_keys(content, source, warn=True), source)
    return _apply_overrides(schema, source, overrides, training, teacher_required)


# Keys that older checkpoints and run folders' config.yaml store but that no longer exist (they had
# no effect; the class list is model.classes): dropped when read back.
REMOVED_KEYS = {"model": ("max_objects", "num_classes"), "distill": ("num_classes",), "data": ("classes",)}


def without_removed_keys(content: dict, source: str, warn: bool = False) -> dict:
    """``content`` without :data:`REMOVED_KEYS`; ``warn``: say so on stderr (a file someone may have written)."""
    cleaned, dropped = {}, []
    for section, values in content.items():
        if isinstance(values, dict):
            dropped += [f"{section}.{k}" for k in values if k in REMOVED_KEYS.get(section, ())]
            values = {k: v for k, v in values.items() if k not in REMOVED_KEYS.get(section, ())}
        cleaned[section] = values
    if dropped and warn:
        print(f"warning: {source}: ignored {', '.join(sorted(dropped))} (removed keys without effect; the class list "
              "is model.classes)", file=sys.stderr)
    return cleaned


def config_from_dict(content: dict, source: str = "<checkpoint config>", overrides: list[str] = ()) -> Config:
    """A config from a plain dict (e.g. the ``config`` stored in a checkpoint), validated like a file,
    except for the checks on training augmentation (a stored config describes a trained model)."""
    return _apply_overrides(_merge(OmegaConf.structured(Config), without_removed_keys(content, source), source),
                            source, overrides, stored=True)


def _checked(schema, training: bool, teacher_required: bool = True, stored: bool = False) -> Config:
    try:
        config: Config = OmegaConf.to_object(schema)
    except OmegaConfBaseException as error:
        raise Add3dError(str(error).splitlines()[0]) from None
    if not training:
        config.distill = None
    validate_config(config, teacher_required, training and not stored)
    return config


def _apply_overrides(schema, source: str, overrides: list[str], training: bool = True,
                     teacher_required: bool = True, stored: bool = False) -> Config:
    """Overrides on top of the merged files, then validation. A value that does not validate is
    blamed on where it came from: the first override after which the config is invalid, else the file."""
    schemas = [schema]
    for text in overrides:
        schemas.append(_merge(schemas[-1], parse_override(text), f"command-line override '{text}'"))
    try:
        return _checked(schemas[-1], training, teacher_required, stored)
    except Add3dError as error:
        sources = [source] + [f"command-line override '{text}'" for text in overrides]
        culprit = sources[0]
        for candidate, earlier in zip(sources[1:], schemas[:-1]):
            try:
                _checked(earlier, training, teacher_required, stored)
            except Add3dError:
                break
            culprit = candidate
        raise Add3dError(f"{culprit}: {error}") from None


def validate_config(config: Config, teacher_required: bool = True, training: bool = True) -> None:
    """Cross-field checks the types cannot express (the caller names the file or override); those on
    training augmentation only for configs that will train."""
    config.data.validate()
    entry = detector_entry(config.model.name)  # an unknown detector name lists the known ones
    config.model.validate()
    validate_classes(config.data, config.model.classes)
    if config.distill is not None:
        config.distill.validate()
        if teacher_required and not config.teacher.checkpoint:
            raise Add3dError("a distill section needs teacher.checkpoint (a trained teacher's checkpoint)")
        if not config.data.depth_source:
            raise Add3dError("distillation feeds the teacher depth: set data.depth_source (lidar | object | dense)")
    if getattr(config.model, "in_channels", 3) == 5 and not config.data.depth_source:
        raise Add3dError("model.in_channels 5 (a depth teacher) needs data.depth_source (lidar | object | dense)")
    if config.data.depth_jitter > 0 and (getattr(config.model, "in_channels", 3) != 5 or config.distill is not None):
        raise Add3dError("data.depth_jitter scales depth targets with the image unchanged: only for depth teachers "
                         "(model.in_channels 5, no distill section)")
    if config.data.depth_region > 0 and not entry.dense_depth_head:
        raise Add3dError(f"data.depth_region: {config.model.name} has no dense depth head to train on it "
                         f"(only {', '.join(n for n, e in DETECTORS.items() if e.dense_depth_head)}); set data.depth_region=0")
    if config.data.depth_jitter > 0 and config.data.depth_jitter_scope == "depth" and not entry.depth_only_target:
        raise Add3dError(f"data.depth_jitter_scope depth: {config.model.name}'s losses read the 3D location too, so a "
                         f"depth-only jitter would contradict them; use data.depth_jitter_scope=scene")
    if training and entry.geometric_depth and config.data.scale_depth_on_crop and config.data.random_crop > 0:
        raise Add3dError(f"data.scale_depth_on_crop: {config.model.name} takes depth from 3D/2D heights through the "
                         f"input camera, which a crop leaves true; set data.scale_depth_on_crop=false")
    train = config.train
    for name, minimum in (("epochs", 1), ("batch_size", 1), ("workers", 0), ("accumulate_steps", 1), ("log_every", 1)):
        if getattr(train, name) < minimum:
            raise Add3dError(f"train.{name} must be >= {minimum}, got {getattr(train, name)}")
    if train.amp not in AMP_MODES:
        raise Add3dError(f"train.amp must be one of {', '.join(AMP_MODES)} (or the old true / false), got '{train.amp}'")
    if train.batch_size % train.accumulate_steps:
        raise Add3dError(f"train.batch_size {train.batch_size} must be divisible by train.accumulate_steps "
                         f"{train.accumulate_steps} (each step's batch is split into that many micro-batches)")
    if train.prefetch_factor < 1:
        raise Add3dError(f"train.prefetch_factor must be >= 1, got {train.prefetch_factor}")
    if train.threads is not None and train.threads < 1:
        raise Add3dError(f"train.threads must be >= 1 or null, got {train.threads}")
    if train.grad_clip is not None and train.grad_clip <= 0:
        raise Add3dError(f"train.grad_clip must be > 0 or null, got {train.grad_clip}")
    if train.eval_overlap not in ("default", "loose"):
        raise Add3dError(f"train.eval_overlap must be 'default' or 'loose', got '{train.eval_overlap}'")
    if not train.eval_box2d_scale > 0:
        raise Add3dError(f"train.eval_box2d_scale must be > 0, got {train.eval_box2d_scale}")
    parse_metric_name(train.best_metric)
    if config.optim.name not in ("adam", "adamw", "sgd"):
        raise Add3dError(f"optim.name must be adam, adamw or sgd, got '{config.optim.name}'")
    if config.optim.lr <= 0:
        raise Add3dError(f"optim.lr must be > 0, got {config.optim.lr}")
    if sorted(config.schedule.milestones) != list(config.schedule.milestones):
        raise Add3dError(f"schedule.milestones must be increasing, got {list(config.schedule.milestones)}")


DIFFICULTIES = ("easy", "moderate", "hard")


def parse_metric_name(name: str) -> tuple[str, str, str, int]:
    """``Car/3d/R40/moderate`` -> ("Car", "3d", "R40", 1)."""
    parts = name.split("/")
    if len(parts) != 4 or parts[1] not in ("2d", "bev", "3d", "aos") or parts[2] not in ("R11", "R40") or parts[3] not in DIFFICULTIES:
        raise Add3dError(f"train.best_metric must look like Car/3d/R40/moderate, got '{name}'")
    return parts[0], parts[1], parts[2], DIFFICULTIES.index(parts[3])


def config_to_dict(config: Config) -> dict:
    """Plain dict of a config (for checkpoints and the run folder's config.yaml)."""
    return OmegaConf.to_container(OmegaConf.structured(config), resolve=True)


def config_to_yaml(config: Config) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)


def shipped_configs_dir() -> Path:
    """The repository's ``configs/`` (next to the package in a checkout, else under the working directory)."""
    for candidate in (Path(__file__).resolve().parents[2] / "configs", Path.cwd() / "configs"):
        if (candidate / "monodle" / "synthetic.yaml").is_file():
            return candidate
    raise Add3dError("configs/ not found: run from the add3d repository (the configs ship with the checkout)")


def config_summary(path: Path) -> str:
    """The first sentence of a config file's leading comment."""
    words = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        words.append(line.lstrip("#").strip())
    text = " ".join(words)
    for end in (": ", ". ", "; "):
        text = text.split(end)[0]
    return text.rstrip(":.")


def shipped_configs() -> list[tuple[Path, str]]:
    """(path relative to the repository, one-line summary) of every shipped config, sorted."""
    root = shipped_configs_dir()
    return [(path.relative_to(root.parent), config_summary(path)) for path in sorted(root.glob("*/*.yaml"))]
