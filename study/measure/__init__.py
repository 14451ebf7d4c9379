"""Measurements every model family goes through, each at any input size and batch.

count_flops(model, img_size, batch=1) -> GMACs (fvcore convention), no real compute
peak_memory(model, img_size, batch=1, mode="predicted"|"measured", device="cpu") -> MiB dict
throughput(model, img_size, batch, device, ...) -> img_per_s, step_ms, ...
predict(model, img_size, batch=1, device="cpu") -> GMACs and predicted memory, one fake pass
train_memory(...), predict_train(...): the same for a training step (forward, loss, backward,
AdamW step; train_step.py); throughput(..., train=True) times that step
"""

from study.measure.flops import count_flops
from study.measure.memory import StorageTracker, peak_memory, predict
from study.measure.speed import throughput
from study.measure.train_step import predict_train, train_memory

__all__ = [
    "StorageTracker",
    "count_flops",
    "peak_memory",
    "predict",
    "predict_train",
    "throughput",
    "train_memory",
]
