"""Workstation-side export of the Imagination model: Keras -> TFLite (int8, float16, float32).

:mod:`clifer_export.convert` writes the models and their ``metadata.json``;
:mod:`clifer_export.parity` checks them against Keras and downstream, in the GDM protocol;
:mod:`clifer_export.quality` measures the shipped model (expression control, identity keeping).
"""
