"""Noise predictors and text encoders (U-Net, CLIP), weight loading and prediction wrappers."""
