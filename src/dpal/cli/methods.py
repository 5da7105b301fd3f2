"""``dpal adamix run`` and ``dpal randp generate|run``."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from dpal.cli.common import add_data_dir, add_deterministic_noise


def cmd_adamix_run(a: argparse.Namespace) -> None:
    from dpal.methods.adamix.runner import AdamixConfig, adamix_table, run_adamix

    defaults = AdamixConfig()
    config = AdamixConfig(
        dataset=a.dataset,
        public_per_class=a.public_per_class,
        epsilons=tuple(a.epsilon),
        seeds=a.seeds,
        first_seed=a.first_seed,
        projection_rank=a.projection_rank,
        clip_quantile=a.clip_quantile,
        fewshot_selection=a.fewshot_selection,
        arms=tuple(a.arms) if a.arms else defaults.arms,
        train=replace(
            defaults.train,
            model=a.model,
            finetune=a.finetune,
            image_size=a.image_size,
            feature_cache=a.feature_cache,
            **{
                k: v
                for k in ("epochs", "lr", "batch_size", "ema")
                if (v := getattr(a, k)) is not None
            },
            deterministic_noise=a.deterministic_noise,
            secure_noise=a.secure_noise,
        ),
    )
    out = a.out or f"runs/adamix-{a.dataset}-k{a.public_per_class}"
    rows = run_adamix(config, out, data_dir=a.data_dir)
    print(adamix_table(rows))
    print(f"cells, table and figure in {out}/")


def cmd_randp_generate(a: argparse.Namespace) -> None:
    from dpal.data.random_process import sample, save_grid

    images = sample(a.kind, a.n, size=a.size, channels=a.channels, seed=a.seed)
    save_grid(images, a.out)
    print(f"{a.n} {a.kind} images ({a.size}×{a.size}×{a.channels}) → {a.out}")


def cmd_randp_run(a: argparse.Namespace) -> None:
    from dpal.methods.randp.run import RECIPES, RandpConfig, run_randp

    recipe = RECIPES[a.recipe]
    train = None  # None: the recipe's
    if a.standardize_features is not None:
        train = replace(recipe.train, standardize_features=a.standardize_features)
    if a.deterministic_noise or a.secure_noise:
        train = replace(
            train or recipe.train,
            deterministic_noise=a.deterministic_noise,
            secure_noise=a.secure_noise,
        )
    prior = None
    if a.prior_steps is not None:
        prior = replace(recipe.prior, steps=a.prior_steps)
    config = RandpConfig(
        prior=prior,
        train=train,
        dataset=a.dataset,
        epsilons=tuple(a.epsilon),
        recipe=a.recipe,
        seeds=a.seeds,
        first_seed=a.first_seed,
        arms=tuple(a.arms),
    )
    out = a.out or f"runs/randp-{a.dataset}-{a.recipe}"
    rows = run_randp(config, out, data_dir=a.data_dir, device=a.device)
    from dpal.methods.randp.run import randp_table

    print(randp_table(rows))
    print(f"cells, table and figure in {out}/")


def register(sub: Any) -> None:
    adamix = sub.add_parser(
        "adamix", help="AdaMix: few-shot public model, then adaptive private fine-tuning"
    ).add_subparsers(dest="adamix_command", required=True)
    p = adamix.add_parser("run", help="AdaMix, its ablations and baselines at each ε")
    p.add_argument("--dataset", default="mnist-offline")
    p.add_argument("--public-per-class", type=int, default=10)
    p.add_argument("--epsilon", type=float, nargs="+", default=[1.0, 3.0, 8.0])
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument(
        "--first-seed", type=int, default=0, help="run seeds FIRST … FIRST+SEEDS−1 (default 0)"
    )
    p.add_argument(
        "--projection-rank", type=int, default=16, help="k: dimension of the public subspace"
    )
    p.add_argument(
        "--clip-quantile",
        type=float,
        default=0.5,
        help="the clip threshold: this quantile of the public projected gradient norms",
    )
    p.add_argument("--epochs", type=int, help="epochs of private fine-tuning (default 5)")
    p.add_argument("--lr", type=float, help="learning rate of every fine-tuning arm (default 4)")
    p.add_argument("--batch-size", type=int, help="expected batch size q·N (default 1024)")
    p.add_argument("--ema", type=float, help="EMA decay of the weights (default 0.99; 0 = off)")
    p.add_argument(
        "--model",
        default="cnn-tanh",
        help="a dpal network, a pretrained backbone (efficientnet-lite0, …) or "
        "package.module:factory",
    )
    p.add_argument(
        "--finetune",
        choices=("linear-probe", "last-blocks", "full"),
        help="backbones: what the private model is (default: a linear head on frozen features)",
    )
    p.add_argument("--image-size", type=int, help="backbones: pixels (default: the backbone's)")
    p.add_argument("--feature-cache", help="folder for cached features (private data!)")
    p.add_argument(
        "--fewshot-selection",
        choices=("random", "diverse-public"),
        default="random",
        help="D_pub: per-class random picks (the paper's), or bought with DiversePublic on the "
        "backbone's embeddings of the public pool",
    )
    p.add_argument(
        "--arms",
        nargs="+",
        help="arms to run (default: all but adamix-initial-subspace, beyond the paper)",
    )
    p.add_argument("--out")
    add_data_dir(p)
    add_deterministic_noise(p)
    p.set_defaults(func=cmd_adamix_run)

    randp = sub.add_parser(
        "randp", help="DP-RandP: priors from random-process images"
    ).add_subparsers(dest="randp_command", required=True)
    p = randp.add_parser("generate", help="a PNG grid of random-process images, to look at")
    p.add_argument(
        "--kind", default="mixture", help="dead-leaves, spectrum, stylegan-random, mixture"
    )
    p.add_argument("--n", type=int, default=96)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--channels", type=int, default=3, choices=(1, 3))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="randp_samples.png")
    p.set_defaults(func=cmd_randp_generate)
    p = randp.add_parser(
        "run", help="prior from random processes, DP linear probe, DP fine-tuning; baselines"
    )
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--epsilon", type=float, nargs="+", default=[1.0, 3.0, 8.0])
    p.add_argument("--recipe", default="cpu", choices=("cpu", "full"))
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument(
        "--first-seed", type=int, default=0, help="run seeds FIRST … FIRST+SEEDS−1 (default 0)"
    )
    p.add_argument(
        "--arms",
        nargs="+",
        default=["dp-randp", "dp-scratch", "non-private"],
        choices=("dp-randp", "dp-scratch", "non-private"),
    )
    p.add_argument(
        "--prior-steps", type=int, help="Phase I steps (default: the recipe's: cpu 2,000)"
    )
    p.add_argument(
        "--standardize-features",
        action=argparse.BooleanOptionalAction,
        help="every arm: centre and scale the head's input with statistics of random-process "
        "images (free in privacy); default: the recipe's choice (cpu: on, full: off)",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda (the full recipe wants a GPU)")
    p.add_argument("--out")
    add_data_dir(p)
    add_deterministic_noise(p)
    p.set_defaults(func=cmd_randp_run)
