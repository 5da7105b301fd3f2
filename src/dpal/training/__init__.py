"""DP-SGD (per-example clipping + Gaussian noise + Poisson sampling), training loop, evaluation."""
