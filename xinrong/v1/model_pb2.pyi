from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IvBudgetRequest(_message.Message):
    __slots__ = ("features",)
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    features: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, features: _Optional[_Iterable[str]] = ...) -> None: ...

class IvBudget(_message.Message):
    __slots__ = ("rho", "features")
    RHO_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    rho: float
    features: int
    def __init__(self, rho: _Optional[float] = ..., features: _Optional[int] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class KeptModel(_message.Message):
    __slots__ = ("model_id", "created", "features", "epoch", "psi_session_id", "scorecard")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    PSI_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SCORECARD_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    created: str
    features: _containers.RepeatedScalarFieldContainer[str]
    epoch: int
    psi_session_id: str
    scorecard: bool
    def __init__(self, model_id: _Optional[str] = ..., created: _Optional[str] = ..., features: _Optional[_Iterable[str]] = ..., epoch: _Optional[int] = ..., psi_session_id: _Optional[str] = ..., scorecard: _Optional[bool] = ...) -> None: ...

class KeptModels(_message.Message):
    __slots__ = ("models", "limit")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[KeptModel]
    limit: int
    def __init__(self, models: _Optional[_Iterable[_Union[KeptModel, _Mapping]]] = ..., limit: _Optional[int] = ...) -> None: ...

class DeleteModelRequest(_message.Message):
    __slots__ = ("model_id",)
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    def __init__(self, model_id: _Optional[str] = ...) -> None: ...

class ModelDeleted(_message.Message):
    __slots__ = ("model_id", "lookup_tables_removed")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    LOOKUP_TABLES_REMOVED_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    lookup_tables_removed: int
    def __init__(self, model_id: _Optional[str] = ..., lookup_tables_removed: _Optional[int] = ...) -> None: ...

class ScorecardRequest(_message.Message):
    __slots__ = ("model_id", "base_score", "pdo", "base_odds", "slope")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    BASE_SCORE_FIELD_NUMBER: _ClassVar[int]
    PDO_FIELD_NUMBER: _ClassVar[int]
    BASE_ODDS_FIELD_NUMBER: _ClassVar[int]
    SLOPE_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    base_score: float
    pdo: float
    base_odds: float
    slope: float
    def __init__(self, model_id: _Optional[str] = ..., base_score: _Optional[float] = ..., pdo: _Optional[float] = ..., base_odds: _Optional[float] = ..., slope: _Optional[float] = ...) -> None: ...

class ScorecardMade(_message.Message):
    __slots__ = ("model_id", "features", "bins")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    BINS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    features: int
    bins: int
    def __init__(self, model_id: _Optional[str] = ..., features: _Optional[int] = ..., bins: _Optional[int] = ...) -> None: ...

class ListFeaturesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FeatureInfo(_message.Message):
    __slots__ = ("name", "kind", "description", "public")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    description: str
    public: bool
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., description: _Optional[str] = ..., public: _Optional[bool] = ...) -> None: ...

class FeatureCatalogue(_message.Message):
    __slots__ = ("features", "enterprises")
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISES_FIELD_NUMBER: _ClassVar[int]
    features: _containers.RepeatedCompositeFieldContainer[FeatureInfo]
    enterprises: int
    def __init__(self, features: _Optional[_Iterable[_Union[FeatureInfo, _Mapping]]] = ..., enterprises: _Optional[int] = ...) -> None: ...

class OptimizerSettings(_message.Message):
    __slots__ = ("name", "learning_rate", "momentum", "beta1", "beta2", "epsilon", "decay", "penalty", "alpha")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    MOMENTUM_FIELD_NUMBER: _ClassVar[int]
    BETA1_FIELD_NUMBER: _ClassVar[int]
    BETA2_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    DECAY_FIELD_NUMBER: _ClassVar[int]
    PENALTY_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    name: str
    learning_rate: float
    momentum: float
    beta1: float
    beta2: float
    epsilon: float
    decay: float
    penalty: str
    alpha: float
    def __init__(self, name: _Optional[str] = ..., learning_rate: _Optional[float] = ..., momentum: _Optional[float] = ..., beta1: _Optional[float] = ..., beta2: _Optional[float] = ..., epsilon: _Optional[float] = ..., decay: _Optional[float] = ..., penalty: _Optional[str] = ..., alpha: _Optional[float] = ...) -> None: ...

