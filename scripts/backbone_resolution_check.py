"""How much the input resolution buys a linear probe of EfficientNet-Lite0 on CIFAR-10 (no
privacy: a quick check of the features, not a DP result). Logistic regression on the pooled
features of the first 2,000 training images, scored on the first 1,000 test images.

    python scripts/backbone_resolution_check.py
"""

from __future__ import annotations

import time

from sklearn.linear_model import LogisticRegression

from dpal.data.registry import load_split
from dpal.models.backbones import load_backbone
from dpal.models.features import encode


def main() -> None:
    train = load_split("cifar10", "train").subset(slice(0, 2000))
    test = load_split("cifar10", "test").subset(slice(0, 1000))
    for size in (128, 160, 224):
        backbone = load_backbone("efficientnet-lite0", image_size=size)
        t = time.perf_counter()
        ftr = encode(backbone, train, progress=False)["pooled"].numpy()
        fte = encode(backbone, test, progress=False)["pooled"].numpy()
        rate = (len(train) + len(test)) / (time.perf_counter() - t)
        clf = LogisticRegression(max_iter=2000, C=0.1).fit(ftr, train.y)
        acc = (clf.predict(fte) == test.y).mean()
        print(f"{size} px: {rate:.1f} images/s, test accuracy {acc:.3f}", flush=True)


if __name__ == "__main__":
    main()
