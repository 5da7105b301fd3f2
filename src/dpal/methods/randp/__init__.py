"""DP-RandP (Tang et al. 2023): priors learned from random-process images, then DP training."""