class TrainingPlan(_message.Message):
    __slots__ = ("job_id", "psi_session_id", "rows", "bank_columns", "validation_fraction", "seed", "batch_size", "max_epochs", "optimizer", "bureau_features", "bank_public_key", "batch_size_adjustable", "bank_key_proof")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PSI_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    BANK_COLUMNS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FRACTION_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    BUREAU_FEATURES_FIELD_NUMBER: _ClassVar[int]
    BANK_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_ADJUSTABLE_FIELD_NUMBER: _ClassVar[int]
    BANK_KEY_PROOF_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    psi_session_id: str
    rows: int
    bank_columns: int
    validation_fraction: float
    seed: int
    batch_size: int
    max_epochs: int
    optimizer: OptimizerSettings
    bureau_features: _containers.RepeatedScalarFieldContainer[str]
    bank_public_key: bytes
    batch_size_adjustable: bool
    bank_key_proof: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, job_id: _Optional[str] = ..., psi_session_id: _Optional[str] = ..., rows: _Optional[int] = ..., bank_columns: _Optional[int] = ..., validation_fraction: _Optional[float] = ..., seed: _Optional[int] = ..., batch_size: _Optional[int] = ..., max_epochs: _Optional[int] = ..., optimizer: _Optional[_Union[OptimizerSettings, _Mapping]] = ..., bureau_features: _Optional[_Iterable[str]] = ..., bank_public_key: _Optional[bytes] = ..., batch_size_adjustable: _Optional[bool] = ..., bank_key_proof: _Optional[_Iterable[bytes]] = ...) -> None: ...

class TrainingAccepted(_message.Message):
    __slots__ = ("job_id", "bureau_public_key", "bureau_columns", "bureau_features", "batch_size", "bureau_key_proof")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    BUREAU_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    BUREAU_COLUMNS_FIELD_NUMBER: _ClassVar[int]
    BUREAU_FEATURES_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    BUREAU_KEY_PROOF_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    bureau_public_key: bytes
    bureau_columns: int
    bureau_features: _containers.RepeatedScalarFieldContainer[str]
    batch_size: int
    bureau_key_proof: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, job_id: _Optional[str] = ..., bureau_public_key: _Optional[bytes] = ..., bureau_columns: _Optional[int] = ..., bureau_features: _Optional[_Iterable[str]] = ..., batch_size: _Optional[int] = ..., bureau_key_proof: _Optional[_Iterable[bytes]] = ...) -> None: ...

class Step(_message.Message):
    __slots__ = ("job_id", "epoch", "batch")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    epoch: int
    batch: int
    def __init__(self, job_id: _Optional[str] = ..., epoch: _Optional[int] = ..., batch: _Optional[int] = ...) -> None: ...

class EncryptedResiduals(_message.Message):
    __slots__ = ("step", "residuals", "weight_share", "bank_weights")
    STEP_FIELD_NUMBER: _ClassVar[int]
    RESIDUALS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_SHARE_FIELD_NUMBER: _ClassVar[int]
    BANK_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    step: Step
    residuals: bytes
    weight_share: bytes
    bank_weights: bytes
    def __init__(self, step: _Optional[_Union[Step, _Mapping]] = ..., residuals: _Optional[bytes] = ..., weight_share: _Optional[bytes] = ..., bank_weights: _Optional[bytes] = ...) -> None: ...

class StepShares(_message.Message):
    __slots__ = ("step", "offset", "total", "bureau_masks", "score_shares", "gradient_share", "loss_term", "cross_moments", "gram_share", "share_moments", "bank_gradient", "share_bits")
    STEP_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    BUREAU_MASKS_FIELD_NUMBER: _ClassVar[int]
    SCORE_SHARES_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_SHARE_FIELD_NUMBER: _ClassVar[int]
    LOSS_TERM_FIELD_NUMBER: _ClassVar[int]
    CROSS_MOMENTS_FIELD_NUMBER: _ClassVar[int]
    GRAM_SHARE_FIELD_NUMBER: _ClassVar[int]
    SHARE_MOMENTS_FIELD_NUMBER: _ClassVar[int]
    BANK_GRADIENT_FIELD_NUMBER: _ClassVar[int]
    SHARE_BITS_FIELD_NUMBER: _ClassVar[int]
    step: Step
    offset: int
    total: int
    bureau_masks: bytes
    score_shares: bytes
    gradient_share: bytes
    loss_term: bytes
    cross_moments: bytes
    gram_share: bytes
    share_moments: bytes
    bank_gradient: bytes
    share_bits: int
    def __init__(self, step: _Optional[_Union[Step, _Mapping]] = ..., offset: _Optional[int] = ..., total: _Optional[int] = ..., bureau_masks: _Optional[bytes] = ..., score_shares: _Optional[bytes] = ..., gradient_share: _Optional[bytes] = ..., loss_term: _Optional[bytes] = ..., cross_moments: _Optional[bytes] = ..., gram_share: _Optional[bytes] = ..., share_moments: _Optional[bytes] = ..., bank_gradient: _Optional[bytes] = ..., share_bits: _Optional[int] = ...) -> None: ...

class MaskedValues(_message.Message):
    __slots__ = ("step", "count", "ciphertexts")
    STEP_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    step: Step
    count: int
    ciphertexts: bytes
    def __init__(self, step: _Optional[_Union[Step, _Mapping]] = ..., count: _Optional[int] = ..., ciphertexts: _Optional[bytes] = ...) -> None: ...

