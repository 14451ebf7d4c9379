"""A scaling study of vision backbones: models, measurement, sweeps, report and receptive fields."""
