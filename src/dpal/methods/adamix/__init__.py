"""AdaMix (Golatkar et al. 2022): few-shot public training, then private fine-tuning that
leans on public gradients. The gradient mechanism itself is ``dpal.training.adamix``: the
trainer plugs it in as a gradient rule."""
