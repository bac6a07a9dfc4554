"""Tiny training widths shared by the training tests: every code path of the default model, a
fraction of its cost."""

TINY = {
    "encoder_filters": [8, 16, 16],
    "generator_filters": [16, 16, 8],
    "disc_filters": [8, 8, 16],
    "dz_units": [16],
    "classifier_units": [16],
    "z_dim": 16,
    "z_expression_dim": 8,
    "pretrain_epochs": 1,
    "batch_size": 32,
    "epochs": 2,
    "learning_rate": 1e-3,
    "max_val_samples": 64,
    "grid_faces": 4,
}
