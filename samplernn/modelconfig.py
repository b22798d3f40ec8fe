"""What builds a model, SampleRNNConfig, without torch (the commands' configs and their
--help import it; torch only when a command runs). Its choices are choices.py's words: a
misspelt `model.rnn_type=gur` fails at composition; a checkpoint stores plain strings.
"""

from dataclasses import asdict, dataclass, field, fields

from .choices import Choice, FrameInput, Init, LabelInto, QType, RnnType, TopInput
from .errors import ConfigError

# The options that rebuild samplernn 0.1's model; a checkpoint without these keys predates
# them and loads with these values.
DEVIATIONS = dict(frame_input="audio", top_input="projected", mlp_first_relu=True,
                  init="pytorch")


@dataclass
class SampleRNNConfig:
    """Everything that rebuilds a model; stored in every checkpoint.

    frame_sizes: samples per frame of each frame-level tier, listed bottom-up,
        each dividing the next. [16] is 2-tier, [2, 8] 3-tier, [2, 8, 32] 4-tier.
    skip_connections: every RNN layer after the first also reads the stack's input,
        and the tier's output projection reads every layer (Graves 2013, as the authors).

    Deviations from the authors' model, each an option measured in docs/fidelity.md:
    frame_input: "codes" feeds frames on the code scale [-2, 2) (the authors');
        "audio" feeds the dequantized amplitude in [-1, 1] (for mu-law the decoded
        waveform: the bug of samplernn 0.1).
    top_input: "direct" feeds the top tier's raw frame into its RNN (the authors');
        "projected" puts Linear(frame_size, dim) before it, as in the lower tiers.
    mlp_first_relu: a ReLU after the sample-level MLP's first layer (not the authors').
    init: "authors" (He / LeCun / orthogonal, as lib/ops.py) or "pytorch" (its defaults).

    Global conditioning (beyond the paper): with n_labels > 0 (a training run sets it from
    its dataset's labels), a learned embedding of label_dim per label, projected and added
    where the model sums its inputs: every tier's RNN input and the sample-level MLP's first
    layer (label_into="all", the better at 600 and 1,200 steps in docs/conditioning.md), or
    the top tier's RNN input alone ("top"). n_labels = 0 is the paper's unconditional model,
    unchanged.

    Local conditioning (beyond the paper; SampleRNN as a vocoder): with n_features > 0 (a
    training run sets it and feature_hop from its dataset's features, samplernn/features.py),
    a stack of feature_layers 1-D convolutions (feature_dim channels, kernel feature_kernel,
    ReLU; it sees feature_radius frames before and after, since all features are known before
    generation) over the feature frames, whose output at each top frame is projected and
    added where labels are (features_into, as label_into). n_features = 0: no features.
    """

    frame_sizes: list[int] = field(default_factory=lambda: [2, 8])
    dim: int = 1024
    n_rnn: int = 1
    rnn_type: RnnType = RnnType.gru
    skip_connections: bool = False
    emb_dim: int = 256
    q_levels: int = 256
    q_type: QType = QType.linear
    learn_h0: bool = True
    weight_norm: bool = True
    frame_input: FrameInput = FrameInput.codes
    top_input: TopInput = TopInput.direct
    mlp_first_relu: bool = False
    init: Init = Init.authors
    n_labels: int = 0
    label_dim: int = 64
    label_into: LabelInto = LabelInto.all
    n_features: int = 0
    feature_hop: int = 0
    feature_dim: int = 256
    feature_layers: int = 3
    feature_kernel: int = 5
    features_into: LabelInto = LabelInto.all

    def __post_init__(self):
        self.frame_sizes = [int(f) for f in self.frame_sizes]
        if not self.frame_sizes:
            raise ConfigError("model.frame_sizes is empty; give at least one frame size, e.g. [16]")
        if any(f < 1 for f in self.frame_sizes):
            raise ConfigError(f"model.frame_sizes={self.frame_sizes} must be positive integers")
        for below, above in zip(self.frame_sizes, self.frame_sizes[1:]):
            if above % below or above == below:
                raise ConfigError(
                    f"model.frame_sizes={self.frame_sizes}: {above} is not a multiple of {below} "
                    "greater than it; list frame sizes bottom-up, each dividing the next "
                    "(e.g. [2, 8] or [2, 8, 32])")
        for f in fields(self):  # the API's plain strings become members; a bad one is one line
            if isinstance(f.type, type) and issubclass(f.type, Choice):
                setattr(self, f.name, f.type.of(f"model.{f.name}", getattr(self, f.name)))
        if self.q_levels < 2:
            raise ConfigError(f"model.q_levels={self.q_levels} must be at least 2")
        for name in ("dim", "n_rnn", "emb_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name}={getattr(self, name)} must be at least 1")
        for name in ("n_labels", "label_dim", "n_features", "feature_hop", "feature_dim",
                     "feature_layers"):
            if getattr(self, name) < 0:
                raise ConfigError(f"model.{name}={getattr(self, name)} must be at least 0")
        if self.feature_kernel < 1 or self.feature_kernel % 2 == 0:
            raise ConfigError(f"model.feature_kernel={self.feature_kernel} must be odd "
                              "(centred on its frame), e.g. 5")
        top = self.frame_sizes[-1]
        if self.has_features and self.feature_hop % top:
            raise ConfigError(f"the features' hop ({self.feature_hop} samples) is not a multiple "
                              f"of the top frame size {top} (model.frame_sizes="
                              f"{self.frame_sizes}); prepare the data again with a mel_hop that "
                              f"{top} divides, or change model.frame_sizes")

    @property
    def conditioned(self) -> bool:
        """Whether the model takes a label (labels in its data, and label_dim > 0)."""
        return self.n_labels > 0 and self.label_dim > 0

    @property
    def has_features(self) -> bool:
        """Whether the model takes frame features (features in its data, feature_dim > 0)."""
        return self.n_features > 0 and self.feature_dim > 0

    @property
    def feature_radius(self) -> int:
        """Feature frames the stack sees on each side of the one it describes."""
        return self.feature_layers * (self.feature_kernel // 2) if self.has_features else 0

    @property
    def n_tiers(self) -> int:
        return len(self.frame_sizes) + 1

    def to_dict(self) -> dict:
        """Plain values (the choices as strings): what a checkpoint stores."""
        return {k: v.value if isinstance(v, Choice) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict) -> "SampleRNNConfig":
        """A stored config; keys it lacks predate their option and take DEVIATIONS' values."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"model config keys {unknown} are unknown to this version of "
                              "samplernn; was the checkpoint written by a newer one?")
        return cls(**{**DEVIATIONS, **values})