class DecryptedValues(_message.Message):
    __slots__ = ("step", "plaintexts")
    STEP_FIELD_NUMBER: _ClassVar[int]
    PLAINTEXTS_FIELD_NUMBER: _ClassVar[int]
    step: Step
    plaintexts: bytes
    def __init__(self, step: _Optional[_Union[Step, _Mapping]] = ..., plaintexts: _Optional[bytes] = ...) -> None: ...

class ResumeRequest(_message.Message):
    __slots__ = ("job_id", "epoch")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    epoch: int
    def __init__(self, job_id: _Optional[str] = ..., epoch: _Optional[int] = ...) -> None: ...

class AbandonRequest(_message.Message):
    __slots__ = ("job_id", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    reason: str
    def __init__(self, job_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class TrainingAbandoned(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class FinishRequest(_message.Message):
    __slots__ = ("job_id", "epoch", "weight_share")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_SHARE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    epoch: int
    weight_share: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, job_id: _Optional[str] = ..., epoch: _Optional[int] = ..., weight_share: _Optional[_Iterable[str]] = ...) -> None: ...

class TrainingFinished(_message.Message):
    __slots__ = ("job_id", "model_id", "epoch", "neutral_score")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    NEUTRAL_SCORE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    model_id: str
    epoch: int
    neutral_score: float
    def __init__(self, job_id: _Optional[str] = ..., model_id: _Optional[str] = ..., epoch: _Optional[int] = ..., neutral_score: _Optional[float] = ...) -> None: ...

class ScoreRequest(_message.Message):
    __slots__ = ("model_id", "psi_session_id", "points", "reasons")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    PSI_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    psi_session_id: str
    points: bool
    reasons: int
    def __init__(self, model_id: _Optional[str] = ..., psi_session_id: _Optional[str] = ..., points: _Optional[bool] = ..., reasons: _Optional[int] = ...) -> None: ...

class EncryptedLabels(_message.Message):
    __slots__ = ("psi_session_id", "bank_public_key", "max_bins", "features", "offset", "total", "labels", "bank_key_proof")
    PSI_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    BANK_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    MAX_BINS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    BANK_KEY_PROOF_FIELD_NUMBER: _ClassVar[int]
    psi_session_id: str
    bank_public_key: bytes
    max_bins: int
    features: _containers.RepeatedScalarFieldContainer[str]
    offset: int
    total: int
    labels: bytes
    bank_key_proof: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, psi_session_id: _Optional[str] = ..., bank_public_key: _Optional[bytes] = ..., max_bins: _Optional[int] = ..., features: _Optional[_Iterable[str]] = ..., offset: _Optional[int] = ..., total: _Optional[int] = ..., labels: _Optional[bytes] = ..., bank_key_proof: _Optional[_Iterable[bytes]] = ...) -> None: ...

class FeatureBins(_message.Message):
    __slots__ = ("name", "kind", "ordered", "missing_bin", "slot_bits", "sums", "noise_offset", "noise_scale", "epsilon", "bins")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ORDERED_FIELD_NUMBER: _ClassVar[int]
    MISSING_BIN_FIELD_NUMBER: _ClassVar[int]
    SLOT_BITS_FIELD_NUMBER: _ClassVar[int]
    SUMS_FIELD_NUMBER: _ClassVar[int]
    NOISE_OFFSET_FIELD_NUMBER: _ClassVar[int]
    NOISE_SCALE_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    BINS_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    ordered: bool
    missing_bin: int
    slot_bits: int
    sums: bytes
    noise_offset: int
    noise_scale: float
    epsilon: float
    bins: int
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., ordered: _Optional[bool] = ..., missing_bin: _Optional[int] = ..., slot_bits: _Optional[int] = ..., sums: _Optional[bytes] = ..., noise_offset: _Optional[int] = ..., noise_scale: _Optional[float] = ..., epsilon: _Optional[float] = ..., bins: _Optional[int] = ...) -> None: ...

class BinnedLabelSums(_message.Message):
    __slots__ = ("features", "rho_charged")
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    RHO_CHARGED_FIELD_NUMBER: _ClassVar[int]
    features: _containers.RepeatedCompositeFieldContainer[FeatureBins]
    rho_charged: float
    def __init__(self, features: _Optional[_Iterable[_Union[FeatureBins, _Mapping]]] = ..., rho_charged: _Optional[float] = ...) -> None: ...

class ApplicantScores(_message.Message):
    __slots__ = ("offset", "total", "scores", "reason_features", "reasons")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    REASON_FEATURES_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    offset: int
    total: int
    scores: bytes
    reason_features: _containers.RepeatedScalarFieldContainer[str]
    reasons: bytes
    def __init__(self, offset: _Optional[int] = ..., total: _Optional[int] = ..., scores: _Optional[bytes] = ..., reason_features: _Optional[_Iterable[str]] = ..., reasons: _Optional[bytes] = ...) -> None: ...
